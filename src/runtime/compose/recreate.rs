//! The recreate switch: `compose up --force-recreate` of the service with the release's
//! tag, so that compose keeps owning the service's container (its labels, networks,
//! `container_name`, restart policy) and a plain `docker compose up -d` afterwards
//! reproduces what dockmaster left. The old container stops before the new one starts:
//! used where start-first is not safe, and to put a release back after a failed switch.

use super::{ComposeRuntime, compose_up, image_override};
use crate::error::{Error, Result};
use crate::runtime::{Candidate, Started};

/// Recreate the service's container from `<repository>:<tag>`.
pub async fn put_live(rt: &ComposeRuntime, tag: &str) -> Result<Candidate> {
    let app = &rt.app;
    let (extra, cmd_env) = image_override(app, tag)?;
    let compose = rt.compose.get().await?;
    if compose.major == 1 {
        avoid_v1_container_config_crash(rt).await?;
    }
    let out = compose_up(compose, app, &extra, &cmd_env)
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
    let container = rt
        .engine
        .service_container(&app.project.name, &app.service)
        .await?
        .ok_or_else(|| {
            Error::failed(format!(
                "compose reported success but service `{}` has no container",
                app.service
            ))
        })?;
    Ok(Candidate {
        id: container.id,
        name: container.name,
        how: Started::Recreated,
    })
}

/// docker-compose 1.x crashes with `KeyError: 'ContainerConfig'` when it recreates a
/// container whose image was built by BuildKit (docker/compose#11693) — after it has
/// already stopped and renamed the old container, leaving the service down. When the
/// running container's image lacks that field we remove the container first, so compose
/// creates a fresh one instead of recreating.
pub async fn avoid_v1_container_config_crash(rt: &ComposeRuntime) -> Result<()> {
    let app = &rt.app;
    let Some(current) = rt
        .engine
        .service_container(&app.project.name, &app.service)
        .await?
    else {
        return Ok(());
    };
    if rt
        .engine
        .image_has_container_config(&current.image_id)
        .await
    {
        return Ok(());
    }
    tracing::info!(container = %current.name, "removing before up: image lacks ContainerConfig (compose v1)");
    rt.engine.remove_now(&current.id).await.map_err(|e| {
        Error::failed(format!(
            "cannot remove container {} before recreating it: {e}",
            current.name
        ))
        .hint(e.hint())
    })
}
