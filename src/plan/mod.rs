//! The plan: `turnbench run`'s flags, the profiles under `configs/`, the data files and the
//! workload become one validated [`Plan`] here, once (ripgrep's `LowArgs` → `HiArgs`). Every usage
//! error (a flag out of range, a flag combination, an unknown conversation id, a template that
//! cannot render the suite, a malformed profile or data file) is found here, before any process is
//! spawned or any folder created, and exits 2. Nothing below this layer sees a clap type.

mod cluster;
mod engine;
mod schedule;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::cli::{self, RunArgs};
use crate::client::ClientConfig;
use crate::core::config::ConfigSource;
use crate::core::results::ShardInfo;
use crate::core::UsageError;
use crate::engine::Engine;
use crate::template::ChatTemplate;
use crate::workload::select::SelectionFilter;
use crate::workload::sources::{Source, WorkloadKind, WorkloadSpec};
use crate::workload::tokens::Estimate;

pub use cluster::MAX_SHARDS;
pub use schedule::{LevelsPlan, LoadPlan};

/// What tests share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A fresh server for every test.
    Test,
    /// One server for the run, its prefix cache reset (and the reset verified) between tests.
    Run,
}

/// How the run starts conversations.
// Built once per run: the size of `LoadPlan` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SchedulePlan {
    /// One conversation after another, one test each, one request in flight (the suite).
    Sequential,
    /// Many users against one server for the whole run: closed loop, open loop, sweeps.
    Load(LoadPlan),
}

/// Everything a run does, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub engine: Engine,
    pub isolation: Isolation,
    pub workload: WorkloadSpec,
    /// The workload's files, read and checked.
    pub source: Source,
    pub filter: SelectionFilter,
    pub schedule: SchedulePlan,
    /// `--prompt-mode completion`: the template every turn is rendered with; `None` in chat mode.
    pub template: Option<Arc<ChatTemplate>>,
    pub client: ClientConfig,
    /// The model name requests carry (`None`: the first one the server lists).
    pub model: Option<String>,
    pub endpoint: Option<String>,
    pub warmup: u32,
    /// Sequential schedule: pause between the turns of a conversation.
    pub think_time: Duration,
    pub seed: u64,
    pub sample_interval: Duration,
    pub allow_busy_gpu: bool,
    /// `--max-error-rate`: the most failed requests (percent of measured) a run may have and
    /// still exit 0.
    pub max_error_rate: Option<f64>,
    /// How long to measure the client's ceiling before the run (`None`: not at all).
    pub calibrate: Option<Duration>,
    pub results_dir: PathBuf,
    pub label: Option<String>,
    /// Print the selected suite and stop.
    pub list_conversations: bool,
    /// `--ab prefix-caching`: after this run, replay its prompts with caching off.
    pub ab: bool,
    /// Write the results exactly here instead of a new timestamped folder (arm B of an A/B).
    pub exact_dir: Option<PathBuf>,
    /// Profiles read for this run, for the manifest.
    pub configs: Vec<ConfigSource>,
    /// The resolved settings, as the manifest records them (secrets redacted).
    pub settings: serde_json::Value,
    /// `--shard I/N`: this process runs share I of N (see [`ShardInfo::owns`], [`ShardInfo::share`]).
    pub shard: Option<ShardInfo>,
    /// `--start-at`: the first measured request waits for this wall-clock time.
    pub start_at: Option<jiff::Timestamp>,
    /// `--metrics-url`: one `/metrics` URL per replica behind the endpoint.
    pub metrics_urls: Vec<String>,
    /// Further `--endpoint`s: after this run, its exact prompts are replayed against each.
    pub compare: Vec<EndpointArm>,
}

/// An endpoint compared with the run's first one (`--endpoint A --endpoint B`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointArm {
    pub url: String,
    pub base_url: String,
    /// Its `--label`: names its results folder inside the run's, `vs-<label>`.
    pub label: String,
}

