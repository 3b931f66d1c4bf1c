//! `deploy/k8s/` and the `Containerfile`, checked three ways:
//!
//! 1. every manifest passes `kubernetes-validate --strict` (unknown fields are errors) against
//!    the oldest and the newest Kubernetes this project claims — and a deliberately broken one
//!    does not, so the check can fail;
//! 2. what the CLI needs is what the manifests say: an Indexed Job whose `completions`,
//!    `parallelism` and `--shard job/N` agree, the API key only from a Secret, the run id from the
//!    ConfigMap both Jobs read, containers fit for OpenShift's restricted SCC;
//! 3. the real path: the shard Job's own `args` and `env`, resolved as the kubelet would (`$(VAR)`
//!    expansion, Secret and ConfigMap keys, volume mounts, `JOB_COMPLETION_INDEX`, the image's
//!    `WORKDIR`), run once per index against the simulator, then the merge Job's `args` the same
//!    way; the merged `summary.json` counts every request of every shard.
//!
//! kubernetes-validate (PyPI, with PyYAML, which also turns the YAML into JSON here) comes from
//! `scripts/install-k8s-validate.sh`, which `scripts/test.sh` runs and names in
//! `TURNBENCH_K8S_VALIDATE` (the venv). With `TURNBENCH_REQUIRE_K8S_VALIDATE=1` (CI) a missing
//! venv fails the tests that need it; elsewhere they are skipped with a loud message. The image
//! itself cannot be built here (no container runtime); its `Containerfile` is read, not run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{json_file, show, turnbench, Guard, BIN};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Validated against the oldest Kubernetes the manifests claim (OpenShift 4.17 is 1.30) and the
/// newest schema kubernetes-validate 1.37.0 ships.
const K8S_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// ConfigMaps hold at most 1 MiB (etcd's object limit): the suite must fit in one.
const CONFIGMAP_LIMIT: usize = 1024 * 1024;

fn k8s_dir() -> PathBuf {
    Path::new(ROOT).join("deploy/k8s")
}

/// Every manifest, sorted: `deploy/k8s/*.yaml`.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "deploy/k8s lost its manifests: {files:?}");
    files
}

fn validator_required() -> bool {
    std::env::var("TURNBENCH_REQUIRE_K8S_VALIDATE").is_ok_and(|v| v == "1")
}

/// The kubernetes-validate venv, or `None` after saying loudly that `what` is skipped.
fn venv_or_skip(what: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("TURNBENCH_K8S_VALIDATE").filter(|p| !p.is_empty()).map(PathBuf::from);
    match venv {
        Some(v) if v.join("bin/kubernetes-validate").is_file() && v.join("bin/python").is_file() => Some(v),
        Some(v) => panic!(
            "TURNBENCH_K8S_VALIDATE={} holds no bin/kubernetes-validate and bin/python: run scripts/install-k8s-validate.sh",
            v.display()
        ),
        None if validator_required() => panic!(
            "TURNBENCH_REQUIRE_K8S_VALIDATE=1 but TURNBENCH_K8S_VALIDATE is unset: scripts/test.sh sets it from scripts/install-k8s-validate.sh"
        ),
        None => {
            eprintln!(
                "\n*** SKIPPED: {what} (tests/k8s_manifests.rs) — TURNBENCH_K8S_VALIDATE is unset. ***\n\
                 *** Run `export TURNBENCH_K8S_VALIDATE=$(bash scripts/install-k8s-validate.sh)`, then this test again. ***\n"
            );
            None
        }
    }
}

/// `kubernetes-validate --strict -k VERSION FILES…`: `Ok(log)` when every resource of every file
/// passed, with no warning (an unknown kind is only a warning to it, but an error here), else
/// `Err(log)`.
fn validate(venv: &Path, version: &str, files: &[PathBuf]) -> Result<String, String> {
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", version])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let passed = log.lines().filter(|l| l.contains(" passed for resource ")).count();
    let warned = log.lines().any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    if out.status.success() && !warned && passed >= files.len() {
        Ok(log)
    } else {
        Err(format!("status {}, {passed} passed:\n{log}", out.status))
    }
}

