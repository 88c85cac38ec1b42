//! What can go wrong talking to Docker: the Engine API, the `docker build` CLI, the proxy
//! image and the disk-usage count.
//!
//! `Display` is the message alone; [`Error::hint`] is the fix, kept apart so that the
//! conversion into [`crate::error::Error`] puts it on its own `hint:` line. Where the engine
//! answers with an HTTP status, the status is kept as a field: callers decide on it, never
//! on the engine's wording.

use std::path::PathBuf;

use crate::error::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine at {host}: {reason}")]
    Unreachable { host: String, reason: String },

    /// The engine answered an API call with an error (`status`), or the call did not get
    /// an answer at all (no status).
    #[error("Docker engine error while {doing}: {}", with_status(*status, message))]
    Api {
        /// What dockmaster asked, in the user's words ("listing the images of myapp").
        doing: String,
        status: Option<u16>,
        message: String,
    },

    #[error(
        "the build of {image} failed ({status}); its last lines:\n  {}",
        last_lines.join("\n  ")
    )]
    BuildFailed {
        image: String,
        /// How `docker build` exited, as the OS says it (`exit status: 1`).
        status: String,
        last_lines: Vec<String>,
        /// The builder ran out of disk: the fix is to free space, not to fix the build.
        disk_full: bool,
    },

    #[error("cannot run `docker build`: {reason}")]
    BuildNotRun { reason: String },

    #[error("`docker build` of {image} failed to run: {reason}")]
    BuildIo { image: String, reason: String },

    #[error("the build of {image} left no image id ({reason})")]
    NoImageId { image: String, reason: String },

    #[error("labelling {image} failed: {output}")]
    LabelFailed { image: String, output: String },

    #[error("cannot tag {image} as {repository}:{tag}: {}", with_status(*status, message))]
    TagFailed {
        image: String,
        repository: String,
        tag: String,
        status: Option<u16>,
        message: String,
    },

    #[error("cannot remove image {reference}: {}", with_status(*status, reason))]
    RemoveRefused {
        /// `repo:tag` or an image id.
        reference: String,
        /// 409 when a container uses the image.
        status: Option<u16>,
        reason: String,
    },

    #[error("building the proxy image {image} failed: {}", with_status(*status, reason))]
    ProxyImageFailed {
        image: String,
        status: Option<u16>,
        reason: String,
    },

    #[error("cannot find the dockmaster executable: {reason}")]
    NoExecutable { reason: String },

    #[error("cannot read {}: {reason}", path.display())]
    ExecutableUnreadable { path: PathBuf, reason: String },

    #[error("cannot pack the proxy image: {reason}")]
    ProxyPack { reason: String },

    #[error("cannot ask the Docker engine at {host} for disk use: {}", with_status(*status, reason))]
    DiskUsageUnavailable {
        host: String,
        status: Option<u16>,
        reason: String,
    },

    #[error("the engine's disk usage is unreadable: {reason}")]
    DiskUsageUnreadable { reason: String },
}

/// `message`, preceded by the HTTP status when there is one.
fn with_status(status: Option<u16>, message: &str) -> String {
    match status.and_then(|s| hyper::StatusCode::from_u16(s).ok()) {
        Some(s) => format!("{s}: {message}"),
        None => message.to_string(),
    }
}

impl Error {
    /// An Engine API call that failed while `doing` something.
    pub(crate) fn api(doing: impl Into<String>, e: bollard::errors::Error) -> Error {
        let (status, message) = status_and_message(e);
        Error::Api {
            doing: doing.into(),
            status,
            message,
        }
    }

    /// The engine's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. }
            | Error::TagFailed { status, .. }
            | Error::RemoveRefused { status, .. }
            | Error::ProxyImageFailed { status, .. }
            | Error::DiskUsageUnavailable { status, .. } => *status,
            _ => None,
        }
    }

    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        const HEALTHY: &str = "`docker info` shows whether the engine is healthy; retry once it is";
        match self {
            Error::Unreachable { .. } => "start it (`systemctl start docker`), or point DOCKER_HOST at it; `docker info` shows the same problem".into(),
            Error::Api { .. } => HEALTHY.into(),
            Error::BuildFailed { disk_full: true, .. } => "the disk is full: `dockmaster prune` and `docker image prune` free space; nothing live was changed".into(),
            Error::BuildFailed { disk_full: false, .. } => {
                "fix the build (the lines above say where) and deploy again; nothing live was changed".into()
            }
            Error::BuildNotRun { .. } => crate::engine::cli::install_hint(),
            Error::BuildIo { .. } => "`docker version` shows whether the docker CLI works; deploy again once it does; nothing live was changed".into(),
            Error::NoImageId { .. } => "deploy again; nothing live was changed".into(),
            Error::LabelFailed { .. } => "fix what it says and deploy again; nothing live was changed".into(),
            Error::TagFailed { image, repository, tag, .. } => format!(
                "`docker tag {image} {repository}:{tag}` by hand shows the same; `docker info` shows whether the engine is healthy"
            ),
            // 409: the engine's "conflict", a container (running or not) uses the image.
            Error::RemoveRefused { status: Some(409), .. } => {
                "a container uses it: it can go once that container is removed (`docker ps -a` lists them)".into()
            }
            Error::RemoveRefused { .. } => HEALTHY.into(),
            Error::ProxyImageFailed { .. } => {
                "`docker info` shows whether the engine is healthy and has disk space".into()
            }
            Error::NoExecutable { .. } | Error::ExecutableUnreadable { .. } | Error::ProxyPack { .. } => {
                "the proxy image is built from this dockmaster binary and the libraries it loads: run an installed dockmaster this user can read".into()
            }
            Error::DiskUsageUnavailable { .. } | Error::DiskUsageUnreadable { .. } => {
                "`docker system df` shows whether the engine can count disk use; retry once it can".into()
            }
        }
    }

    /// Everything here is the operation failing: nothing the user typed was wrong.
    pub fn kind(&self) -> Kind {
        Kind::Failed
    }
}

