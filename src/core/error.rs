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

/// 2 when any error in the chain is a [`UsageError`], 130 for [`Interrupted`], else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<UsageError>()) {
        2
    } else if err.chain().any(|c| c.is::<Interrupted>()) {
        130
    } else {
        1
    }
}

/// The run was stopped by Ctrl-C (or SIGTERM). Exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {0}")]
pub struct Interrupted(pub String);