/// Endpoints one run may compare.
pub const MAX_ENDPOINTS: usize = 8;

impl Plan {
    /// Builds and checks the plan of `turnbench run`. Reads data and profile files; starts no
    /// process, creates no folder.
    pub async fn build(args: &RunArgs) -> Result<Plan> {
        check_numbers(args)?;
        let schedule = schedule::plan(args)?;
        if !matches!(schedule, SchedulePlan::Sequential) && args.think_time_ms > 0.0 {
            return Err(UsageError::new(
                "--think-time-ms applies to single-user runs; many-user runs draw think times from --min-delay / --max-delay",
            )
            .into());
        }
        let isolation = match args.isolation {
            cli::Isolation::Test => Isolation::Test,
            cli::Isolation::Run => Isolation::Run,
        };
        let (engine, configs) = engine::plan(args, isolation)?;
        let ab = args.ab.is_some();
        if ab {
            if engine.without_prefix_caching().is_none() {
                return Err(UsageError::new(
                    "--ab prefix-caching needs a managed engine (--engine sim|vllm): turnbench cannot turn an external server's prefix cache off",
                )
                .into());
            }
            if !matches!(schedule, SchedulePlan::Sequential) {
                return Err(UsageError::new(
                    "--ab replays a single-user run: drop --concurrency / --qps / --sweep (many-user A/B arms would not send the same prompts in the same order)",
                )
                .into());
            }
        }
        let prompt_mode = engine::prompt_mode(args)?;
        let template = template_for(args, prompt_mode)?;
        let workload = workload_spec(args)?;
        let source = Source::load(&workload)?;
        let filter = SelectionFilter {
            conversations: args.selection.conversations.clone(),
            include_tags: args.selection.include_tags.clone(),
            exclude_tags: args.selection.exclude_tags.clone(),
            context_size: args.selection.context_size,
            max_conversations: args.selection.max_conversations,
        };
        // Ids, tags and counts are checked now; whether a conversation fits `--context-size`
        // needs the server's tokenizer and is decided once it is up.
        let static_filter = SelectionFilter { context_size: None, ..filter.clone() };
        let preselected = source.select(&static_filter, &Estimate).await?;
        if let Some(t) = &template {
            crate::template::check_suite(t, preselected.chosen.iter().map(|c| &c.conversation))?;
        }
        let model = match &engine {
            Engine::Vllm { model, .. } => Some(model.clone()),
            _ => args.model.clone(),
        };
        let client = ClientConfig {
            api_key: args.api_key.clone().or_else(|| engine.api_key().map(str::to_string)),
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            first_token_timeout: Duration::from_secs_f64(args.first_token_timeout),
            request_timeout: Duration::from_secs_f64(args.request_timeout),
            ignore_eos: !args.no_ignore_eos,
        };
        let (label, compare) = endpoints(args, &schedule)?;
        let mut settings = settings_json(args, &schedule, prompt_mode);
        let cluster = cluster::plan(&args.cluster, &schedule, &settings, args.seed, &source, engine.is_managed())?;
        if let Some(shard) = &cluster.shard {
            // (`--ab` needs a managed engine, `--shard` an external one: they never meet.)
            let count = preselected.chosen.len();
            if !compare.is_empty() {
                return Err(UsageError::new(
                    "several --endpoint with --shard: compare the endpoints in an unsharded run",
                )
                .into());
            }
            if count < shard.count as usize {
                return Err(UsageError::new(format!(
                    "--shard {}/{}: the selection has only {count} conversations, so some shards would have none (use at most {count} shards)",
                    shard.index, shard.count
                ))
                .into());
            }
        }
        settings["cluster"] = cluster.settings();
        Ok(Plan {
            engine,
            isolation,
            workload,
            source,
            filter,
            schedule,
            template,
            client,
            model,
            endpoint: args.endpoint.first().cloned(),
            warmup: args.warmup,
            think_time: Duration::from_secs_f64(args.think_time_ms / 1000.0),
            seed: args.seed,
            sample_interval: Duration::from_millis(args.sample_interval),
            allow_busy_gpu: args.allow_busy_gpu,
            max_error_rate: args.max_error_rate,
            calibrate: (args.calibrate_secs > 0.0).then(|| Duration::from_secs_f64(args.calibrate_secs)),
            results_dir: args.results_dir.clone(),
            label,
            list_conversations: args.selection.list_conversations,
            ab,
            exact_dir: None,
            configs,
            settings,
            shard: cluster.shard,
            start_at: cluster.start_at,
            metrics_urls: cluster.metrics_urls,
            compare,
        })
    }

