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
