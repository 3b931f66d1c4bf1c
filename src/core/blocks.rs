//! Block-hashed prefix caching with LRU eviction, in the manner of vLLM's automatic prefix
//! caching: the simulator's cache and the ledger's model of a server's cache are the same code.
//!
//! A prompt's tokens are cut into whole blocks of `block_size`; block `i`'s hash chains the hash
//! of block `i - 1` with block `i`'s token ids, so a hash names a whole prefix. A lookup counts the
//! leading blocks whose hashes are cached; partial blocks are never cached.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are already hashes: pass them through.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash step.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Chained hashes of the whole blocks of `tokens` (a trailing partial block is left out).
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let block_size = block_size.max(1);
    let mut out = Vec::with_capacity(tokens.len() / block_size);
    let mut parent: u64 = 0x5eed_cafe_f00d_d00d;
    for block in tokens.chunks_exact(block_size) {
        let mut h = parent;
        for &t in block {
            h = mix64(h ^ u64::from(t));
        }
        out.push(h);
        parent = h;
    }
    out
}

/// Most tokens a prompt of `prompt_len` may take from the cache: whole blocks, leaving at least
/// one token to compute (vLLM: `floor((prompt_len - 1) / block) * block`).
pub fn max_cacheable_tokens(prompt_len: usize, block_size: usize) -> usize {
    let b = block_size.max(1);
    (prompt_len.saturating_sub(1) / b) * b
}

/// The cache: at most `capacity` block hashes, least recently used evicted first.
#[derive(Default)]
pub struct PrefixCache {
    block_size: usize,
    capacity: usize,
    /// hash → last-use stamp
    stamps: IdMap<u64>,
    /// last-use stamp → hash (oldest first)
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl PrefixCache {
    pub fn new(block_size: usize, capacity: usize) -> Self {
        Self { block_size: block_size.max(1), capacity, ..Self::default() }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Cached blocks.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }

    fn touch(&mut self, h: u64) {
        self.tick += 1;
        if let Some(old) = self.stamps.insert(h, self.tick) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, h);
    }

    /// Cached tokens for a prompt of `prompt_len` tokens whose block hashes are `hashes`, without
    /// touching anything (what [`lookup`](Self::lookup) would return; the LRU order stays as it
    /// was, so the ledger's models and the simulator's prefix-affinity routing can ask freely).
    pub fn peek(&self, hashes: &[u64], prompt_len: usize) -> usize {
        let max_blocks = max_cacheable_tokens(prompt_len, self.block_size) / self.block_size;
        hashes.iter().take(max_blocks).take_while(|h| self.stamps.contains_key(h)).count() * self.block_size
    }

    /// Cached tokens for a prompt of `prompt_len` tokens whose block hashes are `hashes`: the
    /// longest run of cached leading blocks, capped by [`max_cacheable_tokens`]. Hit blocks become
    /// most recently used.
    pub fn lookup(&mut self, hashes: &[u64], prompt_len: usize) -> usize {
        let max_blocks = max_cacheable_tokens(prompt_len, self.block_size) / self.block_size;
        let mut hit = 0;
        for &h in hashes.iter().take(max_blocks) {
            if !self.stamps.contains_key(&h) {
                break;
            }
            hit += 1;
        }
        for &h in &hashes[..hit] {
            self.touch(h);
        }
        hit * self.block_size
    }

    /// Inserts (or refreshes) `hashes` in order, evicting least recently used blocks past capacity.
    pub fn insert(&mut self, hashes: &[u64]) {
        if self.capacity == 0 {
            return;
        }
        for &h in hashes {
            self.touch(h);
            while self.stamps.len() > self.capacity {
                let Some((_, old)) = self.order.pop_first() else { break };
                self.stamps.remove(&old);
            }
        }
    }

    /// Forgets every block.
    pub fn clear(&mut self) {
        self.stamps.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_is_common_prefix_in_whole_blocks() {
        let a: Vec<u32> = (0..40).collect();
        let mut b = a.clone();
        b[37] = 999;
        b.extend(100..120);
        let mut c = PrefixCache::new(16, 100);
        let ha = block_hashes(&a, 16);
        assert_eq!(ha.len(), 2);
        assert_eq!(c.lookup(&ha, a.len()), 0);
        c.insert(&ha);
        let hb = block_hashes(&b, 16);
        assert_eq!(c.lookup(&hb, b.len()), 32);
        // the same prompt again: capped so one token is computed
        let exact: Vec<u32> = (0..32).collect();
        assert_eq!(c.lookup(&block_hashes(&exact, 16), 32), 16);
        assert_eq!(max_cacheable_tokens(33, 16), 32);
        assert_eq!(max_cacheable_tokens(0, 16), 0);
    }

    #[test]
    fn lru_eviction() {
        let mut c = PrefixCache::new(4, 3);
        let a: Vec<u32> = (0..12).collect();
        let b: Vec<u32> = (100..112).collect();
        let ha = block_hashes(&a, 4);
        c.insert(&ha);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(&ha, 13), 12);
        c.insert(&block_hashes(&b, 4)[..1]);
        assert_eq!(c.len(), 3);
        // a's first block was the least recently used: the whole chain now misses
        assert_eq!(c.lookup(&ha, 13), 0);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn peek_answers_as_lookup_would_and_leaves_the_lru_order_alone() {
        let a: Vec<u32> = (0..12).collect();
        let b: Vec<u32> = (100..112).collect();
        let (ha, hb) = (block_hashes(&a, 4), block_hashes(&b, 4));
        let mut c = PrefixCache::new(4, 4);
        c.insert(&ha[..2]);
        c.insert(&hb[..2]);
        // a's blocks are the least recently used; peeking at them must not make them recent.
        assert_eq!(c.peek(&ha, 13), 8);
        assert_eq!(c.peek(&ha, 8), 4, "capped so one token is computed, as lookup is");
        assert_eq!(c.peek(&[hb[2], hb[1]], 13), 0, "a chain that does not start cached holds nothing");
        c.insert(&block_hashes(&(200..208).collect::<Vec<u32>>(), 4));
        // Two new blocks evicted the two oldest, a's (a lookup instead of the peek would have
        // kept them and evicted b's).
        assert_eq!(c.peek(&ha, 13), 0);
        assert_eq!(c.peek(&hb, 13), 8);
        let mut d = PrefixCache::new(4, 4);
        d.insert(&ha[..2]);
        d.insert(&hb[..2]);
        assert_eq!(d.lookup(&ha, 13), 8);
        d.insert(&block_hashes(&(200..208).collect::<Vec<u32>>(), 4));
        assert_eq!((d.peek(&ha, 13), d.peek(&hb, 13)), (8, 0));
    }
}
