//! What turnbench observes beside the requests: the server's /metrics, the machine, the GPUs
//! (samplers → timeline), and the joins of those samples onto the records.

pub mod gpu;
pub mod monitor;
pub mod sampler;
pub mod system;
