//! Image builds run through the `docker` CLI: it sends the context honouring
//! `.dockerignore`, picks BuildKit or the legacy builder as the user's setup does, and its
//! output is what users already know how to read when a build breaks.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::error::{Error, Result};

/// What a build reports while it runs; the caller's printer words it (the engine never
/// prints).
#[derive(Debug)]
pub enum BuildEvent<'a> {
    /// A line of the builder's output.
    Line(&'a str),
    /// The legacy builder lost a cached parent image to a removal elsewhere; building again.
    Retrying,
}

pub struct BuildRequest {
    pub image: String,
    pub context: PathBuf,
    pub dockerfile: Option<String>,
    pub target: Option<String>,
    pub args: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    /// BuildKit or the legacy builder, when the user's environment forces one
    /// (`DOCKER_BUILDKIT=1/0`); otherwise the CLI's own choice (no buildx: legacy).
    pub buildkit: Option<bool>,
}

/// How many lines of a failed build to show again at the end.
const TAIL: usize = 25;

/// Build the image, streaming its output (a one-line progress display when stderr is a
/// terminal, the plain lines otherwise). On failure the last lines are in the error.
///
/// The legacy builder (no BuildKit, as with Debian's engine and no buildx) turns every
/// `--label` into a build step of its own, about a second each. There the Dockerfile is
/// built with only the app's label (so a leftover is still recognisably this app's), and
/// the release's labels are added in one `LABEL` step on top.
pub async fn build(req: &BuildRequest, on: &mut dyn FnMut(BuildEvent<'_>)) -> Result<()> {
    if !legacy_builder(req.buildkit).await || req.labels.len() < 3 {
        return run_build_retrying(req, on, &req.labels, Some(&req.image), None).await;
    }
    let iid = std::env::temp_dir().join(format!("dockmaster-build-{}.iid", std::process::id()));
    let first: Vec<(String, String)> = req
        .labels
        .iter()
        .filter(|(k, _)| k == crate::release::LABEL_APP)
        .cloned()
        .collect();
    run_build_retrying(req, on, &first, None, Some(&iid)).await?;
    let base = std::fs::read_to_string(&iid).map_err(|e| Error::NoImageId {
        image: req.image.clone(),
        reason: e.to_string(),
    })?;
    let _ = std::fs::remove_file(&iid);
    let labels: Vec<String> = req
        .labels
        .iter()
        .map(|(k, v)| format!("\"{}\"=\"{}\"", quote(k), quote(v)))
        .collect();
    let dockerfile = format!(
        "FROM {}\nLABEL {}\n",
        base.trim(),
        labels.join(" \\\n      ")
    );
    let mut cmd = crate::engine::cli::command("docker");
    // --force-rm: a failed step's intermediate container goes too (the legacy builder
    // keeps it otherwise, "Created", on the user's engine).
    cmd.args(["build", "--force-rm", "--tag", &req.image, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tracing::debug!(?cmd, %dockerfile, "docker build (labels)");
    let mut child = cmd.spawn().map_err(|e| Error::BuildNotRun {
        reason: e.to_string(),
    })?;
    let io = |e: std::io::Error| Error::BuildIo {
        image: req.image.clone(),
        reason: e.to_string(),
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(dockerfile.as_bytes()).await.map_err(io)?;
    }
    let out = child.wait_with_output().await.map_err(io)?;
    if !out.status.success() {
        return Err(Error::LabelFailed {
            image: req.image.clone(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A Dockerfile double-quoted word: `\`, `"` and `$` escaped, one line.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$")
        .replace(['\n', '\r'], " ")
}

/// Is `docker build` the legacy builder? It is when BuildKit is turned off, or when the
/// CLI has no buildx (newer CLIs then fall back to the legacy builder).
async fn legacy_builder(buildkit: Option<bool>) -> bool {
    if let Some(buildkit) = buildkit {
        return !buildkit;
    }
    !crate::engine::cli::command("docker")
        .args(["buildx", "version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// `run_build`, once more if the legacy builder lost a cached step under it: an image
/// removal elsewhere (another app's prune, `docker image prune`) can delete the untagged
/// parent a build has just taken from its cache, and the builder then fails with
/// "unknown parent image ID", or — when the removal lands a moment earlier — "failed to
/// get digest sha256:…: open …/imagedb/content/sha256/…: no such file or directory", or,
/// when the next step's container is created from the lost parent, `unable to find image
/// "sha256:…"` (an image id: a build's own names are never ids). A
/// second build finds the cache as it now is; when that one loses a step too (removals
/// keep coming: a busy engine), the third builds without the cache, which no removal can
/// take from under it.
async fn run_build_retrying(
    req: &BuildRequest,
    on: &mut dyn FnMut(BuildEvent<'_>),
    labels: &[(String, String)],
    tag: Option<&str>,
    iidfile: Option<&std::path::Path>,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_build(req, on, labels, tag, iidfile, attempt == 3).await {
            // The builder's output is the only signal: the CLI exits 1 for every failed
            // build and gives no status code or error type to match instead.
            Err(Error::BuildFailed { last_lines, .. })
                if attempt < 3 && last_lines.iter().any(|l| lost_cached_image(l)) =>
            {
                on(BuildEvent::Retrying);
            }
            other => return other,
        }
    }
}

/// Did the build fail because an image it took from its cache was removed under it?
fn lost_cached_image(error: &str) -> bool {
    error.contains("unknown parent image ID")
        || error.contains("unable to find image \"sha256:")
        || error.lines().any(|l| {
            l.contains("failed to get digest sha256:")
                && l.contains("/imagedb/content/sha256/")
                && l.contains("no such file or directory")
        })
}

async fn run_build(
    req: &BuildRequest,
    on: &mut dyn FnMut(BuildEvent<'_>),
    labels: &[(String, String)],
    tag: Option<&str>,
    iidfile: Option<&std::path::Path>,
    no_cache: bool,
) -> Result<()> {
    let mut cmd = crate::engine::cli::command("docker");
    cmd.args(["build", "--force-rm"]);
    if no_cache {
        cmd.arg("--no-cache");
    }
    if let Some(t) = tag {
        cmd.arg("--tag").arg(t);
    }
    if let Some(f) = iidfile {
        cmd.arg("--iidfile").arg(f);
    }
    if let Some(f) = &req.dockerfile {
        cmd.arg("--file").arg(req.context.join(f));
    }
    if let Some(t) = &req.target {
        cmd.arg("--target").arg(t);
    }
    for (k, v) in &req.args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    for (k, v) in labels {
        cmd.arg("--label").arg(format!("{k}={v}"));
    }
    cmd.arg(&req.context);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The build is ours to stop: if dockmaster is interrupted, the build goes with it.
    cmd.kill_on_drop(true);
    tracing::debug!(?cmd, "docker build");
    let mut child = cmd.spawn().map_err(|e| Error::BuildNotRun {
        reason: e.to_string(),
    })?;
    let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL);
    let (mut out, mut err) = (stdout, stderr);
    loop {
        let line = tokio::select! {
            l = next(&mut out), if out.is_some() => match l { Some(l) => l, None => { out = None; continue } },
            l = next(&mut err), if err.is_some() => match l { Some(l) => l, None => { err = None; continue } },
            else => break,
        };
        on(BuildEvent::Line(&line));
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await.map_err(|e| Error::BuildIo {
        image: req.image.clone(),
        reason: e.to_string(),
    })?;
    tracing::debug!(?status, "docker build finished");
    if status.success() {
        return Ok(());
    }
    let last_lines: Vec<String> = tail.into_iter().collect();
    // The builder's output is the only signal of a full disk: the CLI exits 1 whatever
    // the reason.
    let disk_full = last_lines
        .iter()
        .any(|l| l.contains("no space left on device"));
    Err(Error::BuildFailed {
        image: req.image.clone(),
        status: status.to_string(),
        last_lines,
        disk_full,
    })
}

async fn next(
    lines: &mut Option<tokio::io::Lines<BufReader<impl tokio::io::AsyncRead + Unpin>>>,
) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen here when a concurrent prune removed a cached layer's image mid-build.
    #[test]
    fn a_cached_image_removed_mid_build_is_retried_other_failures_are_not() {
        assert!(lost_cached_image(
            "the build of x:1 failed (exit status: 1); its last lines:\n  failed to get digest sha256:7a58: open /var/lib/docker/image/fuse-overlayfs/imagedb/content/sha256/7a58: no such file or directory"
        ));
        assert!(lost_cached_image(
            "Error response from daemon: unknown parent image ID sha256:ab"
        ));
        // Seen in CI: the step after three cached ones, its parent removed meanwhile.
        assert!(lost_cached_image(
            "Step 5/8 : COPY www /www\n  unable to find image \"sha256:f39b63a74de6c6eece38645465393324bca159b24432cae3591c9857091c13e0\""
        ));
        assert!(!lost_cached_image(
            "unable to find image \"busybox:latest\" locally"
        ));
        assert!(!lost_cached_image(
            "COPY failed: file not found in build context: stat missing.txt: no such file or directory"
        ));
    }
}