/// Every YAML document of each file, as JSON (the venv's PyYAML, `safe_load_all`).
fn load_yaml(venv: &Path, files: &[PathBuf]) -> BTreeMap<String, Vec<Value>> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        out = {}\n\
        for f in sys.argv[1:]:\n\
        \x20   with open(f) as fh:\n\
        \x20       out[f] = [d for d in yaml.safe_load_all(fh) if d is not None]\n\
        json.dump(out, sys.stdout)\n";
    let out = Command::new(venv.join("bin/python")).arg("-c").arg(SCRIPT).args(files).output().unwrap();
    assert!(out.status.success(), "PyYAML could not read the manifests: {}", show(&out));
    let by_path: BTreeMap<String, Vec<Value>> = serde_json::from_slice(&out.stdout).unwrap();
    by_path
        .into_iter()
        .map(|(p, docs)| (Path::new(&p).file_name().unwrap().to_string_lossy().into_owned(), docs))
        .collect()
}

/// Every resource in deploy/k8s, in file order.
fn resources(venv: &Path) -> Vec<Value> {
    load_yaml(venv, &manifest_files()).into_values().flatten().collect()
}

fn find<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/k8s has no {kind} {name}"))
}

/// The Indexed Job that runs the shards: the one Job with `completionMode: Indexed`.
fn shard_job(all: &[Value]) -> &Value {
    let indexed: Vec<&Value> = all.iter().filter(|r| r["kind"] == "Job" && r["spec"]["completionMode"] == "Indexed").collect();
    assert_eq!(indexed.len(), 1, "expected one Indexed Job in deploy/k8s");
    indexed[0]
}

/// The Job whose container runs `turnbench merge`.
fn merge_job(all: &[Value]) -> &Value {
    let merges: Vec<&Value> =
        all.iter().filter(|r| r["kind"] == "Job" && args(container(r)).first().map(String::as_str) == Some("merge")).collect();
    assert_eq!(merges.len(), 1, "expected one merge Job in deploy/k8s");
    merges[0]
}

fn pod_spec(resource: &Value) -> &Value {
    match resource["kind"].as_str() {
        Some("Pod") => &resource["spec"],
        _ => &resource["spec"]["template"]["spec"],
    }
}

/// The only container of a Job's pod.
fn container(job: &Value) -> &Value {
    let containers = pod_spec(job)["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{}: one container expected", job["metadata"]["name"]);
    &containers[0]
}

fn args(container: &Value) -> Vec<String> {
    let list = container["args"].as_array().unwrap_or_else(|| panic!("container {} has no args", container["name"]));
    list.iter().map(|a| a.as_str().unwrap_or_else(|| panic!("args must be strings in YAML: {a}")).to_string()).collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// `$(NAME)` references in `text`, as Kubernetes reads them (`$$` escapes a `$`).
fn var_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(j) => {
                    out.push(inner[..j].to_string());
                    rest = &inner[j + 1..];
                }
                None => break,
            }
        } else {
            rest = after;
        }
    }
    out
}

/// Kubernetes' expansion of `$(NAME)` in `args` and env values: a defined variable is replaced,
/// an undefined reference stays as written, `$$` becomes `$`.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(j) = after.strip_prefix('(').and_then(|inner| inner.find(')')) {
            let reference = &after[..j + 2]; // `(NAME)`
            match env.get(&reference[1..j + 1]) {
                Some(v) => out.push_str(v),
                None => {
                    out.push('$');
                    out.push_str(reference);
                }
            }
            rest = &after[j + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The suite ConfigMap exactly as the documented command makes it:
/// `kubectl create configmap turnbench-suite --from-file=data/conversations.json
/// --from-file=data/rag_data.json --dry-run=client -o yaml` (written as JSON, which is YAML).
fn suite_configmap() -> Value {
    let read = |name: &str| std::fs::read_to_string(Path::new(ROOT).join("data").join(name)).unwrap();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"creationTimestamp": null, "name": "turnbench-suite"},
        "data": {"conversations.json": read("conversations.json"), "rag_data.json": read("rag_data.json")},
    })
}

