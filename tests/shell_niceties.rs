//! `turnbench completions` and `turnbench man`, checked by the programs that consume them: bash
//! loads the completion script and completes real words with it, groff renders the man pages.

use std::process::Command;

fn turnbench(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_turnbench")).args(args).output().expect("run turnbench");
    assert!(out.status.success(), "turnbench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Completes `words` (the last one partial) with the generated bash script, as bash does on Tab.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}' && COMP_WORDS=({}) && COMP_CWORD={} && COMP_LINE='{}' && COMP_POINT=${{#COMP_LINE}} && _turnbench turnbench '{}' '{}' && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len().saturating_sub(2)],
    );
    let out = Command::new("bash").args(["--norc", "--noprofile", "-c", &program]).output().expect("run bash");
    assert!(out.status.success(), "bash failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags_from_the_generated_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("turnbench.bash");
    std::fs::write(&script, turnbench(&["completions", "bash"]).stdout).unwrap();

    let check = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &format!("source '{}' && complete -p turnbench", script.display())])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("_turnbench"), "the script registers no completion: {check:?}");

    let subcommands = bash_complete(&script, &["turnbench", "r"]);
    assert!(subcommands.contains(&"run".to_string()) && subcommands.contains(&"report".to_string()), "{subcommands:?}");
    assert!(!subcommands.contains(&"sim".to_string()), "completions must match the prefix: {subcommands:?}");

    let flags = bash_complete(&script, &["turnbench", "run", "--max-conv"]);
    assert_eq!(flags, vec!["--max-conversations".to_string()]);
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let script = String::from_utf8(turnbench(&["completions", shell]).stdout).unwrap();
        for sub in ["run", "report", "sim", "setup", "template", "completions", "man"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
        assert!(script.contains("max-conversations"), "{shell} script lacks run's flags");
    }
}

#[test]
fn man_pages_render_with_groff_and_document_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man");
    turnbench(&["man", "--out-dir", pages.to_str().unwrap()]);
    let mut names: Vec<String> =
        std::fs::read_dir(&pages).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for expected in ["turnbench.1", "turnbench-run.1", "turnbench-report.1", "turnbench-sim.1", "turnbench-template-render.1"] {
        assert!(names.contains(&expected.to_string()), "no {expected} in {names:?}");
    }
    // -k: preconv first, as man(1) does for UTF-8 pages; -P-cbou: plain text, no overstrike.
    let Ok(groff) = Command::new("groff").args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"]).arg(pages.join("turnbench-run.1")).output() else {
        panic!("groff is needed to check the man pages (Debian package groff-base)");
    };
    assert!(groff.status.success());
    let warnings = String::from_utf8_lossy(&groff.stderr);
    assert!(warnings.trim().is_empty(), "groff warnings: {warnings}");
    let text = String::from_utf8_lossy(&groff.stdout);
    for flag in ["--max-conversations", "--include-tags", "--endpoint", "--concurrency"] {
        assert!(text.contains(flag), "rendered turnbench-run(1) lacks {flag}");
    }
    // The page to stdout is the top-level one.
    let top = String::from_utf8(turnbench(&["man"]).stdout).unwrap();
    assert!(top.contains(".TH turnbench 1"), "{}", &top[..top.len().min(200)]);
}
