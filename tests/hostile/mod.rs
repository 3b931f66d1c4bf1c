//! A misbehaving OpenAI-compatible server for tests (DESIGN §8, tier 5): plain threads and
//! blocking sockets, so every byte it sends (or does not send) is under the test's control.
//! Started on port 0; stopped when dropped.
#![allow(dead_code)] // each test binary uses its own modes

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How the server misbehaves. Everything not named answers like a small, healthy server:
/// `/v1/models` lists `hostile` (context 4096), `/metrics`, `/tokenize` and `/version` are 404,
/// and chat streams a few content chunks, usage and `[DONE]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Healthy,
    /// Chat answers this HTTP status with an OpenAI error body.
    Status(u16),
    /// Chat: the connection is reset (closed with the request unread).
    Reset,
    /// Chat: the request is read, then nothing at all is sent (not even headers).
    NoHeaders,
    /// Chat: an event whose data is not JSON.
    Garbled,
    /// Chat: binary bytes (not UTF-8) in the stream.
    Binary,
    /// Chat: content, then the connection closes without `data: [DONE]`.
    NoDone,
    /// Chat: usage of 10¹⁸ prompt and 10¹⁹ completion tokens.
    AbsurdUsage,
    /// Chat: `cached_tokens` above `prompt_tokens`.
    CachedAbovePrompt,
    /// Chat: a negative token count.
    NegativeUsage,
    /// Chat: usage and `[DONE]`, no content at all.
    Empty,
    /// Chat: headers and one chunk, then silence.
    Stall,
    /// Chat: headers, then one byte every 20 ms, never a newline.
    SlowDrip,
    /// Chat: headers, then 200 MB in one line with no newline, as fast as the socket takes it.
    HugeLine,
    /// `/v1/models`, `/metrics`, `/tokenize`, `/version`: binary junk with HTTP 200; chat is fine.
    JunkApi,
    /// Chat answers 401 with a body that quotes the `Authorization` header it got.
    EchoKey,
    /// The first chat request closes the listener: every later connection is refused.
    DieOnFirstChat,
    /// Every `n`-th chat request waits 1.5 s before its first byte.
    SlowEvery(usize),
    /// Every `n`-th chat request answers HTTP 500.
    FailEvery(usize),
    /// Chat answers 307 to `http://elsewhere.invalid/v1/chat/completions`.
    Redirect,
}

pub struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
    pub chats: Arc<AtomicUsize>,
}

impl Hostile {
    pub fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let chats = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), chats.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, c) = (s.clone(), c.clone());
                thread::spawn(move || serve(conn, mode, &s, &c));
            }
            // Dropping the listener: connections are refused from now on.
        });
        Hostile { port, stop, chats }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop_accepting(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

struct Request {
    path: String,
    authorization: String,
    max_tokens: usize,
}

/// Reads one request (headers and a `Content-Length` body).
fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let target = head.split_whitespace().nth(1)?;
    // A request through a proxy names the whole URL (`POST http://host/v1/…`): serve its path.
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => target.to_string(),
    };
    let header = |name: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut byte).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Some(Request {
        path,
        authorization: header("authorization").unwrap_or_default(),
        max_tokens: json["max_tokens"].as_u64().unwrap_or(4).clamp(1, 64) as usize,
    })
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

fn content(text: &str) -> String {
    format!("data: {}\n\n", serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}))
}

fn usage(prompt: &str, completion: &str, cached: &str) -> String {
    format!(
        "data: {{\"choices\": [], \"usage\": {{\"prompt_tokens\": {prompt}, \"completion_tokens\": {completion}, \"prompt_tokens_details\": {{\"cached_tokens\": {cached}}}}}}}\n\n"
    )
}

/// Holds the connection open, sending nothing, until the test ends or the client goes.
fn hold(conn: &mut TcpStream, stop: &AtomicBool) {
    conn.set_read_timeout(Some(Duration::from_millis(50))).ok();
    let mut b = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut b) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn junk() -> Vec<u8> {
    let mut out = b"\xff\xfe\x00garbage{{{ vllm:prefix_cache_hits_total NaN\n# TYPE x histogram\nx_bucket{le=\"q\"} -\n".to_vec();
    out.extend((0u8..=255).rev());
    out
}

