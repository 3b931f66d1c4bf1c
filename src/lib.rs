//! turnbench: replay multi-turn conversations against an LLM server and report, turn by turn,
//! how fast it answered and how much of each prompt its prefix cache reused.
//!
//! `main.rs` only parses; [`run`] is the whole tool, so tests drive it in-process. The modules
//! are layers, bottom up (every import points down; `tests/layering.rs` checks it):
//! `core` → `workload`, `template`, `hub`, `ledger` → `client` → `engine` → `metrics` → `replay`
//! → `schedule` → `analysis` → `report` → `plan` → `run` → `commands`; `sim` uses `core` only;
//! `cli` holds clap types, read only by `plan` and `commands`.

pub mod analysis;
pub mod cli;
pub mod client;
pub mod commands;
pub mod core;
pub mod engine;
pub mod ledger;
pub mod merge;
pub mod metrics;
pub mod hub;
pub mod plan;
pub mod replay;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sim;
pub mod template;
pub mod workload;

/// Every binary that links turnbench (the tool, its benches and tests) allocates through
/// mimalloc, so a bench measures the allocator the tool ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use commands::{main_with, run};
pub use core::error::UsageError;
