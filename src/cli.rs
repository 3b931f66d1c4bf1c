//! Command-line types only: parsing lives here, behaviour lives in the modules they name.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "turnbench",
    version,
    about = "How fast is your LLM server on real multi-turn conversations, and how much does prefix caching save turn after turn?",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay conversation suites turn by turn and report TTFT, throughput and prefix-cache reuse.
    Run(RunArgs),
    /// Rebuild every report of a results folder from its turns.jsonl, or compare two runs.
    Report(ReportArgs),
    /// Join the shard folders of one `run --shard I/N` run into one results folder, every report
    /// built from the merged raw records (percentiles exact, never averaged).
    Merge(MergeArgs),
    /// Serve a vLLM-compatible simulator (OpenAI API, /metrics, prefix cache, latency model).
    Sim(SimArgs),
    /// Download a model into the Hugging Face cache (the one Python's huggingface_hub uses).
    Setup(SetupArgs),
    /// Chat templates: list the built-in ones, render the prompt a conversation turn produces.
    Template(TemplateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = "Install, e.g.: turnbench completions bash > ~/.local/share/bash-completion/completions/turnbench")]
    Completions(CompletionsArgs),
    /// Write man pages generated from this CLI: turnbench.1 and one page per subcommand.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Shard folders, or folders holding them (e.g. <--results-dir>/<run-id>): every shard of
    /// the run must be there, once.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Folder to write the merged results into (created; must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing). Without it, turnbench.1 goes to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Which server the benchmark talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// `turnbench sim` started as a child process (no GPU needed; reports label it as simulated).
    Sim,
    /// An OpenAI-compatible server you started yourself (`--endpoint`).
    External,
    /// `vllm serve` started and supervised by turnbench (`--model`, `--profile`, `--vllm-cmd`).
    Vllm,
}

