//! `dockmaster prune` and `dockmaster df`: retention that never removes what a rollback
//! needs, and the space it really frees.
//!
//! A release goes only when every rule lets it go: it is not within the newest `keep`
//! (by build time), it is older than `older_than` (when given), and it is not protected —
//! the live release, the rollback target, the image `latest` names, and any image a
//! container uses (running or stopped) are kept, by image id, with the reason said.
//! Removing a release removes its tag; the engine frees the image once no tag and no
//! container refers to it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::cli::{JsonArg, PruneArgs};
use crate::commands::{Ctx, plural, rollback_target};
use crate::engine::disk::DiskUsage;
use crate::error::{Result, exit};
use crate::history::{History, Outcome};
use crate::lock::Lock;
use crate::output::human_size;
use crate::release::Release;

/// What happens to one release, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub tag: String,
    pub image_id: String,
    pub created: String,
    pub remove: bool,
    /// Why it is kept (empty when it goes).
    pub reason: String,
    /// What removing it alone frees (layers no other image uses).
    pub unique_bytes: i64,
}

/// The retention rules in force.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub keep: usize,
    pub older_than: Option<Duration>,
}

/// Decide, for every release, whether the rules let it go.
pub async fn plan(ctx: &Ctx, rules: Rules) -> Result<(Vec<Decision>, DiskUsage)> {
    let app = &ctx.app;
    let releases = ctx.engine.releases(&app.repository).await?;
    let live = ctx.live(&releases).await?;
    let live_release = live.as_ref().and_then(|l| l.release.clone());
    let marks = ctx.history()?.marks()?;
    let target = rollback_target(&releases, live_release.as_ref(), &marks).map(|(r, _)| r.clone());
    let latest = ctx.engine.image_id(&app.image_ref("latest")).await?;
    let in_use: HashSet<String> = ctx
        .engine
        .all_containers()
        .await?
        .into_iter()
        .filter_map(|c| c.image_id)
        .collect();
    let usage = ctx.engine.disk_usage().await?;
    let now = jiff::Timestamp::now();
    let decisions = releases
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let protected = protection(
                r,
                live_release.as_ref(),
                target.as_ref(),
                latest.as_deref(),
                &in_use,
            );
            let age = now.duration_since(r.created);
            let young = rules.older_than.and_then(|min| {
                (age.as_secs() < min.as_secs() as i64).then(|| {
                    format!(
                        "built less than {} ago (--older-than)",
                        humantime::format_duration(min)
                    )
                })
            });
            let reason = protected.map(str::to_string).or_else(|| {
                (i < rules.keep)
                    .then(|| format!("one of the {} newest (--keep)", rules.keep))
                    .or(young)
            });
            Decision {
                tag: r.tag.to_string(),
                image_id: r.image_id.clone(),
                created: r.created.to_string(),
                remove: reason.is_none(),
                reason: reason.unwrap_or_default(),
                unique_bytes: usage
                    .images
                    .get(&r.image_id)
                    .map_or(r.size_bytes, |u| u.unique()),
            }
        })
        .collect();
    Ok((decisions, usage))
}

/// Why a release is kept whatever the rules say.
fn protection(
    r: &Release,
    live: Option<&Release>,
    target: Option<&Release>,
    latest: Option<&str>,
    in_use: &HashSet<String>,
) -> Option<&'static str> {
    if live.is_some_and(|l| l.image_id == r.image_id) {
        Some("live")
    } else if target.is_some_and(|t| t.image_id == r.image_id) {
        Some("rollback target")
    } else if latest == Some(r.image_id.as_str()) {
        Some("`latest` names it")
    } else if in_use.contains(&r.image_id) {
        Some("a container uses it")
    } else {
        None
    }
}

