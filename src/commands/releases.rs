//! `dockmaster releases`: every kept release, newest first, with its marks.

use serde::Serialize;

use crate::cli::ReleasesArgs;
use crate::commands::{Ctx, releases_table, rollback_target};
use crate::error::{Result, exit};
use crate::history::Mark;
use crate::runtime::Runtime;

/// One release as `releases --json` prints it (and `/api/releases` serves it).
#[derive(Clone, Serialize)]
pub struct Row {
    pub tag: String,
    pub commit: String,
    pub subject: Option<String>,
    pub created: String,
    pub size_bytes: i64,
    /// What removing this release alone would free (layers no other image uses); null
    /// when the engine did not count disk use in time (see `sizes_wait`).
    pub unique_bytes: Option<i64>,
    /// The part of `size_bytes` in layers other images use too; null as `unique_bytes`.
    pub shared_bytes: Option<i64>,
    pub image_id: String,
    pub live: bool,
    pub previous: bool,
    pub known_good: bool,
    pub failed: bool,
    /// `"hot"` or `"cold"` for the release kept beside the live one after a start-first
    /// switch, else null.
    pub standby: Option<crate::settings::Standby>,
}

/// What `releases` reads once, for the table or for the JSON rows.
struct Gathered {
    releases: Vec<crate::release::Release>,
    live: Option<crate::release::Release>,
    marks: std::collections::HashMap<String, Mark>,
    target: Option<crate::release::Release>,
    standby: Option<(String, crate::settings::Standby)>,
    usage: Option<crate::engine::disk::DiskUsage>,
}

async fn gather(ctx: &Ctx) -> Result<Gathered> {
    let releases = ctx.rt.releases().await?;
    let serving = ctx.rt.serving(&releases).await?;
    let live = serving.as_ref().and_then(|l| l.release.clone());
    let marks = ctx.history_shared().await?.marks()?;
    let target = rollback_target(&releases, live.as_ref(), &marks).map(|(r, _)| r.clone());
    let standby = ctx
        .rt
        .standby(serving.as_ref())
        .await?
        .and_then(|s| s.tag.map(|t| (t, s.mode)));
    let usage = ctx
        .engine()
        .disk_usage_within(ctx.app().env.sizes_wait)
        .await?;
    Ok(Gathered {
        releases,
        live,
        marks,
        target,
        standby,
        usage,
    })
}

impl Gathered {
    /// A release's disk use; None when the engine did not count it in time.
    fn usage_of(&self, r: &crate::release::Release) -> Option<crate::engine::disk::ImageUsage> {
        let usage = self.usage.as_ref()?;
        // An image the count does not list (built after it) holds all its bytes alone.
        Some(
            usage
                .images
                .get(&r.image_id)
                .copied()
                .unwrap_or(crate::engine::disk::ImageUsage {
                    size: r.size_bytes,
                    shared: 0,
                    containers: 0,
                }),
        )
    }

    fn rows(&self) -> Vec<Row> {
        let (marks, live, target) = (&self.marks, &self.live, &self.target);
        self.releases
            .iter()
            .map(|r| {
                let tag = r.tag.to_string();
                Row {
                    live: live.as_ref().is_some_and(|l| l.tag == r.tag),
                    previous: target.as_ref().is_some_and(|t| t.tag == r.tag),
                    known_good: marks.get(&tag) == Some(&Mark::KnownGood),
                    failed: marks.get(&tag) == Some(&Mark::Failed),
                    standby: self
                        .standby
                        .as_ref()
                        .filter(|(t, _)| *t == tag)
                        .map(|(_, m)| *m),
                    commit: r.commit.clone(),
                    subject: r.subject.clone(),
                    created: r.created.to_string(),
                    size_bytes: r.size_bytes,
                    unique_bytes: self.usage_of(r).map(|u| u.unique()),
                    shared_bytes: self.usage_of(r).map(|u| u.shared.max(0)),
                    image_id: r.image_id.clone(),
                    tag,
                }
            })
            .collect()
    }
}

/// What `releases --json` prints and `/api/releases` serves: every release, newest first.
pub async fn report(ctx: &Ctx) -> Result<Vec<Row>> {
    Ok(gather(ctx).await?.rows())
}

pub async fn run(ctx: &Ctx, args: &ReleasesArgs) -> Result<u8> {
    let g = gather(ctx).await?;
    if args.json {
        ctx.printer.json(&g.rows());
        return Ok(exit::OK);
    }
    let releases = &g.releases;
    if releases.is_empty() {
        ctx.printer.warn(&format!(
            "{} has no releases yet; `dockmaster deploy` builds the first",
            ctx.app().repository
        ));
        return Ok(exit::OK);
    }
    let table = releases_table(
        releases,
        g.live.as_ref(),
        g.target.as_ref(),
        &g.marks,
        g.standby.as_ref(),
        usize::MAX,
        g.usage.as_ref(),
    );
    ctx.printer.out(table.trim_end());
    // Each image once (several release tags may name one image).
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut unique) = (0i64, 0i64);
    for r in releases.iter().filter(|r| seen.insert(r.image_id.clone())) {
        total += r.size_bytes;
        unique += g.usage_of(r).map_or(0, |u| u.unique());
    }
    let n = crate::commands::plural(releases.len(), "release", "releases");
    if g.usage.is_some() {
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
            humantime::format_duration(ctx.app().env.sizes_wait)
        ));
    }
    Ok(exit::OK)
}