/// What tests share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    /// A fresh server for every test (one conversation = one test): nothing carries over.
    Test,
    /// One server for the whole run; its prefix cache is reset (and the reset verified) between
    /// tests. Starts faster; vLLM needs VLLM_SERVER_DEV_MODE=1, which turnbench sets.
    Run,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server to benchmark. Defaults to `external` when --endpoint is given, else `sim`.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// An OpenAI-compatible server (implies --engine external): its base URL
    /// (http://127.0.0.1:8000), …/v1, or a full …/v1/chat/completions or …/v1/completions URL
    /// (which also picks --prompt-mode chat or completion). Given again, the run is replayed with
    /// its exact prompts against each further endpoint and the reports compare them side by side
    /// (single-user runs; name them with one --label each).
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,
    /// Model: for --engine vllm the path or repo id to serve; otherwise the name sent in
    /// requests (default: the first model the server lists).
    #[arg(long)]
    pub model: Option<String>,
    /// vLLM settings: a profile name (single-user, optimized, debug: read from
    /// <--config-dir>/vllm/<name>.toml when it exists, else built in) or a TOML path.
    #[arg(long, default_value = "single-user", value_name = "NAME|PATH")]
    pub profile: String,
    /// Command that starts vLLM (`<cmd> serve MODEL ...`), e.g. scripts/vllm-cpu/vllm.
    #[arg(long, default_value = "vllm", value_name = "CMD")]
    pub vllm_cmd: String,
    /// A fresh server per test, or one per run with its prefix cache reset between tests.
    #[arg(long, value_enum, default_value_t = Isolation::Test)]
    pub isolation: Isolation,
    /// API key for the endpoint. Never written to any results file.
    #[arg(long, env = "TURNBENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Extra argument for the managed engine, repeatable (e.g. --engine-arg=--no-prefix-caching;
    /// for the simulator --engine-arg=--profile=instant picks configs/sim/instant.toml).
    #[arg(long = "engine-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub engine_args: Vec<String>,
    /// Folder of the profiles picked by name (`<DIR>/vllm/<name>.toml`, `<DIR>/sim/<name>.toml`);
    /// a name with no file there uses the copy built into turnbench. The manifest records which.
    #[arg(long, default_value = "configs", value_name = "DIR")]
    pub config_dir: PathBuf,

    /// Warm-up requests sent before the suite: recorded, excluded from statistics.
    #[arg(long, default_value_t = 1)]
    pub warmup: u32,
    /// Pause between turns of a conversation, in milliseconds (a user reading and typing).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub think_time_ms: f64,
    /// Seconds allowed to connect to the server.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds allowed from sending a request to its first token.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub first_token_timeout: f64,
    /// Seconds allowed for a whole request.
    #[arg(long, default_value_t = 900.0, value_name = "SECS")]
    pub request_timeout: f64,

    /// Do not send vLLM's `ignore_eos` (answers may then end early; lengths vary run to run).
    #[arg(long)]
    pub no_ignore_eos: bool,
    /// Exit 5 when more than PCT % of the measured requests failed (for CI). Off by default:
    /// the run then exits 0 when at least one request succeeded.
    #[arg(long, value_name = "PCT")]
    pub max_error_rate: Option<f64>,
    /// Seconds spent before the run measuring this client's own ceiling (requests/s and
    /// tokens/s against an in-process loopback server); levels asking for more than half of it
    /// are flagged as client-bound in the reports. 0 skips it.
    #[arg(long, default_value_t = 0.3, value_name = "SECS")]
    pub calibrate_secs: f64,

    /// Folder under which the timestamped results folder is created.
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub results_dir: PathBuf,
    /// Suffix for the results folder name (`<timestamp>_<label>`). With several --endpoint, one
    /// label per endpoint, in order (the first names the folder).
    #[arg(long)]
    pub label: Vec<String>,
    /// Seed for everything random (simulator answers, think times).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Interval of the samplers (machine, engine processes, GPU, server gauges), in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub sample_interval: u64,
    /// Start managed servers even when processes outside turnbench hold GPU memory.
    #[arg(long)]
    pub allow_busy_gpu: bool,
    /// `chat`: send messages to /v1/chat/completions (the server applies its template).
    /// `completion`: render each turn's prompt locally with --chat-template and send it to
    /// /v1/completions, so the exact prompt is known and recorded. Default: chat, or what a
    /// full --endpoint URL names.
    #[arg(long, value_enum)]
    pub prompt_mode: Option<PromptMode>,
    /// Chat template for --prompt-mode completion: a built-in name (phi3, llama3, chatml,
    /// mistral), a .jinja or tokenizer_config.json file, or a model folder. Default: the template
    /// of the local model --model resolves to.
    #[arg(long, value_name = "NAME|PATH")]
    pub chat_template: Option<String>,

    /// Measure what prefix caching saves: run the selection with it on (arm A), then replay arm A's
    /// exact prompts with it off (arm B: the managed engine restarted without it, results in
    /// `<A>/ab-off/`); the reports compare TTFT on and off, turn by turn.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub ab: Option<AbKind>,
    /// Send a recorded run's exact prompts again (DIR: a results folder), against any engine.
    #[arg(long, value_name = "DIR", conflicts_with = "ab")]
    pub replay: Option<PathBuf>,

    // Grouped flags last: a group's help heading carries over to the flags after it.
    #[command(flatten)]
    pub selection: SelectionArgs,

    #[command(flatten)]
    pub load: LoadArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Many client processes acting as one benchmark, and servers behind a router.
#[derive(Debug, Args)]
#[command(next_help_heading = "Shards and clusters")]
pub struct ClusterArgs {
    /// Run share I of N (1-based) of a run split over N client processes: every Nth conversation
    /// of the selection (suite), or 1/N of the clients and of each rate with its own seeded
    /// streams (many users). `job/N` takes I from JOB_COMPLETION_INDEX + 1 (a Kubernetes Indexed
    /// Job). Results go to <--results-dir>/<--run-id>/shard-I-of-N; `turnbench merge` joins them.
    #[arg(long, value_name = "I/N", env = "TURNBENCH_SHARD")]
    pub shard: Option<String>,
    /// The id every shard of one run shares (letters, digits, `.`, `_`, `-`; required with --shard).
    #[arg(long, value_name = "ID", env = "TURNBENCH_RUN_ID")]
    pub run_id: Option<String>,
    /// Wall-clock time (RFC 3339, e.g. 2026-12-02T10:00:00Z) at which the first measured request
    /// goes out, after the server is up: shards started apart begin together. A time more than
    /// a few seconds past is refused.
    #[arg(long, value_name = "TIME", env = "TURNBENCH_START_AT")]
    pub start_at: Option<String>,
    /// A replica's Prometheus /metrics URL, repeatable, when --endpoint is a router in front of
    /// several servers: the reports then show prefix-cache hits, KV usage, queue and preemptions
    /// per replica (and per level), and what the routing lost against one shared cache.
    #[arg(long = "metrics-url", value_name = "URL")]
    pub metrics_urls: Vec<String>,
}

