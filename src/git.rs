//! The git checkout the app is built from.
//!
//! We drive the user's own `git` rather than a library: fetching must use exactly the
//! remotes, credentials, SSH config and hooks the user's `git pull` uses, and the only
//! thing dockmaster ever does to the work tree is a fast-forward.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the checkout. `Display` is the message alone; [`Error::hint`] is
/// the fix, which the conversion into [`crate::error::Error`] puts on its own `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is not inside a git checkout", dir.display())]
    NotACheckout { dir: PathBuf },

    #[error(
        "the checkout {} has uncommitted changes, so its build would not be the commit its tag names:\n  {}{}",
        root.display(),
        status.iter().take(SHOWN_CHANGES).map(String::as_str).collect::<Vec<_>>().join("\n  "),
        match status.len().checked_sub(SHOWN_CHANGES) {
            Some(more) if more > 0 => format!("\n  … and {more} more"),
            _ => String::new(),
        }
    )]
    Dirty {
        root: PathBuf,
        /// `git status --porcelain` lines, one per changed path.
        status: Vec<String>,
    },

    #[error("the checkout {} is on a detached HEAD, so there is no branch to update from", root.display())]
    DetachedHead { root: PathBuf },

    #[error("the checkout {} is on branch `{current}`, but releases come from `{branch}`", root.display())]
    WrongBranch {
        root: PathBuf,
        current: String,
        branch: String,
    },

    #[error("cannot fetch {upstream} into {}: {reason}", root.display())]
    FetchFailed {
        root: PathBuf,
        upstream: Upstream,
        reason: String,
    },

    #[error(
        "the checkout {} has diverged from {upstream}: {ahead} local commit(s) not on {upstream}, {behind} commit(s) on {upstream} not here",
        root.display()
    )]
    Diverged {
        root: PathBuf,
        upstream: Upstream,
        ahead: u64,
        behind: u64,
    },

    #[error("the checkout {} is {ahead} commit(s) ahead of {upstream}: they are not on the remote", root.display())]
    Ahead {
        root: PathBuf,
        upstream: Upstream,
        ahead: u64,
    },

    #[error("fast-forward of {} to {upstream} failed: {reason}", root.display())]
    FastForwardFailed {
        root: PathBuf,
        upstream: Upstream,
        reason: String,
    },

    #[error("cannot run git: {reason}")]
    GitMissing { reason: String },

    /// A git command that ran and failed; `stderr` is what git said.
    #[error("`git -C {} {}` failed: {stderr}", dir.display(), args.join(" "))]
    Command {
        dir: PathBuf,
        args: Vec<String>,
        stderr: String,
    },
}

/// How many changed paths a dirty-checkout error lists.
const SHOWN_CHANGES: usize = 10;

impl Error {
    /// What the user can do about it: the last line of every message dockmaster prints.
    pub fn hint(&self) -> String {
        match self {
            Error::NotACheckout { .. } => "dockmaster builds releases from a git checkout: clone your repository and run it there".into(),
            Error::Dirty { root, .. } => format!(
                "commit them, or set them aside with `git -C {0} stash --include-untracked`, or discard them with `git -C {0} checkout -- . && git -C {0} clean -fd`",
                root.display()
            ),
            Error::DetachedHead { .. } => "check out the branch you deploy (`git checkout main`), set `branch` in dockmaster.toml, or deploy as it is with --no-pull".into(),
            Error::WrongBranch { root, branch, .. } => format!(
                "`git -C {} checkout {branch}`, or deploy as it is with --no-pull",
                root.display()
            ),
            Error::FetchFailed { .. } => "check the network and credentials (`git fetch` by hand shows the same), or deploy the checkout as it is with --no-pull".into(),
            Error::Diverged { root, upstream, .. } => format!(
                "keep the remote's history with `git -C {} reset --hard {upstream}` (drops the local commits), or push the local ones first; --no-pull deploys the checkout as it is",
                root.display()
            ),
            Error::Ahead { root, upstream, .. } => format!(
                "push them (`git -C {} push {} HEAD:{}`) so the release can be rebuilt from the remote, or deploy the checkout as it is with --no-pull",
                root.display(),
                upstream.remote,
                upstream.branch
            ),
            Error::FastForwardFailed { .. } => {
                "`git status` in the checkout shows why; nothing else was changed".into()
            }
            Error::GitMissing { .. } => "install git (apt-get install git)".into(),
            Error::Command { .. } => {
                "run the same command by hand to see why; fix the checkout and try again".into()
            }
        }
    }

    /// A checkout that is not as a release needs it is the user's to fix before anything
    /// changes; git that cannot run or fetch, or fails, is a failure of the operation.
    pub fn kind(&self) -> Kind {
        match self {
            Error::NotACheckout { .. }
            | Error::Dirty { .. }
            | Error::DetachedHead { .. }
            | Error::WrongBranch { .. }
            | Error::Diverged { .. }
            | Error::Ahead { .. } => Kind::BadInput,
            Error::FetchFailed { .. }
            | Error::FastForwardFailed { .. }
            | Error::GitMissing { .. }
            | Error::Command { .. } => Kind::Failed,
        }
    }