fn serve(mut conn: TcpStream, mode: Mode, stop: &AtomicBool, chats: &AtomicUsize) {
    if mode == Mode::Reset {
        // Read only the first bytes: closing with the rest of the request unread sends a reset.
        let mut first = [0u8; 8];
        let _ = conn.read(&mut first);
        if first.starts_with(b"POST") {
            chats.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Not a chat request: answer it like a healthy server would.
        let mut rest = Vec::from(&first[..]);
        let mut b = [0u8; 4096];
        while !rest.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&b[..n]),
            }
        }
        let path = String::from_utf8_lossy(&rest).split_whitespace().nth(1).unwrap_or("").to_string();
        return api(&mut conn, &path, Mode::Healthy);
    }
    let Some(req) = read_request(&mut conn) else { return };
    if !req.path.starts_with("/v1/chat/completions") && !req.path.starts_with("/v1/completions") {
        return api(&mut conn, &req.path, mode);
    }
    let n = chats.fetch_add(1, Ordering::Relaxed) + 1;
    let write = |conn: &mut TcpStream, bytes: &[u8]| conn.write_all(bytes).is_ok();
    let healthy_body = |cached: &str| {
        let mut s = String::new();
        for i in 0..req.max_tokens {
            s.push_str(&content(&format!("t{i} ")));
        }
        s.push_str(&usage("12", &req.max_tokens.to_string(), cached));
        s.push_str("data: [DONE]\n\n");
        s
    };
    match mode {
        Mode::Redirect => {
            let head = "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.invalid/v1/chat/completions\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = conn.write_all(head.as_bytes());
        }
        Mode::Status(code) => {
            let body = serde_json::json!({"error": {"message": format!("hostile server says {code}"), "code": code}});
            respond(&mut conn, code, "application/json", body.to_string().as_bytes());
        }
        Mode::EchoKey => {
            let body = serde_json::json!({"error": {"message": format!("invalid credentials: {}", req.authorization)}});
            respond(&mut conn, 401, "application/json", body.to_string().as_bytes());
        }
        Mode::NoHeaders => hold(&mut conn, stop),
        Mode::Garbled => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, b"data: {\"choices\": [{\"delta\": {\"content\": \"ok\"\n\ndata: [DONE]\n\n");
        }
        Mode::Binary => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, b"data: \xff\xfe\xfd\x00\x01binary\x80\x81\n\n");
            write(&mut conn, b"data: [DONE]\n\n");
        }
        Mode::NoDone => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, content("half an answer").as_bytes());
        }
        Mode::AbsurdUsage | Mode::CachedAbovePrompt | Mode::NegativeUsage | Mode::Empty => {
            write(&mut conn, SSE_HEAD);
            if mode != Mode::Empty {
                write(&mut conn, content("an answer").as_bytes());
            }
            let u = match mode {
                Mode::AbsurdUsage => usage("1000000000000000000", "10000000000000000000", "0"),
                Mode::CachedAbovePrompt => usage("100", "1", "500"),
                Mode::NegativeUsage => usage("-5", "1", "0"),
                _ => usage("12", "0", "0"),
            };
            write(&mut conn, u.as_bytes());
            write(&mut conn, b"data: [DONE]\n\n");
        }
        Mode::Stall => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, content("first").as_bytes());
            hold(&mut conn, stop);
        }
        Mode::SlowDrip => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, b"data: ");
            while !stop.load(Ordering::Relaxed) && write(&mut conn, b"x") {
                thread::sleep(Duration::from_millis(20));
            }
        }
        Mode::HugeLine => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, b"data: ");
            let block = vec![b'a'; 64 << 10];
            for _ in 0..(200 << 20) / block.len() {
                if stop.load(Ordering::Relaxed) || !write(&mut conn, &block) {
                    break;
                }
            }
        }
        Mode::DieOnFirstChat => {
            // Close the listener (refusing every later connection), then drop this one.
            stop.store(true, Ordering::Relaxed);
            if let Ok(addr) = conn.local_addr() {
                let _ = TcpStream::connect(addr);
            }
            let _ = conn.shutdown(Shutdown::Both);
        }
        Mode::SlowEvery(k) => {
            if k > 0 && n % k == 0 {
                thread::sleep(Duration::from_millis(1500));
            }
            write(&mut conn, SSE_HEAD);
            write(&mut conn, healthy_body("0").as_bytes());
        }
        Mode::FailEvery(k) if k > 0 && n % k == 0 => {
            respond(&mut conn, 500, "application/json", br#"{"error": {"message": "every so often"}}"#);
        }
        Mode::Healthy | Mode::JunkApi | Mode::Reset | Mode::FailEvery(_) => {
            write(&mut conn, SSE_HEAD);
            write(&mut conn, healthy_body("0").as_bytes());
        }
    }
}

/// The server's API beside chat.
fn api(conn: &mut TcpStream, path: &str, mode: Mode) {
    if mode == Mode::JunkApi {
        return respond(conn, 200, "application/json", &junk());
    }
    if path.starts_with("/v1/models") {
        let body = serde_json::json!({"object": "list", "data": [{"id": "hostile", "object": "model", "owned_by": "test", "max_model_len": 4096}]});
        return respond(conn, 200, "application/json", body.to_string().as_bytes());
    }
    respond(conn, 404, "text/plain", b"not here")
}
