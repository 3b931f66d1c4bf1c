//! `turnbench setup` downloads against a small server speaking the part of the Hugging Face hub
//! protocol turnbench and hf-hub use (see `setup_hub`), started on 127.0.0.1 port 0 by each test.

mod setup_hub;

use std::path::Path;

use setup_hub::{start, tiny_files, Hub, COMMIT, REPO};
use turnbench::hub::{download, resolve_model_in, Catalog, DownloadRequest, HubConfig};

fn hub_config(endpoint: &str, cache: &Path, token: Option<&str>) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        token: token.map(str::to_string),
        retry_attempts: 1,
        chunk_bytes: 10_000_000,
    }
}

/// Where the tiny repo's snapshot lands in `cache` (Python huggingface_hub's layout).
fn snapshot_in(cache: &Path) -> std::path::PathBuf {
    cache.join("models--tiny-org--tiny-model/snapshots").join(COMMIT)
}

fn request(include: &[&str]) -> DownloadRequest {
    DownloadRequest {
        repo: REPO.into(),
        revision: "main".into(),
        include: include.iter().map(|s| s.to_string()).collect(),
        offline: false,
    }
}

#[tokio::test]
async fn full_snapshot_then_second_run_fetches_nothing() {
    let (endpoint, hub) = start(Hub { files: tiny_files(), ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let hf = hub_config(&endpoint, cache.path(), None);
    let first = download(&hf, &request(&["*.json", "*.safetensors"]), None).await.unwrap();
    assert_eq!(first.files, 3);
    assert_eq!(first.fetched_files, 3);
    let snapshot = snapshot_in(cache.path());
    assert_eq!(first.snapshot, snapshot);
    for (name, body) in tiny_files() {
        let path = snapshot.join(&name);
        if name == "README.md" {
            assert!(!path.exists(), "README.md is not included");
            continue;
        }
        assert_eq!(std::fs::read(&path).unwrap(), body, "{name}");
        // Python huggingface_hub layout: the snapshot entry links to a blob named by its ETag.
        assert!(path.symlink_metadata().unwrap().file_type().is_symlink(), "{name} is a symlink");
        assert_eq!(std::fs::canonicalize(&path).unwrap().parent().unwrap().file_name().unwrap(), "blobs");
    }
    assert_eq!(std::fs::read_to_string(cache.path().join("models--tiny-org--tiny-model/refs/main")).unwrap(), COMMIT);
    let mb = first.fetched_bytes as f64 / 1e6;
    eprintln!("fixture download: {mb:.1} MB in {:?} = {:.1} MB/s", first.elapsed, mb / first.elapsed.as_secs_f64());

    let gets_before = hub.lock().unwrap().gets.clone();
    assert_eq!(gets_before.values().sum::<u32>(), 3);
    let second = download(&hf, &request(&["*.json", "*.safetensors"]), None).await.unwrap();
    assert_eq!(second.fetched_files, 0);
    assert_eq!(second.fetched_bytes, 0);
    assert_eq!(hub.lock().unwrap().gets, gets_before, "second run fetched a file body");

    // `run --model` finds it by repo id, and the catalog name resolves through the catalog.
    let catalog = Catalog::parse(
        "test",
        &format!(
            "recommended = \"tiny\"\n[[models]]\nname = \"tiny\"\nrepo = \"{REPO}\"\ninclude = [\"*\"]\nchat_template = \"chatml\"\ncontext_length = 2048\nmin_gpu_memory_gib = 1\n"
        ),
    )
    .unwrap();
    assert_eq!(resolve_model_in(&catalog, "tiny", cache.path()), Some(snapshot.clone()));
    assert_eq!(resolve_model_in(&catalog, REPO, cache.path()), Some(snapshot.clone()));
    // The model's own template is found in the snapshot.
    let template = turnbench::template::ChatTemplate::from_path(&snapshot).unwrap();
    assert_eq!(template.render(&[turnbench::core::ChatMessage::new("user", "hi")], true).unwrap(), "hi");
}

#[tokio::test]
async fn offline_uses_only_the_cache() {
    let (endpoint, hub) = start(Hub { files: tiny_files(), ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let hf = hub_config(&endpoint, cache.path(), None);
    let mut req = request(&["*.json"]);
    req.offline = true;
    let err = format!("{:#}", download(&hf, &req, None).await.unwrap_err());
    assert!(err.contains("offline") && err.contains("not in the cache"), "{err}");
    assert!(hub.lock().unwrap().auth_seen.is_empty(), "offline mode talked to the hub");

    req.offline = false;
    download(&hf, &req, None).await.unwrap();
    let seen = hub.lock().unwrap().auth_seen.len();
    // Offline again, with the hub unreachable: found in the cache.
    req.offline = true;
    let hf_unreachable = hub_config("http://127.0.0.1:9", cache.path(), None);
    let found = download(&hf_unreachable, &req, None).await.unwrap();
    assert_eq!(found.files, 2);
    assert_eq!(found.fetched_files, 0);
    assert_eq!(hub.lock().unwrap().auth_seen.len(), seen);
}

#[tokio::test]
async fn missing_repo_is_a_clear_404() {
    let (endpoint, _hub) = start(Hub { files: tiny_files(), ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let mut req = request(&[]);
    req.repo = "tiny-org/no-such-model".into();
    let err = download(&hub_config(&endpoint, cache.path(), None), &req, None).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("no such model repo") && text.contains("404"), "{text}");
    assert_eq!(turnbench::core::error::exit_code(&err), 2);
}

#[tokio::test]
async fn missing_file_is_a_clear_404() {
    let (endpoint, _hub) = start(Hub { files: tiny_files(), ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let hf = hub_config(&endpoint, cache.path(), None);
    let text = format!("{:#}", download(&hf, &request(&["pytorch_model.bin"]), None).await.unwrap_err());
    assert!(text.contains("no file matches") && text.contains("404"), "{text}");

    // Listed by the tree but 404 at the resolve endpoint.
    let (endpoint, _hub) =
        start(Hub { files: tiny_files(), resolve_404: vec!["config.json".into()], ..Default::default() }).await;
    let hf = hub_config(&endpoint, cache.path(), None);
    let text = format!("{:#}", download(&hf, &request(&["*.json"]), None).await.unwrap_err());
    assert!(text.contains("config.json") && text.contains("404"), "{text}");
}

#[tokio::test]
async fn gated_repo_401_without_token_and_token_is_sent() {
    let (endpoint, hub) = start(Hub { files: tiny_files(), token: Some("hf_secret".into()), ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    // The config carries no token (HF_TOKEN in the environment is read only by HubConfig::from_env).
    let err = download(&hub_config(&endpoint, cache.path(), None), &request(&["*.json"]), None).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("401") && text.contains("HF_TOKEN"), "{text}");
    assert_eq!(turnbench::core::error::exit_code(&err), 2);

    let err = download(&hub_config(&endpoint, cache.path(), Some("hf_wrong")), &request(&["*.json"]), None).await.unwrap_err();
    assert!(format!("{err:#}").contains("403"), "{err:#}");

    hub.lock().unwrap().auth_seen.clear();
    download(&hub_config(&endpoint, cache.path(), Some("hf_secret")), &request(&["*.json"]), None).await.unwrap();
    let seen = hub.lock().unwrap().auth_seen.clone();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.iter().all(|a| a.as_deref() == Some("Bearer hf_secret")), "{seen:?}");
}

#[tokio::test]
async fn interrupted_transfer_completes_on_rerun() {
    let (endpoint, hub) = start(Hub {
        files: tiny_files(),
        cut_first_get_of: Some("model.safetensors".into()),
        ..Default::default()
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    let hf = hub_config(&endpoint, cache.path(), None);
    let err = download(&hf, &request(&["*.json", "*.safetensors"]), None).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("run the same command again"), "{text}");
    let snapshot = snapshot_in(cache.path());
    assert!(!snapshot.join("model.safetensors").exists(), "a cut file must not look complete");

    // Downloads run in parallel and hf-hub's transfers can outlive the error it returns: wait
    // until the hub has seen no new request for a while before taking stock.
    let mut settled = hub.lock().unwrap().gets.clone();
    let mut quiet = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = hub.lock().unwrap().gets.clone();
        quiet = if now == settled { quiet + 1 } else { 0 };
        if quiet == 5 {
            break;
        }
        settled = now;
    }
    let gets_before = hub.lock().unwrap().gets.clone();
    // When the cut aborts the first run, other files may not have finished (or started). What
    // counts: a file complete after the first run is not fetched again, and every other file is
    // fetched exactly once more.
    let complete_before: Vec<String> =
        tiny_files().keys().filter(|f| snapshot.join(f.as_str()).is_file()).cloned().collect();
    let done = download(&hf, &request(&["*.json", "*.safetensors"]), None).await.unwrap();
    let weights = tiny_files().remove("model.safetensors").unwrap();
    assert_eq!(std::fs::read(snapshot.join("model.safetensors")).unwrap(), weights);
    let gets_after = hub.lock().unwrap().gets.clone();
    // Only incomplete files are fetched again.
    assert!(!complete_before.contains(&"model.safetensors".to_string()));
    for (file, n) in &gets_after {
        let before = gets_before.get(file).copied().unwrap_or(0);
        let expected = if complete_before.contains(file) { before } else { before + 1 };
        assert_eq!(*n, expected, "{file}: {gets_before:?} → {gets_after:?}");
    }
    assert_eq!(done.fetched_files, gets_after.values().sum::<u32>() as usize - gets_before.values().sum::<u32>() as usize);
    assert!(std::fs::read_dir(cache.path().join("models--tiny-org--tiny-model/blobs"))
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".incomplete")));
}

#[tokio::test]
async fn a_cached_file_cut_short_is_fetched_again() {
    let (endpoint, hub) = start(Hub { files: tiny_files(), ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let hf = hub_config(&endpoint, cache.path(), None);
    download(&hf, &request(&["*.safetensors"]), None).await.unwrap();
    // Simulate a truncated blob (e.g. a crash of another tool between write and fsync).
    let link = snapshot_in(cache.path()).join("model.safetensors");
    let blob = std::fs::canonicalize(&link).unwrap();
    let full = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &full[..1000]).unwrap();
    let done = download(&hf, &request(&["*.safetensors"]), None).await.unwrap();
    assert_eq!(done.fetched_files, 1);
    assert_eq!(std::fs::read(&link).unwrap(), full);
    assert_eq!(hub.lock().unwrap().gets["model.safetensors"], 2);
}

#[tokio::test]
async fn no_network_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens.
    let err = download(&hub_config("http://127.0.0.1:9", cache.path(), None), &request(&[]), None).await.unwrap_err();
    // The first line a user reads says what to do; reqwest's error follows as the cause.
    let text = err.to_string();
    assert!(text.contains("cannot reach") && text.contains("--offline"), "{err:#}");
}

#[tokio::test]
async fn escaping_repo_ids_and_revisions_are_refused() {
    let cache = tempfile::tempdir().unwrap();
    let hf = hub_config("http://127.0.0.1:9", cache.path(), None);
    for (repo, revision) in [("../../etc", "main"), ("org/..", "main"), (REPO, "../../../tmp/x"), (REPO, "/abs")] {
        let req = DownloadRequest { repo: repo.into(), revision: revision.into(), include: vec![], offline: false };
        let err = download(&hf, &req, None).await.unwrap_err();
        assert_eq!(turnbench::core::error::exit_code(&err), 2, "{repo}@{revision}: {err:#}");
        let says = if repo == REPO { "would escape the cache folder" } else { "is not a Hugging Face repo id" };
        assert!(format!("{err:#}").contains(says), "{repo}@{revision}: {err:#}");
    }
}

#[tokio::test]
async fn a_tree_path_escaping_the_cache_is_refused() {
    let mut files = tiny_files();
    files.insert("../../escape.json".to_string(), b"{}".to_vec());
    let (endpoint, _hub) = start(Hub { files, ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let err = download(&hub_config(&endpoint, cache.path(), None), &request(&["*"]), None).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("escape"), "{text}");
    assert!(!cache.path().join("models--tiny-org--tiny-model").join("escape.json").exists());
}

#[tokio::test]
async fn an_interrupted_file_resumes_from_its_last_complete_chunk() {
    let (endpoint, hub) = start(Hub {
        files: tiny_files(),
        cut_first_get_of: Some("model.safetensors".into()),
        ..Default::default()
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    // 3 MiB in 1 MiB chunks: the cut one is the second or third; the first is committed.
    let hf = HubConfig { chunk_bytes: 1 << 20, ..hub_config(&endpoint, cache.path(), None) };
    download(&hf, &request(&["*.safetensors"]), None).await.unwrap_err();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let served_first = hub.lock().unwrap().bytes_served.get("model.safetensors").copied().unwrap_or(0);
    let done = download(&hf, &request(&["*.safetensors"]), None).await.unwrap();
    let weights = tiny_files().remove("model.safetensors").unwrap();
    let snapshot = snapshot_in(cache.path());
    assert_eq!(std::fs::read(snapshot.join("model.safetensors")).unwrap(), weights);
    let served_again = hub.lock().unwrap().bytes_served["model.safetensors"] - served_first;
    assert_eq!(done.fetched_bytes, served_again, "fetched_bytes counts what this run transferred, not what it resumed from");
    assert!(
        served_again < weights.len() as u64 && served_again >= 1 << 20,
        "the second run fetched {served_again} of {} bytes: it should resume, not restart",
        weights.len()
    );
}

#[tokio::test]
async fn a_cut_transfer_is_retried_within_one_run() {
    let (endpoint, hub) = start(Hub {
        files: tiny_files(),
        cut_first_get_of: Some("model.safetensors".into()),
        ..Default::default()
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    let hf = HubConfig { retry_attempts: 3, ..hub_config(&endpoint, cache.path(), None) };
    let done = download(&hf, &request(&["*.safetensors"]), None).await.unwrap();
    assert_eq!(done.files, 1);
    assert!(hub.lock().unwrap().cut_first_get_of.is_none(), "the transfer was never cut");
    let snapshot = snapshot_in(cache.path());
    assert_eq!(std::fs::read(snapshot.join("model.safetensors")).unwrap(), tiny_files().remove("model.safetensors").unwrap());
}

#[tokio::test]
async fn a_paginated_listing_is_followed_to_its_end() {
    let (endpoint, _hub) = start(Hub { files: tiny_files(), page_size: 1, ..Default::default() }).await;
    let cache = tempfile::tempdir().unwrap();
    let done = download(&hub_config(&endpoint, cache.path(), None), &request(&[]), None).await.unwrap();
    assert_eq!(done.files, tiny_files().len());
}