    /// What git itself said when a command failed, else the message: for a one-line report
    /// (`doctor`) that names the command already.
    pub fn git_said(&self) -> String {
        match self {
            Error::Command { stderr, .. } => stderr.clone(),
            other => other.to_string(),
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        crate::error::Error::typed(e.kind(), e.to_string(), e.hint())
    }
}

#[derive(Clone, Debug)]
pub struct Checkout {
    pub root: PathBuf,
}

/// The commit being released.
#[derive(Clone, Debug)]
pub struct Commit {
    pub id: String,
    pub subject: String,
}

/// Where the checkout takes its updates from.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub remote: String,
    pub branch: String,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.remote, self.branch)
    }
}

/// What an update did.
#[derive(Clone, Debug)]
pub enum Update {
    UpToDate,
    FastForwarded {
        from: String,
        to: String,
        commits: u64,
    },
}

impl Checkout {
    /// The checkout holding `dir`.
    pub async fn find(dir: &Path) -> Result<Checkout> {
        let out = git(dir, &["rev-parse", "--show-toplevel"]).await;
        match out {
            Ok(root) => Ok(Checkout {
                root: PathBuf::from(root),
            }),
            // git that does not run is not "no checkout": say so, with its own fix.
            Err(e @ Error::GitMissing { .. }) => Err(e),
            Err(_) => Err(Error::NotACheckout {
                dir: dir.to_path_buf(),
            }),
        }
    }

    async fn git(&self, args: &[&str]) -> Result<String> {
        git(&self.root, args).await
    }

    pub async fn head(&self) -> Result<Commit> {
        let out = self
            .git(&["log", "-1", "--format=%H%x00%s", "HEAD"])
            .await?;
        let (id, subject) = out.split_once('\0').unwrap_or((&out, ""));
        Ok(Commit {
            id: id.to_string(),
            subject: subject.to_string(),
        })
    }

    /// The commits in `to` that `from` lacks (`git log from..to`), newest first, as
    /// `<short id> <subject>`, at most `max`; None when the checkout lacks either commit.
    pub async fn commits_between(&self, from: &str, to: &str, max: usize) -> Option<Vec<String>> {
        let out = self
            .git(&[
                "log",
                &format!("--max-count={max}"),
                "--format=%h %s",
                &format!("{from}..{to}"),
                "--",
            ])
            .await
            .ok()?;
        Some(out.lines().map(str::to_string).collect())
    }

    pub async fn subject_of(&self, rev: &str) -> Option<String> {
        self.git(&["log", "-1", "--format=%s", rev]).await.ok()
    }

    /// Refuse a checkout with changes: the image would not be the commit its tag names.
    pub async fn ensure_clean(&self) -> Result<()> {
        let status = self
            .git(&["status", "--porcelain", "--untracked-files=normal"])
            .await?;
        if status.is_empty() {
            return Ok(());
        }
        Err(Error::Dirty {
            root: self.root.clone(),
            status: status.lines().map(str::to_string).collect(),
        })
    }

    /// The remote branch to follow: the configured one, else the branch's upstream, else
    /// `origin/<current branch>`.
    pub async fn upstream(&self, remote: Option<&str>, branch: Option<&str>) -> Result<Upstream> {
        let current = self
            .git(&["symbolic-ref", "--short", "-q", "HEAD"])
            .await
            .ok();
        let branch = match (branch, &current) {
            (Some(b), _) => b.to_string(),
            (None, Some(c)) => match self.git(&["config", &format!("branch.{c}.merge")]).await {
                Ok(merge) => merge.trim_start_matches("refs/heads/").to_string(),
                Err(_) => c.clone(),
            },
            (None, None) => {
                return Err(Error::DetachedHead {
                    root: self.root.clone(),
                });
            }
        };
        if let Some(c) = &current
            && branch != *c
        {
            return Err(Error::WrongBranch {
                root: self.root.clone(),
                current: c.clone(),
                branch,
            });
        }
        let remote = match remote {
            Some(r) => r.to_string(),
            None => match &current {
                Some(c) => self
                    .git(&["config", &format!("branch.{c}.remote")])
                    .await
                    .unwrap_or_else(|_| "origin".into()),
                None => "origin".into(),
            },
        };
        Ok(Upstream { remote, branch })
    }

