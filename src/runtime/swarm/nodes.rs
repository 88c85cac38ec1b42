//! The swarm's nodes, each reached by its own engine, for what Swarm itself never does:
//! move images between nodes (moby#26852). Swarm's agents run a task from the image the
//! node has; dockmaster makes sure every node that may run a task has the release's image,
//! with the same id, before it updates the service.
//!
//! A node's engine is reached with the docker CLI (`docker -H <endpoint>`), so every
//! endpoint the CLI takes works, `ssh://user@nas2` included (the CLI runs `ssh` with the
//! user's keys and config). Shipping is `docker save` on the engine dockmaster builds on
//! piped into `docker load` on the node: layers the node has are still sent (the save
//! format has no negotiation), so a ship costs the image's size once per node, and only
//! when the node lacks that image id.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::engine::cli;

/// How long a node's engine may take to answer a question (an SSH connection included).
const ANSWER: Duration = Duration::from_secs(20);
/// How long one image may take to reach one node.
const SHIP: Duration = Duration::from_secs(600);

/// What went wrong with a node's engine. `Display` is the message alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the engine at {endpoint} did not answer: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the engine at {endpoint} is not part of a swarm")]
    NotInSwarm { endpoint: String },
    #[error("`docker -H {endpoint} {doing}` failed: {reason}")]
    Command {
        endpoint: String,
        doing: String,
        reason: String,
    },
    #[error("shipping {image} to node {node} failed: {reason}")]
    Ship {
        image: String,
        node: String,
        reason: String,
    },
}

/// One node's engine.
#[derive(Clone, Debug)]
pub struct NodeEngine {
    /// As `docker -H` takes it; None: the engine dockmaster talks to (`DOCKER_HOST`).
    pub endpoint: Option<String>,
}

