//! OpenAI streaming client: one request → [`ChatOutcome`] with raw monotonic instants, the
//! server's `usage`, and a [`Status`] (DESIGN §5). Tokens are never counted from chunks.

use std::time::Duration;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub mod api;
pub mod metrics;
pub mod sse;

use crate::core::audit::prompt_sha256;
use crate::core::hash::sha256_hex;
use crate::core::record::{implausible_usage, RequestTiming, Status, TurnRecord, Usage};
use crate::core::redact;
use sse::{Events, SseDecoder};

/// The longest SSE line (or event) a stream may carry: one chunk of a streamed answer is a few
/// hundred bytes; a megabyte is no chunk.
pub const MAX_SSE_LINE_BYTES: usize = 1 << 20;
/// The most a streamed response may carry in all.
pub const MAX_STREAM_BYTES: u64 = 256 << 20;
/// The most of an error body (or a small JSON answer: `/v1/models`, `/tokenize`, `/metrics`)
/// that is read.
pub const MAX_SMALL_BODY_BYTES: usize = 16 << 20;
/// Error bodies are quoted up to this many bytes.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
pub use crate::core::RunClock;
use crate::core::ChatMessage;

/// `req` with `Authorization: Bearer <key>` when there is a key.
pub fn authed(req: reqwest::RequestBuilder, api_key: Option<&str>) -> reqwest::RequestBuilder {
    match api_key {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent as a bearer token; never written anywhere.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub request_timeout: Duration,
    /// Send vLLM's `ignore_eos` so answers are exactly `max_tokens` long (reproducible lengths).
    pub ignore_eos: bool,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    /// Server base URL, e.g. `http://127.0.0.1:8000`.
    pub base_url: &'a str,
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    pub max_tokens: u32,
    /// Ask for vLLM's `return_token_ids` (prompt and generated token ids in the stream).
    pub return_token_ids: bool,
}

/// One `/v1/completions` request: a prompt rendered locally (`--prompt-mode completion`).
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    pub base_url: &'a str,
    pub model: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u32,
    pub return_token_ids: bool,
}

/// Everything one request produced, failed or not.
#[derive(Debug, Clone, Default)]
pub struct ChatOutcome {
    pub timing: RequestTiming,
    pub usage: Usage,
    pub status: Status,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The streamed answer text (becomes history).
    pub text: String,
    /// Content-bearing chunks received.
    pub output_chunks: u64,
    /// `return_token_ids`: the prompt's token ids as the server built them.
    pub prompt_token_ids: Option<Vec<u32>>,
    /// `return_token_ids`: the generated token ids, in order.
    pub output_token_ids: Option<Vec<u32>>,
    /// A `usage` field that was no token count at all (negative, fractional, not a number).
    pub usage_problem: Option<String>,
    /// [`prompt_sha256`] of what was sent, hashed from the body's own bytes; `None` when no
    /// body was made.
    pub prompt_sha256: Option<String>,
}

impl ChatOutcome {
    /// `record` with this request's outcome (status, timing, usage) filled in. A successful
    /// request whose usage is outside physical bounds (see [`implausible_usage`]; `context`: the
    /// model's context window when the server said) becomes `invalid`, with the reason.
    pub fn into_record(self, record: TurnRecord, context: Option<u64>) -> TurnRecord {
        let (mut status, mut error) = (self.status, self.error);
        if status.is_ok() {
            if let Some(why) = self.usage_problem.clone().or_else(|| implausible_usage(&self.usage, record.max_tokens, context)) {
                status = Status::Invalid;
                error = Some(why);
            }
        }
        TurnRecord {
            status,
            http_status: self.http_status,
            error,
            // `derived` is computed once, when the record is recorded (`TurnRecord::settle`).
            timing: self.timing,
            usage: self.usage,
            output_chunks: self.output_chunks,
            ..record
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Streamed requests to a plain-HTTP endpoint, straight through hyper's pooled client:
    /// reqwest's own layers (a second URL parse, the redirect and retry policies, header
    /// merging) were a tenth of the client's CPU per request. `None` when the environment
    /// names a proxy, which only reqwest honours; HTTPS always goes through reqwest.
    direct: Option<DirectClient>,
    config: ClientConfig,
    clock: RunClock,
    /// Request URLs already parsed, by base URL and path: a run asks one or two endpoints
    /// thousands of times, and parsing the URL was 2 % of the client's CPU per request.
    urls: Arc<Mutex<Vec<KnownUrl>>>,
}

type DirectClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<bytes::Bytes>>;

/// A request URL parsed once: base URL, path, the URL.
type KnownUrl = (String, &'static str, Target);

/// Where a streamed request goes: its URL, and its URI when it goes through hyper directly.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    direct: Option<hyper::Uri>,
}

/// A streamed response's body, from whichever client sent the request.
enum Body {
    Reqwest(reqwest::Response),
    Direct(hyper::body::Incoming),
}

impl Body {
    /// The next piece of the body; `None` at its end.
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        use http_body_util::BodyExt;
        match self {
            Body::Reqwest(r) => r.chunk().await.map_err(|e| error_chain(&e)),
            Body::Direct(b) => loop {
                match b.frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(error_chain(&e)),
                    // Trailers carry no data.
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
        }
    }
}

/// Whether the environment names a proxy for plain HTTP (reqwest honours it, hyper does not).
fn proxy_in_environment() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"].iter().any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()))
}

/// The body of one streamed request, serialized straight from the borrowed messages (building
/// a `serde_json::Value` first copied the whole conversation history on every turn).
#[derive(Serialize, Clone, Copy)]
struct RequestBody<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [ChatMessage]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ignore_eos: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    return_token_ids: bool,
}

