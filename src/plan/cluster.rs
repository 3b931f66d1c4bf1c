//! `--shard`, `--run-id`, `--start-at` and `--metrics-url` → which share of the work this
//! process runs, when it starts, and which replicas it scrapes.

use anyhow::Result;
use serde_json::json;

use super::{LevelsPlan, SchedulePlan};
use crate::cli::ClusterArgs;
use crate::core::hash::sha256_hex;
use crate::core::results::ShardInfo;
use crate::core::UsageError;
use crate::workload::sources::Source;

/// The Kubernetes Indexed Job variable `--shard job/N` reads (0-based).
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Shards one run may have.
pub const MAX_SHARDS: u32 = 10_000;
/// How far in the past `--start-at` may be (clock skew between machines, a slow pod start).
pub const START_AT_GRACE_S: i64 = 5;
/// Replicas one run may scrape.
pub const MAX_METRICS_URLS: usize = 256;

pub struct ClusterPlan {
    pub shard: Option<ShardInfo>,
    pub start_at: Option<jiff::Timestamp>,
    pub metrics_urls: Vec<String>,
}

impl ClusterPlan {
    /// What the manifest's `settings.cluster` records.
    pub fn settings(&self) -> serde_json::Value {
        json!({
            "shard": self.shard.as_ref().map(|s| format!("{}/{}", s.index, s.count)),
            "run_id": self.shard.as_ref().map(|s| s.run_id.clone()),
            "start_at": self.start_at.map(|t| t.to_string()),
            "metrics_urls": self.metrics_urls,
        })
    }
}

pub fn plan(
    args: &ClusterArgs,
    schedule: &SchedulePlan,
    settings: &serde_json::Value,
    seed: u64,
    source: &Source,
    managed: bool,
) -> Result<ClusterPlan> {
    // Shards share one server they do not own; replicas are behind an endpoint turnbench did not
    // start. A managed engine per shard would be N servers each offered 1/N of the load.
    if managed && args.shard.is_some() {
        return Err(UsageError::new("--shard splits the load on one server: it needs --endpoint URL (each shard would start a server of its own)").into());
    }
    if managed && !args.metrics_urls.is_empty() {
        return Err(UsageError::new("--metrics-url names the replicas behind an --endpoint; a managed engine is one server (its /metrics is read already)").into());
    }
    let start_at = args.start_at.as_deref().map(start_at).transpose()?;
    let metrics_urls = metrics_urls(&args.metrics_urls)?;
    let shard = match (&args.shard, &args.run_id) {
        (None, None) => None,
        (None, Some(_)) => return Err(UsageError::new("--run-id names the shards of one run: it needs --shard I/N").into()),
        (Some(_), None) => {
            return Err(UsageError::new("--shard needs --run-id ID, the same for every shard of the run (`turnbench merge` checks it)").into())
        }
        (Some(spec), Some(id)) => {
            let (index, count) = parse_shard(spec, std::env::var(JOB_INDEX_ENV).ok().as_deref())?;
            check_run_id(id)?;
            // Everything the shards must share: the resolved settings (no shard in them yet), the
            // seed and the data files' contents.
            let files: Vec<String> = source.files().into_iter().map(|f| f.sha256).collect();
            let plan_hash = sha256_hex(json!({"settings": settings, "seed": seed, "data": files}).to_string().as_bytes());
            let shard = ShardInfo { index, count, run_id: id.clone(), plan_hash };
            if let SchedulePlan::Load(load) = schedule {
                check_load_split(&shard, &load.levels, load.max_active)?;
            }
            Some(shard)
        }
    };
    Ok(ClusterPlan { shard, start_at, metrics_urls })
}

/// `I/N` (1-based) or `job/N` (I = `JOB_COMPLETION_INDEX` + 1).
fn parse_shard(spec: &str, job_index: Option<&str>) -> Result<(u32, u32)> {
    let bad = |why: &str| -> anyhow::Error { UsageError::new(format!("--shard {spec}: {why}")).into() };
    let (i, n) = spec.split_once('/').ok_or_else(|| bad("expected I/N (e.g. 2/4) or job/N"))?;
    let count: u32 = n.trim().parse().map_err(|_| bad("N must be a whole number"))?;
    if count == 0 || count > MAX_SHARDS {
        return Err(bad(&format!("N must be between 1 and {MAX_SHARDS}")));
    }
    let index = if i.trim() == "job" {
        let raw = job_index.ok_or_else(|| bad(&format!("{JOB_INDEX_ENV} is not set (job/N is for a Kubernetes Indexed Job)")))?;
        let k: u32 =
            raw.trim().parse().map_err(|_| bad(&format!("{JOB_INDEX_ENV}={raw:?} is not a whole number")))?;
        k.checked_add(1).ok_or_else(|| bad(&format!("{JOB_INDEX_ENV}={raw} is out of range")))?
    } else {
        i.trim().parse().map_err(|_| bad("I must be a whole number (1-based) or `job`"))?
    };
    if index == 0 || index > count {
        return Err(bad(&format!("shard {index} of {count}: I must be between 1 and N")));
    }
    Ok((index, count))
}

