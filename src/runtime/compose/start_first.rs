//! The start-first switch on one host.
//!
//! 1. `start`: the release runs in a container of its own beside the live one — its hot
//!    standby if it has one, else its cold standby started again, else a new container from
//!    `compose run -d` (so it gets the service's environment, volumes, networks and command
//!    from the compose file, but not its name, aliases or published ports), labelled
//!    `dev.dockmaster.role=app`. A standby is reused only while compose would create it with
//!    the same settings (`dev.dockmaster.config`, `Project::service_fingerprint`).
//! 2. The go-live policy gates it on health while the live release keeps serving.
//! 3. `switch`: the service's own container is dockmaster's proxy (`crate::proxy`), which
//!    holds the service name, `container_name` and published ports. It is told to send new
//!    requests to the new container, and answers once the requests still running on the old
//!    one have finished (up to the drain timeout). The first start-first switch of a service
//!    whose container is still the app itself replaces that container with the proxy
//!    (`install_proxy`, a one-time recreate through compose).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fs_err as fs;

use super::{ComposeRuntime, check_protocol, compose_up, image_override, release_label};
use crate::engine::{
    ContainerInfo, LABEL_CONFIG, LABEL_CONTROL_TOKEN, LABEL_PROXY_MODE, LABEL_RELEASE, LABEL_ROLE,
    proxy_image,
};
use crate::error::{Error, Result};
use crate::proxy::protocol::{Reply, Request};
use crate::runtime::{Candidate, NotSwitched, ProxySetUp, Started, Switched, Target};

