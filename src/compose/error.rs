//! What can go wrong reading a compose project or finding the compose program.
//!
//! `Display` is the message alone; [`Error::hint`] is the fix, kept apart so that the
//! conversion into [`crate::error::Error`] can put it on its own `hint:` line, as every
//! other error of dockmaster has it.

use std::path::PathBuf;

use crate::error::Kind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("compose file {} does not exist", path.display())]
    FileMissing { path: PathBuf },

    #[error("no compose file in {} or its parents (looked for {looked_for})", dir.display())]
    NoFile { dir: PathBuf, looked_for: String },

    #[error("cannot read {}: {cause}", path.display())]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{} is not valid YAML: {reason}", path.display())]
    InvalidYaml { path: PathBuf, reason: String },

    #[error("{} is not a compose file (its top level is not a mapping)", path.display())]
    NotAMapping { path: PathBuf },

    #[error("service `{service}` is not in {files}")]
    ServiceNotFound {
        service: String,
        files: String,
        /// The services the files do define, for the hint.
        available: Vec<String>,
    },

    #[error("`services.{service}.{key}` must be {expected}")]
    BadValue {
        service: String,
        key: String,
        expected: &'static str,
    },

    #[error("in {files}: {reason}")]
    Interpolation { files: String, reason: String },

    #[error("`services.{service}.stop_grace_period` is `{value}`, which is not a duration")]
    BadStopGracePeriod { service: String, value: String },

    #[error("`{raw}` gives an empty compose project name")]
    EmptyProjectName { raw: String },

    #[error("no compose program found ({})", match configured {
        Some(p) => format!("`{p}` from DOCKMASTER_COMPOSE does not answer `version --short`"),
        None => "neither `docker compose` nor `docker-compose`".to_string(),
    })]
    ProgramMissing {
        /// `DOCKMASTER_COMPOSE`, when it named the program to use.
        configured: Option<String>,
    },

    #[error("compose detection failed: {reason}")]
    DetectionFailed { reason: String },

    #[error("cannot read {}: {reason}", path.display())]
    DotEnvUnreadable { path: PathBuf, reason: String },
}

impl Error {
    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        match self {
            Error::FileMissing { .. } | Error::NotAMapping { .. } => {
                "pass the right one with -f/--file".into()
            }
            Error::NoFile { .. } => {
                "run dockmaster where your compose file is, or pass it with -f/--file".into()
            }
            Error::Unreadable { .. } => {
                "check that the file is readable by this user, or pass another with -f/--file"
                    .into()
            }
            Error::InvalidYaml { .. } => {
                "`docker compose config` shows the same problem; fix the file".into()
            }
            Error::ServiceNotFound { available, .. } if available.is_empty() => {
                "the files define no services: add yours under `services:`".into()
            }
            Error::ServiceNotFound { available, .. } => {
                format!("the services are: {}", available.join(", "))
            }
            Error::BadValue { service, key, .. } => format!(
                "fix `{key}` of service `{service}` in the compose file; `docker compose config` checks it too"
            ),
            Error::Interpolation { .. } => "fix the variable in the compose file or in .env".into(),
            Error::BadStopGracePeriod { .. } => {
                "write a duration as compose does: `10s`, `1m30s`, `500ms` or `2m`".into()
            }
            Error::EmptyProjectName { .. } => "set COMPOSE_PROJECT_NAME in .env".into(),
            Error::ProgramMissing { configured: None } => {
                "install the compose plugin (docker-compose-plugin) or Debian's docker-compose"
                    .into()
            }
            Error::ProgramMissing { configured: Some(_) } => {
                "set DOCKMASTER_COMPOSE to a compose program that runs (e.g. `docker-compose`), or unset it".into()
            }
            Error::DetectionFailed { .. } => {
                "run `docker compose version` to see whether compose works, then try again".into()
            }
            Error::DotEnvUnreadable { .. } => {
                "fix the line it names; compose reads this file too".into()
            }
        }
    }

    /// Only a missing or broken compose program is a failure of the operation; everything
    /// else is something wrong in the files, which the user fixes before anything changes.
    pub fn kind(&self) -> Kind {
        match self {
            Error::ProgramMissing { .. } | Error::DetectionFailed { .. } => Kind::Failed,
            _ => Kind::BadInput,
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        let hint = e.hint();
        let message = e.to_string();
        match e.kind() {
            Kind::Failed => crate::error::Error::failed(message),
            _ => crate::error::Error::bad_input(message),
        }
        .hint(hint)
    }
}
