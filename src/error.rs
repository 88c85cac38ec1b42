//! The one error type users see. Every variant says what went wrong and, on its last
//! line, what to do (`hint:`). `code()` is the process exit code of the contract.

use std::fmt;

/// Exit codes of the command contract (PRODUCT.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// The operation failed; the message says what is live now.
    pub const FAILED: u8 = 1;
    /// Bad input: nothing was changed.
    pub const BAD_INPUT: u8 = 2;
    /// Another operation holds the lock.
    pub const LOCKED: u8 = 3;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unknown or malformed tag, bad flag or config, no compose file, dirty checkout...
    BadInput,
    /// Build failure, unhealthy release, engine unreachable, ...
    Failed,
    /// Another dockmaster operation runs for this app.
    Locked,
}

#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    hint: Option<String>,
}

impl Error {
    pub fn bad_input(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::BadInput,
            message: message.into(),
            hint: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::Failed,
            message: message.into(),
            hint: None,
        }
    }

    pub fn locked(message: impl Into<String>) -> Error {
        Error {
            kind: Kind::Locked,
            message: message.into(),
            hint: None,
        }
    }

    /// A module's typed error as users see it: its kind (the exit code), its message and,
    /// on the last line, its hint.
    pub fn typed(kind: Kind, message: impl Into<String>, hint: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// What went wrong, without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do, if the error says.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn code(&self) -> u8 {
        match self.kind {
            Kind::BadInput => exit::BAD_INPUT,
            Kind::Failed => exit::FAILED,
            Kind::Locked => exit::LOCKED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<crate::release::MalformedTag> for Error {
    fn from(e: crate::release::MalformedTag) -> Error {
        // MalformedTag's Display already carries its hint line.
        Error::bad_input(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit code for any error that reaches `main`: ours carry it; anything else
/// (an I/O error deep in a library) is an operation failure.
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map_or(exit::FAILED, Error::code)
}