#[test]
fn expansion_is_the_kubelets() {
    let env: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
    assert_eq!(expand("/r/$(A)/m", &env), "/r/x/m");
    assert_eq!(expand("$(B)-$(A)", &env), "$(B)-x");
    assert_eq!(expand("$$(A) $5 $", &env), "$(A) $5 $");
    assert_eq!(var_refs("/r/$(A)/$(B) $$(C)"), ["A", "B"]);
}

#[test]
fn every_manifest_validates_strictly_and_a_broken_one_does_not() {
    let Some(venv) = venv_or_skip("Kubernetes manifest validation") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("turnbench-suite.json");
    let configmap = suite_configmap();
    let size: usize = configmap["data"].as_object().unwrap().values().map(|v| v.as_str().unwrap().len()).sum();
    assert!(size < CONFIGMAP_LIMIT, "the suite ({size} bytes) no longer fits in one ConfigMap (1 MiB)");
    std::fs::write(&suite, configmap.to_string()).unwrap();

    let mut files = manifest_files();
    files.push(suite);
    for version in K8S_VERSIONS {
        if let Err(log) = validate(&venv, version, &files) {
            panic!("deploy/k8s does not validate against Kubernetes {version}: {log}");
        }
    }

    // The check can fail: an unknown field in the Job spec (a typo that `kubectl apply` would
    // reject, or — worse — silently drop with client-side validation off), a wrong type, an
    // unknown kind.
    let job = std::fs::read_to_string(k8s_dir().join("job-shards.yaml")).unwrap();
    assert!(job.contains("\n  completionMode: Indexed\n"), "job-shards.yaml changed shape; update this test's broken copies");
    let broken = [
        ("unknown-field", job.replace("\n  completionMode: Indexed\n", "\n  completionMode: Indexed\n  completionz: 4\n"), "completionz"),
        ("wrong-type", job.replace("\n  completions: 4\n", "\n  completions: four\n"), "four"),
        ("unknown-kind", job.replace("\nkind: Job\n", "\nkind: Jobb\n"), "Jobb"),
    ];
    for (name, text, culprit) in broken {
        let path = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        match validate(&venv, K8S_VERSIONS[0], &[path]) {
            Ok(log) => panic!("a broken manifest ({name}) passed validation:\n{log}"),
            Err(log) => assert!(log.contains(culprit), "{name}: the failure does not name {culprit:?}:\n{log}"),
        }
    }
}

