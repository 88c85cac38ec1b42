//! `dockmaster df`: disk use of the app's images — total, shared, unique, what the retention
//! policy would reclaim, and this app's dangling build leftovers.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::cli::JsonArg;
use crate::commands::prune::{Rules, estimate, plan};
use crate::commands::{Ctx, plural};
use crate::error::{Result, exit};
use crate::output::human_size;

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
    /// Runtime "swarm": the app's release images on each listed node.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeDf>>,
}

#[derive(Serialize)]
struct NodeDf {
    endpoint: String,
    /// The node's release images (`<repository>:<tag>`), when its engine answered.
    releases: Option<usize>,
    /// Their sizes added up (layers shared between them counted once per image).
    size_bytes: Option<u64>,
    error: Option<String>,
}

pub async fn run(ctx: &Ctx, args: &JsonArg) -> Result<u8> {
    let app = ctx.app();
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
    let dangling = ctx.engine().dangling_images(&app.id()).await?;
    let nodes = match ctx.rt.swarm() {
        None => None,
        Some(rt) => Some(
            rt.node_images()
                .await
                .into_iter()
                .map(|(endpoint, images)| match images {
                    Ok(images) => NodeDf {
                        endpoint,
                        releases: Some(images.iter().filter(|(t, _, _)| t != "latest").count()),
                        size_bytes: Some(
                            images
                                .iter()
                                .filter(|(t, _, _)| t != "latest")
                                .map(|(_, _, s)| s)
                                .sum(),
                        ),
                        error: None,
                    },
                    Err(e) => NodeDf {
                        endpoint,
                        releases: None,
                        size_bytes: None,
                        error: Some(e.to_string()),
                    },
                })
                .collect(),
        ),
    };
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
        nodes,
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
    for n in report.nodes.iter().flatten() {
        ctx.printer
            .out(&match (&n.releases, &n.size_bytes, &n.error) {
                (Some(r), Some(b), _) => format!(
                    "node {}: {} of {}, {}",
                    n.endpoint,
                    plural(*r, "release", "releases"),
                    report.repository,
                    human_size(*b as i64)
                ),
                (_, _, e) => format!(
                    "node {}: no answer ({})",
                    n.endpoint,
                    e.as_deref().unwrap_or("unknown")
                ),
            });
    }
    Ok(exit::OK)
}
