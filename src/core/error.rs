//! Error kinds that change the exit code. Everything else is an `anyhow::Error` with context.

/// Bad input from the user: a flag, a data file, a config. Exit code 2.
///
/// The message names the file, line, column and JSON path (or the flag) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Exit codes of `turnbench` (documented in README and `docs/results.md`).
pub mod code {
    /// The run completed and at least one request succeeded.
    pub const OK: u8 = 0;
    /// Any other error.
    pub const ERROR: u8 = 1;
    /// Bad input: a flag, a data file, a profile. Nothing was started.
    pub const USAGE: u8 = 2;
    /// The run completed but no measured request succeeded.
    pub const ALL_FAILED: u8 = 3;
    /// The server died or could not be reached (managed child exited, connection refused).
    pub const SERVER_DIED: u8 = 4;
    /// `--max-error-rate PCT` was exceeded.
    pub const ERROR_RATE: u8 = 5;
    /// Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: u8 = 130;
    /// SIGTERM (128 + SIGTERM).
    pub const TERMINATED: u8 = 143;
}

/// The exit code of `err`: the first error kind of this module found in its chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for c in err.chain() {
        if c.is::<UsageError>() {
            return code::USAGE;
        }
        if let Some(i) = c.downcast_ref::<Interrupted>() {
            return if i.by_sigterm() { code::TERMINATED } else { code::INTERRUPTED };
        }
        if c.is::<ServerDied>() {
            return code::SERVER_DIED;
        }
        if c.is::<AllFailed>() {
            return code::ALL_FAILED;
        }
        if c.is::<ErrorRateExceeded>() {
            return code::ERROR_RATE;
        }
    }
    code::ERROR
}

/// The run was stopped by Ctrl-C (exit 130) or SIGTERM (exit 143).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {0}")]
pub struct Interrupted(pub String);

/// What the message of an [`Interrupted`] starts with when SIGTERM stopped the run.
pub const SIGTERM_PREFIX: &str = "SIGTERM: ";

impl Interrupted {
    /// Stopped by SIGTERM rather than Ctrl-C.
    pub fn sigterm(msg: impl std::fmt::Display) -> Self {
        Self(format!("{SIGTERM_PREFIX}{msg}"))
    }

    pub fn by_sigterm(&self) -> bool {
        self.0.starts_with(SIGTERM_PREFIX)
    }
}

/// The server died (its process exited) or stopped answering connections. Exit code 4.
#[derive(Debug, thiserror::Error)]
#[error("the server died: {0}")]
pub struct ServerDied(pub String);

/// The run completed, but no measured request succeeded. Exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("no request succeeded: {0}")]
pub struct AllFailed(pub String);

/// More requests failed than `--max-error-rate` allows. Exit code 5.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ErrorRateExceeded(pub String);

/// `text` with every occurrence of `secret` replaced by `<redacted>` (nothing for an empty or
/// absent secret). Everything the server sends back goes through this before it is recorded.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret.filter(|s| !s.is_empty()) {
        Some(s) if text.contains(s) => text.replace(s, "<redacted>"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(exit_code(&anyhow::Error::new(UsageError::new("x"))), 2);
        assert_eq!(exit_code(&anyhow::Error::new(Interrupted("x".into()))), 130);
        assert_eq!(exit_code(&anyhow::Error::new(Interrupted::sigterm("x"))), 143);
        assert_eq!(exit_code(&anyhow::Error::new(ServerDied("x".into())).context("run")), 4);
        assert_eq!(exit_code(&anyhow::Error::new(AllFailed("x".into()))), 3);
        assert_eq!(exit_code(&anyhow::Error::new(ErrorRateExceeded("x".into()))), 5);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }

    #[test]
    fn redact_removes_every_copy_of_the_secret() {
        assert_eq!(redact("key sk-1 and sk-1 again", Some("sk-1")), "key <redacted> and <redacted> again");
        assert_eq!(redact("nothing", Some("")), "nothing");
        assert_eq!(redact("nothing", None), "nothing");
    }
}
