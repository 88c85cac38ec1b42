//! One module per command. Each returns `Ok(exit code)` or an error that carries its own.

pub mod completions;
pub mod deploy;
pub mod df;
pub mod doctor;
pub mod history;
pub mod logs;
pub mod man;
pub mod mark;
pub mod metrics;
mod progress;
pub mod prune;
pub mod releases;
pub mod rollback;
pub mod status;

use std::collections::HashMap;

use crate::engine::Engine;
use crate::error::Result;
use crate::history::{History, Mark};
use crate::output::Printer;
use crate::release::Release;
use crate::runtime::AnyRuntime;
use crate::runtime::Runtime;
use crate::settings::App;

pub use progress::GoLivePrinter;

/// What every command starts from.
pub struct Ctx {
    pub rt: AnyRuntime,
    pub printer: Printer,
}

impl Ctx {
    pub fn app(&self) -> &App {
        self.rt.app()
    }

    pub fn engine(&self) -> &Engine {
        self.rt.engine()
    }

    /// The releases and what serves now.
    pub async fn releases_and_serving(
        &self,
    ) -> Result<(Vec<Release>, Option<crate::runtime::Serving>)> {
        let releases = self.rt.releases().await?;
        tracing::debug!(n = releases.len(), "releases listed");
        let serving = self.rt.serving(&releases).await?;
        tracing::debug!(serving = ?serving.as_ref().map(|s| &s.container.name), "serving found");
        Ok((releases, serving))
    }

    pub fn history(&self) -> Result<History> {
        Ok(History::open(&self.app().state_dir, &self.app().id())?)
    }

    /// The history as every operator of a swarm sees it: on the Swarm runtime, the events
    /// and marks kept in the swarm are brought into this machine's copy first (and what this
    /// machine has that the swarm lacks goes up). On one host it is the local history.
    pub async fn history_shared(&self) -> Result<History> {
        let history = self.history()?;
        if let Some(rt) = self.rt.swarm() {
            let store =
                crate::runtime::swarm::store::SwarmStore::new(rt.engine.docker(), &self.app().id());
            store.pull(&history).await?;
            store.push(&history).await?;
        }
        Ok(history)
    }

    /// After an operation ended: write what it recorded to the swarm (Swarm runtime). A
    /// failure is said, not fatal: the operation happened, and the next command writes it.
    pub async fn share_history(&self, history: &History) {
        if let Some(rt) = self.rt.swarm() {
            let store =
                crate::runtime::swarm::store::SwarmStore::new(rt.engine.docker(), &self.app().id());
            if let Err(e) = store.push(history).await {
                self.printer.warn(&format!(
                    "the history could not be written to the swarm ({e}); the next dockmaster command writes it"
                ));
            }
        }
    }

    /// The history for an operation that holds the lock: events that a killed process left
    /// `running`, or `watching` with no watcher alive, are closed as `abandoned` first.
    pub async fn history_under_lock(&self) -> Result<History> {
        let history = self.history_shared().await?;
        history.close_abandoned()?;
        let app = self.app();
        history.close_dead_watches(!crate::lock::Lock::is_free(
            &app.state_dir,
            &watch_lock_name(app),
        ))?;
        Ok(history)
    }
}

/// The watch lock's name: held by a deploy while it watches, so the next operation can tell
/// a live watcher from one that was killed.
pub fn watch_lock_name(app: &App) -> String {
    format!("{}.watch", app.id())
}

/// How the history records a go-live: its outcome and the reason, if it failed.
pub fn recorded(live: &crate::golive::Live) -> (crate::history::Outcome, Option<String>) {
    use crate::golive::Live;
    use crate::history::Outcome;
    let Some(f) = live.failure() else {
        return (Outcome::Succeeded, None);
    };
    let reason = f.reason.lines().next().map(str::to_string);
    // Interrupted is what happened, whatever was put back (the reason says the rest).
    let outcome = if f.interrupted {
        Outcome::Interrupted
    } else if matches!(live, Live::PreviousRestored { .. }) {
        Outcome::RolledBack
    } else {
        Outcome::Failed
    };
    (outcome, reason)
}

/// The tag live after a go-live (None: nothing of ours is).
pub fn live_tag(
    live: &crate::golive::Live,
    target: &crate::runtime::Target,
    previous: Option<&str>,
) -> Option<String> {
    use crate::golive::Live;
    match live {
        Live::New { .. } | Live::FailedLeftInPlace { .. } => Some(target.tag.clone()),
        Live::PreviousKept { .. } => previous.map(str::to_string),
        Live::PreviousRestored { restored, .. } => Some(restored.tag.clone()),
        Live::NothingLive { .. } | Live::Down { .. } => None,
    }
}

