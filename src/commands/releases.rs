//! `dockmaster releases`: every kept release, newest first, with its marks.

use serde::Serialize;

use crate::cli::ReleasesArgs;
use crate::commands::{Ctx, releases_table, rollback_target};
use crate::error::{Result, exit};
use crate::history::Mark;

#[derive(Serialize)]
struct Row {
    tag: String,
    commit: String,
    subject: Option<String>,
    created: String,
    size_bytes: i64,
    image_id: String,
    live: bool,
    previous: bool,
    known_good: bool,
    failed: bool,
}

pub async fn run(ctx: &Ctx, args: &ReleasesArgs) -> Result<u8> {
    let releases = ctx.engine.releases(&ctx.app.repository).await?;
    let live = ctx.live(&releases).await?;
    let live_release = live.as_ref().and_then(|l| l.release.clone());
    let marks = ctx.history()?.marks()?;
    let target = rollback_target(&releases, live_release.as_ref(), &marks).map(|(r, _)| r.clone());
    if args.json {
        let rows: Vec<Row> = releases
            .iter()
            .map(|r| {
                let tag = r.tag.to_string();
                Row {
                    live: live_release.as_ref().is_some_and(|l| l.tag == r.tag),
                    previous: target.as_ref().is_some_and(|t| t.tag == r.tag),
                    known_good: marks.get(&tag) == Some(&Mark::KnownGood),
                    failed: marks.get(&tag) == Some(&Mark::Failed),
                    commit: r.commit.clone(),
                    subject: r.subject.clone(),
                    created: r.created.to_string(),
                    size_bytes: r.size_bytes,
                    image_id: r.image_id.clone(),
                    tag,
                }
            })
            .collect();
        ctx.printer.json(&rows);
        return Ok(exit::OK);
    }
    if releases.is_empty() {
        ctx.printer.warn(&format!(
            "{} has no releases yet; `dockmaster deploy` builds the first",
            ctx.app.repository
        ));
        return Ok(exit::OK);
    }
    let table = releases_table(
        &releases,
        live_release.as_ref(),
        target.as_ref(),
        &marks,
        usize::MAX,
    );
    ctx.printer.out(table.trim_end());
    let total: i64 = releases.iter().map(|r| r.size_bytes).sum();
    ctx.printer.text(&format!(
        "{} of {} ({} if nothing were shared)\n",
        crate::commands::plural(releases.len(), "release", "releases"),
        ctx.app.repository,
        crate::output::human_size(total)
    ));
    Ok(exit::OK)
}