#[derive(Serialize, Clone, Copy)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    /// Only the first choice is read (turnbench asks for one); the rest are skipped unparsed.
    #[serde(default, borrow, deserialize_with = "first_choice")]
    choices: Option<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// vLLM chat streams: in the first chunk with `return_token_ids`.
    #[serde(default)]
    prompt_token_ids: Option<Vec<u32>>,
}

/// The first element of `choices`, without collecting the list.
fn first_choice<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ChunkChoice<'de>>, D::Error> {
    struct First;
    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Option<ChunkChoice<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of choices")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<ChunkChoice<'de>>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    d.deserialize_any(First)
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// `/v1/completions` streams text here.
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    text: Option<Cow<'a, str>>,
    /// `return_token_ids`: this chunk's generated ids.
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
    /// vLLM completion streams: in the first choice with `return_token_ids`.
    #[serde(default)]
    prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_str")]
    content: Option<Cow<'a, str>>,
}

/// A string or `null`, borrowed from the input unless it holds escapes (serde's own
/// `Option<Cow<str>>` always copies: it borrows only a `Cow` that is not in an `Option`).
fn borrowed_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
    }
    d.deserialize_option(Text)
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: serde_json::Value,
    #[serde(default)]
    completion_tokens: serde_json::Value,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: serde_json::Value,
}

/// One parsed SSE event of a completion stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedChunk<'a> {
    /// The content delta (chat) or text (completions); empty when none. Borrowed from the
    /// event unless it holds escapes.
    pub content: Cow<'a, str>,
    pub usage: Option<Usage>,
    /// Why a usage field is no token count.
    pub usage_problem: Option<String>,
    /// `return_token_ids`: the prompt's ids (first chunk), and this chunk's generated ids.
    pub prompt_token_ids: Option<Vec<u32>>,
    pub token_ids: Option<Vec<u32>>,
}

/// Generated token ids kept per request: far above any `max_tokens` a server honours.
pub const MAX_TOKEN_IDS: usize = 1 << 22;

/// A token count of `usage`: `null`/absent is `None`; a negative, fractional or non-numeric
/// value is an error naming the field.
fn token_count(name: &str, v: &serde_json::Value) -> Result<Option<u64>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(format!("usage.{name} = {n} is not a token count")),
        },
        other => Err(format!("usage.{name} = {} is not a token count", truncate(&other.to_string(), 40))),
    }
}