    /// The comparison arm of `arm`: the external endpoint it names, sending the exact prompts
    /// the run (results in `dir_a`) sent, its results in `dir_a/vs-<label>`.
    pub fn arm_endpoint(&self, dir_a: &std::path::Path, arm: &EndpointArm) -> Result<Plan> {
        let workload = WorkloadSpec { kind: WorkloadKind::Replay, path: Some(dir_a.to_path_buf()), ..self.workload.clone() };
        let source = Source::load(&workload)?;
        let mut settings = self.settings.clone();
        settings["compare"] = json!({"arm": arm.label, "endpoint": arm.url, "replay_of": dir_a});
        Ok(Plan {
            engine: Engine::External { base_url: arm.base_url.clone() },
            workload,
            source,
            filter: SelectionFilter::default(),
            // The run's client ceiling holds for this arm too; its replicas are the first endpoint's.
            calibrate: None,
            metrics_urls: Vec::new(),
            endpoint: Some(arm.url.clone()),
            exact_dir: Some(dir_a.join(format!("{}{}", crate::core::results::VS_DIR_PREFIX, arm.label))),
            label: Some(arm.label.clone()),
            list_conversations: false,
            compare: Vec::new(),
            settings,
            ..self.clone()
        })
    }

    /// Arm B of an A/B run whose arm A wrote `dir_a`: the same engine with prefix caching off,
    /// sending arm A's exact prompts, its results in `dir_a/ab-off`.
    pub fn arm_b(&self, dir_a: &std::path::Path) -> Result<Plan> {
        let engine = self.engine.without_prefix_caching().ok_or_else(|| UsageError::new("--ab needs a managed engine"))?;
        let workload = WorkloadSpec { kind: WorkloadKind::Replay, path: Some(dir_a.to_path_buf()), ..self.workload.clone() };
        let source = Source::load(&workload)?;
        let mut settings = self.settings.clone();
        settings["ab"] = json!({"arm": "B", "prefix_caching": false, "replay_of": dir_a});
        Ok(Plan {
            engine,
            workload,
            source,
            filter: SelectionFilter::default(),
            ab: false,
            exact_dir: Some(dir_a.join(crate::core::results::AB_OFF_DIR)),
            label: Some("ab-off".into()),
            list_conversations: false,
            settings,
            ..self.clone()
        })
    }

    /// True when one server serves every test (an external one, or `--isolation run`).
    pub fn shared_server(&self) -> bool {
        !self.engine.is_managed() || self.isolation == Isolation::Run
    }
}

