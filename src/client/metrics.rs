//! The server's own view: vLLM's Prometheus `/metrics`, parsed with `openmetrics-parser`.
//!
//! Counters are read as totals and subtracted per turn ([`PrefixCacheDelta`]); that is exact only
//! while one request is in flight, which is how the single-user replay runs.

use anyhow::{Context, Result};
use openmetrics_parser::{prometheus::parse_prometheus, PrometheusValue};

pub const PREFIX_CACHE_QUERIES: &str = "vllm:prefix_cache_queries_total";
pub const PREFIX_CACHE_HITS: &str = "vllm:prefix_cache_hits_total";
pub const CACHE_CONFIG_INFO: &str = "vllm:cache_config_info";
pub const KV_CACHE_USAGE: &str = "vllm:kv_cache_usage_perc";
pub const REQUESTS_RUNNING: &str = "vllm:num_requests_running";
pub const REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
pub const PREEMPTIONS: &str = "vllm:num_preemptions_total";
/// Prompt tokens served from the local prefix cache (vLLM ≥ 0.11); preferred over the hit
/// counter when present.
pub const PROMPT_TOKENS_CACHED: &str = "vllm:prompt_tokens_cached_total";

/// A scrape that takes longer than this is given up (a server that never answers must not
/// hold a turn).
pub const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const FAMILIES: [&str; 8] = [
    PROMPT_TOKENS_CACHED,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
    CACHE_CONFIG_INFO,
    KV_CACHE_USAGE,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    PREEMPTIONS,
];