/// Start `target` beside the live release; `serving` (the live container) is never reused.
pub async fn start(
    rt: &ComposeRuntime,
    target: &Target,
    serving: Option<&str>,
) -> Result<Candidate> {
    let app = &rt.app;
    let engine = &rt.engine;
    let tag = target.tag.as_str();
    if rt.running_proxy().await?.is_none() {
        // Built now (once per dockmaster build), so the switch itself stays short.
        proxy_image::ensure(engine).await?;
    }
    let fingerprint = app.project.service_fingerprint(&app.service);
    if let Some(fp) = &fingerprint {
        let same = |c: &ContainerInfo| {
            release_label(c) == Some(tag)
                && c.labels.get(LABEL_CONFIG) == Some(fp)
                && c.image_id == target.image_id
                && Some(c.name.as_str()) != serving
                && Some(c.id.as_str()) != serving
        };
        let containers = rt.app_containers().await?;
        if let Some(c) = containers.iter().find(|c| c.running && same(c)) {
            return Ok(Candidate {
                id: c.id.clone(),
                name: c.name.clone(),
                how: Started::AlreadyRunning,
            });
        }
        if let Some(c) = containers.iter().find(|c| !c.running && same(c)) {
            let started = async {
                engine.start(&c.id).await?;
                if let Some(policy) = &app.service_def.restart {
                    engine.set_restart_policy(&c.id, policy).await?;
                }
                Ok::<_, Error>(())
            }
            .await;
            match started {
                Ok(()) => {
                    return Ok(Candidate {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        how: Started::Restarted,
                    });
                }
                Err(e) => {
                    tracing::info!(%e, container = %c.name, "standby did not start; creating a new one");
                    let _ = engine.remove_now(&c.id).await;
                }
            }
        }
    }
    let (extra, env) = image_override(app, tag)?;
    let compose = rt.compose.get().await?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(0)
        & 0xffffff;
    let name = format!("{}-{}-{tag}-{nonce:06x}", app.project.name, app.service);
    let mut cmd = compose.command(&app.project, &extra);
    cmd.args(["run", "-d", "-T", "--no-deps", "--name", &name])
        .args(["--label", &format!("{LABEL_ROLE}=app")])
        .args(["--label", &format!("{LABEL_RELEASE}={tag}")]);
    if let Some(fp) = &fingerprint {
        cmd.args(["--label", &format!("{LABEL_CONFIG}={fp}")]);
    }
    cmd.arg(&app.service);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tracing::debug!(?cmd, "compose run");
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot run {}: {e}", compose.display())))?;
    if !out.status.success() {
        // A container may exist even though compose failed (e.g. it failed to start).
        let _ = engine.remove_now(&name).await;
        return Err(Error::failed(format!(
            "{} run of {} failed: {}{}",
            compose.display(),
            app.image_ref(tag),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let container = engine.container(&name).await?.ok_or_else(|| {
        Error::failed(format!(
            "compose reported success but {name} does not exist"
        ))
    })?;
    // `compose run` containers get no restart policy; the release must survive a reboot
    // like the service would.
    if let Some(policy) = &app.service_def.restart
        && let Err(e) = engine.set_restart_policy(&container.id, policy).await
    {
        let _ = engine.remove_now(&container.id).await;
        return Err(e.into());
    }
    Ok(Candidate {
        id: container.id,
        name: container.name,
        how: Started::Created,
    })
}

/// Tell the running proxy to send traffic to `candidate`; it answers once drained.
pub async fn switch(
    rt: &ComposeRuntime,
    proxy: &ContainerInfo,
    candidate: &Candidate,
    drain: Duration,
) -> std::result::Result<Switched, NotSwitched> {
    let known = *rt.proxy_protocol.lock().unwrap_or_else(|e| e.into_inner());
    let proto = match known {
        Some(p) => p,
        None => match rt.proxy_status(proxy).await {
            Some((_, p)) => p,
            None => {
                return Err(NotSwitched::PreviousServing(format!(
                    "the proxy {} does not answer its status",
                    proxy.name
                )));
            }
        },
    };
    // Every protocol version up to ours reads the same switch request (protocol.rs).
    check_protocol(proxy, proto).map_err(|e| NotSwitched::PreviousServing(e.to_string()))?;
    let started = Instant::now();
    let request = Request::Switch {
        upstream: candidate.name.clone(),
        drain,
    };
    match rt
        .control(proxy, &request, drain + Duration::from_secs(20))
        .await
    {
        Ok(Some(Ok(Reply::Switched {
            from,
            drained,
            still_running,
        }))) => Ok(Switched {
            proxy: proxy.name.clone(),
            took: started.elapsed(),
            drained,
            still_running,
            from: Some(from),
            proxy_set_up: None,
        }),
        Ok(Some(Ok(Reply::Refused(why)))) => Err(NotSwitched::PreviousServing(format!(
            "the proxy refused the switch: {why}"
        ))),
        Ok(Some(Ok(other))) => Err(NotSwitched::Unknown(format!(
            "the proxy answered the switch with {other:?}"
        ))),
        Ok(Some(Err(e))) => Err(NotSwitched::Unknown(e)),
        // It may have swapped and still be draining: only putting the previous release back
        // makes the state certain.
        Ok(None) => Err(NotSwitched::Unknown(
            "the proxy did not answer the switch in time".into(),
        )),
        Err(e) => Err(NotSwitched::PreviousServing(format!(
            "cannot reach the proxy: {e}"
        ))),
    }
}

/// First start-first switch: the service's container becomes the proxy, sending traffic to
/// `candidate`.
pub async fn install_proxy(
    rt: &ComposeRuntime,
    candidate: &Candidate,
    ports: &[u16],
) -> std::result::Result<Switched, NotSwitched> {
    let app = &rt.app;
    let engine = &rt.engine;
    let unchanged = |e: Error| NotSwitched::PreviousServing(e.to_string());
    let image = proxy_image::ensure(engine)
        .await
        .map_err(|e| unchanged(e.into()))?;
    let tag = engine
        .container(&candidate.id)
        .await
        .ok()
        .flatten()
        .and_then(|c| release_label(&c).map(str::to_string))
        .unwrap_or_else(|| "latest".into());
    let (mut extra, env) = image_override(app, &tag).map_err(unchanged)?;
    extra.push(write_proxy_override(rt, &image, &candidate.name, ports).map_err(unchanged)?);
    let had_container = engine
        .service_container(&app.project.name, &app.service)
        .await
        .ok()
        .flatten()
        .is_some();
    let compose = rt.compose.get().await.map_err(|e| unchanged(e.into()))?;
    if compose.major == 1 {
        super::recreate::avoid_v1_container_config_crash(rt)
            .await
            .map_err(unchanged)?;
    }
    let started = Instant::now();
    let out = compose_up(compose, app, &extra, &env)
        .await
        .map_err(|e| NotSwitched::Unknown(format!("cannot run {}: {e}", compose.display())))?;
    if !out.status.success() {
        return Err(NotSwitched::Unknown(format!(
            "{} up of the proxy failed: {}{}",
            compose.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Ready when it answers and sends traffic to the candidate.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(proxy)) = rt.running_proxy().await
            && rt.proxy_status(&proxy).await.map(|(u, _)| u).as_deref()
                == Some(candidate.name.as_str())
        {
            return Ok(Switched {
                proxy: proxy.name,
                took: started.elapsed(),
                drained: Duration::ZERO,
                still_running: 0,
                from: None,
                proxy_set_up: Some(ProxySetUp {
                    publishes_ports: app.service_def.publishes_ports,
                    replaced_a_container: had_container,
                }),
            });
        }
        if Instant::now() >= deadline {
            return Err(NotSwitched::Unknown(
                "the proxy did not come up within 15s (see `docker logs` of the service's container)".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The compose override that turns the service's container into the proxy. Kept in the
/// state directory; compose merges it over the user's files for this one `up`.
fn write_proxy_override(
    rt: &ComposeRuntime,
    image: &str,
    upstream: &str,
    ports: &[u16],
) -> Result<PathBuf> {
    let app = &rt.app;
    fs::create_dir_all(&app.state_dir).map_err(|e| Error::failed(e.to_string()))?;
    let path = app.state_dir.join(format!("{}.proxy.yml", app.id()));
    let mut command = vec![];
    for p in ports {
        command.push("\"--listen\"".to_string());
        command.push(format!("\"{p}\""));
    }
    command.push("\"--upstream\"".into());
    command.push(format!("\"{upstream}\""));
    if app.proxy == crate::proxy::Mode::Tcp {
        command.push("\"--mode\"".into());
        command.push("\"tcp\"".into());
    }
    // Non-root where it can bind the ports as such (ports below 1024 need root on kernels
    // and engines that do not lower `ip_unprivileged_port_start` in containers).
    let user = if ports.iter().all(|p| *p >= 1024) {
        "65534:65534"
    } else {
        "0:0"
    };
    let token = control_token()?;
    command.push("\"--control-token\"".into());
    command.push(format!("\"{token}\""));
    let body = format!(
        "# Written by dockmaster: its switch proxy holds the service's name, container_name\n\
         # and ports, and sends traffic to the live release's container.\n\
         services:\n  {svc}:\n    image: \"{image}\"\n    entrypoint: [\"/dockmaster\", \"proxy\"]\n    command: [{command}]\n    user: \"{user}\"\n    working_dir: \"/\"\n    healthcheck:\n      test: [\"CMD\", \"/dockmaster\", \"proxy-ctl\", \"health\"]\n      interval: 10s\n      timeout: 5s\n      retries: 3\n    labels:\n      {LABEL_ROLE}: proxy\n      {LABEL_CONTROL_TOKEN}: \"{token}\"\n      {LABEL_PROXY_MODE}: \"{mode}\"\n",
        mode = app.proxy.as_str(),
        svc = app.service,
        command = command.join(", "),
    );
    fs::write(&path, body).map_err(|e| Error::failed(e.to_string()))?;
    Ok(path)
}

/// 128 random bits, hex: the proxy's control token.
fn control_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| {
            Error::failed(format!(
                "cannot read /dev/urandom for the proxy's token: {e}"
            ))
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