/// `--endpoint` given more than once: the folder's label and the endpoints compared with the
/// first. Labels: none, or one per endpoint.
fn endpoints(args: &RunArgs, schedule: &SchedulePlan) -> Result<(Option<String>, Vec<EndpointArm>)> {
    let (urls, labels) = (&args.endpoint, &args.label);
    if urls.len() <= 1 {
        if labels.len() > 1 {
            return Err(UsageError::new("--label given more than once: one label per --endpoint, and there is one endpoint").into());
        }
        return Ok((labels.first().cloned(), Vec::new()));
    }
    if urls.len() > MAX_ENDPOINTS {
        return Err(UsageError::new(format!("--endpoint: at most {MAX_ENDPOINTS} endpoints in one run")).into());
    }
    if !labels.is_empty() && labels.len() != urls.len() {
        return Err(UsageError::new(format!(
            "{} --endpoint but {} --label: give one label per endpoint, in order (or none)",
            urls.len(),
            labels.len()
        ))
        .into());
    }
    if !matches!(schedule, SchedulePlan::Sequential) {
        return Err(UsageError::new(
            "several --endpoint replay a single-user run: drop --concurrency / --qps / --sweep (many-user arms would not send the same prompts in the same order)",
        )
        .into());
    }
    let labels: Vec<String> =
        if labels.is_empty() { (1..=urls.len()).map(|i| format!("endpoint-{i}")).collect() } else { labels.clone() };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(UsageError::new(format!("--label {dup}: given twice; each endpoint needs its own")).into());
    }
    if let Some(bad) = labels.iter().find(|l| l.is_empty() || l.contains(['/', '\\']) || l.starts_with('.')) {
        return Err(UsageError::new(format!("--label {bad:?}: names a folder (no `/`, not empty, not starting with `.`)")).into());
    }
    // One key for every endpoint: sent only where it was meant to go, the first one's host.
    if args.api_key.is_some() {
        let host = |u: &str| reqwest::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_string));
        if let Some(other) = urls[1..].iter().find(|u| host(u) != host(&urls[0])) {
            return Err(UsageError::new(format!(
                "--api-key (or TURNBENCH_API_KEY) with several --endpoint: {other} is another host than {}, and the key is the first one's; compare endpoints of one host, or runs with `turnbench report A --compare B`",
                urls[0]
            ))
            .into());
        }
    }
    let compare = urls[1..]
        .iter()
        .zip(&labels[1..])
        .map(|(url, label)| Ok(EndpointArm { url: url.clone(), base_url: engine::parse_endpoint(url)?.base_url, label: label.clone() }))
        .collect::<Result<_>>()?;
    Ok((Some(labels[0].clone()), compare))
}

/// Seconds a timeout may be: long enough for any real request, short enough for every
/// `Duration` and deadline computation to stay exact.
pub const MAX_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;

fn check_numbers(args: &RunArgs) -> Result<()> {
    for (flag, value) in [
        ("--connect-timeout", args.connect_timeout),
        ("--first-token-timeout", args.first_token_timeout),
        ("--request-timeout", args.request_timeout),
    ] {
        if !(value.is_finite() && value > 0.0 && value <= MAX_TIMEOUT_S) {
            return Err(UsageError::new(format!(
                "{flag} {value}: must be a positive number of seconds, at most {MAX_TIMEOUT_S} (a week)"
            ))
            .into());
        }
    }
    if args.sample_interval == 0 || args.sample_interval > 3_600_000 {
        return Err(UsageError::new(format!(
            "--sample-interval {}: must be between 1 and 3600000 milliseconds",
            args.sample_interval
        ))
        .into());
    }
    if !(args.calibrate_secs.is_finite() && (0.0..=60.0).contains(&args.calibrate_secs)) {
        return Err(UsageError::new(format!("--calibrate-secs {}: must be between 0 (off) and 60 seconds", args.calibrate_secs)).into());
    }
    if let Some(p) = args.max_error_rate.filter(|p| !(p.is_finite() && (0.0..=100.0).contains(p))) {
        return Err(UsageError::new(format!("--max-error-rate {p}: must be a percentage between 0 and 100")).into());
    }
    if !(args.think_time_ms.is_finite() && args.think_time_ms >= 0.0 && args.think_time_ms <= MAX_TIMEOUT_S * 1000.0) {
        return Err(UsageError::new(format!("--think-time-ms {}: must be zero or more (at most a week)", args.think_time_ms)).into());
    }
    Ok(())
}