#[test]
fn the_manifests_say_what_the_cli_needs() {
    let Some(venv) = venv_or_skip("Kubernetes manifest contents") else { return };
    let all = resources(&venv);

    // The shard Job: Indexed, N pods at once, `--shard job/N` with the same N.
    let shards = shard_job(&all);
    let spec = &shards["spec"];
    let n = spec["completions"].as_u64().expect("completions");
    assert!(n >= 2, "a sharded run of {n}");
    assert_eq!(spec["parallelism"].as_u64(), Some(n), "parallelism must equal completions: the shards run at once");
    let shard_c = container(shards);
    let shard_args = args(shard_c);
    assert_eq!(shard_args[0], "run");
    assert_eq!(flag(&shard_args, "--shard"), Some(format!("job/{n}").as_str()), "--shard job/N must match completions {n}");
    assert_eq!(flag(&shard_args, "--run-id"), Some("$(TURNBENCH_RUN_ID)"));
    assert_eq!(flag(&shard_args, "--results-dir"), Some("/results"));
    assert!(flag(&shard_args, "--endpoint").is_some_and(|e| e.starts_with("http")), "{shard_args:?}");
    // A retried shard would begin after the common start, or write a second folder for its index.
    assert_eq!(spec["backoffLimit"].as_u64(), Some(0), "shards must not be retried");
    assert_eq!(pod_spec(shards)["restartPolicy"], "Never");

    // The merge Job: the same run id and volume, the run's folder in, `merged` beside the shards.
    let merge = merge_job(&all);
    let merge_c = container(merge);
    assert_eq!(args(merge_c), ["merge", "/results/$(TURNBENCH_RUN_ID)", "--out", "/results/$(TURNBENCH_RUN_ID)/merged"]);
    assert_eq!(shard_c["image"], merge_c["image"], "both Jobs run the same image");

    // One results volume, ReadWriteMany (N pods on any nodes write at once).
    let pvc_name = |job: &Value| -> String {
        let volumes = pod_spec(job)["volumes"].as_array().unwrap();
        let v = volumes.iter().find(|v| v["persistentVolumeClaim"].is_object()).expect("a PVC volume");
        v["persistentVolumeClaim"]["claimName"].as_str().unwrap().to_string()
    };
    assert_eq!(pvc_name(shards), pvc_name(merge));
    let pvc = find(&all, "PersistentVolumeClaim", &pvc_name(shards));
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));

    // The API key: only from the Secret, never an argument or a literal.
    let secret = find(&all, "Secret", "turnbench-api-key");
    assert_eq!(secret["type"], "Opaque");
    let placeholder = secret["stringData"]["api-key"].as_str().expect("the Secret template's api-key");
    let env = shard_c["env"].as_array().unwrap();
    let key_env = env.iter().find(|e| e["name"] == "TURNBENCH_API_KEY").expect("TURNBENCH_API_KEY in the shard env");
    assert_eq!(key_env["valueFrom"]["secretKeyRef"], json!({"name": "turnbench-api-key", "key": "api-key"}));
    assert!(key_env.get("value").is_none());

    for resource in all.iter().filter(|r| r["kind"] == "Job" || r["kind"] == "Pod") {
        let name = resource["metadata"]["name"].as_str().unwrap();
        let pod = pod_spec(resource);
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}: no API token in the pod");
        assert!(pod["securityContext"].get("runAsUser").is_none(), "{name}: no fixed UID (OpenShift assigns one)");
        assert!(pod["securityContext"].get("fsGroup").is_none(), "{name}: no fixed fsGroup (OpenShift assigns one)");
        let env_names: Vec<&str> = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .filter_map(|e| e["name"].as_str())
            .collect();
        for c in pod["containers"].as_array().unwrap().iter().chain(pod["initContainers"].as_array().into_iter().flatten()) {
            let what = format!("{name}/{}", c["name"].as_str().unwrap());
            let sc = &c["securityContext"];
            let non_root = sc["runAsNonRoot"].as_bool().or(pod["securityContext"]["runAsNonRoot"].as_bool());
            assert_eq!(non_root, Some(true), "{what}: runAsNonRoot");
            assert!(sc.get("runAsUser").is_none(), "{what}: no fixed runAsUser");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert!(!sc["privileged"].as_bool().unwrap_or(false), "{what}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
            assert!(sc["capabilities"].get("add").is_none(), "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
            let seccomp = sc["seccompProfile"]["type"].as_str().or(pod["securityContext"]["seccompProfile"]["type"].as_str());
            assert_eq!(seccomp, Some("RuntimeDefault"), "{what}");
            assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string(), "{what}: requests");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{what}: a memory limit");
            assert!(c["resources"]["limits"].get("cpu").is_none(), "{what}: no CPU limit (throttling would be measured as latency)");

            // Nothing a container is given holds the key.
            let texts = c["args"].as_array().into_iter().chain(c["command"].as_array()).flatten().filter_map(Value::as_str);
            let literals = c["env"].as_array().into_iter().flatten().filter_map(|e| e["value"].as_str());
            for text in texts.clone().chain(literals) {
                assert!(!text.contains(placeholder), "{what}: {text:?} holds the API key");
                assert!(!text.to_ascii_lowercase().contains("api-key") && !text.contains("API_KEY"), "{what}: {text:?}");
            }
            // Every `$(VAR)` is defined (Kubernetes leaves an undefined one as written).
            for text in texts {
                for var in var_refs(text) {
                    assert!(env_names.contains(&var.as_str()), "{what}: $({var}) in {text:?} is not in the env");
                }
            }
            // A read-only root: /tmp and HOME are writable volumes.
            let mounts: Vec<&str> =
                c["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
            if c["image"].as_str().unwrap().contains("turnbench") {
                assert!(mounts.contains(&"/tmp"), "{what}: /tmp must be a volume");
                let home = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "HOME").expect("HOME set");
                assert!(mounts.contains(&home["value"].as_str().unwrap()), "{what}: HOME must be a volume");
            }
        }
    }

    // Every ConfigMap key a Job reads is in the committed template, or optional, or the suite's.
    let run_cm = find(&all, "ConfigMap", "turnbench-run");
    for c in [shard_c, merge_c] {
        for e in c["env"].as_array().unwrap() {
            let r = &e["valueFrom"]["configMapKeyRef"];
            if r.is_object() {
                assert_eq!(r["name"], "turnbench-run", "{e}");
                let key = r["key"].as_str().unwrap();
                assert!(run_cm["data"].get(key).is_some() || r["optional"] == true, "{e}: no key {key} in run-configmap.yaml");
            }
        }
    }
    let suite = pod_spec(shards)["volumes"].as_array().unwrap().iter().find(|v| v["configMap"]["name"] == "turnbench-suite");
    assert!(suite.is_some(), "the shard Job mounts the suite ConfigMap");
}

