//! `dockmaster releases`: every kept release, newest first, with its marks.

use serde::Serialize;

use crate::cli::ReleasesArgs;
use crate::commands::{Ctx, releases_table, rollback_target};
use crate::error::{Result, exit};
use crate::history::Mark;
use crate::runtime::Runtime;

#[derive(Serialize)]
struct Row {
    tag: String,
    commit: String,
    subject: Option<String>,
    created: String,
    size_bytes: i64,
    /// What removing this release alone would free (layers no other image uses); null
    /// when the engine did not count disk use in time (see `sizes_wait`).
    unique_bytes: Option<i64>,
    /// The part of `size_bytes` in layers other images use too; null as `unique_bytes`.
    shared_bytes: Option<i64>,
    image_id: String,
    live: bool,
    previous: bool,
    known_good: bool,
    failed: bool,
    /// `"hot"` or `"cold"` for the release kept beside the live one after a start-first
    /// switch, else null.
    standby: Option<crate::settings::Standby>,
}

pub async fn run(ctx: &Ctx, args: &ReleasesArgs) -> Result<u8> {
    let releases = ctx.rt.releases().await?;
    let live = ctx.rt.serving(&releases).await?;
    let live_release = live.as_ref().and_then(|l| l.release.clone());
    let marks = ctx.history_shared().await?.marks()?;
    let target = rollback_target(&releases, live_release.as_ref(), &marks).map(|(r, _)| r.clone());
    let standby = ctx
        .rt
        .standby(live.as_ref())
        .await?
        .and_then(|s| s.tag.map(|t| (t, s.mode)));
    let wait = ctx.app().env.sizes_wait;
    let usage = ctx.engine().disk_usage_within(wait).await?;
    let of =
        |r: &crate::release::Release| -> Option<crate::engine::disk::ImageUsage> {
            let usage = usage.as_ref()?;
            // An image the count does not list (built after it) holds all its bytes alone.
            Some(usage.images.get(&r.image_id).copied().unwrap_or(
                crate::engine::disk::ImageUsage {
                    size: r.size_bytes,
                    shared: 0,
                    containers: 0,
                },
            ))
        };
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
                    standby: standby.as_ref().filter(|(t, _)| *t == tag).map(|(_, m)| *m),
                    commit: r.commit.clone(),
                    subject: r.subject.clone(),
                    created: r.created.to_string(),
                    size_bytes: r.size_bytes,
                    unique_bytes: of(r).map(|u| u.unique()),
                    shared_bytes: of(r).map(|u| u.shared.max(0)),
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
            ctx.app().repository
        ));
        return Ok(exit::OK);
    }
    let table = releases_table(
        &releases,
        live_release.as_ref(),
        target.as_ref(),
        &marks,
        standby.as_ref(),
        usize::MAX,
        usage.as_ref(),
    );
    ctx.printer.out(table.trim_end());
    // Each image once (several release tags may name one image).
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut unique) = (0i64, 0i64);
    for r in releases.iter().filter(|r| seen.insert(r.image_id.clone())) {
        total += r.size_bytes;
        unique += of(r).map_or(0, |u| u.unique());
    }
    let n = crate::commands::plural(releases.len(), "release", "releases");
    if usage.is_some() {
        ctx.printer.text(&format!(
            "{n} of {}: {} in layers only one image holds (UNIQUE: what removing that release alone frees), {} if nothing were shared\n",
            ctx.app().repository,
            crate::output::human_size(unique),
            crate::output::human_size(total)
        ));
    } else {
        ctx.printer.text(&format!(
            "{n} of {}: {} if nothing were shared\n",
            ctx.app().repository,
            crate::output::human_size(total)
        ));
        let why = if ctx.engine().disk_count_walks_volumes() {
            " (engines before Docker 23.0 count every file of every volume for it)"
        } else {
            ""
        };
        ctx.printer.warn(&format!(
            "unique sizes left out: the engine did not count disk use within {}{why}; `dockmaster df` waits for the count",
            humantime::format_duration(wait)
        ));
    }
    Ok(exit::OK)
}
