//! The git checkout the app is built from.
//!
//! We drive the user's own `git` rather than a library: fetching must use exactly the
//! remotes, credentials, SSH config and hooks the user's `git pull` uses, and the only
//! thing dockmaster ever does to the work tree is a fast-forward.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Error, Result};

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
            Err(_) => Err(Error::bad_input(format!(
                "{} is not inside a git checkout",
                dir.display()
            ))
            .hint("dockmaster builds releases from a git checkout: clone your repository and run it there")),
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
        let lines: Vec<&str> = status.lines().collect();
        let shown: Vec<&str> = lines.iter().take(10).copied().collect();
        let more = if lines.len() > 10 {
            format!("\n  … and {} more", lines.len() - 10)
        } else {
            String::new()
        };
        Err(Error::bad_input(format!(
            "the checkout {} has uncommitted changes, so its build would not be the commit its tag names:\n  {}{more}",
            self.root.display(),
            shown.join("\n  ")
        ))
        .hint(format!(
            "commit them, or set them aside with `git -C {0} stash --include-untracked`, or discard them with `git -C {0} checkout -- . && git -C {0} clean -fd`",
            self.root.display()
        )))
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
                return Err(Error::bad_input(format!(
                    "the checkout {} is on a detached HEAD, so there is no branch to update from",
                    self.root.display()
                ))
                .hint("check out the branch you deploy (`git checkout main`), set `branch` in dockmaster.toml, or deploy as it is with --no-pull"));
            }
        };
        if let Some(c) = &current
            && branch != *c
        {
            return Err(Error::bad_input(format!(
                "the checkout {} is on branch `{c}`, but releases come from `{branch}`",
                self.root.display()
            ))
            .hint(format!(
                "`git -C {} checkout {branch}`, or deploy as it is with --no-pull",
                self.root.display()
            )));
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
            .map_err(|e| {
                Error::failed(format!(
                    "cannot fetch {upstream} into {}: {e}",
                    self.root.display()
                ))
                .hint("check the network and credentials (`git fetch` by hand shows the same), or deploy the checkout as it is with --no-pull")
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
        let root = self.root.display();
        if ahead > 0 && behind > 0 {
            return Err(Error::bad_input(format!(
                "the checkout {root} has diverged from {upstream}: {ahead} local commit(s) not on {upstream}, {behind} commit(s) on {upstream} not here"
            ))
            .hint(format!(
                "keep the remote's history with `git -C {root} reset --hard {upstream}` (drops the local commits), or push the local ones first; --no-pull deploys the checkout as it is"
            )));
        }
        if ahead > 0 {
            return Err(Error::bad_input(format!(
                "the checkout {root} is {ahead} commit(s) ahead of {upstream}: they are not on the remote"
            ))
            .hint(format!(
                "push them (`git -C {root} push {} HEAD:{}`) so the release can be rebuilt from the remote, or deploy the checkout as it is with --no-pull",
                upstream.remote, upstream.branch
            )));
        }
        self.git(&["merge", "--ff-only", "--quiet", "FETCH_HEAD"])
            .await
            .map_err(|e| {
                Error::failed(format!("fast-forward of {root} to {upstream} failed: {e}"))
                    .hint("`git status` in the checkout shows why; nothing else was changed")
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
    let out = cmd.output().await.map_err(|e| {
        Error::failed(format!("cannot run git: {e}")).hint("install git (apt-get install git)")
    })?;
    tracing::debug!(?args, dir = %dir.display(), status = ?out.status, "git");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(Error::failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