impl NodeEngine {
    pub fn shown(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| {
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local engine".into())
        })
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = cli::command("docker");
        c.env_remove("DOCKER_CONTEXT").stdin(Stdio::null());
        if let Some(e) = &self.endpoint {
            c.args(["-H", e]);
        }
        c
    }

    /// Run `docker <args>` on this engine; its stdout, or why it failed.
    async fn run(&self, args: &[&str], within: Duration) -> Result<String, Error> {
        let mut c = self.command();
        c.args(args).kill_on_drop(true);
        let started = Instant::now();
        let out = tokio::time::timeout(within, c.output()).await;
        tracing::debug!(endpoint = %self.shown(), ?args, took = ?started.elapsed(), "node docker");
        let out = match out {
            Err(_) => {
                return Err(Error::Unreachable {
                    endpoint: self.shown(),
                    reason: format!("no answer within {}", crate::output::human_duration(within)),
                });
            }
            Ok(Err(e)) => {
                return Err(Error::Command {
                    endpoint: self.shown(),
                    doing: args.join(" "),
                    reason: format!("cannot run docker: {e}"),
                });
            }
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("Cannot connect to the Docker daemon")
            || stderr.contains("error during connect")
            || stderr.contains("connection refused")
        {
            return Err(Error::Unreachable {
                endpoint: self.shown(),
                reason: stderr,
            });
        }
        Err(Error::Command {
            endpoint: self.shown(),
            doing: args.join(" "),
            reason: stderr,
        })
    }

    /// The swarm node id of this engine.
    pub async fn node_id(&self) -> Result<String, Error> {
        let id = self
            .run(&["info", "--format", "{{.Swarm.NodeID}}"], ANSWER)
            .await?
            .trim()
            .to_string();
        if id.is_empty() {
            return Err(Error::NotInSwarm {
                endpoint: self.shown(),
            });
        }
        Ok(id)
    }

    /// The id of the image `reference` names here, if any.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, Error> {
        match self
            .run(
                &["image", "inspect", "--format", "{{.Id}}", reference],
                ANSWER,
            )
            .await
        {
            Ok(id) => Ok(Some(id.trim().to_string())),
            Err(Error::Command { reason, .. })
                if reason.contains("No such image") || reason.contains("No such object") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Name `image_id` `reference` here.
    pub async fn tag(&self, image_id: &str, reference: &str) -> Result<(), Error> {
        self.run(&["tag", image_id, reference], ANSWER)
            .await
            .map(drop)
    }

    /// The images of `repository` here: (tag, id, size in bytes).
    pub async fn images(&self, repository: &str) -> Result<Vec<(String, String, u64)>, Error> {
        let out = self
            .run(
                &[
                    "image",
                    "ls",
                    "--no-trunc",
                    "--format",
                    "{{.Tag}}\t{{.ID}}",
                    repository,
                ],
                ANSWER,
            )
            .await?;
        let mut images = vec![];
        for line in out.lines() {
            let mut parts = line.split('\t');
            if let (Some(tag), Some(id)) = (parts.next(), parts.next()) {
                images.push((tag.to_string(), id.to_string(), 0));
            }
        }
        // `image ls` prints sizes rounded for people: ask for the bytes.
        for image in &mut images {
            if let Ok(size) = self
                .run(
                    &["image", "inspect", "--format", "{{.Size}}", &image.1],
                    ANSWER,
                )
                .await
            {
                image.2 = size.trim().parse().unwrap_or(0);
            }
        }
        Ok(images)
    }

    /// What the container's health check last said, when it has one and failed:
    /// "unhealthy: <the check's last output>".
    pub async fn last_health(&self, container: &str) -> Option<String> {
        let out = self
            .run(
                &["inspect", "--format", "{{json .State.Health}}", container],
                ANSWER,
            )
            .await
            .ok()?;
        let health: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let status = health["Status"].as_str()?;
        let last = health["Log"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|l| l["Output"].as_str())
            .map(|o| o.trim().replace('\n', " "))
            .unwrap_or_default();
        let failing = health["FailingStreak"].as_u64().unwrap_or(0);
        (status == "unhealthy" || failing > 0).then(|| {
            format!("its health check failed {failing} time(s) in a row (Docker: {status}); last output: {last}")
        })
    }

    /// Remove `reference` here (a tag: the image goes with its last name, unless a
    /// container uses it).
    pub async fn remove(&self, reference: &str) -> Result<(), Error> {
        self.run(&["image", "rm", reference], ANSWER)
            .await
            .map(drop)
    }

    /// The images the containers here run (task containers of every state included).
    pub async fn used_images(&self) -> Result<Vec<String>, Error> {
        let ids = self.run(&["ps", "-aq", "--no-trunc"], ANSWER).await?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut args = vec!["inspect", "--format", "{{.Image}}"];
        args.extend(ids);
        Ok(self
            .run(&args, ANSWER)
            .await?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Copy `reference` from `from` to this engine: `docker save | docker load`.
    pub async fn load_from(
        &self,
        from: &NodeEngine,
        reference: &str,
        node: &str,
    ) -> Result<(), Error> {
        let failed = |reason: String| Error::Ship {
            image: reference.to_string(),
            node: node.to_string(),
            reason,
        };
        let mut save = from.command();
        save.args(["save", reference])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut save = save
            .spawn()
            .map_err(|e| failed(format!("cannot run docker save: {e}")))?;
        let stdout = save
            .stdout
            .take()
            .ok_or_else(|| failed("no pipe from docker save".into()))?;
        let stdout: Stdio = stdout
            .try_into()
            .map_err(|e| failed(format!("pipe from docker save: {e}")))?;
        let mut load = self.command();
        load.args(["load", "-q"])
            .stdin(stdout)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let load = load
            .spawn()
            .map_err(|e| failed(format!("cannot run docker load: {e}")))?;
        let mut save_err = save.stderr.take();
        let both = async {
            let loaded = load.wait_with_output().await;
            let saved = save.wait().await;
            let mut text = String::new();
            if let Some(e) = save_err.as_mut() {
                let _ = e.read_to_string(&mut text).await;
            }
            (loaded, saved, text)
        };
        let (loaded, saved, save_text) = tokio::time::timeout(SHIP, both).await.map_err(|_| {
            failed(format!(
                "not done within {}",
                crate::output::human_duration(SHIP)
            ))
        })?;
        let saved = saved.map_err(|e| failed(format!("docker save: {e}")))?;
        if !saved.success() {
            return Err(failed(format!("docker save: {}", save_text.trim())));
        }
        let loaded = loaded.map_err(|e| failed(format!("docker load: {e}")))?;
        if !loaded.status.success() {
            return Err(failed(format!(
                "docker load on {}: {}",
                self.shown(),
                String::from_utf8_lossy(&loaded.stderr).trim()
            )));
        }
        Ok(())
    }
}