/// Parses the `data` of one event of a `/v1/chat/completions` or `/v1/completions` stream.
pub fn parse_chunk(data: &str) -> Result<ParsedChunk<'_>, String> {
    let chunk: Chunk = serde_json::from_str(data).map_err(|e| format!("unparseable chunk ({e}): {}", truncate(data, 200)))?;
    let (content, token_ids, choice_prompt_ids) = match chunk.choices {
        Some(c) => (c.delta.and_then(|d| d.content).or(c.text), c.token_ids, c.prompt_token_ids),
        None => (None, None, None),
    };
    let mut out = ParsedChunk {
        content: content.unwrap_or_default(),
        prompt_token_ids: chunk.prompt_token_ids.or(choice_prompt_ids),
        token_ids,
        ..Default::default()
    };
    if let Some(u) = chunk.usage {
        let cached = u.prompt_tokens_details.map(|d| d.cached_tokens).unwrap_or_default();
        let mut usage = Usage::default();
        let fields: [(&str, &serde_json::Value, &mut Option<u64>); 3] = [
            ("prompt_tokens", &u.prompt_tokens, &mut usage.prompt_tokens),
            ("completion_tokens", &u.completion_tokens, &mut usage.completion_tokens),
            ("prompt_tokens_details.cached_tokens", &cached, &mut usage.cached_tokens),
        ];
        for (name, value, slot) in fields {
            match token_count(name, value) {
                Ok(v) => *slot = v,
                Err(why) => {
                    out.usage_problem.get_or_insert(why);
                }
            }
        }
        out.usage = Some(usage);
    }
    Ok(out)
}

/// Parses the events of one stream, remembering the last chunk whose only variable part was its
/// content string. The chunks of a stream are byte for byte alike but for that string (the same
/// `id`, `created`, `model`, `index`), so a chunk whose bytes before and after its string literal
/// equal the remembered chunk's is that chunk with another string: the same parse, new content,
/// for a comparison instead of a JSON parse (which was a third of the client's CPU per request
/// at 128-token answers). Only a literal with no escape and no control character is taken
/// over, the literals serde_json borrows as they are; anything else is parsed in full.
#[derive(Debug, Default)]
pub struct ChunkParser {
    /// The remembered chunk's data; empty when none.
    data: Vec<u8>,
    /// Its content literal's first byte and its closing quote.
    content: (usize, usize),
}

impl ChunkParser {
    /// [`parse_chunk`] of `data`, through the remembered chunk when it applies.
    pub fn parse<'a>(&mut self, data: &'a str) -> Result<ParsedChunk<'a>, String> {
        if let Some(content) = self.same_but_content(data) {
            return Ok(ParsedChunk { content: Cow::Borrowed(content), ..Default::default() });
        }
        let chunk = parse_chunk(data)?;
        self.remember(data, &chunk);
        Ok(chunk)
    }

    /// The content of `data` when it is the remembered chunk with another content literal.
    fn same_but_content<'a>(&self, data: &'a str) -> Option<&'a str> {
        let (start, end) = self.content;
        let bytes = data.as_bytes();
        let suffix = self.data.get(end..).filter(|s| !s.is_empty())?;
        if bytes.len() < start + suffix.len() || bytes[..start] != self.data[..start] {
            return None;
        }
        let rest = &bytes[start..];
        // The literal ends at its first quote; a backslash or a control character before it
        // (an escape, or invalid JSON) is left to the full parse.
        let len = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        (rest[len] == b'"' && rest[len..] == *suffix).then(|| &data[start..start + len])
    }

    /// Remembers `data` when its parse is nothing but a content borrowed from it.
    fn remember(&mut self, data: &str, chunk: &ParsedChunk<'_>) {
        self.data.clear();
        let Cow::Borrowed(content) = &chunk.content else { return };
        if content.is_empty() || chunk.usage.is_some() || chunk.usage_problem.is_some() || chunk.prompt_token_ids.is_some() || chunk.token_ids.is_some() {
            return;
        }
        let Some(start) = (content.as_ptr() as usize).checked_sub(data.as_ptr() as usize) else { return };
        let end = start + content.len();
        let bytes = data.as_bytes();
        // Borrowed from `data` as a whole literal: a quote on either side.
        if start == 0 || end >= bytes.len() || bytes[start - 1] != b'"' || bytes[end] != b'"' {
            return;
        }
        self.data.extend_from_slice(bytes);
        self.content = (start, end);
    }
}

/// Reads at most `limit` bytes of a body; a longer one is an error naming the limit.
pub async fn read_body_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                if out.len() + bytes.len() > limit {
                    return Err(format!("response body larger than {limit} bytes (the limit for this answer)"));
                }
                out.extend_from_slice(&bytes);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("reading the body: {}", error_chain(&e))),
        }
    }
}

