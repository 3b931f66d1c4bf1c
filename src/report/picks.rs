//! The records a report draws one by one, picked while the records stream past: the
//! per-request table's rows and the per-conversation charts. Bounded whatever the run's length,
//! so a million-request run's reports never hold its records.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::core::record::TurnRecord;

/// Per-request tables list at most this many rows; a run with more shows the first half of them
/// and the slowest (by TTFT) other half, so a 20,000-request run's report stays small.
pub const PER_REQUEST_ROWS: usize = 200;

/// Conversations drawn one by one (the rest are in the table and in `turns.csv`).
pub const MAX_CONVERSATION_CHARTS: usize = 24;

/// One turn of a TTFT-by-turn figure.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnPoint {
    pub turn: u32,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub cached_tokens: Option<f64>,
}

/// One replayed conversation, turn by turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationTurns {
    pub key: String,
    pub label: String,
    pub points: Vec<TurnPoint>,
}

/// The measured records grouped per replayed conversation (test, level, session, id), in the
/// order they first appear; failed turns have no TTFT and no tokens.
pub fn conversation_turns(records: &[TurnRecord]) -> Vec<ConversationTurns> {
    let mut picker = ConversationPicker::new(usize::MAX);
    for r in records.iter().filter(|r| !r.warmup) {
        picker.push(r);
    }
    picker.finish()
}


/// What the exporters show record by record.
#[derive(Debug, Clone, Default)]
pub struct Picks {
    /// The per-request table's rows (see [`RowPicker`]), in table order.
    pub requests: Vec<TurnRecord>,
    /// The first conversations (in order of first appearance) with their turns.
    pub conversations: Vec<ConversationTurns>,
}

impl Picks {
    /// The picks of records in memory.
    pub fn of(records: &[TurnRecord]) -> Picks {
        let mut picker = Picker::default();
        for r in records {
            picker.push(r);
        }
        picker.finish()
    }
}

/// Builds [`Picks`] one record at a time.
#[derive(Debug)]
pub struct Picker {
    rows: RowPicker,
    conversations: ConversationPicker,
}

impl Default for Picker {
    fn default() -> Self {
        Picker { rows: RowPicker::new(PER_REQUEST_ROWS), conversations: ConversationPicker::new(MAX_CONVERSATION_CHARTS) }
    }
}

impl Picker {
    pub fn push(&mut self, r: &TurnRecord) {
        if r.warmup {
            return;
        }
        self.rows.push(r);
        self.conversations.push(r);
    }

    pub fn finish(self) -> Picks {
        Picks { requests: self.rows.finish(), conversations: self.conversations.finish() }
    }
}

/// The rows of a per-request table of at most `cap` rows: every measured record when there are
/// that few; else the first `cap / 2` in order, then the `cap − cap / 2` others with the highest
/// TTFT (failed ones, without TTFT, first; ties in order).
#[derive(Debug)]
pub struct RowPicker {
    cap: usize,
    head: Vec<TurnRecord>,
    /// Candidates after the head, with their order; pruned to the best `cap − cap / 2` whenever
    /// they pass a few times that.
    rest: Vec<(usize, TurnRecord)>,
    seen: usize,
}

fn slowness(r: &TurnRecord) -> f64 {
    r.derived.ttft_ms.filter(|_| r.status.is_ok()).unwrap_or(f64::INFINITY)
}

impl RowPicker {
    pub fn new(cap: usize) -> Self {
        RowPicker { cap, head: Vec::new(), rest: Vec::new(), seen: 0 }
    }

    pub fn push(&mut self, r: &TurnRecord) {
        self.seen += 1;
        if self.head.len() < self.cap / 2 {
            self.head.push(r.clone());
            return;
        }
        self.rest.push((self.seen, r.clone()));
        if self.rest.len() >= 4 * self.cap.max(1) {
            self.prune();
        }
    }

    fn prune(&mut self) {
        self.rest.sort_by(|(i, a), (j, b)| slowness(b).total_cmp(&slowness(a)).then(i.cmp(j)));
        self.rest.truncate(self.cap - self.cap / 2);
    }

    /// Whether the table leaves records out.
    pub fn capped(&self) -> bool {
        self.seen > self.cap
    }

    pub fn finish(mut self) -> Vec<TurnRecord> {
        if self.capped() {
            self.prune();
        }
        self.head.into_iter().chain(self.rest.into_iter().map(|(_, r)| r)).collect()
    }
}