fn workload_spec(args: &RunArgs) -> Result<WorkloadSpec> {
    let l = &args.load;
    let kind = match l.workload {
        cli::WorkloadKind::Suite => WorkloadKind::Suite,
        cli::WorkloadKind::Docs => WorkloadKind::Docs,
        cli::WorkloadKind::Multiround => WorkloadKind::Multiround,
        cli::WorkloadKind::Synthetic => WorkloadKind::Synthetic,
        cli::WorkloadKind::Sharegpt => WorkloadKind::Sharegpt,
        cli::WorkloadKind::Openai => WorkloadKind::Openai,
        cli::WorkloadKind::Snapshot => WorkloadKind::Snapshot,
    };
    let (kind, path) = match &args.replay {
        Some(_) if l.workload != cli::WorkloadKind::Suite || l.workload_path.is_some() => {
            return Err(UsageError::new("--replay DIR replays a recorded run; it takes no --workload or --workload-path").into());
        }
        Some(dir) => (WorkloadKind::Replay, Some(dir.clone())),
        None => (kind, l.workload_path.clone()),
    };
    if kind == WorkloadKind::Suite && l.workload_path.is_some() {
        return Err(UsageError::new(
            "--workload-path needs --workload docs|synthetic|sharegpt|openai|snapshot (the suite is read from --data and --rag-data)",
        )
        .into());
    }
    if kind == WorkloadKind::Multiround && l.workload_path.is_some() {
        return Err(UsageError::new("--workload multiround generates its conversations; it reads no --workload-path").into());
    }
    for (flag, v) in [("--users", l.users), ("--rounds", l.rounds)] {
        if v == 0 || v > 1_000_000 {
            return Err(UsageError::new(format!("{flag} {v}: must be between 1 and 1000000")).into());
        }
    }
    for (flag, v) in [("--system-tokens", l.system_tokens), ("--history-tokens", l.history_tokens)] {
        if v > 1_000_000 {
            return Err(UsageError::new(format!("{flag} {v}: at most 1000000 tokens")).into());
        }
    }
    // Generated conversations are built in memory up front: bound what they can add up to.
    let turns = (l.users as u64).saturating_mul(l.rounds as u64);
    let prompt_bytes = (l.users as u64).saturating_mul((l.system_tokens + l.history_tokens) as u64).saturating_mul(4);
    if turns > 10_000_000 || prompt_bytes > 1 << 30 {
        return Err(UsageError::new(format!(
            "--users {} × --rounds {} (at most 10000000 turns) and --users × (--system-tokens + --history-tokens) × 4 bytes (at most 1 GiB): too large to generate",
            l.users, l.rounds
        ))
        .into());
    }
    if l.answer_tokens == 0 || l.answer_tokens > 1_000_000 {
        return Err(UsageError::new(format!("--answer-tokens {}: must be between 1 and 1000000", l.answer_tokens)).into());
    }
    Ok(WorkloadSpec {
        kind,
        data: args.selection.data.clone(),
        rag_data: args.selection.rag_data.clone(),
        path,
        users: l.users,
        rounds: l.rounds,
        system_tokens: l.system_tokens,
        history_tokens: l.history_tokens,
        answer_tokens: l.answer_tokens,
        seed: args.seed,
    })
}

/// The template prompts are rendered with: `None` in `--prompt-mode chat`. In completion mode:
/// `--chat-template`, else the own template of the local model `--model` resolves to, else the
/// catalog's built-in template for that model.
fn template_for(args: &RunArgs, prompt_mode: cli::PromptMode) -> Result<Option<Arc<ChatTemplate>>> {
    if prompt_mode == cli::PromptMode::Chat {
        if args.chat_template.is_some() {
            return Err(UsageError::new(
                "--chat-template applies to --prompt-mode completion only (in chat mode the server applies its template)",
            )
            .into());
        }
        return Ok(None);
    }
    if let Some(spec) = &args.chat_template {
        return ChatTemplate::load(spec).map(|t| Some(Arc::new(t)));
    }
    let model = args.model.as_deref().ok_or_else(|| {
        UsageError::new("--prompt-mode completion needs --chat-template NAME|PATH (or --model naming a downloaded model)")
    })?;
    let cache = crate::hub::HubConfig::from_env().cache_dir;
    if let Some(dir) = crate::hub::resolve_model(model, &cache) {
        if let Ok(t) = ChatTemplate::from_path(&dir) {
            return Ok(Some(Arc::new(t)));
        }
    }
    if let Some(entry) = crate::hub::Catalog::builtin().find(model.split('@').next().unwrap_or(model)) {
        return ChatTemplate::load(&entry.chat_template).map(|t| Some(Arc::new(t)));
    }
    Err(UsageError::new(format!(
        "--prompt-mode completion: no chat template known for model {model:?}; pass --chat-template NAME|PATH"
    ))
    .into())
}

