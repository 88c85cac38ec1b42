//! One module per command. Each returns `Ok(exit code)` or an error that carries its own.

pub mod completions;
pub mod deploy;
pub mod doctor;
pub mod golive;
pub mod history;
pub mod logs;
pub mod man;
pub mod prune;
pub mod releases;
pub mod rollback;
pub mod status;

use std::collections::HashMap;

use crate::engine::{ContainerInfo, Engine};
use crate::error::Result;
use crate::history::{History, Mark};
use crate::output::Printer;
use crate::release::{Release, Tag};
use crate::settings::App;

/// What every command starts from.
pub struct Ctx {
    pub app: App,
    pub engine: Engine,
    pub printer: Printer,
}

/// The service's container now and the release it runs, if it runs one of ours.
#[derive(Clone, Debug)]
pub struct Live {
    /// The container that serves the service's traffic: the app container the proxy sends
    /// it to (start-first), else the service's own container.
    pub container: ContainerInfo,
    /// The release whose image the container runs.
    pub release: Option<Release>,
    /// The switch proxy, when the service's container is one.
    pub proxy: Option<ContainerInfo>,
}

impl Live {
    pub fn tag(&self) -> Option<&Tag> {
        self.release.as_ref().map(|r| &r.tag)
    }

    pub fn tag_string(&self) -> Option<String> {
        self.tag().map(Tag::to_string)
    }
}

impl Ctx {
    pub async fn live(&self, releases: &[Release]) -> Result<Option<Live>> {
        let app = &self.app;
        let service = self
            .engine
            .service_container(&app.project.name, &app.service)
            .await?;
        let (container, proxy) = match service {
            Some(proxy) if crate::switch::is_proxy(&proxy) => {
                // The proxy knows where traffic goes; if it cannot say (stopped), the newest
                // running release container is the best answer.
                let upstream = match crate::switch::proxy_upstream(&self.engine, &proxy).await {
                    Some(name) => self.engine.container(&name).await?,
                    None => None,
                };
                let upstream = match upstream {
                    Some(c) => Some(c),
                    None => self
                        .engine
                        .app_containers(&app.project.name, &app.service)
                        .await?
                        .into_iter()
                        .filter(|c| c.running)
                        .max_by_key(|c| c.started_at),
                };
                match upstream {
                    Some(c) => (c, Some(proxy)),
                    None => (proxy.clone(), Some(proxy)),
                }
            }
            Some(c) => (c, None),
            None => return Ok(None),
        };
        Ok(Some(Live {
            release: live_release(&container, releases),
            container,
            proxy,
        }))
    }

    pub fn history(&self) -> Result<History> {
        History::open(&self.app.state_dir, &self.app.id())
    }
}

/// The release a container runs: the one named in its config if that tag still points at
/// its image, else any release with its image id.
pub fn live_release(container: &ContainerInfo, releases: &[Release]) -> Option<Release> {
    let named = container
        .image_ref
        .rsplit_once(':')
        .and_then(|(_, t)| t.parse::<Tag>().ok());
    releases
        .iter()
        .find(|r| Some(&r.tag) == named.as_ref() && r.image_id == container.image_id)
        .or_else(|| releases.iter().find(|r| r.image_id == container.image_id))
        .cloned()
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
