//! Profiles picked by name or path (`configs/<kind>/<name>.toml`): the file under the config
//! folder when it exists, else the copy built into turnbench, and the manifest says which was
//! read (path and SHA-256), so a profile edited in the checkout is what the run used.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hash::sha256_hex;
use super::UsageError;

/// Profiles are small TOML files: anything larger is not one.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// A profile as read: its text and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileText {
    pub text: String,
    pub source: ConfigSource,
}

/// Which profile file a run used (`manifest.json` `configs[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSource {
    /// `vllm` or `sim`.
    pub kind: String,
    /// The name or path it was picked by.
    pub name: String,
    /// The file read, or `built-in configs/<kind>/<name>.toml` for the embedded copy.
    pub path: String,
    pub builtin: bool,
    pub sha256: String,
}

impl ConfigSource {
    /// Where error messages say the profile came from.
    pub fn origin(&self) -> String {
        if self.builtin {
            format!("{} (built-in)", self.path.trim_start_matches("built-in "))
        } else {
            self.path.clone()
        }
    }
}

/// Resolves a profile: a path (anything with `/`, `\`, or ending in `.toml`, or an existing file)
/// is read as it is; a name reads `<config_dir>/<kind>/<name>.toml` when that file exists, else
/// the built-in copy of that name. Errors are [`UsageError`]s naming `flag`.
pub fn resolve_profile(
    config_dir: &Path,
    kind: &str,
    name_or_path: &str,
    builtins: &[(&str, &str)],
    flag: &str,
) -> anyhow::Result<ProfileText> {
    let looks_like_path = name_or_path.contains('/') || name_or_path.contains('\\') || name_or_path.ends_with(".toml");
    let local = config_dir.join(kind).join(format!("{name_or_path}.toml"));
    let builtin = builtins.iter().find(|(n, _)| *n == name_or_path);
    let file: Option<PathBuf> = if looks_like_path || (builtin.is_none() && Path::new(name_or_path).is_file()) {
        Some(PathBuf::from(name_or_path))
    } else if local.is_file() {
        Some(local)
    } else {
        None
    };
    let source = |path: String, is_builtin: bool, text: &str| ConfigSource {
        kind: kind.to_string(),
        name: name_or_path.to_string(),
        path,
        builtin: is_builtin,
        sha256: sha256_hex(text.as_bytes()),
    };
    if let Some(path) = file {
        let text = read_limited(&path, MAX_PROFILE_BYTES).map_err(|e| UsageError::new(format!("{flag} {}: {e}", path.display())))?;
        let source = source(path.display().to_string(), false, &text);
        return Ok(ProfileText { text, source });
    }
    match builtin {
        Some((name, text)) => {
            let source = source(format!("built-in configs/{kind}/{name}.toml"), true, text);
            Ok(ProfileText { text: text.to_string(), source })
        }
        None => {
            let names: Vec<&str> = builtins.iter().map(|(n, _)| *n).collect();
            Err(UsageError::new(format!(
                "{flag} {name_or_path:?}: no such profile: not a file, not in {}, and not built in ({})",
                config_dir.join(kind).display(),
                names.join(", ")
            ))
            .into())
        }
    }
}

/// `origin:LINE` of the first line that sets `key` (TOML `key = …` or JSON `"key": …`), else
/// `origin` alone: where a range error in a profile or config points.
pub fn at_key(origin: &str, text: &str, key: &str) -> String {
    let quoted = format!("\"{key}\"");
    let line = text.lines().position(|l| {
        let t = l.trim_start();
        t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) || t.contains(&quoted)
    });
    match line {
        Some(i) => format!("{origin}:{}", i + 1),
        None => origin.to_string(),
    }
}

/// Checks that `value` of `key` is within `min..=max`, else a [`UsageError`] at the key's line.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    origin: &str,
    text: &str,
    key: &str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) -> anyhow::Result<()> {
    if value < min || value > max || value.partial_cmp(&value).is_none() {
        return Err(UsageError::new(format!(
            "{}: {key} = {value}: must be between {min} and {max}{unit}",
            at_key(origin, text, key)
        ))
        .into());
    }
    Ok(())
}

/// Data files (suites, datasets, corpora) larger than this are refused: 256 MiB.
pub const MAX_DATA_BYTES: u64 = 256 << 20;

/// Reads a UTF-8 text file of at most `limit` bytes; a larger one is an error that names the limit.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes (the limit for this file)")));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTINS: &[(&str, &str)] = &[("default", "a = 1\n")];

    #[test]
    fn a_file_in_the_config_dir_wins_over_the_builtin() {
        let tmp = tempfile::tempdir().unwrap();
        let r = resolve_profile(tmp.path(), "sim", "default", BUILTINS, "--profile").unwrap();
        assert!(r.source.builtin);
        assert_eq!(r.text, "a = 1\n");
        std::fs::create_dir_all(tmp.path().join("sim")).unwrap();
        std::fs::write(tmp.path().join("sim/default.toml"), "a = 2\n").unwrap();
        let r = resolve_profile(tmp.path(), "sim", "default", BUILTINS, "--profile").unwrap();
        assert!(!r.source.builtin);
        assert_eq!(r.text, "a = 2\n");
        assert_eq!(r.source.sha256, sha256_hex(b"a = 2\n"));
        assert!(r.source.path.ends_with("sim/default.toml"), "{}", r.source.path);
    }

    #[test]
    fn unknown_names_list_the_builtins() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_profile(tmp.path(), "sim", "nope", BUILTINS, "--profile").unwrap_err();
        assert!(err.is::<UsageError>());
        assert!(err.to_string().contains("(default)"), "{err}");
    }

    #[test]
    fn range_errors_point_at_the_key() {
        let text = "a = 1\nstartup_timeout_s = 99999999999\n";
        let err = check_range("p.toml", text, "startup_timeout_s", 99999999999u64, 1, 604800, " seconds").unwrap_err();
        assert!(err.is::<UsageError>());
        assert_eq!(err.to_string(), "p.toml:2: startup_timeout_s = 99999999999: must be between 1 and 604800 seconds");
        assert!(check_range("c.json", "{\n \"x\": 5}", "x", f64::NAN, 0.0, 1.0, "").unwrap_err().to_string().starts_with("c.json:2: x = NaN"));
        assert!(check_range("c.json", "", "x", 0.5, 0.0, 1.0, "").is_ok());
    }

    #[test]
    fn oversized_files_are_refused_with_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big.toml");
        std::fs::write(&p, vec![b'#'; 2048]).unwrap();
        let err = read_limited(&p, 1024).unwrap_err().to_string();
        assert!(err.contains("1024 bytes"), "{err}");
    }
}
