//! `dockmaster logs`: the live container's logs.

use crate::cli::LogsArgs;
use crate::commands::Ctx;
use crate::error::{Error, Result, exit};
use crate::runtime::Runtime;

pub async fn run(ctx: &Ctx, args: &LogsArgs) -> Result<u8> {
    let app = ctx.app();
    let releases = ctx.rt.releases().await?;
    let container = ctx
        .rt
        .serving(&releases)
        .await?
        .map(|l| l.container)
        .ok_or_else(|| {
            Error::failed(format!(
                "service `{}` of project `{}` has no container",
                app.service, app.project.name
            ))
            .hint("`dockmaster deploy` puts a release live")
        })?;
    if ctx.rt.swarm().is_some() {
        // Every task's lines, on whichever node it runs: the engine gathers them.
        let mut c = crate::engine::cli::command("docker");
        c.env_remove("DOCKER_CONTEXT").args([
            "service",
            "logs",
            "--timestamps",
            "--tail",
            &args.tail.to_string(),
        ]);
        if args.follow {
            c.arg("--follow");
        }
        let status = c.arg(&container.name).status().await.map_err(|e| {
            Error::failed(format!("cannot run `docker service logs`: {e}"))
                .hint(crate::engine::cli::install_hint())
        })?;
        return if status.success() {
            Ok(exit::OK)
        } else {
            Err(Error::failed(format!(
                "`docker service logs {}` failed ({status})",
                container.name
            )))
        };
    }
    ctx.engine()
        .follow_logs(
            &container.id,
            args.tail,
            args.follow,
            &mut std::io::stdout(),
        )
        .await?;
    Ok(exit::OK)
}
