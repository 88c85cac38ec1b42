//! The recreate switch: `compose up --force-recreate` of the service with the release's
//! tag, so that compose keeps owning the service's container (its labels, networks,
//! `container_name`, restart policy) and a plain `docker compose up -d` afterwards
//! reproduces what dockmaster left. The old container stops before the new one starts:
//! used where start-first is not safe, and to put a release back after a failed switch.

use std::process::Stdio;

use crate::compose;
use crate::engine::{ContainerInfo, Engine};
use crate::error::{Error, Result};
use crate::settings::App;

pub struct Switcher<'a> {
    pub app: &'a App,
    pub engine: &'a Engine,
    pub compose: &'a compose::Detected,
}

impl Switcher<'_> {
    /// Recreate the service's container from `<repository>:<tag>`; returns the new container.
    pub async fn put_live(&self, tag: &str) -> Result<ContainerInfo> {
        let app = self.app;
        let (extra, cmd_env) = super::image_override(app, tag)?;
        let compose = self.compose.get().await?;

        if compose.major == 1 {
            self.avoid_v1_container_config_crash().await?;
        }

        let out = super::compose_up(compose, app, &extra, &cmd_env)
            .await
            .map_err(|e| Error::failed(format!("cannot run {}: {e}", compose.display())))?;
        if !out.status.success() {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Err(Error::failed(format!(
                "{} up of {} failed: {}",
                compose.display(),
                app.image_ref(tag),
                text.trim()
            )));
        }
        let container = self
            .engine
            .service_container(&app.project.name, &app.service)
            .await?
            .ok_or_else(|| {
                Error::failed(format!(
                    "compose reported success but service `{}` has no container",
                    app.service
                ))
            })?;
        Ok(container)
    }

    /// docker-compose 1.x crashes with `KeyError: 'ContainerConfig'` when it recreates a
    /// container whose image was built by BuildKit (docker/compose#11693) — after it has
    /// already stopped and renamed the old container, leaving the service down. When the
    /// running container's image lacks that field we remove the container first, so compose
    /// creates a fresh one instead of recreating.
    pub async fn avoid_v1_container_config_crash(&self) -> Result<()> {
        let app = self.app;
        let Some(current) = self
            .engine
            .service_container(&app.project.name, &app.service)
            .await?
        else {
            return Ok(());
        };
        if image_has_container_config(&current.image_id).await {
            return Ok(());
        }
        tracing::info!(container = %current.name, "removing before up: image lacks ContainerConfig (compose v1)");
        let out = crate::engine::cli::command("docker")
            .args(["rm", "-f", &current.id])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::failed(format!("cannot run docker rm: {e}")))?;
        if !out.status.success() {
            return Err(Error::failed(format!(
                "cannot remove container {} before recreating it: {}",
                current.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// Does the image carry the legacy builder's `ContainerConfig`? Asked through the CLI
/// because the field is gone from current API models; an error counts as "no".
pub async fn image_has_container_config(image: &str) -> bool {
    let out = crate::engine::cli::command("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .ContainerConfig}}",
            image,
        ])
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            let s = s.trim();
            !(s.is_empty() || s == "null" || s == "{}")
        }
        _ => false,
    }
}
