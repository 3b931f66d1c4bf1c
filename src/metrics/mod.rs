//! What turnbench observes beside the requests: the server's /metrics.

pub mod server;
