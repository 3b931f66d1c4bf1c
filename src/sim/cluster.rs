//! `--replicas N`: N independent engines behind one port, each with its own [`Shared`] state
//! (prefix cache, admission, counters, histograms), and which of them a generation request goes
//! to (`--routing`). With one replica every request goes to it and nothing else happens.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::state::{lock, Shared};
use super::{Routing, SimConfig};
use crate::core::blocks::mix64;

/// The stream tag of `random` routing's draws (the failure injection's draws use 1 to 3).
const RANDOM_TAG: u64 = 4;

/// The replicas and the routing between them.
pub(super) struct Cluster {
    replicas: Vec<Arc<Shared>>,
    routing: Routing,
    seed: u64,
    /// Generation requests routed so far: round-robin's turn and random's draw number.
    routed: AtomicU64,
}

impl Cluster {
    /// `cfg.replicas` fresh engines, each with all of `cfg`'s settings.
    pub(super) fn new(cfg: SimConfig) -> Self {
        let n = cfg.replicas.max(1);
        let (routing, seed) = (cfg.routing, cfg.seed);
        let replicas = (0..n).map(|i| Arc::new(Shared::new(cfg.clone(), i))).collect();
        Self { replicas, routing, seed, routed: AtomicU64::new(0) }
    }

    /// Replica 0: it checks request bodies (every replica has the same model and limits) and
    /// answers what depends on no replica's state (`/health`, `/v1/models`, `/tokenize`).
    pub(super) fn first(&self) -> &Arc<Shared> {
        &self.replicas[0]
    }

    pub(super) fn replicas(&self) -> &[Arc<Shared>] {
        &self.replicas
    }

    /// The replica a generation request goes to, its prompt of `prompt_len` tokens given by its
    /// block `hashes` ([`Shared::prompt_hashes`]: every replica has the same block size and
    /// caching switch, so one set fits all). Callers hand the request to
    /// [`generate`](super::api::generate) at once, which counts it as running or waiting before
    /// its first await, so the next choice already sees its load.
    pub(super) fn route(&self, hashes: &[u64], prompt_len: usize) -> Arc<Shared> {
        let n = self.replicas.len();
        if n == 1 {
            return self.replicas[0].clone();
        }
        let i = match self.routing {
            Routing::RoundRobin => (self.routed.fetch_add(1, Relaxed) % n as u64) as usize,
            Routing::Random => {
                let k = self.routed.fetch_add(1, Relaxed);
                (mix64(self.seed ^ mix64(RANDOM_TAG ^ mix64(k))) % n as u64) as usize
            }
            Routing::PrefixAffinity => self.by_affinity(hashes, prompt_len),
        };
        self.replicas[i].clone()
    }

    /// Asks every replica's cache, without touching its LRU order, how much of the prompt it
    /// holds, and picks by [`affinity_choice`].
    fn by_affinity(&self, hashes: &[u64], prompt_len: usize) -> usize {
        let candidates: Vec<(usize, usize)> = self
            .replicas
            .iter()
            .map(|r| {
                let cached = if hashes.is_empty() { 0 } else { lock(&r.cache).peek(hashes, prompt_len) };
                (cached, r.load())
            })
            .collect();
        affinity_choice(&candidates, load_slack(self.replicas[0].cfg.max_num_seqs))
    }
}

/// How much busier than the least busy replica a replica may be and still win a request for its
/// cache: a quarter of its running slots (`max_num_seqs / 4`), and at least 2.
pub(super) fn load_slack(max_num_seqs: usize) -> usize {
    (max_num_seqs / 4).max(2)
}

