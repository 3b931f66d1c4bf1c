//! The report's "Replicas" and "Shards" sections: the server's truth per replica behind a
//! router, what the routing lost against one shared cache, and each shard's client health.

use super::fmt::{f1, md_table, opt, pct};
use crate::analysis::cluster::ReplicaWindow;
use crate::analysis::Summary;

fn replica_row(name: &str, w: &ReplicaWindow) -> Vec<String> {
    vec![
        name.to_string(),
        w.label.clone(),
        opt(w.prefix_cache_hits),
        opt(w.prefix_cache_queries),
        pct(w.hit_pct),
        f1(w.kv_cache_usage_max_pct),
        f1(w.requests_running_max),
        f1(w.requests_waiting_max),
        opt(w.preemptions),
    ]
}

/// One table of the section: for report.md and report.html alike.
pub struct ClusterTable {
    /// `id` of its HTML heading.
    pub id: &'static str,
    pub title: &'static str,
    pub intro: &'static str,
    pub headers: &'static [&'static str],
    pub rows: Vec<Vec<String>>,
}

/// The replicas, the routing and the shards of `s`, as tables; empty when it has none.
pub fn tables(s: &Summary) -> Vec<ClusterTable> {
    let mut out = Vec::new();
    if !s.replicas.is_empty() {
        let mut rows = Vec::new();
        for r in &s.replicas {
            let name = match &r.url {
                Some(u) => format!("{} ({u})", r.name),
                None => r.name.clone(),
            };
            rows.push(replica_row(&name, &r.total));
            for w in &r.levels {
                rows.push(replica_row("", w));
            }
        }
        out.push(ClusterTable {
            id: "replicas",
            title: "Replicas",
            intro: "What each server behind the endpoint counted itself (its own /metrics), over the run and per level.",
            headers: &["Replica", "window", "cache hits (tok)", "queries (tok)", "hit rate", "KV usage max %", "running max", "waiting max", "preemptions"],
            rows,
        });
    }
    if let Some(r) = &s.routing {
        out.push(ClusterTable {
            id: "routing",
            title: "Routing against one shared cache",
            intro: "The ideal is the ledger's: every prompt served by one cache that never forgets. What the replicas reused less was lost to routing a prefix away from the replica that held it (and to separate caches).",
            headers: &["replicas", "hits (sum)", "queries (sum)", "server total hits", "reuse", "ideal shared cache", "lost (points)", "lost (tokens)"],
            rows: vec![vec![
                r.replicas.to_string(),
                r.replica_hits.to_string(),
                r.replica_queries.to_string(),
                opt(r.server_hits),
                pct(r.reuse_pct),
                pct(r.ideal_shared_reuse_pct),
                f1(r.lost_pct_points),
                opt(r.lost_tokens),
            ]],
        });
    }
    if !s.shards.is_empty() {
        out.push(ClusterTable {
            id: "shards",
            title: "Shards",
            intro: "Each client process of this merged run: a shard whose requests left late, or whose machine was busy, shaped its numbers.",
            headers: &["shard", "records", "ok", "schedule lag p99 ms", "TTFT p50 ms", "CPU mean %", "CPU max %", "client ceiling req/s", "clock offset ms", "completed"],
            rows: s
                .shards
                .iter()
                .map(|h| {
                    vec![
                        h.index.to_string(),
                        h.records.to_string(),
                        h.ok.to_string(),
                        f1(h.queue_p99_ms),
                        f1(h.ttft_p50_ms),
                        f1(h.cpu_mean_pct),
                        f1(h.cpu_max_pct),
                        f1(h.ceiling_requests_per_s),
                        format!("{:.1}", h.offset_ms),
                        if h.completed { "yes".into() } else { "no".into() },
                    ]
                })
                .collect(),
        });
    }
    out
}

/// The tables as report.md sections.
pub fn markdown_section(s: &Summary) -> String {
    let mut out = String::new();
    for t in tables(s) {
        let level = if t.id == "routing" { "###" } else { "##" };
        out.push_str(&format!("\n{level} {}\n\n{}\n\n", t.title, t.intro));
        out.push_str(&md_table(t.headers, &t.rows));
    }
    out
}
