//! Every built-in template renders every fixture byte for byte as Python transformers'
//! `apply_chat_template` did (goldens made by scripts/make-template-goldens.py, which
//! `scripts/test.sh --with-vllm` and CI run with `--check` against the vLLM venv's transformers;
//! no Python here).

use std::path::{Path, PathBuf};

use serde_json::Value;
use turnbench::template::{builtin_names, ChatTemplate};
use turnbench::core::ChatMessage;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/templates")
}

fn fixtures() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("fixtures.json")).unwrap()).unwrap()
}

#[test]
fn builtin_templates_match_transformers_byte_for_byte() {
    let fixtures = fixtures();
    let mut compared = 0;
    let mut failures = Vec::new();
    for name in builtin_names() {
        let template = ChatTemplate::builtin(name).unwrap().unwrap();
        let tokens = &fixtures["templates"][name];
        assert_eq!(template.tokens().bos_token.as_deref(), tokens["bos_token"].as_str(), "{name} bos_token");
        assert_eq!(template.tokens().eos_token.as_deref(), tokens["eos_token"].as_str(), "{name} eos_token");
        for case in fixtures["cases"].as_array().unwrap() {
            let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
            for (gen, suffix) in [(true, "gen"), (false, "nogen")] {
                let file = golden_dir().join(name).join(format!("{}.{suffix}.txt", case["name"].as_str().unwrap()));
                let expected = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let got = template.render(&messages, gen).unwrap();
                compared += 1;
                if got.as_bytes() != expected.as_slice() {
                    failures.push(format!(
                        "{}:\n--- transformers\n{:?}\n--- turnbench\n{:?}",
                        file.display(),
                        String::from_utf8_lossy(&expected),
                        got
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {compared} renders differ:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(compared, builtin_names().len() * fixtures["cases"].as_array().unwrap().len() * 2);
}

#[test]
fn every_builtin_has_goldens() {
    for name in builtin_names() {
        assert!(golden_dir().join(name).is_dir(), "no goldens for {name}: run scripts/make-template-goldens.py");
    }
}