/// The space the plan would free: the unique size of each image all of whose tags go.
pub fn estimate(decisions: &[Decision], usage: &DiskUsage) -> i64 {
    let mut kept_ids: HashSet<&str> = HashSet::new();
    for d in decisions.iter().filter(|d| !d.remove) {
        kept_ids.insert(&d.image_id);
    }
    let mut counted = HashSet::new();
    decisions
        .iter()
        .filter(|d| d.remove && !kept_ids.contains(d.image_id.as_str()))
        .filter(|d| counted.insert(d.image_id.clone()))
        .map(|d| {
            usage
                .images
                .get(&d.image_id)
                .map_or(d.unique_bytes, |u| u.unique())
        })
        .sum()
}

#[derive(Serialize)]
struct Report {
    dry_run: bool,
    keep: usize,
    older_than_seconds: Option<u64>,
    removed: Vec<Decision>,
    kept: Vec<Decision>,
    dangling: Vec<String>,
    /// What removing them should free, from the engine's per-image figures.
    estimated_bytes: i64,
    /// Measured: the engine's layer total before minus after (null on a dry run).
    freed_bytes: Option<i64>,
    /// Releases the rules let go but the engine refused to remove (e.g. a container was
    /// created from one after the plan was made); they are kept.
    failed: Vec<Failure>,
}

#[derive(Serialize)]
struct Failure {
    tag: String,
    error: String,
}

