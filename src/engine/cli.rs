//! Where the `docker` CLI is. Builds (`docker build`), compose v2 (`docker compose`) and a
//! few inspections run it; everything else talks to the engine's API.
//!
//! On a Synology NAS the CLI is `/usr/local/bin/docker`, which is not on `PATH` in an SSH
//! session (nor in cron's), and a user should not have to know that before a deploy
//! works: when `PATH` has no `docker`, the places NAS vendors install it are tried.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Tried in this order when `PATH` has no `docker`: Synology (DSM 7's Container Manager
/// links it here), Debian's package, then the vendor package directories themselves
/// (Container Manager on DSM 7.2, the older Docker package on DSM 6/7.1).
pub const KNOWN_PLACES: &[&str] = &[
    "/usr/local/bin/docker",
    "/usr/bin/docker",
    "/var/packages/ContainerManager/target/usr/bin/docker",
    "/var/packages/Docker/target/usr/bin/docker",
];

/// How the docker CLI was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerCli {
    pub path: PathBuf,
    /// Found on `PATH` (else in one of `KNOWN_PLACES`).
    pub on_path: bool,
}

/// The docker CLI this process uses, found once.
pub fn docker() -> Option<&'static DockerCli> {
    static FOUND: OnceLock<Option<DockerCli>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let found = find(std::env::var_os("PATH").as_deref(), KNOWN_PLACES);
            tracing::debug!(?found, "docker CLI");
            found
        })
        .as_ref()
}

/// `docker` on `path` (a `PATH` value), else the first of `places` that is an executable
/// file.
pub fn find(path: Option<&OsStr>, places: &[&str]) -> Option<DockerCli> {
    if let Some(path) = path {
        for dir in std::env::split_paths(path) {
            let candidate = dir.join("docker");
            if is_executable(&candidate) {
                return Some(DockerCli {
                    path: candidate,
                    on_path: true,
                });
            }
        }
    }
    places
        .iter()
        .map(Path::new)
        .find(|p| is_executable(p))
        .map(|p| DockerCli {
            path: p.to_path_buf(),
            on_path: false,
        })
}

/// A command running `program`; `docker` is the CLI found above. When none was found the
/// bare name stays, so the spawn error says what could not be run.
pub fn command(program: &str) -> tokio::process::Command {
    match (program, docker()) {
        ("docker", Some(cli)) => tokio::process::Command::new(&cli.path),
        _ => tokio::process::Command::new(program),
    }
}

/// What to do when there is no docker CLI (the `doctor` fix and the build error's hint).
pub fn install_hint() -> String {
    format!(
        "install the docker CLI (Debian: `apt-get install docker.io`; Synology: the Container Manager package; QNAP: Container Station), or put the directory that has `docker` on PATH (`export PATH=\"$PATH:/path/to/dir\"`); looked on PATH and in {}",
        KNOWN_PLACES.join(", ")
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("docker");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn path_comes_first_then_known_places_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let on_path = exe(&tmp.path().join("bin"));
        let synology = exe(&tmp.path().join("usr/local/bin"));
        let debian = exe(&tmp.path().join("usr/bin"));
        let places = [synology.to_str().unwrap(), debian.to_str().unwrap()];
        let path =
            std::env::join_paths([tmp.path().join("empty"), tmp.path().join("bin")]).unwrap();

        assert_eq!(
            find(Some(&path), &places),
            Some(DockerCli {
                path: on_path,
                on_path: true
            })
        );
        // Not on PATH (an SSH session on Synology): the first known place.
        let bare = std::env::join_paths([tmp.path().join("empty")]).unwrap();
        assert_eq!(
            find(Some(&bare), &places),
            Some(DockerCli {
                path: synology.clone(),
                on_path: false
            })
        );
        assert_eq!(find(None, &places[1..]).map(|c| c.path), Some(debian));
    }

    #[test]
    fn a_file_that_is_not_executable_or_a_directory_is_not_the_cli() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain/docker");
        std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
        std::fs::write(&plain, "").unwrap();
        let dir = tmp.path().join("dir/docker");
        std::fs::create_dir_all(&dir).unwrap();
        let path =
            std::env::join_paths([tmp.path().join("plain"), tmp.path().join("dir")]).unwrap();
        let places = [plain.to_str().unwrap(), dir.to_str().unwrap()];
        assert_eq!(find(Some(&path), &places), None);
        assert!(install_hint().contains("/usr/local/bin/docker"));
    }
}