/// The engine's status and message for an answer it gave, else the client's own error.
pub(crate) fn status_and_message(e: bollard::errors::Error) -> (Option<u16>, String) {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => (Some(status_code), message),
        other => (None, other.to_string()),
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        crate::error::Error::typed(e.kind(), e.to_string(), e.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    fn user_facing(e: Error) -> (u8, String) {
        let e = crate::error::Error::from(e);
        (e.code(), e.to_string())
    }

    #[test]
    fn an_api_error_keeps_its_status_and_says_what_was_asked() {
        let e = Error::api(
            "inspecting container web-1",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "oops".into(),
            },
        );
        assert_eq!(e.status(), Some(500));
        let (code, text) = user_facing(e);
        assert_eq!(code, exit::FAILED);
        assert_eq!(
            text,
            "Docker engine error while inspecting container web-1: 500 Internal Server Error: oops\nhint: `docker info` shows whether the engine is healthy; retry once it is"
        );
    }

    #[test]
    fn unreachable_names_the_host_and_says_how_to_start_it() {
        let (code, text) = user_facing(Error::Unreachable {
            host: "unix:///nonexistent.sock".into(),
            reason: "no such file".into(),
        });
        assert_eq!(code, exit::FAILED);
        assert!(text.starts_with("cannot reach the Docker engine at unix:///nonexistent.sock"));
        assert!(
            text.contains("\nhint: start it (`systemctl start docker`)"),
            "{text}"
        );
    }

    #[test]
    fn a_full_disk_gets_a_different_hint_than_a_broken_build() {
        let failed = |disk_full| Error::BuildFailed {
            image: "app:2026.01.10-abc123f".into(),
            status: "exit status: 1".into(),
            last_lines: vec!["step 1".into(), "no space left on device".into()],
            disk_full,
        };
        let (code, full) = user_facing(failed(true));
        assert_eq!(code, exit::FAILED);
        assert!(full.starts_with(
            "the build of app:2026.01.10-abc123f failed (exit status: 1); its last lines:\n  step 1\n  no space left on device\nhint: "
        ));
        assert!(full.ends_with("hint: the disk is full: `dockmaster prune` and `docker image prune` free space; nothing live was changed"));
        let (_, broken) = user_facing(failed(false));
        assert!(broken.ends_with("hint: fix the build (the lines above say where) and deploy again; nothing live was changed"));
    }

    #[test]
    fn a_removal_refused_for_a_container_says_so_by_its_status() {
        let refused = |status| Error::RemoveRefused {
            reference: "app:old".into(),
            status,
            reason: "conflict".into(),
        };
        let (code, text) = user_facing(refused(Some(409)));
        assert_eq!(code, exit::FAILED);
        assert!(
            text.starts_with(
                "cannot remove image app:old: 409 Conflict: conflict\nhint: a container uses it"
            ),
            "{text}"
        );
        let (_, text) = user_facing(refused(None));
        assert!(text.ends_with(
            "hint: `docker info` shows whether the engine is healthy; retry once it is"
        ));
    }

    #[test]
    fn tag_and_disk_errors_carry_their_thing_and_a_hint() {
        let (_, text) = user_facing(Error::TagFailed {
            image: "sha256:abc".into(),
            repository: "app".into(),
            tag: "latest".into(),
            status: Some(404),
            message: "no such image".into(),
        });
        assert!(text.starts_with("cannot tag sha256:abc as app:latest: 404 Not Found: no such image\nhint: `docker tag sha256:abc app:latest`"), "{text}");
        let (code, text) = user_facing(Error::DiskUsageUnavailable {
            host: "tcp://nas:2375".into(),
            status: None,
            reason: "refused".into(),
        });
        assert_eq!(code, exit::FAILED);
        assert!(text.starts_with(
            "cannot ask the Docker engine at tcp://nas:2375 for disk use: refused\nhint: "
        ));
    }
}