/// The settings as the manifest records them (`settings`): flags and defaults, secrets redacted.
fn settings_json(args: &RunArgs, schedule: &SchedulePlan, prompt_mode: cli::PromptMode) -> serde_json::Value {
    let s = &args.selection;
    let mut out = json!({
        "selection": {
            "data": s.data,
            "rag_data": s.rag_data,
            "include_tags": s.include_tags,
            "exclude_tags": s.exclude_tags,
            "context_size": s.context_size,
            "max_conversations": s.max_conversations,
            "conversations": s.conversations,
        },
        "engine_args": args.engine_args,
        "profile": args.profile,
        "config_dir": args.config_dir,
        "vllm_cmd": args.vllm_cmd,
        "isolation": format!("{:?}", args.isolation).to_lowercase(),
        "warmup": args.warmup,
        "think_time_ms": args.think_time_ms,
        "connect_timeout_s": args.connect_timeout,
        "first_token_timeout_s": args.first_token_timeout,
        "request_timeout_s": args.request_timeout,
        "ignore_eos": !args.no_ignore_eos,
        "sample_interval_ms": args.sample_interval,
        "allow_busy_gpu": args.allow_busy_gpu,
        "max_error_rate_pct": args.max_error_rate,
        "calibrate_s": args.calibrate_secs,
        "api_key": args.api_key.as_ref().map(|_| "<redacted>"),
        "prompt_mode": format!("{prompt_mode:?}").to_lowercase(),
        "chat_template": args.chat_template,
        "ab": args.ab.map(|_| json!({"arm": "A", "prefix_caching": true})),
        "replay": args.replay,
        // What the conversations are: with the rest, what every shard of a run must share.
        "workload": {
            "kind": format!("{:?}", args.load.workload).to_lowercase(), "path": args.load.workload_path,
            "users": args.load.users, "rounds": args.load.rounds, "system_tokens": args.load.system_tokens,
            "history_tokens": args.load.history_tokens, "answer_tokens": args.load.answer_tokens,
        },
        "engine": args.engine.map(|e| format!("{e:?}").to_lowercase()),
        "endpoints": args.endpoint,
        "model": args.model,
    });
    if let SchedulePlan::Load(load) = schedule {
        let l = &args.load;
        out["multi_user"] = json!({
            "concurrency": l.concurrency, "qps": l.qps, "sweep": l.sweep.map(|_| "auto"),
            "arrivals": load.arrivals, "duration_s": l.duration, "time_s": l.time, "min_delay_s": l.min_delay,
            "max_delay_s": l.max_delay, "max_active_conversations": l.max_active_conversations,
            "sweep_levels": l.sweep_levels, "sweep_max_concurrency": l.sweep_max_concurrency,
        });
    }
    out
}

/// The command line as typed, with the value of `--api-key` replaced.
pub fn redacted_command_line() -> Vec<String> {
    let mut out = Vec::new();
    let mut redact_next = false;
    for arg in std::env::args() {
        if redact_next {
            out.push("<redacted>".into());
            redact_next = false;
        } else if arg == "--api-key" {
            out.push(arg);
            redact_next = true;
        } else if arg.starts_with("--api-key=") {
            out.push("--api-key=<redacted>".into());
        } else {
            out.push(arg);
        }
    }
    out
}
