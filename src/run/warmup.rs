//! Warm-up requests: they pay one-time costs (connections, compilation) and are recorded with
//! `warmup: true`, so statistics leave them out. Their prompt shares no prefix with any workload.

use anyhow::Result;

use crate::client::Client;
use crate::core::record::{Recorder, TurnRecord};
use crate::core::ChatMessage;
use crate::replay::{send_prompt, Target};

pub async fn warm_up(client: &Client, server: &Target, recorder: &Recorder, test: u32, count: u32) -> Result<()> {
    for n in 0..count {
        let messages = [ChatMessage::new("user", format!("Warm-up request {n}: reply with a short greeting."))];
        let rendered = server.template.as_ref().map(|t| t.render(&messages, true)).transpose()?;
        let outcome = send_prompt(client, server, &messages, rendered.as_deref(), 8, client.clock().now_ms()).await;
        server.served(&outcome);
        let record = outcome.into_record(TurnRecord {
            test,
            conversation_id: "warmup".into(),
            turn: n + 1,
            warmup: true,
            max_tokens: 8,
            ..Default::default()
        }, server.info.max_model_len);
        recorder.record(record)?;
    }
    Ok(())
}