fn check_run_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "--run-id {id:?}: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.` (it names a folder)"
        ))
        .into())
    }
}

/// Every shard must get at least one client, and a level's rates must be the same in every
/// shard (an automatic sweep picks its rates from what its own shard measured).
fn check_load_split(shard: &ShardInfo, levels: &LevelsPlan, max_active: Option<usize>) -> Result<()> {
    match levels {
        LevelsPlan::SweepAuto { .. } => Err(UsageError::new(
            "--sweep auto with --shard: each shard would pick its own rates from what it measured; give the rates with --qps R1,R2,… (each shard offers 1/N of each)",
        )
        .into()),
        LevelsPlan::Closed(c) if *c < shard.count as usize => Err(UsageError::new(format!(
            "--concurrency {c} over {} shards leaves some shard without a client: use at least one client per shard",
            shard.count
        ))
        .into()),
        _ => match max_active {
            Some(m) if m < shard.count as usize => Err(UsageError::new(format!(
                "--max-active-conversations {m} over {} shards leaves some shard without a conversation",
                shard.count
            ))
            .into()),
            _ => Ok(()),
        },
    }
}

fn start_at(text: &str) -> Result<jiff::Timestamp> {
    let t: jiff::Timestamp = text.parse().map_err(|e| {
        UsageError::new(format!("--start-at {text:?}: not an RFC 3339 time such as 2026-12-02T10:00:00Z ({e})"))
    })?;
    let ahead_s = t.as_second() - jiff::Timestamp::now().as_second();
    if ahead_s < -START_AT_GRACE_S {
        return Err(UsageError::new(format!(
            "--start-at {text}: {}s ago; shards that start late would not begin together (pick a time ahead)",
            -ahead_s
        ))
        .into());
    }
    if ahead_s > 7 * 24 * 3600 {
        return Err(UsageError::new(format!("--start-at {text}: more than a week ahead")).into());
    }
    Ok(t)
}

fn metrics_urls(urls: &[String]) -> Result<Vec<String>> {
    if urls.len() > MAX_METRICS_URLS {
        return Err(UsageError::new(format!("--metrics-url: at most {MAX_METRICS_URLS} replicas")).into());
    }
    for u in urls {
        let parsed = reqwest::Url::parse(u)
            .map_err(|e| UsageError::new(format!("--metrics-url {u}: not a URL ({e}); e.g. http://10.0.0.5:8000/metrics")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(UsageError::new(format!("--metrics-url {u}: needs an http:// or https:// URL with a host")).into());
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = urls.iter().find(|u| !seen.insert(u.as_str())) {
        return Err(UsageError::new(format!("--metrics-url {dup}: given twice")).into());
    }
    Ok(urls.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs() {
        assert_eq!(parse_shard("2/4", None).unwrap(), (2, 4));
        assert_eq!(parse_shard("job/4", Some("3")).unwrap(), (4, 4));
        for (spec, env) in [("0/4", None), ("5/4", None), ("1/0", None), ("x/2", None), ("2", None), ("job/4", None), ("job/4", Some("4")), ("job/4", Some("-1"))] {
            let err = parse_shard(spec, env).unwrap_err();
            assert_eq!(crate::core::error::exit_code(&err), 2, "{spec} {env:?}");
            assert!(format!("{err}").contains("--shard"), "{err}");
        }
    }

    #[test]
    fn run_ids_name_folders() {
        assert!(check_run_id("bench-2026.12_a").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn start_at_must_be_ahead_or_nearly_now() {
        let soon = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(30)).unwrap();
        assert!(start_at(&soon.to_string()).is_ok());
        let past = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(60)).unwrap();
        assert!(format!("{}", start_at(&past.to_string()).unwrap_err()).contains("ago"));
        assert!(start_at("tomorrow").is_err());
    }

    #[test]
    fn metrics_urls_are_checked() {
        assert!(metrics_urls(&["http://10.0.0.1:8000/metrics".into()]).is_ok());
        assert!(metrics_urls(&["ftp://x/metrics".into()]).is_err());
        assert!(metrics_urls(&["not a url".into()]).is_err());
        assert!(metrics_urls(&["http://a/m".into(), "http://a/m".into()]).is_err());
    }
}