type ConversationKey = (u32, Option<String>, Option<u32>, String);

/// The measured records of the first `limit` replayed conversations (test, level, session, id),
/// in the order they first appear; failed turns have no TTFT and no tokens.
#[derive(Debug)]
pub struct ConversationPicker {
    limit: usize,
    index: HashMap<ConversationKey, usize>,
    picked: Vec<(ConversationKey, Vec<TurnPoint>)>,
}

impl ConversationPicker {
    pub fn new(limit: usize) -> Self {
        ConversationPicker { limit, index: HashMap::new(), picked: Vec::new() }
    }

    pub fn push(&mut self, r: &TurnRecord) {
        let key = (r.test, r.level.clone(), r.session, r.conversation_id.clone());
        let i = match self.index.get(&key) {
            Some(i) => *i,
            None if self.picked.len() < self.limit => {
                self.index.insert(key.clone(), self.picked.len());
                self.picked.push((key, Vec::new()));
                self.picked.len() - 1
            }
            None => return,
        };
        let ok = r.status.is_ok();
        self.picked[i].1.push(TurnPoint {
            turn: r.turn,
            ttft_ms: r.derived.ttft_ms.filter(|_| ok),
            prompt_tokens: r.usage.prompt_tokens.filter(|_| ok).map(|n| n as f64),
            cached_tokens: r.observed_reuse().filter(|_| ok).map(|n| n as f64),
        });
    }

    pub fn finish(self) -> Vec<ConversationTurns> {
        self.picked
            .into_iter()
            .enumerate()
            .map(|(i, ((test, level, session, id), mut points))| {
                points.sort_by_key(|p| p.turn);
                let mut label = format!("test {test} · {id}");
                if let Some(l) = level {
                    let _ = write!(label, " · level {l}");
                }
                if let Some(s) = session {
                    let _ = write!(label, " · session {s}");
                }
                ConversationTurns { key: format!("conv-{i}"), label, points }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::tests::{failed, rec};
    use crate::core::record::Status;

    /// The table rows as the whole list would give them: head, then the rest sorted by
    /// slowness (stable).
    fn by_sorting(records: &[TurnRecord], cap: usize) -> Vec<TurnRecord> {
        if records.len() <= cap {
            return records.to_vec();
        }
        let head = cap / 2;
        let mut rest = records[head..].to_vec();
        rest.sort_by(|a, b| slowness(b).total_cmp(&slowness(a)));
        rest.truncate(cap - head);
        records[..head].iter().cloned().chain(rest).collect()
    }

    #[test]
    fn streamed_rows_are_those_of_sorting_every_record() {
        for n in [0, 3, 10, 11, 57, 500] {
            let records: Vec<TurnRecord> = (0..n)
                .map(|i| {
                    if i % 13 == 5 {
                        failed(&format!("c{i}"), 1, Status::Timeout, "slow")
                    } else {
                        // Ties on purpose: order must decide between equal TTFTs.
                        rec(&format!("c{i}"), 1, ((i * 37) % 17) as f64, 100.0, 10, 0)
                    }
                })
                .collect();
            let mut picker = RowPicker::new(10);
            for r in &records {
                picker.push(r);
            }
            let got: Vec<String> = picker.finish().iter().map(|r| r.conversation_id.clone()).collect();
            let want: Vec<String> = by_sorting(&records, 10).iter().map(|r| r.conversation_id.clone()).collect();
            assert_eq!(got, want, "{n} records");
        }
    }

    #[test]
    fn conversations_are_picked_in_order_of_first_appearance_up_to_the_limit() {
        let records = vec![rec("b", 2, 20.0, 40.0, 100, 50), rec("a", 1, 10.0, 30.0, 50, 0), rec("b", 1, 30.0, 50.0, 60, 0), rec("c", 1, 1.0, 2.0, 1, 0)];
        let mut picker = ConversationPicker::new(2);
        for r in &records {
            picker.push(r);
        }
        let convs = picker.finish();
        assert_eq!(convs.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["test 0 · b", "test 0 · a"]);
        assert_eq!(convs[0].points.iter().map(|p| p.turn).collect::<Vec<_>>(), [1, 2], "sorted by turn");
        assert_eq!(convs[0].points[1].cached_tokens, Some(50.0));
    }
}
