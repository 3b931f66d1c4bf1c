//! vLLM-shaped error responses: `{"error":{"message","type","param","code"}}` with vLLM's status
//! codes, for every part of the server that refuses a request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// vLLM's OpenAI error body: `{"error":{"message","type","param","code"}}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Response {
    let kind = match status.as_u16() {
        400 => "BadRequestError",
        404 => "NotFoundError",
        503 => "ServiceUnavailableError",
        _ => "InternalServerError",
    };
    let body = json!({"error": {"message": message.into(), "type": kind, "param": param, "code": status.as_u16()}});
    (status, axum::Json(body)).into_response()
}

pub(super) fn bad_request(message: impl Into<String>, param: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, message, param)
}

/// 503: the waiting queue is full.
pub(super) fn unavailable(msg: &str) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, msg, None)
}
