//! `turnbench setup`: download a catalog model or repo id, or list the catalog (`--list`).
//!
//! A thin command over `crate::hub`: the catalog, the cache and the download live there.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::cli::SetupArgs;
use crate::hub::{
    cached_snapshot, default_revision, download, human_bytes, snapshot_size, validate_repo_id, Bars, Catalog,
    DownloadObserver, DownloadRequest, HubConfig, DEFAULT_ENDPOINT,
};
use crate::core::UsageError;

/// Runs `turnbench setup`: prints what it fetches (or finds offline), then the `run` command to use.
pub async fn setup(args: SetupArgs) -> Result<()> {
    let catalog = Catalog::load(&args.catalog)?;
    let mut hub = HubConfig::from_env();
    if let Some(dir) = &args.cache_dir {
        hub.cache_dir = dir.clone();
    }
    if args.list {
        print!("{}", render_list(&catalog, &hub.cache_dir));
        return Ok(());
    }
    let wanted = args.model.clone().unwrap_or_else(|| catalog.recommended.clone());
    let entry = catalog.find(&wanted);
    let repo = match entry {
        Some(m) => m.repo.clone(),
        None => {
            validate_repo_id(&wanted).map_err(|e| {
                UsageError::new(format!("{e}; catalog names: {}", catalog.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")))
            })?;
            wanted.clone()
        }
    };
    let request = DownloadRequest {
        repo: repo.clone(),
        revision: args.revision.clone().or_else(|| entry.map(|m| m.revision.clone())).unwrap_or_else(default_revision),
        include: if args.include.is_empty() { entry.map(|m| m.include.clone()).unwrap_or_default() } else { args.include.clone() },
        offline: args.offline,
    };
    eprintln!(
        "{} {}@{} into {}{}",
        if request.offline { "looking up" } else { "downloading" },
        request.repo,
        request.revision,
        hub.cache_dir.display(),
        if hub.endpoint != DEFAULT_ENDPOINT { format!(" from {}", hub.endpoint) } else { String::new() }
    );
    let observer: Option<Arc<dyn DownloadObserver>> = if args.quiet { None } else { Some(Arc::new(Bars::new())) };
    let done = download(&hub, &request, observer).await?;
    let secs = done.elapsed.as_secs_f64().max(1e-6);
    let fetched = if done.fetched_files == 0 {
        "all already in the cache, nothing fetched".to_string()
    } else {
        format!(
            "fetched {} files, {} at {}/s",
            done.fetched_files,
            human_bytes(done.fetched_bytes),
            human_bytes((done.fetched_bytes as f64 / secs) as u64)
        )
    };
    println!(
        "{}@{}: {} files, {} in {} ({fetched})",
        request.repo,
        &done.commit[..done.commit.len().min(12)],
        done.files,
        human_bytes(done.total_bytes),
        done.snapshot.display(),
    );
    let model_arg = match entry {
        Some(m) => m.name.clone(),
        None => request.repo.clone(),
    };
    let has_own_template = crate::template::ChatTemplate::from_path(&done.snapshot).is_ok();
    let template_note = match (has_own_template, entry) {
        (true, _) => "the model's own chat template".to_string(),
        (false, Some(m)) => format!("--chat-template {}", m.chat_template),
        (false, None) => "no chat template found: pass --chat-template for --prompt-mode completion".into(),
    };
    println!("chat template: {template_note}");
    println!("next: turnbench run --engine vllm --model {model_arg}");
    Ok(())
}

/// `setup --list`: the catalog, and what of it is in the cache.
pub fn render_list(catalog: &Catalog, cache: &Path) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["name", "repo", "context", "min GPU", "template", "downloaded", ""]);
    for m in &catalog.models {
        let local = cached_snapshot(cache, &m.repo, &m.revision);
        let downloaded = match &local {
            Some(s) => human_bytes(snapshot_size(s)),
            None => "-".into(),
        };
        let mut notes = Vec::new();
        if m.name == catalog.recommended {
            notes.push("recommended");
        }
        if m.gated {
            notes.push("gated: needs HF_TOKEN");
        }
        table.add_row([
            m.name.clone(),
            m.repo.clone(),
            m.context_length.to_string(),
            format!("{} GiB", m.min_gpu_memory_gib),
            m.chat_template.clone(),
            downloaded,
            notes.join(", "),
        ]);
    }
    format!("{table}\ncache: {}\n", cache.display())
}
