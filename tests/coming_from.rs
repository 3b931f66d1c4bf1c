//! `docs/coming-from.md` shows, beside each tool turnbench replaces, the turnbench commands to
//! run instead. Every command in its ```turnbench blocks is run here against a simulator
//! (`$URL`) with a fresh results folder (`$OUT`): a page that documents a flag that does not
//! exist, or a file the repository lacks, fails this test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_turnbench");

struct Sim(Child);
impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn page_commands(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            inside = line.trim() == "```turnbench";
            continue;
        }
        if inside && !line.trim().is_empty() {
            out.push(line.trim().to_string());
        }
    }
    out
}

#[test]
fn every_turnbench_command_on_the_coming_from_page_runs_against_the_simulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/coming-from.md")).unwrap();
    let commands = page_commands(&page);
    assert!(commands.len() >= 10, "the page lost its commands: {commands:?}");

    let mut child = Command::new(BIN)
        .args(["sim", "--port", "0", "--profile", "instant"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let sim = Sim(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).expect("sim prints its URL").to_string();

    let state = tempfile::tempdir().unwrap();
    for command in &commands {
        assert!(command.starts_with("turnbench "), "not a turnbench command: {command}");
        assert!(!command.contains(['"', '\'', '\\', '|', '>', ';']), "keep page commands free of shell syntax: {command}");
        let out_dir = tempfile::tempdir().unwrap();
        let line = command.replace("$URL", &url).replace("$OUT", out_dir.path().to_str().unwrap());
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        // The client's calibration is tested elsewhere; here it would only add seconds.
        let calibration: &[&str] = if args.first() == Some(&"run") { &["--calibrate-secs", "0"] } else { &[] };
        let out = Command::new(BIN)
            .args(&args)
            .args(calibration)
            .current_dir(root)
            .env("TURNBENCH_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}\nexit {:?}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        if command.contains("$OUT") {
            let folders: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().flatten().collect();
            assert_eq!(folders.len(), 1, "{command}: expected one results folder");
            let folder = folders[0].path();
            for file in ["turns.jsonl", "summary.json", "report.md", "report.html", "manifest.json"] {
                assert!(folder.join(file).is_file(), "{command}: no {file}");
            }
            let manifest: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(folder.join("manifest.json")).unwrap()).unwrap();
            assert_eq!(manifest["completed"], true, "{command}");
        }
    }
    drop(sim);
}
