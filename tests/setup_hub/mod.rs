//! A small server speaking the part of the Hugging Face hub protocol turnbench and hf-hub use,
//! on 127.0.0.1 port 0: `GET /api/models/{repo}/revision/{rev}`,
//! `GET /api/models/{repo}/tree/{sha}?recursive=true` (paginated with `Link: rel="next"` when
//! `page_size` is set), and `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with `X-Repo-Commit`,
//! `ETag`, `Content-Length`, and `Range` requests answered 206 with `Content-Range`.
//! Knobs: a required token (401 without, 403 with another), the Authorization headers seen, a
//! transfer cut mid-body, a file listed but answering 404.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

pub const COMMIT: &str = "1111111111111111111111111111111111111111";
pub const REPO: &str = "tiny-org/tiny-model";

#[derive(Default)]
pub struct Hub {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Token required (401 without it, 403 with another one).
    pub token: Option<String>,
    /// Authorization headers seen, in order.
    pub auth_seen: Vec<Option<String>>,
    /// Successful GETs of file bodies (not the one-byte probes hf-hub sends first), by file.
    pub gets: BTreeMap<String, u32>,
    /// Body bytes served, by file.
    pub bytes_served: BTreeMap<String, u64>,
    /// Tree entries per page (0: one page).
    pub page_size: usize,
    /// Cut the first GET of this file that does not start at byte 0 (the second chunk or later
    /// when it is fetched in chunks; else the whole body), after half its body.
    pub cut_first_get_of: Option<String>,
    /// Files the resolve endpoint answers 404 for although the tree lists them.
    pub resolve_404: Vec<String>,
    /// ETag of each file, computed once at start (hashing in a debug build is slow).
    pub etags: BTreeMap<String, String>,
    /// The server's own base URL (for `Link` headers).
    pub base: String,
}

pub type Shared = Arc<Mutex<Hub>>;

fn etag(body: &[u8]) -> String {
    format!("\"{:x}\"", Sha256::digest(body))
}

#[allow(clippy::result_large_err)] // a test server: the Err is the response to send
fn check_auth(hub: &mut Hub, headers: &HeaderMap) -> Result<(), Response> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    hub.auth_seen.push(auth.clone());
    match (&hub.token, auth) {
        (None, _) => Ok(()),
        (Some(t), Some(a)) if a == format!("Bearer {t}") => Ok(()),
        (Some(_), None) => Err((StatusCode::UNAUTHORIZED, Json(json!({"error": "Access to model is restricted"}))).into_response()),
        (Some(_), Some(_)) => Err((StatusCode::FORBIDDEN, Json(json!({"error": "not in the authorized list"}))).into_response()),
    }
}

async fn revision(
    State(s): State<Shared>,
    UrlPath((org, name, _rev)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut hub = s.lock().unwrap();
    if let Err(r) = check_auth(&mut hub, &headers) {
        return r;
    }
    if format!("{org}/{name}") != REPO {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "Repository not found"}))).into_response();
    }
    let siblings: Vec<_> = hub.files.keys().map(|f| json!({"rfilename": f})).collect();
    Json(json!({"id": REPO, "modelId": REPO, "sha": COMMIT, "private": false, "siblings": siblings})).into_response()
}

async fn tree(
    State(s): State<Shared>,
    UrlPath((org, name, sha)): UrlPath<(String, String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut hub = s.lock().unwrap();
    if let Err(r) = check_auth(&mut hub, &headers) {
        return r;
    }
    if format!("{org}/{name}") != REPO {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "Repository not found"}))).into_response();
    }
    let entries: Vec<_> = hub
        .files
        .iter()
        .map(|(path, body)| json!({"type": "file", "oid": hub.etags[path].trim_matches('"'), "size": body.len(), "path": path}))
        .collect();
    if hub.page_size == 0 {
        return Json(entries).into_response();
    }
    let from: usize = query.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page: Vec<_> = entries.iter().skip(from).take(hub.page_size).cloned().collect();
    let mut response = Json(page).into_response();
    if from + hub.page_size < entries.len() {
        let next = format!("<{}/api/models/{org}/{name}/tree/{sha}?recursive=true&cursor={}>; rel=\"next\"", hub.base, from + hub.page_size);
        response.headers_mut().insert("link", next.parse().unwrap());
    }
    response
}

async fn resolve(
    State(s): State<Shared>,
    method: Method,
    UrlPath((org, name, _rev, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut hub = s.lock().unwrap();
    if let Err(r) = check_auth(&mut hub, &headers) {
        return r;
    }
    let body = match hub.files.get(&file) {
        Some(b) if format!("{org}/{name}") == REPO && !hub.resolve_404.contains(&file) => bytes::Bytes::from(b.clone()),
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header("X-Repo-Commit", COMMIT)
                .header("X-Error-Code", "EntryNotFound")
                .body(Body::empty())
                .unwrap()
        }
    };
    let size = body.len();
    // `Range: bytes=a-b` (b clamped to the last byte, as HTTP servers do) → 206 with Content-Range.
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?.min(size.saturating_sub(1)))));
    let mut builder = Response::builder()
        .header("X-Repo-Commit", COMMIT)
        .header("ETag", hub.etags[&file].clone())
        .header("Content-Type", "application/octet-stream");
    let body = match range {
        Some((a, b)) if a <= b && b < size => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header("Content-Range", format!("bytes {a}-{b}/{size}"));
            body.slice(a..=b)
        }
        Some(_) => return Response::builder().status(StatusCode::RANGE_NOT_SATISFIABLE).body(Body::empty()).unwrap(),
        None => body,
    };
    let builder = builder.header("Content-Length", body.len().to_string());
    if method == Method::HEAD {
        return builder.body(Body::empty()).unwrap();
    }
    let probe = range == Some((0, 0)) && size > 1;
    if probe {
        return builder.body(Body::from(body)).unwrap();
    }
    let starts_late = range.is_some_and(|(a, _)| a > 0) || body.len() == size;
    if hub.cut_first_get_of.as_deref() == Some(file.as_str()) && starts_late {
        hub.cut_first_get_of = None;
        let half = body.slice(..body.len() / 2);
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut by the test")),
        ]);
        return builder.body(Body::from_stream(stream)).unwrap();
    }
    *hub.gets.entry(file.clone()).or_default() += 1;
    *hub.bytes_served.entry(file).or_default() += body.len() as u64;
    builder.body(Body::from(body)).unwrap()
}

pub async fn start(mut hub: Hub) -> (String, Shared) {
    hub.etags = hub.files.iter().map(|(k, v)| (k.clone(), etag(v))).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    hub.base = format!("http://{addr}");
    let shared: Shared = Arc::new(Mutex::new(hub));
    let app = Router::new()
        .route("/api/models/{org}/{name}/revision/{rev}", get(revision))
        .route("/api/models/{org}/{name}/tree/{sha}", get(tree))
        .route("/{org}/{name}/resolve/{rev}/{*file}", get(resolve).head(resolve))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

pub fn tiny_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("config.json".to_string(), br#"{"model_type": "llama", "max_position_embeddings": 2048}"#.to_vec());
    files.insert(
        "tokenizer_config.json".to_string(),
        serde_json::to_vec(&json!({"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}))
            .unwrap(),
    );
    // 3 MiB of deterministic "weights".
    let weights: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    files.insert("model.safetensors".to_string(), weights);
    files.insert("README.md".to_string(), b"# tiny\n".to_vec());
    files
}