/// The first `limit` bytes of a body (an error body is quoted, never read to its end).
async fn read_body_prefix(body: &mut Body, limit: usize) -> String {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.chunk().await {
            Ok(Some(bytes)) => out.extend_from_slice(&bytes[..bytes.len().min(limit - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RequestBody<'_> {
    /// The body's bytes and [`prompt_sha256`] of its prompt. The messages go first and are
    /// hashed where they lie in the body: their JSON is the hash's input, and serializing the
    /// whole history a second time to hash it cost the client 2 % of its CPU per request.
    fn encode(&self) -> Result<(Vec<u8>, String), serde_json::Error> {
        let mut out = Vec::with_capacity(512);
        let Some(messages) = self.messages else {
            serde_json::to_writer(&mut out, self)?;
            return Ok((out, prompt_sha256(None, self.prompt)));
        };
        out.extend_from_slice(br#"{"messages":"#);
        let start = out.len();
        serde_json::to_writer(&mut out, messages)?;
        let hash = sha256_hex(&out[start..]);
        // The other fields' object, its `{` becoming the `,` after the messages.
        let rest = out.len();
        serde_json::to_writer(&mut out, &RequestBody { messages: None, ..*self })?;
        out[rest] = b',';
        Ok((out, hash))
    }
}

/// Why a request failed: its status, the HTTP code if one came, and a message.
struct Failure(Status, Option<u16>, String);

impl Client {
    /// A client for a server the user names: a proxy the environment names (`http_proxy`,
    /// `https_proxy`, `all_proxy`, `no_proxy`) is honoured.
    pub fn new(config: ClientConfig, clock: RunClock) -> anyhow::Result<Self> {
        Self::build(config, clock, true)
    }

    /// A client for a server of this process on the loopback interface (the calibration's):
    /// never through a proxy, which would be measured instead of the client.
    pub fn loopback(config: ClientConfig, clock: RunClock) -> anyhow::Result<Self> {
        Self::build(config, clock, false)
    }

    fn build(config: ClientConfig, clock: RunClock, proxies: bool) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder();
        if !proxies {
            http = http.no_proxy();
        }
        let http = http
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            // A redirect is reported, never followed: its round trip would be timed as the
            // server's (and hyper's client, for plain HTTP, follows none either).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let direct = (!(proxies && proxy_in_environment())).then(|| {
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(config.connect_timeout));
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(usize::MAX)
                .build(connector)
        });
        Ok(Self { http, direct, config, clock, urls: Arc::default() })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Streams one chat completion. Never returns an error: failures are part of the outcome.
    pub async fn stream_chat(&self, request: &ChatRequest<'_>, scheduled_ms: f64) -> ChatOutcome {
        let body = RequestBody {
            messages: Some(request.messages),
            ..self.body(request.model, request.max_tokens, request.return_token_ids)
        };
        self.stream(request.base_url, "/v1/chat/completions", &body, scheduled_ms).await
    }

    /// Streams one text completion (`/v1/completions`) of an already rendered `prompt`, through
    /// the same streaming path as [`stream_chat`](Self::stream_chat).
    pub async fn stream_completion(&self, request: &CompletionRequest<'_>, scheduled_ms: f64) -> ChatOutcome {
        let body = RequestBody {
            prompt: Some(request.prompt),
            ..self.body(request.model, request.max_tokens, request.return_token_ids)
        };
        self.stream(request.base_url, "/v1/completions", &body, scheduled_ms).await
    }

    /// A streamed request's body without its prompt field (`messages` or `prompt`).
    fn body<'a>(&self, model: &'a str, max_tokens: u32, return_token_ids: bool) -> RequestBody<'a> {
        RequestBody {
            model,
            max_tokens,
            stream: true,
            stream_options: StreamOptions { include_usage: true },
            messages: None,
            prompt: None,
            ignore_eos: self.config.ignore_eos,
            return_token_ids,
        }
    }

    /// `base_url` + `path`, parsed once per endpoint.
    fn url(&self, base_url: &str, path: &'static str) -> Result<Target, String> {
        let mut urls = crate::core::lock(&self.urls);
        if let Some((_, _, target)) = urls.iter().find(|(b, p, _)| b == base_url && *p == path) {
            return Ok(target.clone());
        }
        let joined = format!("{}{path}", base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&joined).map_err(|e| format!("invalid endpoint URL {joined}: {e}"))?;
        let direct = match (&self.direct, url.scheme()) {
            (Some(_), "http") => Some(url.as_str().parse::<hyper::Uri>().map_err(|e| format!("invalid endpoint URL {joined}: {e}"))?),
            _ => None,
        };
        let target = Target { url, direct };
        // Bounded: a run talks to a handful of endpoints.
        if urls.len() < 64 {
            urls.push((base_url.to_string(), path, target.clone()));
        }
        Ok(target)
    }

    /// Sends one streamed request: its HTTP status, the `Location` of a redirect, and the body.
    async fn send(&self, target: Target, body: Vec<u8>) -> Result<(reqwest::StatusCode, Option<String>, Body), Failure> {
        let location = |headers: &reqwest::header::HeaderMap| {
            headers.get(reqwest::header::LOCATION).map(|l| truncate(&String::from_utf8_lossy(l.as_bytes()), 300).to_string())
        };
        if let (Some(client), Some(uri)) = (&self.direct, target.direct) {
            let mut request = hyper::Request::post(uri).header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(key) = &self.config.api_key {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
            }
            let request = request
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .map_err(|e| Failure(Status::Connect, None, format!("request: {}", error_chain(&e))))?;
            let response = client.request(request).await.map_err(|e| {
                let status = if e.is_connect() { Status::Connect } else { Status::Stream };
                Failure(status, None, error_chain(&e))
            })?;
            let redirect = location(response.headers());
            return Ok((response.status(), redirect, Body::Direct(response.into_body())));
        }
        let req = self.http.post(target.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        let response = authed(req, self.config.api_key.as_deref()).send().await.map_err(classify_reqwest)?;
        Ok((response.status(), location(response.headers()), Body::Reqwest(response)))
    }

    /// One streamed request of `body` to `base_url` + `path`.
    async fn stream(&self, base_url: &str, path: &'static str, body: &RequestBody<'_>, scheduled_ms: f64) -> ChatOutcome {
        // Neither fails for a well-formed run; if one does, the request fails, the run goes on.
        let mut outcome = ChatOutcome::default();
        let prepared = self.url(base_url, path).and_then(|url| {
            let (bytes, hash) = body.encode().map_err(|e| format!("request body: {e}"))?;
            outcome.prompt_sha256 = Some(hash);
            Ok((url, bytes))
        });
        // Grown once, before the clock starts, rather than doubling chunk after chunk (a few
        // answers run past it).
        let expected = body.max_tokens.min(1024) as usize;
        outcome.timing.content_chunk_ms.reserve(expected);
        outcome.text.reserve(expected * 4);
        let sent = Instant::now();
        outcome.timing.scheduled_ms = scheduled_ms.min(self.clock.ms(sent));
        outcome.timing.sent_ms = self.clock.ms(sent);
        let deadline = sent + self.config.request_timeout;
        let first_token_deadline = sent + self.config.first_token_timeout;
        let request = async {
            let (url, body) = prepared.map_err(|e| Failure(Status::Connect, None, e))?;
            self.stream_inner(url, body, &mut outcome, first_token_deadline).await
        };
        let result = tokio::time::timeout_at(deadline, request)
            .await
            .unwrap_or_else(|_| {
                Err(Failure(
                    Status::Timeout,
                    None,
                    format!("request took longer than {:?}", self.config.request_timeout),
                ))
            });
        outcome.timing.end_ms = self.clock.now_ms();
        let result = result.and_then(|()| {
            if outcome.output_chunks == 0 {
                Err(Failure(Status::Empty, None, "the stream carried no content (no content delta before [DONE])".into()))
            } else {
                Ok(())
            }
        });
        if let Err(Failure(status, http_status, message)) = result {
            outcome.status = status;
            outcome.http_status = outcome.http_status.or(http_status);
            outcome.error = Some(message);
        }
        // Nothing the server sent back may carry the key into a record or a report.
        let key = self.config.api_key.as_deref();
        outcome.error = outcome.error.map(|e| redact(&e, key));
        if key.is_some_and(|k| outcome.text.contains(k)) {
            outcome.text = redact(&outcome.text, key);
        }
        outcome
    }

    async fn stream_inner(
        &self,
        target: Target,
        body: Vec<u8>,
        outcome: &mut ChatOutcome,
        first_token_deadline: Instant,
    ) -> Result<(), Failure> {
        let (http_status, redirect, mut response) = tokio::time::timeout_at(first_token_deadline, self.send(target, body))
            .await
            .map_err(|_| first_token_timeout(&self.config))??;
        outcome.http_status = Some(http_status.as_u16());
        if http_status.is_redirection() {
            let to = redirect.unwrap_or_else(|| "no Location given".into());
            let message = format!("HTTP {}: the endpoint redirects ({to}); give the URL it redirects to, since turnbench follows no redirect (its round trip would be timed as the server's)", http_status.as_u16());
            return Err(Failure(Status::Http4xx, Some(http_status.as_u16()), message));
        }
        if !http_status.is_success() {
            let status = if http_status.is_client_error() { Status::Http4xx } else { Status::Http5xx };
            let text = read_body_prefix(&mut response, MAX_ERROR_BODY_BYTES).await;
            return Err(Failure(status, Some(http_status.as_u16()), error_message(http_status, &text)));
        }
        let mut decoder = SseDecoder::new(MAX_SSE_LINE_BYTES, MAX_STREAM_BYTES);
        // Within the allocator's per-thread cache (a larger first buffer took 1.6 % of the client).
        let mut events = Events::with_capacity(1024);
        let mut chunks = ChunkParser::default();
        let mut done = false;
        let mut ended = false;
        while !done && !ended {
            let next = if outcome.timing.first_token_ms.is_none() {
                tokio::time::timeout_at(first_token_deadline, response.chunk())
                    .await
                    .map_err(|_| first_token_timeout(&self.config))?
            } else {
                response.chunk().await
            };
            let stream_failure = |m: String| Failure(Status::Stream, None, m);
            match next.map_err(|e| stream_failure(format!("stream broke: {e}")))? {
                Some(bytes) => decoder.push(&bytes, &mut events).map_err(|e| stream_failure(e.to_string()))?,
                None => {
                    decoder.finish(&mut events).map_err(|e| stream_failure(e.to_string()))?;
                    ended = true;
                }
            }
            let at = self.clock.now_ms();
            for data in events.iter() {
                if done {
                    break;
                }
                if data.trim() == "[DONE]" {
                    done = true;
                    continue;
                }
                let chunk = chunks.parse(data).map_err(stream_failure)?;
                if let Some(ids) = chunk.prompt_token_ids {
                    outcome.prompt_token_ids = Some(ids);
                }
                if let Some(ids) = chunk.token_ids {
                    let all = outcome.output_token_ids.get_or_insert_with(Vec::new);
                    if all.len() + ids.len() > MAX_TOKEN_IDS {
                        return Err(stream_failure(format!("more than {MAX_TOKEN_IDS} generated token ids")));
                    }
                    all.extend(ids);
                }
                if !chunk.content.is_empty() {
                    outcome.timing.first_token_ms.get_or_insert(at);
                    outcome.timing.content_chunk_ms.push(at);
                    outcome.output_chunks += 1;
                    outcome.text.push_str(&chunk.content);
                    if outcome.text.len() as u64 > MAX_STREAM_BYTES {
                        return Err(stream_failure(format!("answer longer than {MAX_STREAM_BYTES} bytes (the body limit)")));
                    }
                }
                if let Some(u) = chunk.usage {
                    outcome.usage = u;
                    outcome.usage_problem = chunk.usage_problem;
                }
            }
            events.clear();
        }
        if !done {
            return Err(Failure(Status::Stream, None, "stream ended before data: [DONE]".into()));
        }
        Ok(())
    }
}

fn first_token_timeout(config: &ClientConfig) -> Failure {
    Failure(Status::Timeout, None, format!("no first token within {:?}", config.first_token_timeout))
}

fn classify_reqwest(e: reqwest::Error) -> Failure {
    let status = if e.is_connect() {
        Status::Connect
    } else if e.is_timeout() {
        Status::Timeout
    } else {
        Status::Stream
    };
    Failure(status, None, error_chain(&e))
}

/// An error with its causes, `: `-joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// The `error.message` of an OpenAI-style error body, else the body itself.
fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| truncate(body, 300).to_string());
    format!("HTTP {}: {message}", status.as_u16())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_its_fields_and_its_hash_is_the_prompts() {
        let messages = [ChatMessage::new("system", "Quote \"this\"\\n\u{1}é"), ChatMessage::new("user", "and 日本")];
        let body = RequestBody {
            model: "m",
            max_tokens: 7,
            stream: true,
            stream_options: StreamOptions { include_usage: true },
            messages: Some(&messages),
            prompt: None,
            ignore_eos: true,
            return_token_ids: false,
        };
        let (bytes, hash) = body.encode().unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(sent, serde_json::to_value(body).unwrap());
        assert_eq!(hash, prompt_sha256(Some(&messages), None));
        let completion = RequestBody { messages: None, prompt: Some("a \"prompt\""), ..body };
        let (bytes, hash) = completion.encode().unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(), serde_json::to_value(completion).unwrap());
        assert_eq!(hash, prompt_sha256(None, Some("a \"prompt\"")));
    }
}