pub async fn run(ctx: &Ctx, args: &PruneArgs, wait_lock: Option<Duration>) -> Result<u8> {
    let app = &ctx.app;
    let p = &ctx.printer;
    let rules = Rules {
        keep: args.keep.unwrap_or(app.retention.keep),
        older_than: args.older_than.or(app.retention.older_than),
    };
    // A dry run changes nothing, so it does not wait for a deploy to finish.
    let _lock = if args.dry_run {
        None
    } else {
        Some(Lock::acquire(
            &app.state_dir,
            &app.id(),
            "prune",
            wait_lock,
        )?)
    };
    let history = ctx.history()?;
    let event = if args.dry_run {
        None
    } else {
        history.close_abandoned()?;
        Some(history.begin("prune", None, None)?)
    };
    let result = prune(ctx, rules, args.dry_run, args.dangling).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(id) = event {
                history.end(id, Outcome::Failed, Some(&e.to_string()))?;
            }
            return Err(e);
        }
    };
    if let Some(id) = event {
        let mut summary = format!(
            "removed {} and {}; freed {} bytes",
            plural(report.removed.len(), "release", "releases"),
            plural(report.dangling.len(), "dangling image", "dangling images"),
            report.freed_bytes.unwrap_or(0)
        );
        if !report.failed.is_empty() {
            summary += &format!(
                "; could not remove {}",
                report
                    .failed
                    .iter()
                    .map(|f| f.tag.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let outcome = if report.failed.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        history.end(id, outcome, Some(&summary))?;
    }
    if args.json {
        p.json(&report);
    } else {
        print_report(ctx, &report);
    }
    if report.failed.is_empty() {
        Ok(exit::OK)
    } else {
        for f in &report.failed {
            p.warn(&format!("kept {}: {}", f.tag, f.error));
        }
        p.warn(&format!(
            "prune removed {} but could not remove {}; those are kept, the live release is untouched",
            plural(report.removed.len(), "release", "releases"),
            plural(report.failed.len(), "release", "releases")
        ));
        Ok(exit::FAILED)
    }
}

async fn prune(ctx: &Ctx, rules: Rules, dry_run: bool, dangling: bool) -> Result<Report> {
    let app = &ctx.app;
    let (decisions, before) = plan(ctx, rules).await?;
    let estimated_bytes = estimate(&decisions, &before);
    let leftovers = if dangling {
        ctx.engine.dangling_images(&app.id()).await?
    } else {
        vec![]
    };
    let mut dangling_ids: Vec<String> = leftovers.iter().map(|i| i.id.clone()).collect();
    let estimated_bytes = estimated_bytes
        + leftovers
            .iter()
            .map(|i| before.images.get(&i.id).map_or(i.size, |u| u.unique()))
            .sum::<i64>();
    let mut freed = None;
    let mut failed = vec![];
    let mut decisions = decisions;
    if !dry_run {
        // One refusal does not stop the rest; what could not go is kept and said.
        for d in decisions.iter_mut().filter(|d| d.remove) {
            if let Err(e) = ctx.engine.untag(&app.image_ref(&d.tag)).await {
                d.remove = false;
                d.reason = "the engine refused to remove it".into();
                failed.push(Failure {
                    tag: d.tag.clone(),
                    error: e.to_string(),
                });
            }
        }
        let mut removed_ids = vec![];
        for id in &dangling_ids {
            match ctx.engine.remove_image(id).await {
                Ok(()) => removed_ids.push(id.clone()),
                Err(e) => ctx.printer.warn(&format!("kept a dangling image: {e}")),
            }
        }
        dangling_ids = removed_ids;
        let after = ctx.engine.disk_usage().await?;
        freed = Some((before.layers_size - after.layers_size).max(0));
    }
    let (removed, kept): (Vec<Decision>, Vec<Decision>) =
        decisions.into_iter().partition(|d| d.remove);
    Ok(Report {
        dry_run,
        keep: rules.keep,
        older_than_seconds: rules.older_than.map(|d| d.as_secs()),
        removed,
        kept,
        dangling: dangling_ids,
        estimated_bytes,
        freed_bytes: freed,
        failed,
    })
}

fn print_report(ctx: &Ctx, r: &Report) {
    let p = &ctx.printer;
    let rules = match r.older_than_seconds {
        Some(s) => format!(
            "keep the {} newest, and remove only releases older than {}",
            r.keep,
            humantime::format_duration(Duration::from_secs(s))
        ),
        None => format!("keep the {} newest", r.keep),
    };
    p.info(&format!("Retention for {}: {rules}", ctx.app.repository));
    let mut rows: Vec<Vec<String>> = vec![];
    for d in &r.kept {
        rows.push(vec!["keep".into(), d.tag.clone(), d.reason.clone()]);
    }
    for d in &r.removed {
        rows.push(vec![
            if r.dry_run { "would remove" } else { "removed" }.into(),
            d.tag.clone(),
            format!("{} unique", human_size(d.unique_bytes)),
        ]);
    }
    for id in &r.dangling {
        rows.push(vec![
            if r.dry_run { "would remove" } else { "removed" }.into(),
            format!("dangling {}", crate::commands::golive::short_id(id)),
            "untagged build leftover".into(),
        ]);
    }
    if !rows.is_empty() {
        p.text(&crate::output::table(&["", "RELEASE", "WHY"], &rows));
    }
    let what = format!(
        "{} and {}",
        plural(r.removed.len(), "release", "releases"),
        plural(r.dangling.len(), "dangling image", "dangling images")
    );
    match r.freed_bytes {
        None => p.ok(&format!(
            "Dry run: would remove {what}, freeing about {}; nothing was changed",
            human_size(r.estimated_bytes)
        )),
        Some(f) => p.ok(&format!(
            "Removed {what}; freed {} (measured by the engine)",
            human_size(f)
        )),
    }
}

/// Retention after a successful deploy (`[retention] auto = true`); the deploy holds the
/// lock already. A failure here is reported, not fatal: the deploy itself succeeded.
pub async fn auto(ctx: &Ctx, history: &History) {
    let rules = Rules {
        keep: ctx.app.retention.keep,
        older_than: ctx.app.retention.older_than,
    };
    let event = history.begin("prune", None, None).ok();
    match prune(ctx, rules, false, false).await {
        Ok(r) => {
            if let Some(id) = event {
                let _ = history.end(
                    id,
                    Outcome::Succeeded,
                    Some(&format!(
                        "automatic: removed {}; freed {} bytes",
                        plural(r.removed.len(), "release", "releases"),
                        r.freed_bytes.unwrap_or(0)
                    )),
                );
            }
            for f in &r.failed {
                ctx.printer
                    .warn(&format!("retention kept {}: {}", f.tag, f.error));
            }
            if !r.removed.is_empty() {
                ctx.printer.ok(&format!(
                    "Retention ([retention] auto): removed {}, freed {}",
                    r.removed
                        .iter()
                        .map(|d| d.tag.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    human_size(r.freed_bytes.unwrap_or(0))
                ));
            }
        }
        Err(e) => {
            if let Some(id) = event {
                let _ = history.end(id, Outcome::Failed, Some(&e.to_string()));
            }
            ctx.printer
                .warn(&format!("automatic retention did not run: {e}"));
        }
    }
}

#[derive(Serialize)]
struct Df {
    repository: String,
    releases: usize,
    /// Distinct images of the app's releases.
    images: usize,
    /// Their sizes added up as if nothing were shared.
    total_bytes: i64,
    /// The part of that in layers other images use too (counted once per image).
    shared_bytes: i64,
    /// Layers only the app's release images have: what removing all of them would free.
    unique_bytes: i64,
    /// What `dockmaster prune` with the configured retention would free.
    reclaimable_bytes: i64,
    reclaimable_releases: usize,
    dangling_images: usize,
    dangling_bytes: i64,
}

pub async fn df(ctx: &Ctx, args: &JsonArg) -> Result<u8> {
    let app = &ctx.app;
    let rules = Rules {
        keep: app.retention.keep,
        older_than: app.retention.older_than,
    };
    let (decisions, usage) = plan(ctx, rules).await?;
    let mut ids = HashSet::new();
    let mut per_image: HashMap<String, (i64, i64)> = HashMap::new();
    for d in &decisions {
        if ids.insert(d.image_id.clone()) {
            let u = usage.images.get(&d.image_id).copied().unwrap_or_default();
            per_image.insert(d.image_id.clone(), (u.size, u.shared.max(0)));
        }
    }
    let dangling = ctx.engine.dangling_images(&app.id()).await?;
    let report = Df {
        repository: app.repository.clone(),
        releases: decisions.len(),
        images: per_image.len(),
        total_bytes: per_image.values().map(|(s, _)| s).sum(),
        shared_bytes: per_image.values().map(|(_, sh)| sh).sum(),
        unique_bytes: per_image.values().map(|(s, sh)| (s - sh).max(0)).sum(),
        reclaimable_bytes: estimate(&decisions, &usage),
        reclaimable_releases: decisions.iter().filter(|d| d.remove).count(),
        dangling_images: dangling.len(),
        dangling_bytes: dangling
            .iter()
            .map(|i| usage.images.get(&i.id).map_or(i.size, |u| u.unique()))
            .sum(),
    };
    if args.json {
        ctx.printer.json(&report);
        return Ok(exit::OK);
    }
    let lines = [
        format!(
            "releases:     {} of {} ({})",
            report.releases,
            report.repository,
            plural(report.images, "image", "images")
        ),
        format!(
            "total:        {} if nothing were shared",
            human_size(report.total_bytes)
        ),
        format!(
            "unique:       {} only these images use (removing all of them frees this)",
            human_size(report.unique_bytes)
        ),
        format!(
            "shared:       {} in layers other images use too",
            human_size(report.shared_bytes)
        ),
        format!(
            "reclaimable:  {} by the retention policy (keep {}{}): {}",
            human_size(report.reclaimable_bytes),
            rules.keep,
            rules
                .older_than
                .map(|d| format!(", older than {}", humantime::format_duration(d)))
                .unwrap_or_default(),
            plural(report.reclaimable_releases, "release", "releases")
        ),
        format!(
            "dangling:     {} of this app's builds, {} (`dockmaster prune --dangling`)",
            plural(report.dangling_images, "image", "images"),
            human_size(report.dangling_bytes)
        ),
    ];
    ctx.printer.out(&lines.join("\n"));
    Ok(exit::OK)
}
