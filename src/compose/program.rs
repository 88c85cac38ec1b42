//! The compose program: v1 `docker-compose` (Debian's 1.29) or v2 `docker compose`,
//! detected once per command.

use std::path::PathBuf;
use std::process::Stdio;

use super::{Error, Project, Result};

/// The compose program, detected in the background from the start of a command and
/// waited for only where compose is needed (a rollback to a standby container never is).
pub struct Detected {
    once: tokio::sync::OnceCell<Cli>,
    /// `DOCKMASTER_COMPOSE`, when the user forces a program (settings read it up front).
    program: Option<Vec<String>>,
    pending: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<Cli>>>>,
}

impl Detected {
    /// Nothing runs until `start` or `get`: read-only commands never spawn compose.
    pub fn idle(program: Option<Vec<String>>) -> Detected {
        Detected {
            once: tokio::sync::OnceCell::new(),
            program,
            pending: std::sync::Mutex::new(None),
        }
    }

    /// Begin detecting in the background.
    pub fn start(&self) {
        if self.once.initialized() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_none() {
            *pending = Some(tokio::spawn(Cli::detect(self.program.clone())));
        }
    }

    pub async fn get(&self) -> Result<&Cli> {
        self.once
            .get_or_try_init(|| async {
                // Taken once: OnceCell runs this initializer at most once at a time.
                let task = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                match task {
                    Some(t) => t.await.map_err(|e| Error::DetectionFailed {
                        reason: e.to_string(),
                    })?,
                    None => Cli::detect(self.program.clone()).await,
                }
            })
            .await
    }
}

/// Which compose program is installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    program: Vec<String>,
    /// 1 for the Python `docker-compose` 1.x, 2 for the Go one.
    pub major: u32,
}

impl Cli {
    /// Detect once: `DOCKMASTER_COMPOSE` if set (e.g. `docker-compose`), else the v2 plugin,
    /// else a `docker-compose` binary (which may itself be v1 or v2).
    pub async fn detect(program: Option<Vec<String>>) -> Result<Cli> {
        let configured = program.filter(|p| !p.is_empty()).map(|p| p.join(" "));
        let candidates: Vec<Vec<String>> = match &configured {
            Some(p) => vec![p.split_whitespace().map(str::to_string).collect()],
            None => vec![
                vec!["docker".into(), "compose".into()],
                vec!["docker-compose".into()],
            ],
        };
        // Each candidate has at least one word: the defaults do, and a configured value is
        // not blank (filtered above), so `program[0]` below is there.
        for program in candidates {
            let out = crate::engine::cli::command(&program[0])
                .args(&program[1..])
                .args(["version", "--short"])
                .stdin(Stdio::null())
                .output()
                .await;
            tracing::debug!(
                ?program,
                status = ?out.as_ref().map(|o| o.status),
                "compose version --short"
            );
            let Ok(out) = out else { continue };
            if !out.status.success() {
                continue;
            }
            let version = String::from_utf8_lossy(&out.stdout);
            let version = version.trim().trim_start_matches('v');
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(2);
            tracing::debug!(?program, version, "compose detected");
            return Ok(Cli { program, major });
        }
        Err(Error::ProgramMissing { configured })
    }

    pub fn display(&self) -> String {
        format!("{} (v{})", self.program.join(" "), self.major)
    }

    /// A command for this project: program, `-p`, every `-f`, then the caller's arguments.
    pub fn command(&self, project: &Project, extra_files: &[PathBuf]) -> tokio::process::Command {
        // `program` is never empty: `detect` is the only constructor.
        let mut cmd = crate::engine::cli::command(&self.program[0]);
        cmd.args(&self.program[1..]);
        cmd.arg("-p").arg(&project.name);
        // Relative paths in the files resolve against the project directory whatever the
        // order of -f; pass it explicitly since an override file may live elsewhere.
        cmd.arg("--project-directory").arg(&project.dir);
        for f in project.files.iter().chain(extra_files) {
            cmd.arg("-f").arg(f);
        }
        cmd.current_dir(&project.dir);
        cmd.stdin(Stdio::null());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_the_project_its_directory_and_every_file() {
        let project = Project::for_tests(
            "shop",
            "/srv/shop",
            &["/srv/shop/compose.yaml", "/srv/shop/compose.override.yaml"],
            "services: {}\n",
        );
        let cli = Cli {
            program: vec!["docker".into(), "compose".into()],
            major: 2,
        };
        let cmd = cli.command(&project, &[PathBuf::from("/tmp/extra.yaml")]);
        let cmd = cmd.as_std();
        // `docker` wherever the CLI was found (on PATH, or where a NAS puts it).
        assert!(
            std::path::Path::new(cmd.get_program()).ends_with("docker"),
            "{:?}",
            cmd.get_program()
        );
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "compose",
                "-p",
                "shop",
                "--project-directory",
                "/srv/shop",
                "-f",
                "/srv/shop/compose.yaml",
                "-f",
                "/srv/shop/compose.override.yaml",
                "-f",
                "/tmp/extra.yaml",
            ]
        );
        assert_eq!(
            cmd.get_current_dir(),
            Some(std::path::Path::new("/srv/shop"))
        );
    }

    #[test]
    fn a_missing_program_is_a_failure_with_an_install_hint() {
        let err = Error::ProgramMissing { configured: None };
        assert!(err.to_string().starts_with("no compose program found"));
        let err = crate::error::Error::from(err);
        assert_eq!(err.kind(), crate::error::Kind::Failed);
        assert!(
            err.to_string()
                .contains("\nhint: install the compose plugin")
        );
    }
}
