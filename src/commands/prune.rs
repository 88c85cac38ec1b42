//! `dockmaster prune` and `dockmaster df`: retention that never removes what a rollback
//! needs, and the space it really frees.
//!
//! A release goes only when every rule lets it go: it is not within the newest `keep`
//! (by build time), it is older than `older_than` (when given), and it is not protected —
//! the live release, the rollback target, the image `latest` names, and any image a
//! container uses (running or stopped) are kept, by image id, with the reason said.
//! Removing a release removes its tag; the engine frees the image once no tag and no
//! container refers to it.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use crate::cli::PruneArgs;
use crate::commands::{Ctx, plural, rollback_target};
use crate::engine::disk::DiskUsage;
use crate::error::{Result, exit};
use crate::history::{History, Outcome};
use crate::output::human_size;
use crate::release::Release;
use crate::runtime::Runtime;

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

/// What the plan protects, besides the rules: by image id.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    pub live: Option<Release>,
    pub rollback_target: Option<Release>,
    /// The image `<repository>:latest` names.
    pub latest: Option<String>,
    /// Images any container uses, running or not.
    pub in_use: HashSet<String>,
}

/// Decide, for every release, whether the rules let it go (gathers the facts, then
/// [`decide`]).
pub async fn plan(ctx: &Ctx, rules: Rules) -> Result<(Vec<Decision>, DiskUsage)> {
    let app = ctx.app();
    let (releases, serving) = ctx.releases_and_serving().await?;
    let live = serving.and_then(|l| l.release);
    let marks = ctx.history_shared().await?.marks()?;
    let rollback_target = rollback_target(&releases, live.as_ref(), &marks).map(|(r, _)| r.clone());
    let mut protected = Protected {
        live,
        rollback_target,
        latest: ctx.engine().image_id(&app.image_ref("latest")).await?,
        in_use: ctx
            .engine()
            .all_containers()
            .await?
            .into_iter()
            .filter_map(|c| c.image_id)
            .collect(),
    };
    if let Some(rt) = ctx.rt.swarm() {
        // Every node: a task's container anywhere keeps its image everywhere.
        protected.in_use.extend(rt.images_in_use().await?);
    }
    let usage = ctx.engine().disk_usage().await?;
    let decisions = decide(&releases, &protected, rules, &usage, jiff::Timestamp::now());
    Ok((decisions, usage))
}

/// The prune plan, as a pure function of the releases (newest first), what is protected,
/// the rules and the time: a release goes only when no protection and no rule keeps it.
pub fn decide(
    releases: &[Release],
    protected: &Protected,
    rules: Rules,
    usage: &DiskUsage,
    now: jiff::Timestamp,
) -> Vec<Decision> {
    releases
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let kept_for = protection(
                r,
                protected.live.as_ref(),
                protected.rollback_target.as_ref(),
                protected.latest.as_deref(),
                &protected.in_use,
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
            let reason = kept_for.map(str::to_string).or_else(|| {
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
        .collect()
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
    let app = ctx.app();
    let p = &ctx.printer;
    let rules = Rules {
        keep: args.keep.unwrap_or(app.retention.keep),
        older_than: args.older_than.or(app.retention.older_than),
    };
    // A dry run changes nothing, so it does not wait for a deploy to finish.
    let _lock = if args.dry_run {
        None
    } else {
        Some(ctx.rt.lock("prune", wait_lock).await?)
    };
    let history = if args.dry_run {
        ctx.history()?
    } else {
        ctx.history_under_lock().await?
    };
    let event = if args.dry_run {
        None
    } else {
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
        ctx.share_history(&history).await;
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
    let app = ctx.app();
    let (decisions, before) = plan(ctx, rules).await?;
    let estimated_bytes = estimate(&decisions, &before);
    let leftovers = if dangling {
        ctx.engine().dangling_images(&app.id()).await?
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
            if let Err(e) = ctx.rt.remove_release(&d.tag).await {
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
            match ctx.engine().remove_image(id).await {
                Ok(()) => removed_ids.push(id.clone()),
                Err(e) => ctx.printer.warn(&format!("kept a dangling image: {e}")),
            }
        }
        dangling_ids = removed_ids;
        let after = ctx.engine().disk_usage().await?;
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
    p.info(&format!("Retention for {}: {rules}", ctx.app().repository));
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
            format!("dangling {}", crate::output::short_id(id)),
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
        keep: ctx.app().retention.keep,
        older_than: ctx.app().retention.older_than,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Tag;

    fn release(n: usize, days_ago: i64, now: jiff::Timestamp) -> Release {
        Release {
            tag: format!("2026.01.{:02}-{:07x}", (n % 28) + 1, n)
                .parse::<Tag>()
                .unwrap(),
            commit: format!("{n:040x}"),
            subject: None,
            created: now - jiff::SignedDuration::from_hours(24 * days_ago),
            image_id: format!("sha256:{n:064x}"),
            size_bytes: 1000,
        }
    }

    /// Ten releases, one a day, newest first.
    fn ten(now: jiff::Timestamp) -> Vec<Release> {
        (0..10).map(|n| release(n, n as i64, now)).collect()
    }

    fn removed(d: &[Decision]) -> Vec<String> {
        d.iter()
            .filter(|d| d.remove)
            .map(|d| d.tag.clone())
            .collect()
    }

    #[test]
    fn keep_n_newest_removes_the_rest() {
        let now = jiff::Timestamp::now();
        let rs = ten(now);
        let d = decide(
            &rs,
            &Protected::default(),
            Rules {
                keep: 3,
                older_than: None,
            },
            &DiskUsage::default(),
            now,
        );
        assert_eq!(
            removed(&d),
            rs[3..]
                .iter()
                .map(|r| r.tag.to_string())
                .collect::<Vec<_>>()
        );
        assert!(d[0].reason.contains("one of the 3 newest"));
    }

    #[test]
    fn older_than_and_keep_both_must_let_a_release_go() {
        let now = jiff::Timestamp::now();
        let rs = ten(now);
        let d = decide(
            &rs,
            &Protected::default(),
            Rules {
                keep: 2,
                older_than: Some(Duration::from_secs(5 * 86400 + 60)),
            },
            &DiskUsage::default(),
            now,
        );
        // Days 0–1 kept by --keep, days 2–5 by --older-than (5 days and a minute).
        assert_eq!(
            removed(&d),
            rs[6..]
                .iter()
                .map(|r| r.tag.to_string())
                .collect::<Vec<_>>()
        );
        assert!(d[3].reason.contains("--older-than"), "{}", d[3].reason);
    }

    #[test]
    fn protections_win_over_every_rule_by_image_id() {
        let now = jiff::Timestamp::now();
        let rs = ten(now);
        let protected = Protected {
            live: Some(rs[9].clone()),
            rollback_target: Some(rs[8].clone()),
            latest: Some(rs[7].image_id.clone()),
            in_use: HashSet::from([rs[6].image_id.clone()]),
        };
        let d = decide(
            &rs,
            &protected,
            Rules {
                keep: 0,
                older_than: None,
            },
            &DiskUsage::default(),
            now,
        );
        let reasons: Vec<&str> = d[6..].iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "a container uses it",
                "`latest` names it",
                "rollback target",
                "live"
            ]
        );
        assert_eq!(removed(&d).len(), 6);
    }
}