#[test]
fn the_containerfile_builds_what_the_manifests_run() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Containerfile")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let froms: Vec<&String> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms[0].starts_with("FROM docker.io/library/rust:1-bookworm "), "{froms:?}");
    assert_eq!(froms.last().unwrap().as_str(), "FROM gcr.io/distroless/cc-debian12:nonroot");
    assert!(text.contains("cargo build --release --locked"));
    let final_stage: Vec<&String> = lines.iter().skip_while(|l| *l != *froms.last().unwrap()).collect();
    let has = |prefix: &str| final_stage.iter().any(|l| l.starts_with(prefix));
    assert!(has("WORKDIR /opt/turnbench"), "{final_stage:?}");
    assert!(has(r#"ENTRYPOINT ["/usr/local/bin/turnbench"]"#), "{final_stage:?}");
    // A numeric non-root user, so the kubelet can check runAsNonRoot without a passwd file.
    let user = final_stage.iter().rev().find(|l| l.starts_with("USER ")).expect("USER in the final stage");
    let uid: u32 = user[5..].split(':').next().unwrap().parse().expect("a numeric USER");
    assert_ne!(uid, 0);
    // What the image holds under /opt/turnbench is what the run's defaults read.
    for dir in ["data", "configs"] {
        assert!(text.contains(&format!("/opt/turnbench/{dir}")), "the image lacks /opt/turnbench/{dir}");
    }
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    for path in ["target", "results", ".models", ".venv", ".git"] {
        assert!(ignore.lines().any(|l| l.trim_matches('/') == path), ".dockerignore does not exclude {path}");
    }
}

/// One pod, as the kubelet would start it here: its env (manifest env resolved against the
/// cluster's Secrets and ConfigMaps, plus `extra`), its volumes under `root`, its working dir.
struct Pod {
    env: BTreeMap<String, String>,
    args: Vec<String>,
    cwd: PathBuf,
}

/// What the test's cluster holds: Secret and ConfigMap data by name, the PVC's folder.
struct Cluster {
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    configmaps: BTreeMap<String, BTreeMap<String, String>>,
    pvcs: BTreeMap<String, PathBuf>,
}

impl Cluster {
    /// `job`'s pod with `extra` env (e.g. `JOB_COMPLETION_INDEX`), its filesystem at `root`: the
    /// image's files (Containerfile: `data/` and `configs/` under `/opt/turnbench`, the working
    /// dir), then each volume at its mount path — a PVC as a link to the shared folder, a
    /// ConfigMap as its keys, an emptyDir empty. Absolute paths in args and env that fall under a
    /// mount are moved under `root`.
    fn pod(&self, job: &Value, extra: &[(&str, String)], root: &Path) -> Pod {
        let c = container(job);
        let spec = pod_spec(job);
        let workdir = root.join("opt/turnbench");
        std::fs::create_dir_all(&workdir).unwrap();
        for dir in ["data", "configs"] {
            copy_tree(&Path::new(ROOT).join(dir), &workdir.join(dir));
        }
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_array().unwrap() {
            let path = m["mountPath"].as_str().unwrap();
            let name = m["name"].as_str().unwrap();
            let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).expect("mounted volume is declared");
            let at = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                std::os::unix::fs::symlink(&self.pvcs[claim], &at).unwrap();
            } else if let Some(cm) = volume["configMap"]["name"].as_str() {
                std::fs::create_dir_all(&at).unwrap();
                for (key, value) in self.configmaps.get(cm).unwrap_or_else(|| panic!("no ConfigMap {cm} in the cluster")) {
                    std::fs::write(at.join(key), value).unwrap();
                }
            } else {
                assert!(volume["emptyDir"].is_object(), "unexpected volume {volume}");
                std::fs::create_dir_all(&at).unwrap();
            }
            mounts.push(path.to_string());
        }
        let relocate = |text: String| -> String {
            match mounts.iter().find(|m| text == **m || text.starts_with(&format!("{m}/"))) {
                Some(_) => root.join(text.trim_start_matches('/')).to_string_lossy().into_owned(),
                None => text,
            }
        };

        let mut env: BTreeMap<String, String> = extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                Some(expand(v, &env))
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                self.lookup(&self.secrets, r)
            } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
                self.lookup(&self.configmaps, r)
            } else {
                panic!("this test does not resolve env {e}")
            };
            if let Some(v) = value {
                env.insert(name, relocate(v));
            }
        }
        let args = args(c).iter().map(|a| relocate(expand(a, &env))).collect();
        Pod { env, args, cwd: workdir }
    }

    fn lookup(&self, store: &BTreeMap<String, BTreeMap<String, String>>, r: &serde_json::Map<String, Value>) -> Option<String> {
        let (name, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
        let value = store.get(name).and_then(|d| d.get(key)).cloned();
        assert!(value.is_some() || r.get("optional") == Some(&Value::Bool(true)), "{name}/{key} is missing and not optional");
        value
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// `turnbench ARGS` with exactly the pod's env (nothing of this process's), in its working dir;
/// output to files under `log` (no pipe to fill).
fn start(pod: &Pod, log: &Path) -> Guard {
    let out = std::fs::File::create(log.with_extension("out")).unwrap();
    let err = std::fs::File::create(log.with_extension("err")).unwrap();
    Guard::spawn(
        Command::new(BIN)
            .args(&pod.args)
            .env_clear()
            .envs(&pod.env)
            .current_dir(&pod.cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    )
}

/// Waits (at most `within`) for `guard`; its status and what it printed.
fn finish(mut guard: Guard, log: &Path, within: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = guard.child().try_wait().unwrap() {
            break s;
        }
        let printed = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
        assert!(Instant::now() < deadline, "not done within {within:?}; stderr so far:\n{printed}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed = format!(
        "stdout:\n{}\nstderr:\n{}",
        std::fs::read_to_string(log.with_extension("out")).unwrap_or_default(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    );
    (status, printed)
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(path);
        }
    }
    hits
}

#[test]
fn the_shard_job_and_the_merge_job_run_as_written() {
    let Some(venv) = venv_or_skip("the shard and merge Jobs run as written") else { return };
    let all = resources(&venv);
    let shards = shard_job(&all);
    let merge = merge_job(&all);
    let n = shards["spec"]["completions"].as_u64().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // The router behind the endpoint: the simulator with two replicas behind one port, no latency.
    let mut sim = Guard::spawn(
        turnbench(tmp.path())
            .args(["sim", "--port", "0", "--profile", "instant", "--replicas", "2", "--routing", "prefix-affinity"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(sim.child().stdout.take().unwrap()), &mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("sim prints its URL").to_string();

    // The cluster: what `kubectl create secret/configmap` would hold for this run.
    let key = "tb-k8s-test-key-6f1d0c";
    let run_id = "k8s-test-run";
    // A common start a few seconds ahead, as the README says (there: two minutes).
    let start_at = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(5)).unwrap();
    let pvc = tmp.path().join("pvc");
    std::fs::create_dir_all(&pvc).unwrap();
    let suite = suite_configmap();
    let suite_data = suite["data"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    let cluster = Cluster {
        secrets: [("turnbench-api-key".to_string(), [("api-key".to_string(), key.to_string())].into())].into(),
        configmaps: [
            (
                "turnbench-run".to_string(),
                [("run-id".to_string(), run_id.to_string()), ("start-at".to_string(), start_at.to_string())].into(),
            ),
            ("turnbench-suite".to_string(), suite_data),
        ]
        .into(),
        pvcs: [("turnbench-results".to_string(), pvc.clone())].into(),
    };

    // Every index at once, as `parallelism: N` starts them.
    let mut running = Vec::new();
    for index in 0..n {
        let mut pod = cluster.pod(shards, &[("JOB_COMPLETION_INDEX", index.to_string())], &tmp.path().join(format!("pod-{index}")));
        // The endpoint is the simulator's; the run a few seconds long instead of minutes.
        let at = pod.args.iter().position(|a| a == "--endpoint").unwrap() + 1;
        pod.args[at] = url.clone();
        if let Some(at) = pod.args.iter().position(|a| a == "--duration") {
            pod.args[at + 1] = "2".to_string();
        }
        assert!(pod.args.iter().all(|a| !a.contains(key)), "the key is in the args: {:?}", pod.args);
        assert_eq!(pod.env.get("TURNBENCH_API_KEY").map(String::as_str), Some(key));
        let log = tmp.path().join(format!("shard-{index}"));
        running.push((index, start(&pod, &log), log));
    }
    for (index, guard, log) in running {
        let (status, printed) = finish(guard, &log, Duration::from_secs(240));
        assert!(status.success(), "shard index {index} failed: {status}\n{printed}");
    }
    assert!(jiff::Timestamp::now() > start_at, "the shards finished before their common start");

    // One folder per shard, named as the CLI promises, each a share of the run.
    let run_dir = pvc.join(run_id);
    let mut folders: Vec<String> =
        std::fs::read_dir(&run_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    folders.sort();
    let expected: Vec<String> = (1..=n).map(|i| format!("shard-{i}-of-{n}")).collect();
    assert_eq!(folders, expected);
    let mut total = 0;
    let mut measured = 0;
    for folder in &folders {
        let summary = json_file(run_dir.join(folder).join("summary.json"));
        let requests = summary["requests"]["total"].as_u64().unwrap();
        assert!(summary["requests"]["ok"].as_u64().unwrap() > 0, "{folder}: no successful request: {}", summary["requests"]);
        total += requests;
        measured += summary["requests"]["measured"].as_u64().unwrap();
        let manifest = json_file(run_dir.join(folder).join("manifest.json"));
        let text = manifest.to_string();
        assert!(text.contains(run_id) && text.contains(&format!("/{n}")), "{folder}: the manifest does not record the shard");
    }

    // The merge Job, once the shards are complete.
    let pod = cluster.pod(merge, &[], &tmp.path().join("pod-merge"));
    let log = tmp.path().join("merge");
    let (status, printed) = finish(start(&pod, &log), &log, Duration::from_secs(120));
    assert!(status.success(), "merge failed: {status}\n{printed}");
    let merged = json_file(run_dir.join("merged").join("summary.json"));
    assert_eq!(merged["requests"]["total"].as_u64(), Some(total), "merged requests: {}", merged["requests"]);
    assert_eq!(merged["requests"]["measured"].as_u64(), Some(measured));
    eprintln!("{n} shards, {total} requests ({measured} measured), merged into {}", run_dir.join("merged").display());

    // turnbench promises the key is never written to any file.
    let leaks = files_containing(&pvc, key);
    assert!(leaks.is_empty(), "the API key was written to {leaks:?}");
    drop(sim);
}