/// Who turns messages into the prompt string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PromptMode {
    /// The server applies its chat template (/v1/chat/completions).
    #[default]
    Chat,
    /// turnbench renders the template and sends the prompt to /v1/completions.
    Completion,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Catalog name (see --list) or Hugging Face repo id (org/name). Default: the recommended model.
    pub model: Option<String>,
    /// List the catalog with what is already downloaded and its size on disk.
    #[arg(long)]
    pub list: bool,
    /// Branch, tag or commit to download [default: the catalog's, else main].
    #[arg(long)]
    pub revision: Option<String>,
    /// Download only files matching these glob patterns (repeatable) [default: the catalog's].
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Use only the local cache; fail if something is missing (also: HF_HUB_OFFLINE=1).
    #[arg(long, env = "HF_HUB_OFFLINE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub offline: bool,
    /// Hugging Face cache folder [default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Model catalog file (the copy built into turnbench is used when it does not exist).
    #[arg(long, default_value = "configs/models.toml", value_name = "FILE")]
    pub catalog: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List the built-in templates.
    List,
    /// Print the prompt one conversation turn produces (earlier answers are placeholders).
    Render(TemplateRenderArgs),
}

#[derive(Debug, Args)]
pub struct TemplateRenderArgs {
    /// A built-in name (phi3, llama3, chatml, mistral), a .jinja or tokenizer_config.json file, or a model folder.
    #[arg(long, value_name = "NAME|PATH")]
    pub template: String,
    /// A JSON list of {role, content} messages to render instead of a suite conversation.
    #[arg(long, value_name = "FILE")]
    pub messages: Option<PathBuf>,
    /// Conversation suite file.
    #[arg(long, default_value = "data/conversations.json", value_name = "FILE")]
    pub data: PathBuf,
    /// RAG document store referenced by the suite.
    #[arg(long, default_value = "data/rag_data.json", value_name = "FILE")]
    pub rag_data: PathBuf,
    /// Conversation id [default: the first].
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// 1-based turn whose prompt to show.
    #[arg(long, default_value_t = 1)]
    pub turn: usize,
    /// Render without the assistant header that asks the model to answer.
    #[arg(long)]
    pub no_generation_prompt: bool,
}

