//! `turnbench setup`: the model catalog (`configs/models.toml`) and downloads through hf-hub into
//! the cache Python's huggingface_hub uses (`models--org--name/{blobs,snapshots,refs}`), so a
//! model fetched by any tool is found here and nothing is fetched twice.
//!
//! hf-hub 1.0 does not resume a partial plain-HTTP download: it restarts that file from byte 0
//! (`<blob>.incomplete` is truncated), and it never checks a finished file's size.
//! [`download`](fn@download) therefore lists the files itself first (sizes from the tree API),
//! drops cached files whose size is wrong, downloads, and checks every size afterwards: an
//! interrupted download completes when run again, re-fetching only the incomplete files.
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