    /// Fetch the upstream branch and fast-forward to it. Refuses a checkout that is ahead
    /// or has diverged: deploying commits that are not on the remote, or silently dropping
    /// them, are both wrong at night.
    pub async fn fast_forward(&self, upstream: &Upstream) -> Result<Update> {
        self.git(&["fetch", "--quiet", &upstream.remote, &upstream.branch])
            .await
            .map_err(|e| match e {
                Error::Command { stderr, .. } => Error::FetchFailed {
                    root: self.root.clone(),
                    upstream: upstream.clone(),
                    reason: stderr,
                },
                other => other,
            })?;
        let head = self.git(&["rev-parse", "HEAD"]).await?;
        let remote = self.git(&["rev-parse", "FETCH_HEAD"]).await?;
        if head == remote {
            return Ok(Update::UpToDate);
        }
        let counts = self
            .git(&["rev-list", "--left-right", "--count", "HEAD...FETCH_HEAD"])
            .await?;
        let mut it = counts
            .split_whitespace()
            .map(|n| n.parse::<u64>().unwrap_or(0));
        let (ahead, behind) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        if ahead > 0 && behind > 0 {
            return Err(Error::Diverged {
                root: self.root.clone(),
                upstream: upstream.clone(),
                ahead,
                behind,
            });
        }
        if ahead > 0 {
            return Err(Error::Ahead {
                root: self.root.clone(),
                upstream: upstream.clone(),
                ahead,
            });
        }
        self.git(&["merge", "--ff-only", "--quiet", "FETCH_HEAD"])
            .await
            .map_err(|e| match e {
                Error::Command { stderr, .. } => Error::FastForwardFailed {
                    root: self.root.clone(),
                    upstream: upstream.clone(),
                    reason: stderr,
                },
                other => other,
            })?;
        Ok(Update::FastForwarded {
            from: head,
            to: remote,
            commits: behind,
        })
    }

    /// Where the source comes from, for the image's `source` label.
    pub async fn source_url(&self, remote: &str) -> String {
        self.git(&["remote", "get-url", remote])
            .await
            .unwrap_or_else(|_| self.root.display().to_string())
    }

    /// Fast checks for `doctor`: is the upstream reachable, without changing anything.
    pub async fn ls_remote(&self, upstream: &Upstream) -> Result<String> {
        let out = self
            .git(&["ls-remote", "--heads", &upstream.remote, &upstream.branch])
            .await?;
        Ok(out
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    }
}

async fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    // Never wait for a password prompt that nobody will answer (cron, CI, ssh without tty).
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd.stdin(Stdio::null());
    let out = cmd.output().await.map_err(|e| Error::GitMissing {
        reason: e.to_string(),
    })?;
    tracing::debug!(?args, dir = %dir.display(), status = ?out.status, "git");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(Error::Command {
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
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

    fn origin_main() -> Upstream {
        Upstream {
            remote: "origin".into(),
            branch: "main".into(),
        }
    }

    #[test]
    fn a_dirty_checkout_lists_ten_changes_and_says_how_to_set_them_aside() {
        let status = (1..=12).map(|n| format!(" M file{n}")).collect();
        let (code, text) = user_facing(Error::Dirty {
            root: "/srv/app".into(),
            status,
        });
        assert_eq!(code, exit::BAD_INPUT);
        assert!(
            text.starts_with("the checkout /srv/app has uncommitted changes, so its build would not be the commit its tag names:\n   M file1\n"),
            "{text}"
        );
        assert!(
            text.contains("\n   M file10\n  … and 2 more\nhint: "),
            "{text}"
        );
        assert!(!text.contains("file11"), "{text}");
        assert!(text.ends_with("`git -C /srv/app checkout -- . && git -C /srv/app clean -fd`"));
    }

    #[test]
    fn a_diverged_checkout_counts_both_sides_and_names_the_reset() {
        let (code, text) = user_facing(Error::Diverged {
            root: "/srv/app".into(),
            upstream: origin_main(),
            ahead: 1,
            behind: 2,
        });
        assert_eq!(code, exit::BAD_INPUT);
        assert_eq!(
            text,
            "the checkout /srv/app has diverged from origin/main: 1 local commit(s) not on origin/main, 2 commit(s) on origin/main not here\n\
             hint: keep the remote's history with `git -C /srv/app reset --hard origin/main` (drops the local commits), or push the local ones first; --no-pull deploys the checkout as it is"
        );
    }

    #[test]
    fn a_failing_git_command_is_a_failure_that_names_the_command() {
        let e = Error::Command {
            dir: "/srv/app".into(),
            args: vec!["ls-remote".into(), "--heads".into(), "origin".into()],
            stderr: "fatal: could not read from remote".into(),
        };
        assert_eq!(e.git_said(), "fatal: could not read from remote");
        let (code, text) = user_facing(e);
        assert_eq!(code, exit::FAILED);
        assert!(text.starts_with(
            "`git -C /srv/app ls-remote --heads origin` failed: fatal: could not read from remote\nhint: "
        ));
        let (code, text) = user_facing(Error::GitMissing {
            reason: "No such file or directory".into(),
        });
        assert_eq!(code, exit::FAILED);
        assert!(text.ends_with("\nhint: install git (apt-get install git)"));
    }
}