/// Which conversations of the suite to replay.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Conversation selection")]
pub struct SelectionArgs {
    /// Conversation suite file.
    #[arg(long, default_value = "data/conversations.json", value_name = "FILE")]
    pub data: PathBuf,
    /// RAG document store referenced by the suite.
    #[arg(long, default_value = "data/rag_data.json", value_name = "FILE")]
    pub rag_data: PathBuf,
    /// Keep only conversations with at least one of these tags (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub include_tags: Vec<String>,
    /// Drop conversations with any of these tags (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub exclude_tags: Vec<String>,
    /// Context window in tokens: drop conversations whose peak context would not fit.
    #[arg(long, value_name = "TOKENS")]
    pub context_size: Option<u64>,
    /// Replay at most this many conversations (after the other filters).
    #[arg(long, value_name = "N")]
    pub max_conversations: Option<usize>,
    /// Replay only this conversation id (repeatable).
    #[arg(long = "conversation", value_name = "ID")]
    pub conversations: Vec<String>,
    /// Print the selected suite (id, tags, turns, peak tokens, fits) and exit.
    #[arg(long)]
    pub list_conversations: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results folder written by `turnbench run`.
    pub dir: PathBuf,
    /// A second results folder to compare against (per-turn TTFT, speedups, cache reuse).
    #[arg(long, value_name = "DIR")]
    pub compare: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind; 0 picks a free one. The first line printed on stdout is the bound base URL.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Model name the simulator serves and echoes in every answer [profile default: turnbench-sim].
    #[arg(long)]
    pub model_name: Option<String>,
    /// Settings profile: a name (default, instant, cpu-tiny: read from
    /// <--config-dir>/sim/<name>.toml when it exists, else built in) or a path to a TOML file.
    /// Flags override its values. Without it, `default` is used.
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Option<String>,
    /// Folder of the profiles picked by name.
    #[arg(long, default_value = "configs", value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Tokens per KV-cache block (prefix-cache hits count whole blocks) [default: 16].
    #[arg(long)]
    pub block_size: Option<u64>,
    /// KV-cache capacity in blocks; least-recently-used blocks are evicted past it.
    #[arg(long)]
    pub kv_cache_blocks: Option<u64>,
    /// Requests decoded at once; more wait in the queue (FIFO).
    #[arg(long)]
    pub max_num_seqs: Option<u64>,
    /// Requests allowed to wait; past it the simulator answers 503.
    #[arg(long)]
    pub max_waiting: Option<u64>,
    /// Longest prompt + answer accepted, in tokens (longer requests get a 400) [default: 32768].
    #[arg(long)]
    pub max_model_len: Option<u64>,
    /// Disable the prefix cache (every prompt is computed from scratch).
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Answer length when a request gives no max_tokens (capped by max_model_len − prompt).
    #[arg(long, value_name = "TOKENS")]
    pub default_max_tokens: Option<u64>,
    /// Fixed time per request before prefill, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub overhead_ms: Option<f64>,
    /// Prefill time per uncached prompt token, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub prefill_ms_per_token: Option<f64>,
    /// Time between output tokens, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub inter_token_ms: Option<f64>,
    /// Fractional slow-down of every step per additional running request (0.1 = +10 % each).
    #[arg(long)]
    pub load_slowdown: Option<f64>,
    /// Probability that a request fails with HTTP 500.
    #[arg(long)]
    pub fail_rate: Option<f64>,
    /// Probability that a streamed request is cut mid-stream (no [DONE]).
    #[arg(long)]
    pub drop_rate: Option<f64>,
    /// Probability that a request's generated token ids differ from what its answer text
    /// re-tokenizes to (template or tokenizer drift): the next turn cannot reuse the answer.
    #[arg(long, value_name = "P")]
    pub retokenize_drift: Option<f64>,
    /// Seed for answers and failure injection.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated engines behind the one port, 1 to 64 [default: 1]: each is a whole server with
    /// the settings above (its own prefix cache, max_num_seqs and KV blocks), like N vLLM
    /// instances behind a router. /metrics shows all of them (label engine="0", "1", …);
    /// /replica/I/metrics shows replica I alone.
    #[arg(long, value_name = "N")]
    pub replicas: Option<u64>,
    /// Which replica each completion request goes to (with --replicas 2 or more)
    /// [default: round-robin].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub routing: Option<SimRouting>,
}

/// `turnbench sim --routing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimRouting {
    /// Replicas in turn.
    RoundRobin,
    /// The replica whose prefix cache holds the longest start of the prompt, unless it is busier
    /// (running + waiting) than the least busy replica by max(2, max_num_seqs/4) or more; ties go
    /// to the least busy (as llm-d's prefix-cache scorer with its load-aware filter).
    PrefixAffinity,
    /// A replica at random, in a sequence fixed by the seed.
    Random,
}