/// The lines of `text` (samples, `# HELP`, `# TYPE`) that belong to one of `families`.
fn keep_families(text: &str, families: &[&str]) -> String {
    let mut out = String::with_capacity(2048);
    for line in text.lines() {
        let name = match line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            Some(rest) => rest.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if name.is_some_and(|n| families.contains(&n)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// One scrape of `/metrics`, reduced to what turnbench uses. Values are summed over label sets
/// (vLLM labels every series with `engine` and `model_name`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSnapshot {
    pub prefix_cache_queries: Option<f64>,
    pub prefix_cache_hits: Option<f64>,
    pub kv_cache_usage: Option<f64>,
    pub requests_running: Option<f64>,
    pub requests_waiting: Option<f64>,
    /// `vllm:num_preemptions_total` (a counter).
    pub preemptions: Option<f64>,
    /// From `vllm:cache_config_info{block_size=..}`.
    pub block_size: Option<u64>,
    /// From `vllm:cache_config_info{enable_prefix_caching=..}`.
    pub prefix_caching: Option<bool>,
    /// From `vllm:cache_config_info{num_gpu_blocks=..}`: the KV cache's capacity in blocks.
    pub num_gpu_blocks: Option<u64>,
}

/// Counter movement of the prefix cache between two scrapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheDelta {
    pub hits: u64,
    pub queries: u64,
    /// `vllm:num_preemptions_total` moved by this much (0 when the server does not say).
    pub preemptions: u64,
}

impl ServerSnapshot {
    /// Parses a Prometheus text exposition. Only the families turnbench reads are handed to the
    /// parser, so a quirk in any other family (servers expose hundreds) cannot hide these.
    pub fn parse(text: &str) -> Result<Self> {
        let exposition = parse_prometheus(&keep_families(text, &FAMILIES)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Self::from_exposition(&exposition, None)
    }

    /// The snapshot summed over every series, and one per value of the `engine` label when the
    /// exposition has more than one (a vLLM with data parallelism, a simulated cluster).
    pub fn parse_by_engine(text: &str) -> Result<(Self, Vec<(String, Self)>)> {
        let wanted = keep_families(text, &FAMILIES);
        let exposition = parse_prometheus(&wanted).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut engines = std::collections::BTreeSet::new();
        for family in exposition.families.values() {
            for sample in family.iter_samples() {
                if let Some(e) = sample.get_labelset().ok().and_then(|l| l.get_label_value("engine").map(str::to_string)) {
                    engines.insert(e);
                }
            }
        }
        let total = Self::from_exposition(&exposition, None)?;
        let per_engine = if engines.len() > 1 {
            engines.into_iter().map(|e| Ok((e.clone(), Self::from_exposition(&exposition, Some(&e))?))).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok((total, per_engine))
    }

    /// The snapshot of the series of one `engine` (all of them with `None`).
    fn from_exposition(exposition: &openmetrics_parser::MetricsExposition<openmetrics_parser::PrometheusType, PrometheusValue>, engine: Option<&str>) -> Result<Self> {
        let of_engine = |sample: &openmetrics_parser::PrometheusSample| -> bool {
            engine.is_none_or(|e| sample.get_labelset().ok().is_some_and(|l| l.get_label_value("engine") == Some(e)))
        };
        let sum = |name: &str| -> Option<f64> {
            // prometheus_client names a counter family either with or without `_total`.
            let family = exposition
                .families
                .get(name)
                .or_else(|| exposition.families.get(name.trim_end_matches("_total")))?;
            let mut total = None;
            for sample in family.iter_samples().filter(|s| of_engine(s)) {
                let v = match &sample.value {
                    PrometheusValue::Counter(c) => c.value.as_f64(),
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                    _ => continue,
                };
                *total.get_or_insert(0.0) += v;
            }
            total
        };
        // A share of a cache, per engine: over several engines, their mean (a sum could read 180 %).
        let mean = |name: &str| -> Option<f64> {
            let family = exposition.families.get(name)?;
            let values: Vec<f64> = family
                .iter_samples()
                .filter(|s| of_engine(s))
                .filter_map(|s| match &s.value {
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
                    _ => None,
                })
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let mut snapshot = ServerSnapshot {
            prefix_cache_queries: sum(PREFIX_CACHE_QUERIES),
            // Cached prompt tokens by source, when the server has that counter: hits counted the
            // same way, but named for what they are.
            prefix_cache_hits: sum(PROMPT_TOKENS_CACHED).or_else(|| sum(PREFIX_CACHE_HITS)),
            kv_cache_usage: mean(KV_CACHE_USAGE),
            requests_running: sum(REQUESTS_RUNNING),
            requests_waiting: sum(REQUESTS_WAITING),
            preemptions: sum(PREEMPTIONS),
            ..Default::default()
        };
        if let Some(family) = exposition.families.get(CACHE_CONFIG_INFO) {
            if let Some(sample) = family.iter_samples().find(|s| of_engine(s)) {
                let labels = sample.get_labelset().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                snapshot.block_size = labels.get_label_value("block_size").and_then(|v| v.parse().ok());
                snapshot.prefix_caching = labels
                    .get_label_value("enable_prefix_caching")
                    .map(|v| v.eq_ignore_ascii_case("true"));
                snapshot.num_gpu_blocks =
                    labels.get_label_value("num_gpu_blocks").and_then(|v| v.parse::<u64>().ok()).filter(|n| *n > 0);
            }
        }
        Ok(snapshot)
    }

    /// Prefix-cache counters moved from `before` to `self`; `None` when either scrape lacks them.
    /// A counter lower than before was reset (the server restarted): its movement is its value.
    pub fn prefix_cache_delta(&self, before: &ServerSnapshot) -> Option<PrefixCacheDelta> {
        // A counter lower than before was reset (the server restarted): its movement is its
        // value. One that is not a finite count (junk `/metrics`) gives no delta rather than an
        // absurd one.
        let d = |now: Option<f64>, then: Option<f64>| {
            let (now, then) = (now?, then?);
            let moved = (if now < then { now } else { now - then }).max(0.0).round();
            (moved.is_finite() && moved <= crate::core::record::MAX_PLAUSIBLE_TOKENS as f64).then_some(moved as u64)
        };
        Some(PrefixCacheDelta {
            hits: d(self.prefix_cache_hits, before.prefix_cache_hits)?,
            queries: d(self.prefix_cache_queries, before.prefix_cache_queries)?,
            preemptions: d(self.preemptions, before.preemptions).unwrap_or(0),
        })
    }
}

/// Scrapes `/metrics` of a server. Errors when the endpoint is missing or not Prometheus text.
pub async fn scrape(http: &reqwest::Client, base_url: &str, api_key: Option<&str>) -> Result<ServerSnapshot> {
    let url = format!("{}/metrics", base_url.trim_end_matches('/'));
    let text = scrape_text(http, &url, api_key).await?;
    ServerSnapshot::parse(&text).with_context(|| format!("GET {url}: not Prometheus text"))
}

/// The exposition text at `url` (a full `/metrics` URL), bounded in time and size.
pub async fn scrape_text(http: &reqwest::Client, url: &str, api_key: Option<&str>) -> Result<String> {
    let req = super::authed(http.get(url).timeout(SCRAPE_TIMEOUT), api_key);
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}");
    let bytes = super::read_body_limited(resp, super::MAX_SMALL_BODY_BYTES)
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("GET {url}: not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like vLLM 0.32's exposition (prometheus_client): counters typed with `_total`,
    // `_created` gauges beside them, labels on every series.
    const VLLM_TEXT: &str = r#"# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 589.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="tiny"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 480.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="32",cache_dtype="auto",enable_prefix_caching="True",engine="0",num_gpu_blocks="910"} 1.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.04
"#;

    #[test]
    fn parses_vllm_names_with_colons_and_cache_config() {
        let s = ServerSnapshot::parse(VLLM_TEXT).unwrap();
        assert_eq!(s.prefix_cache_queries, Some(589.0));
        assert_eq!(s.prefix_cache_hits, Some(480.0));
        assert_eq!(s.kv_cache_usage, Some(0.25));
        assert_eq!(s.block_size, Some(32));
        assert_eq!(s.prefix_caching, Some(true));
        assert_eq!(s.requests_running, None);
        assert_eq!(s.preemptions, None);
        let with = format!("{VLLM_TEXT}# TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total{{engine=\"0\"}} 3.0\n");
        assert_eq!(ServerSnapshot::parse(&with).unwrap().preemptions, Some(3.0));
    }

    #[test]
    fn engines_are_split_when_there_are_several() {
        let two = VLLM_TEXT
            .replace(
                "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"tiny\"} 480.0\n",
                "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"tiny\"} 480.0\nvllm:prefix_cache_hits_total{engine=\"1\",model_name=\"tiny\"} 20.0\n",
            )
            .replace(
                "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"tiny\"} 589.0\n",
                "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"tiny\"} 589.0\nvllm:prefix_cache_queries_total{engine=\"1\",model_name=\"tiny\"} 11.0\n",
            );
        let (total, engines) = ServerSnapshot::parse_by_engine(&two).unwrap();
        assert_eq!(total.prefix_cache_hits, Some(500.0));
        assert_eq!(engines.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), vec!["0", "1"]);
        assert_eq!(engines[0].1.prefix_cache_hits, Some(480.0));
        assert_eq!(engines[1].1.prefix_cache_queries, Some(11.0));
        assert_eq!(engines[1].1.kv_cache_usage, None, "engine 1 reports no KV usage");
        let both = two.replace(
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"tiny\"} 0.25\n",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"tiny\"} 0.25\nvllm:kv_cache_usage_perc{engine=\"1\",model_name=\"tiny\"} 0.75\n",
        );
        assert_eq!(ServerSnapshot::parse(&both).unwrap().kv_cache_usage, Some(0.5), "a share: the engines' mean, not their sum");
        assert_eq!(engines[0].1.block_size, Some(32));
        assert!(ServerSnapshot::parse_by_engine(VLLM_TEXT).unwrap().1.is_empty(), "one engine: no split");
    }

    #[test]
    fn other_families_cannot_break_parsing() {
        // A `_created` sample inside the counter's family is invalid exposition; it must not
        // hide the counter.
        let text = "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{engine=\"0\"} 5.0\nvllm:prefix_cache_hits_created{engine=\"0\"} 1.7e9\n# TYPE other histogram\nother_bucket{le=\"x\"} nonsense\n";
        assert_eq!(ServerSnapshot::parse(text).unwrap().prefix_cache_hits, Some(5.0));
    }

    #[test]
    fn delta_needs_both_scrapes() {
        let before = ServerSnapshot::parse(VLLM_TEXT).unwrap();
        let after = ServerSnapshot::parse(
            &VLLM_TEXT.replace("} 589.0", "} 1200.0").replace("} 480.0", "} 960.0"),
        )
        .unwrap();
        assert_eq!(after.prefix_cache_delta(&before), Some(PrefixCacheDelta { hits: 480, queries: 611, preemptions: 0 }));
        assert_eq!(after.prefix_cache_delta(&ServerSnapshot::default()), None);
        let absurd = ServerSnapshot { prefix_cache_hits: Some(1e30), prefix_cache_queries: Some(f64::INFINITY), ..before.clone() };
        assert_eq!(absurd.prefix_cache_delta(&before), None, "junk counters give no delta");
    }
}

