//! The real suite in `data/`: loads, has the promised shape, and spans every context class.

use std::path::{Path, PathBuf};

use turnbench::workload::select::SelectionFilter;
use turnbench::workload::load::load_suite;
use turnbench::workload::select::{render_listing, select};
use turnbench::workload::tokens::{CountTokens, Estimate};
use turnbench::workload::{RagAction, RagPosition};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

fn args() -> SelectionFilter {
    SelectionFilter::default()
}

#[tokio::test]
async fn real_suite_loads_and_spans_every_context_class() {
    // How fast it loads is `cargo bench --bench load_suite`'s business, not a test's.
    let suite = load_suite(&data("conversations.json"), &data("rag_data.json")).expect("suite loads");

    assert!(suite.conversations.len() >= 14, "{} conversations", suite.conversations.len());
    for tag in ["qa", "code", "technical", "long", "ultra", "rag"] {
        assert!(suite.conversations.iter().any(|c| c.has_tag(tag)), "no conversation tagged {tag}");
    }
    assert_eq!(suite.sources.len(), 2);
    assert!(suite.sources.iter().all(|s| s.sha256.len() == 64));

    // RAG coverage: system inject + remove, user inject + remove, several documents, re-injection.
    let rag: Vec<_> = suite.conversations.iter().filter(|c| c.uses_rag()).collect();
    assert!(rag.len() >= 4, "{} RAG conversations", rag.len());
    let actions = |c: &turnbench::workload::Conversation| c.turns.iter().flat_map(|t| t.rag.clone()).collect::<Vec<_>>();
    let injects_at = |c, pos| {
        actions(c).iter().any(|a| matches!(a, RagAction::Inject { position, .. } if *position == pos))
    };
    let removes = |c| actions(c).iter().any(|a| matches!(a, RagAction::Remove { .. }));
    assert!(rag.iter().any(|c| injects_at(c, RagPosition::System) && removes(c)));
    assert!(rag.iter().any(|c| injects_at(c, RagPosition::User) && removes(c)));
    assert!(rag.iter().any(|c| actions(c).iter().any(|a| matches!(a, RagAction::Inject { documents, .. } if documents.len() >= 2))));
    let reinjects = |c| {
        let acts = actions(c);
        acts.iter().enumerate().any(|(i, a)| match a {
            RagAction::Remove { ids } => ids.iter().any(|id| {
                acts[i + 1..].iter().any(|b| matches!(b, RagAction::Inject { documents, .. } if documents.iter().any(|d| &d.id == id)))
            }),
            _ => false,
        })
    };
    assert!(rag.iter().any(|c| reinjects(c)), "no conversation removes then re-injects a document");
    for c in &suite.conversations {
        assert!((3..=12).contains(&c.turns.len()), "{}: {} turns", c.id, c.turns.len());
        assert!(c.turns.iter().all(|t| (64..=256).contains(&t.max_tokens)), "{}: max_tokens out of 64..=256", c.id);
    }

    let selection = select(&suite, &args(), &Estimate).await.expect("selects");
    eprintln!("{}", render_listing(&selection));
    assert_eq!(selection.chosen.len(), suite.conversations.len());
    // Tags agree with the data: `rag` iff RAG actions, `long` ~15K-64K+, `ultra` ~128K.
    for c in &selection.chosen {
        let id = &c.conversation.id;
        assert_eq!(c.conversation.has_tag("rag"), c.conversation.uses_rag(), "{id}: rag tag vs RAG actions");
        if c.conversation.has_tag("ultra") {
            assert!(c.peak_tokens >= 83_000, "{id}: ultra but peak {}", c.peak_tokens);
        } else if c.conversation.has_tag("long") {
            assert!((9_750..83_000).contains(&c.peak_tokens), "{id}: long but peak {}", c.peak_tokens);
        } else {
            assert!(c.peak_tokens < 9_750, "{id}: peak {} needs the long tag", c.peak_tokens);
        }
    }
    for class in [800u64, 2_500, 7_000, 15_000, 32_000, 64_000, 128_000] {
        let lo = class as f64 * 0.65;
        let hi = class as f64 * 1.35;
        assert!(
            selection.chosen.iter().any(|c| (lo..=hi).contains(&(c.peak_tokens as f64))),
            "no conversation peaks within ±35 % of {class} tokens"
        );
    }
}

/// The simulator's own count: its tokenizer over its chat template.
struct SimCount;

impl CountTokens for SimCount {
    fn count_messages<'a>(
        &'a self,
        messages: &'a [turnbench::core::ChatMessage],
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<u64>> {
        let n = turnbench::sim::tokenizer::count(&turnbench::sim::chat::render_chat(messages, true)) as u64;
        Box::pin(async move { Ok(n) })
    }
    fn is_estimate(&self) -> bool {
        false
    }
    fn describe(&self) -> &str {
        "the simulator's tokenizer"
    }
}

#[tokio::test]
async fn under_the_simulator_every_context_class_lands_in_its_band() {
    let suite = load_suite(&data("conversations.json"), &data("rag_data.json")).expect("suite loads");
    let selection = select(&suite, &args(), &SimCount).await.expect("selects");
    eprintln!("{}", render_listing(&selection));
    for class in [800u64, 2_500, 7_000, 15_000, 32_000, 64_000, 128_000] {
        let (lo, hi) = (class as f64 * 0.65, class as f64 * 1.35);
        assert!(
            selection.chosen.iter().any(|c| (lo..=hi).contains(&(c.peak_tokens as f64))),
            "no conversation peaks within ±35 % of {class} tokens under the simulator"
        );
    }
    // The 128K class runs with a 128K context under the simulator too.
    let ultra: Vec<_> = selection.chosen.iter().filter(|c| c.conversation.has_tag("ultra")).collect();
    assert!(ultra.len() >= 2);
    for c in ultra {
        assert!((83_000..=128_000).contains(&c.peak_tokens), "{}: {} tokens", c.conversation.id, c.peak_tokens);
    }
}

