//! `report.html` in a real browser: a suite run and a load run against the simulator each leave
//! a page that headless Chromium loads without a console error, with at least three charts in
//! the rendered DOM; so does `turnbench report A --compare B`. Screenshots are written under the
//! target folder (`$CARGO_TARGET_TMPDIR/report-browser/*.png`) for a person to look at.
//!
//! Chromium comes from `scripts/install-chromium.sh` (the Debian package), which
//! `scripts/test.sh` runs: in CI (`CI=true`) a missing browser fails the test; elsewhere it is
//! skipped with a loud message.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_success, show, Guard, Suite, BIN};
use serde_json::json;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TURNBENCH_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome-stable", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

fn browser_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true") || std::env::var("TURNBENCH_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// The browser, or `None` after saying loudly that the test is skipped (never in CI).
fn browser_or_skip() -> Option<PathBuf> {
    match chromium() {
        Some(p) => Some(p),
        None if browser_required() => {
            panic!("no Chromium: CI must install it through scripts/install-chromium.sh (scripts/test.sh does)")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: report.html browser test — no Chromium on PATH. ***\n\
                 *** Run `bash scripts/install-chromium.sh` (Debian package `chromium`), then this test again. ***\n"
            );
            None
        }
    }
}

/// What one headless page load left: the serialized DOM and Chromium's log (stderr).
struct Loaded {
    dom: String,
    log: String,
}

/// Runs Chromium headless on `page` with `mode` (`--dump-dom` or `--screenshot=…`); kills it
/// after a minute.
fn chromium_run(browser: &Path, page: &Path, mode: &str) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    // Guarded (a panic below must not leave it running), and with HOME and the XDG folders in
    // the profile: NSS, fontconfig and crash reporting write under them, not the user's home.
    let mut child = Guard::spawn(
        Command::new(browser)
            .env("HOME", profile.path())
            .env("XDG_CACHE_HOME", profile.path().join("cache"))
            .env("XDG_CONFIG_HOME", profile.path().join("config"))
            .env("XDG_DATA_HOME", profile.path().join("data"))
            .args([
            "--headless",
            "--no-sandbox", // root in containers; the page is our own file
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1800",
            "--enable-logging=stderr",
            "--v=0",
            "--disable-crash-reporter",
            "--disable-breakpad",
        ])
        .arg(format!("--user-data-dir={}", profile.path().join("chromium").display()))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    let mut stdout = child.child().stdout.take().unwrap();
    let mut stderr = child.child().stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.child().try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            panic!("chromium did not finish {mode} of {} within a minute", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Loaded { dom: out_reader.join().unwrap(), log: err_reader.join().unwrap() }
}

/// Console errors in Chromium's log, and the marks the page's own error hook leaves in the DOM.
fn console_errors(loaded: &Loaded) -> Vec<String> {
    let mut errors: Vec<String> = loaded
        .log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains(":ERROR:") || l.contains("Uncaught") || l.to_lowercase().contains("error")))
        .map(str::to_string)
        .collect();
    if let Some(i) = loaded.dom.find("data-js-error=") {
        errors.push(format!("window.onerror: {}", &loaded.dom[i..(i + 200).min(loaded.dom.len())]));
    }
    errors
}

/// Charts rendered in the DOM Chromium built: `<svg>` and `<canvas>` elements.
fn charts(dom: &str) -> usize {
    dom.matches("<svg").count() + dom.matches("<canvas").count()
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Loads `page`, checks it, and writes `<name>.png` beside the other screenshots.
fn check_page(browser: &Path, page: &Path, name: &str) -> String {
    let html = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    for asset in ["src=\"http", "href=\"http", "url(http", "<link", "<script src", "@import", "<iframe"] {
        assert!(!html.contains(asset), "{name}: external reference {asset:?} in {}", page.display());
    }
    let loaded = chromium_run(browser, page, "--dump-dom");
    assert!(loaded.dom.contains("</html>"), "{name}: no DOM dumped; chromium said:\n{}", loaded.log);
    let errors = console_errors(&loaded);
    assert!(errors.is_empty(), "{name}: console errors:\n{}", errors.join("\n"));
    assert!(loaded.dom.contains(r#"data-js="ready""#), "{name}: the page's script did not run to its end");
    let n = charts(&loaded.dom);
    assert!(n >= 3, "{name}: {n} charts rendered, expected at least 3");
    let shot = shots_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    let shot_run = chromium_run(browser, page, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{name}: no screenshot {}: {e}\n{}", shot.display(), shot_run.log));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: screenshot is not a PNG");
    eprintln!("{name}: {} bytes, {n} charts, screenshot {}", html.len(), shot.display());
    loaded.dom
}

fn conversations() -> serde_json::Value {
    let conv = |id: &str, turns: usize| {
        let list: Vec<_> = (0..turns)
            .map(|i| json!({"user": format!("Question {i}: explain prefix caching for {id} in a few words. {}", "context ".repeat(40 * (i + 1))), "max_tokens": 12}))
            .collect();
        json!({"id": id, "title": id, "tags": ["qa"], "system": "You are terse.", "turns": list})
    };
    json!([conv("alpha", 4), conv("beta", 3)])
}

#[test]
fn the_detector_sees_a_console_error() {
    // The checks below are only worth something if they can fail: a page that throws must be caught.
    let Some(browser) = browser_or_skip() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("broken.html");
    let hook = r#"<script>window.addEventListener("error",function(e){document.documentElement.setAttribute("data-js-error",String(e.message));});</script>"#;
    std::fs::write(&page, format!("<!doctype html><html><head>{hook}</head><body><script>notDefinedAnywhere();</script></body></html>")).unwrap();
    let loaded = chromium_run(&browser, &page, "--dump-dom");
    let errors = console_errors(&loaded);
    assert!(!errors.is_empty(), "a thrown error went unnoticed; DOM:\n{}\nlog:\n{}", loaded.dom, loaded.log);
    assert_eq!(charts(&loaded.dom), 0);
}

#[test]
fn suite_load_and_compare_pages_render_in_chromium() {
    let Some(browser) = browser_or_skip() else { return };
    let sim = ["--engine", "sim", "--engine-arg=--profile=instant", "--warmup=0", "--sample-interval", "100"];

    let suite = Suite::new(conversations(), json!([]));
    let out = suite.run(&sim);
    assert_success(&out);
    let suite_dir = suite.results();
    let dom = check_page(&browser, &suite_dir.join("report.html"), "suite");
    assert!(dom.contains("TTFT by turn") && dom.contains("test 1 · alpha"), "per-conversation chart of alpha");
    assert!(dom.contains(r#"id="resources""#), "the run sampled: a timeline section");

    let load = Suite::new(conversations(), json!([]));
    let mut args = sim.to_vec();
    args.extend(["--qps", "2,6", "--duration", "1.5"]);
    let out = load.run(&args);
    assert_success(&out);
    let load_dir = load.results();
    let dom = check_page(&browser, &load_dir.join("report.html"), "load");
    assert!(dom.contains(r#"id="load""#) && dom.contains("Rate and success vs load"), "load levels section");

    let out = Command::new(BIN).arg("report").arg(&suite_dir).arg("--compare").arg(&load_dir).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let page = std::fs::read_dir(&suite_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("compare-") && p.extension().is_some_and(|e| e == "html"))
        .expect("compare-*.html written");
    let dom = check_page(&browser, &page, "compare");
    assert!(dom.contains("<h2>A: ") && dom.contains("<h2>B: "), "side by side");
}
