//! `turnbench setup`: the model catalog (`configs/models.toml`) and downloads through hf-hub into
//! the cache Python's huggingface_hub uses (`models--org--name/{blobs,snapshots,refs}`), so a
//! model fetched by any tool is found here and nothing is fetched twice.
//!
//! hf-hub (0.5, tokio API, rustls) fetches each file in parallel range requests into
//! `<blob>.sync.part` and resumes from its last complete chunk; it never checks a finished file's
//! size and has no listing with sizes. [`download`](fn@download) therefore lists the files itself
//! (commit and sizes from the revision and tree APIs), drops cached files whose size is wrong,
//! downloads the missing ones (retrying transient failures, each retry resuming), and checks
//! every size afterwards: an interrupted download completes when run again.
//!
//! Why 0.5 and not 1.0: 1.0 always builds the Xet transfer stack (~270 of the 464 crates the
//! lock file had, and the C build of aws-lc), for a protocol that matters on multi-GB files
//! from huggingface.co; plain HTTP range requests in parallel are what local mirrors and
//! `HF_ENDPOINT` proxies serve anyway.
//!
//! Everything environmental (endpoint, cache folder, token) is passed in a [`HubConfig`];
//! only [`HubConfig::from_env`] reads the environment, so tests can run in parallel.
//!
//! Layout: `catalog` (the catalog, repo id and path checks), `cache` (the cache layout, lookups,
//! sizes, free space), `download` (hf-hub, the only user of it), `progress` (terminal bars). The
//! `setup` command itself is `crate::commands::setup`. Everything public is re-exported here: use
//! `crate::hub::…`, not the files.

mod cache;
mod catalog;
mod download;
mod progress;

pub use cache::{
    cached_snapshot, check_free_space, human_bytes, repo_folder, resolve_model, resolve_model_in, snapshot_size,
    HubConfig, DEFAULT_ENDPOINT,
};
pub use catalog::{validate_repo_id, validate_repo_path, Catalog, CatalogModel, BUILTIN_CATALOG};
pub use download::{download, DownloadObserver, DownloadRequest, Downloaded};

pub(crate) use catalog::default_revision;
pub(crate) use progress::Bars;