/// `prefix-affinity`'s choice among replicas given as `(cached prompt tokens, load)`, load being
/// the requests in flight (running + waiting). The rule, after llm-d's load-aware filter and
/// prefix-cache scorer:
/// 1. a replica whose load is `min load + slack` or more is left out: a warm cache is not worth
///    queueing behind an engine that much busier than another (the least loaded replica always
///    stays in, so there is always a choice);
/// 2. of the rest, the one holding the longest cached prefix wins;
/// 3. ties (no hit anywhere included) go to the least loaded, then to the lowest index.
pub(super) fn affinity_choice(candidates: &[(usize, usize)], slack: usize) -> usize {
    let min_load = candidates.iter().map(|&(_, load)| load).min().unwrap_or(0);
    let cap = min_load.saturating_add(slack.max(1));
    candidates
        .iter()
        .enumerate()
        .filter(|(_, &(_, load))| load < cap)
        // max_by keeps the last of equals: order so that the preferred one compares greatest.
        .max_by(|(i, a), (j, b)| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(j.cmp(i)))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_cached_prefix_wins_among_replicas_under_the_load_cap() {
        // Replica 0 holds the whole prefix but is overloaded (min load 0 + slack 2 = cap 2):
        // skipped for replica 2, which holds less and is within the cap.
        assert_eq!(affinity_choice(&[(512, 2), (0, 0), (64, 1)], 2), 2);
        // Just under the cap it wins.
        assert_eq!(affinity_choice(&[(512, 1), (0, 0), (64, 1)], 2), 0);
        // The cap is relative to the least loaded replica, not absolute.
        assert_eq!(affinity_choice(&[(512, 11), (0, 10), (64, 10)], 2), 0);
        assert_eq!(affinity_choice(&[(512, 12), (0, 10), (64, 10)], 2), 2);
        // With every warm replica over the cap, the least loaded one takes it, hit or not.
        assert_eq!(affinity_choice(&[(512, 5), (0, 3), (64, 5)], 2), 1);
    }

    #[test]
    fn ties_go_to_the_least_loaded_then_the_lowest_index() {
        assert_eq!(affinity_choice(&[(0, 0), (0, 0)], 2), 0);
        assert_eq!(affinity_choice(&[(0, 1), (0, 0)], 2), 1);
        assert_eq!(affinity_choice(&[(32, 1), (32, 0), (32, 0)], 2), 1);
        assert_eq!(affinity_choice(&[(32, 0), (48, 1), (48, 1)], 2), 1);
        assert_eq!(affinity_choice(&[(7, 3)], 2), 0);
    }

    #[test]
    fn the_slack_is_a_quarter_of_the_running_slots_and_at_least_two() {
        assert_eq!(load_slack(1), 2);
        assert_eq!(load_slack(8), 2);
        assert_eq!(load_slack(16), 4);
        assert_eq!(load_slack(256), 64);
    }

    fn tokens(n: u32) -> Vec<u32> {
        (0..n).collect()
    }

    /// The replica `c` routes a prompt of `t` to, hashed as the endpoints hash it.
    fn routed(c: &Cluster, t: &[u32]) -> usize {
        c.route(&c.first().prompt_hashes(t), t.len()).engine
    }

    #[test]
    fn routing_policies_pick_as_documented() {
        let cfg = |routing| SimConfig { replicas: 3, routing, ..SimConfig::default() };
        let rr = Cluster::new(cfg(Routing::RoundRobin));
        let picks: Vec<usize> = (0..6).map(|_| routed(&rr, &tokens(40))).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);

        let draws = |seed| {
            let c = Cluster::new(SimConfig { seed, ..cfg(Routing::Random) });
            (0..32).map(|_| routed(&c, &tokens(40))).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7), "the same seed draws the same sequence");
        assert_ne!(draws(7), draws(8));
        assert!((0..3).all(|i| draws(7).contains(&i)), "{:?}", draws(7));

        let pa = Cluster::new(cfg(Routing::PrefixAffinity));
        let prompt = tokens(100);
        // Nothing cached anywhere: the least loaded, then the lowest index.
        assert_eq!(routed(&pa, &prompt), 0);
        let hashes = pa.replicas[2].prompt_hashes(&prompt);
        lock(&pa.replicas[2].cache).insert(&hashes[..3]);
        lock(&pa.replicas[1].cache).insert(&hashes[..5]);
        assert_eq!(routed(&pa, &prompt), 1);
        let one = Cluster::new(SimConfig { replicas: 1, ..cfg(Routing::PrefixAffinity) });
        assert_eq!(routed(&one, &prompt), 0);
    }
}
