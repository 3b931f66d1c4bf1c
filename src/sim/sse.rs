//! How a job's answer goes out: as a stream of vLLM-shaped SSE chunks, or as one JSON body
//! after the same simulated time.

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::errors::error;
use super::histogram::{Histogram, ITL_BUCKETS};
use super::jobs::{Job, Kind};

fn sse_headers(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response", None))
}

/// Frames are flushed at this size when nothing sleeps between tokens.
const FRAME_BYTES: usize = 32 * 1024;

/// The SSE answer. Each event is `data: {head}{choices…}}\n\n` where `head` (id, object,
/// created, model) is serialised once per request; the words need no JSON escaping.
pub(super) fn sse_response(job: Job) -> Response {
    let stream = async_stream::stream! {
        job.prefill().await;
        let object = if job.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let head = format!(
            r#"data: {{"id":"{}","object":"{object}","created":{},"model":{},"choices":"#,
            job.id, job.created, job.s.model_json
        );
        // A content event: `open` word `close` [`,"token_ids":[id]`] `end`.
        let (open, close, close_last, end): (&[u8], &[u8], &[u8], &[u8]) = if job.kind == Kind::Chat {
            (
                br#"[{"index":0,"delta":{"content":""#,
                b"\"},\"logprobs\":null,\"finish_reason\":null",
                b"\"},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null",
                b"}]}\n\n",
            )
        } else {
            (
                br#"[{"index":0,"text":""#,
                b"\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null",
                b"\",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null",
                b"}]}\n\n",
            )
        };
        let per_event = head.len() + open.len() + close_last.len() + end.len() + 24;
        let n = job.max_tokens;
        let mut buf = BytesMut::with_capacity((per_event * (n + 2)).min(FRAME_BYTES + per_event));
        // `return_token_ids`: the prompt's ids come once, first (vLLM: top level of the first chat
        // chunk; in the first choice of a completion stream).
        let prompt_ids = job.return_token_ids.then(|| id_list(&job.tokens));
        if job.kind == Kind::Chat {
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(br#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]"#);
            if let Some(ids) = &prompt_ids {
                buf.extend_from_slice(b",\"prompt_token_ids\":");
                buf.extend_from_slice(ids.as_bytes());
            }
            buf.extend_from_slice(b"}\n\n");
        }
        let lat = job.s.cfg.latency;
        let sleeps = !lat.decode_is_zero();
        let mut itl = Histogram::new(ITL_BUCKETS);
        let mut next = Instant::now();
        let mut last = next;
        for i in 0..n {
            if sleeps && i > 0 {
                if !buf.is_empty() {
                    yield Ok::<Bytes, std::io::Error>(buf.split().freeze());
                }
                next += lat.inter_token(job.running());
                tokio::time::sleep_until(next).await;
                let now = Instant::now();
                itl.observe((now - last).as_secs_f64());
                last = now;
            }
            if job.drop_at == Some(i) {
                if !buf.is_empty() {
                    yield Ok(buf.split().freeze());
                }
                // Let the connection write what it has (headers included) before it is cut.
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                yield Err(std::io::Error::other("turnbench sim: injected connection drop (--drop-rate)"));
                return;
            }
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(open);
            buf.extend_from_slice(job.word(i).as_bytes());
            buf.extend_from_slice(if i + 1 == n { close_last } else { close });
            if job.return_token_ids {
                if i == 0 && job.kind == Kind::Completion {
                    buf.extend_from_slice(b",\"prompt_token_ids\":");
                    buf.extend_from_slice(prompt_ids.as_deref().unwrap_or("[]").as_bytes());
                }
                buf.extend_from_slice(format!(",\"token_ids\":[{}]", job.output_id(i)).as_bytes());
            }
            buf.extend_from_slice(end);
            if buf.len() >= FRAME_BYTES {
                yield Ok(buf.split().freeze());
            }
        }
        if !sleeps {
            itl.observe_n(0.0, n.saturating_sub(1) as u64);
        }
        job.finish(&itl);
        if job.include_usage {
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(b"[],\"usage\":");
            buf.extend_from_slice(job.usage_json().as_bytes());
            buf.extend_from_slice(b"}\n\n");
        }
        buf.extend_from_slice(b"data: [DONE]\n\n");
        yield Ok(buf.freeze());
    };
    sse_headers(Body::from_stream(stream))
}

/// The whole answer at once, after the same simulated time as a stream.
pub(super) async fn json_response(job: Job) -> Response {
    job.prefill().await;
    let lat = job.s.cfg.latency;
    let mut itl = Histogram::new(ITL_BUCKETS);
    if lat.decode_is_zero() {
        itl.observe_n(0.0, job.max_tokens.saturating_sub(1) as u64);
    } else {
        let mut next = Instant::now();
        for _ in 1..job.max_tokens {
            let gap = lat.inter_token(job.running());
            itl.observe(gap.as_secs_f64());
            next += gap;
            tokio::time::sleep_until(next).await;
        }
    }
    let mut text = String::with_capacity(job.max_tokens * 7);
    for i in 0..job.max_tokens {
        text.push_str(job.word(i));
    }
    job.finish(&itl);
    let usage: Value = serde_json::from_str(&job.usage_json()).unwrap_or(Value::Null);
    let model = &job.s.cfg.model_name;
    let output_ids: Vec<u32> = (0..job.max_tokens).map(|i| job.output_id(i)).collect();
    let body = if job.kind == Kind::Chat {
        json!({
            "id": job.id, "object": "chat.completion", "created": job.created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null, "annotations": null,
                            "audio": null, "function_call": null, "tool_calls": [], "reasoning_content": null},
                "logprobs": null, "finish_reason": "length", "stop_reason": null
            }],
            "service_tier": null, "system_fingerprint": null, "usage": usage, "prompt_logprobs": null,
            "kv_transfer_params": null
        })
    } else {
        json!({
            "id": job.id, "object": "text_completion", "created": job.created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length",
                         "stop_reason": null, "prompt_logprobs": null}],
            "service_tier": null, "system_fingerprint": null, "usage": usage, "kv_transfer_params": null
        })
    };
    let mut body = body;
    if job.return_token_ids {
        body["choices"][0]["token_ids"] = json!(output_ids);
        if job.kind == Kind::Chat {
            body["prompt_token_ids"] = json!(job.tokens);
        } else {
            body["choices"][0]["prompt_token_ids"] = json!(job.tokens);
        }
    }
    axum::Json(body).into_response()
}

/// `[1,2,3]`.
fn id_list(ids: &[u32]) -> String {
    let mut out = String::with_capacity(ids.len() * 7 + 2);
    out.push('[');
    for (k, id) in ids.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}