/// Many users at once (any of `--concurrency`, `--qps`, `--sweep` makes a multi-user run against
/// one server for the whole run).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Many users")]
pub struct LoadArgs {
    /// Closed loop: this many sessions, each replaying conversations one after another.
    #[arg(long, value_name = "N", conflicts_with_all = ["qps", "sweep"])]
    pub concurrency: Option<usize>,
    /// Open loop: conversations start at this rate per second; several values (1,5,10) run one
    /// level after another (a sweep).
    #[arg(long, value_delimiter = ',', value_name = "QPS", conflicts_with = "sweep")]
    pub qps: Vec<f64>,
    /// `auto`: a synchronous run, a max-throughput run, then evenly spaced rates between them.
    #[arg(long, value_enum, value_name = "KIND")]
    pub sweep: Option<SweepKind>,
    /// Number of evenly spaced rates of `--sweep auto`.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub sweep_levels: usize,
    /// Concurrency of the max-throughput run of `--sweep auto`.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub sweep_max_concurrency: usize,
    /// Open-loop arrival process (seeded by --seed).
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalsArg,
    /// Seconds each level runs (new turns start only within it).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub duration: f64,
    /// Bounds the whole run, in seconds: no turn starts after it.
    #[arg(long, value_name = "SECS")]
    pub time: Option<f64>,
    /// Seconds at the start of each level left out of its statistics.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub trim_warmup: f64,
    /// Seconds at the end of each level left out of its statistics.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub trim_cooldown: f64,
    /// Shortest think time before a conversation's next turn, in seconds.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub min_delay: f64,
    /// Longest think time before a conversation's next turn, in seconds.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub max_delay: f64,
    /// Conversations active at once. Closed loop: at least --concurrency; their turns share the
    /// --concurrency clients (interleaved), so at most --concurrency requests are in flight.
    /// Open loop: a cap; later arrivals wait (and their wait counts in their latency).
    #[arg(long, value_name = "N")]
    pub max_active_conversations: Option<usize>,
    /// Seconds between live summary lines (rate, TTFT p50/p99, errors).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub log_interval: f64,
    /// Percentiles reported per level.
    #[arg(long, value_delimiter = ',', default_value = "50,90,95,99", value_name = "P")]
    pub percentiles: Vec<f64>,
    /// A level is saturated when its p99 TTFT exceeds this multiple of the first level's.
    #[arg(long, default_value_t = 3.0, value_name = "X")]
    pub saturation_ttft_factor: f64,
    /// …and only when it exceeds the first level's by at least this many milliseconds.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    pub saturation_ttft_floor_ms: f64,

    /// Where the conversations come from (default: the suite of --data).
    #[arg(long, value_enum, default_value = "suite")]
    pub workload: WorkloadKind,
    /// Input of the workload: a folder (docs), a JSON config (synthetic) or a dataset file
    /// (sharegpt, openai, snapshot).
    #[arg(long, value_name = "PATH")]
    pub workload_path: Option<PathBuf>,
    /// docs: conversations to build; multiround: users (one conversation each).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub users: usize,
    /// docs / multiround: turns per conversation.
    #[arg(long, default_value_t = 3, value_name = "T")]
    pub rounds: usize,
    /// multiround: tokens of the system prompt shared by every user.
    #[arg(long, default_value_t = 256, value_name = "TOKENS")]
    pub system_tokens: usize,
    /// multiround: tokens of each user's own earlier history.
    #[arg(long, default_value_t = 512, value_name = "TOKENS")]
    pub history_tokens: usize,
    /// multiround / docs: answer length (max_tokens).
    #[arg(long, default_value_t = 64, value_name = "TOKENS")]
    pub answer_tokens: u32,
}

impl LoadArgs {
    /// True when the run is a multi-user run.
    pub fn is_multi_user(&self) -> bool {
        self.concurrency.is_some() || !self.qps.is_empty() || self.sweep.is_some()
    }
}

/// What an A/B run switches between its arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AbKind {
    /// Prefix caching on (A) and off (B).
    PrefixCaching,
}

/// How open-loop arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalsArg {
    /// Exponential gaps (a Poisson process), seeded.
    Poisson,
    /// Equal gaps of 1/qps.
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepKind {
    Auto,
}

/// Conversation sources of multi-user runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// The conversation suite (--data, --rag-data) and its selection flags.
    Suite,
    /// A folder of documents: code or text by extension, N conversations × T turns.
    Docs,
    /// Multi-round QA: shared system prompt, per-user history, synthetic and seeded.
    Multiround,
    /// Synthetic conversations generated from text files by a JSON config.
    Synthetic,
    /// A ShareGPT JSON file (`conversations: [{from, value}]`).
    Sharegpt,
    /// A JSON/JSONL file of OpenAI `messages` lists.
    Openai,
    /// Snapshot dataset of `{prompt_content, cut_chat_history}`, sent as recorded.
    Snapshot,
}
