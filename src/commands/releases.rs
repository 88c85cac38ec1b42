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
    /// What removing this release alone would free (layers no other image uses).
    unique_bytes: i64,
    /// The part of `size_bytes` in layers other images use too.
    shared_bytes: i64,
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
    let usage = ctx.engine.disk_usage().await?;
    let of = |r: &crate::release::Release| usage.images.get(&r.image_id).copied();
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
                    unique_bytes: of(r).map_or(r.size_bytes, |u| u.unique()),
                    shared_bytes: of(r).map_or(0, |u| u.shared.max(0)),
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
        Some(&usage),
    );
    ctx.printer.out(table.trim_end());
    // Each image once (several release tags may name one image).
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut unique) = (0i64, 0i64);
    for r in releases.iter().filter(|r| seen.insert(r.image_id.clone())) {
        total += r.size_bytes;
        unique += of(r).map_or(r.size_bytes, |u| u.unique());
    }
    ctx.printer.text(&format!(
        "{} of {}: {} unique to them (what removing them all frees), {} if nothing were shared\n",
        crate::commands::plural(releases.len(), "release", "releases"),
        ctx.app.repository,
        crate::output::human_size(unique),
        crate::output::human_size(total)
    ));
    Ok(exit::OK)
}