/// The release a no-tag rollback goes to: the newest known-good release built before the
/// live one; failed releases are skipped. With no marks at all (releases built before
/// dockmaster kept a history), the newest release before the live one that is not failed.
pub fn rollback_target<'a>(
    releases: &'a [Release],
    live: Option<&Release>,
    marks: &HashMap<String, Mark>,
) -> Option<(&'a Release, &'static str)> {
    let older: Vec<&Release> = releases
        .iter()
        .filter(|r| match live {
            Some(l) => r.image_id != l.image_id && Release::newest_first(l, r).is_lt(),
            None => true,
        })
        .filter(|r| marks.get(&r.tag.to_string()) != Some(&Mark::Failed))
        .collect();
    if let Some(r) = older
        .iter()
        .find(|r| marks.get(&r.tag.to_string()) == Some(&Mark::KnownGood))
    {
        return Some((r, "the newest known-good release built before the live one"));
    }
    older.first().map(|r| {
        (
            *r,
            "the newest release built before the live one (none is recorded known-good)",
        )
    })
}

/// The recent releases as a table, with marks.
pub fn releases_table(
    releases: &[Release],
    live: Option<&Release>,
    target: Option<&Release>,
    marks: &HashMap<String, Mark>,
    standby: Option<&(String, crate::settings::Standby)>,
    limit: usize,
    usage: Option<&crate::engine::disk::DiskUsage>,
) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .take(limit)
        .map(|r| {
            let tag = r.tag.to_string();
            let mut m = vec![];
            if live.is_some_and(|l| l.tag == r.tag) {
                m.push("live");
            }
            if target.is_some_and(|t| t.tag == r.tag) {
                m.push("previous");
            }
            if let Some((t, mode)) = standby
                && *t == tag
            {
                m.push(match mode {
                    crate::settings::Standby::Hot => "standby(hot)",
                    _ => "standby(cold)",
                });
            }
            match marks.get(&tag) {
                Some(Mark::KnownGood) => m.push("known-good"),
                Some(Mark::Failed) => m.push("failed"),
                None => {}
            }
            let mut row = vec![
                if live.is_some_and(|l| l.tag == r.tag) {
                    "*".into()
                } else {
                    " ".into()
                },
                tag,
                r.created.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                crate::output::human_size(r.size_bytes),
            ];
            if let Some(u) = usage {
                row.push(crate::output::human_size(
                    u.images
                        .get(&r.image_id)
                        .map_or(r.size_bytes, |i| i.unique()),
                ));
            }
            row.push(m.join(","));
            row.push(r.subject.clone().unwrap_or_default());
            row
        })
        .collect();
    if usage.is_some() {
        crate::output::table(
            &[
                " ",
                "TAG",
                "CREATED (UTC)",
                "SIZE",
                "UNIQUE",
                "MARKS",
                "SUBJECT",
            ],
            &rows,
        )
    } else {
        crate::output::table(
            &[" ", "TAG", "CREATED (UTC)", "SIZE", "MARKS", "SUBJECT"],
            &rows,
        )
    }
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Tag;

    /// Releases 0..n, release `n-1` the newest.
    fn releases(n: usize) -> Vec<Release> {
        let mut out: Vec<Release> = (0..n)
            .map(|i| Release {
                tag: format!("2026.01.{:02}-{:07x}", i + 1, i)
                    .parse::<Tag>()
                    .unwrap(),
                commit: format!("{i:040x}"),
                subject: None,
                created: jiff::Timestamp::from_second(1_767_225_600 + i as i64 * 86_400).unwrap(),
                image_id: format!("sha256:{i:064x}"),
                size_bytes: 0,
            })
            .collect();
        out.sort_by(Release::newest_first);
        out
    }

    fn marks(pairs: &[(&Release, Mark)]) -> HashMap<String, Mark> {
        pairs.iter().map(|(r, m)| (r.tag.to_string(), *m)).collect()
    }

    fn by_index(rs: &[Release], i: usize) -> &Release {
        rs.iter().find(|r| r.commit == format!("{i:040x}")).unwrap()
    }

    #[test]
    fn rollback_target_is_the_newest_known_good_release_before_the_live_one() {
        let rs = releases(5);
        let live = by_index(&rs, 4);
        let m = marks(&[
            (by_index(&rs, 1), Mark::KnownGood),
            (by_index(&rs, 2), Mark::KnownGood),
            (by_index(&rs, 3), Mark::Failed),
        ]);
        let (t, why) = rollback_target(&rs, Some(live), &m).unwrap();
        assert_eq!(t.commit, by_index(&rs, 2).commit, "3 failed, 2 known-good");
        assert!(why.contains("known-good"));
    }

    #[test]
    fn rollback_target_never_goes_forward_and_skips_failed_without_marks() {
        let rs = releases(4);
        // Live is 1: releases 2 and 3 are newer and never the target.
        let live = by_index(&rs, 1);
        let (t, why) = rollback_target(&rs, Some(live), &HashMap::new()).unwrap();
        assert_eq!(t.commit, by_index(&rs, 0).commit);
        assert!(why.contains("none is recorded known-good"));
        // Nothing older that is not failed: no target.
        let m = marks(&[(by_index(&rs, 0), Mark::Failed)]);
        assert!(rollback_target(&rs, Some(live), &m).is_none());
        // Nothing live: the newest release that is not failed.
        let (t, _) = rollback_target(&rs, None, &HashMap::new()).unwrap();
        assert_eq!(t.commit, by_index(&rs, 3).commit);
    }
}
