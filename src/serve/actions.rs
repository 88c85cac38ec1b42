//! The page's actions, checked before they start: a form's or a JSON body's fields become
//! an [`Action`], [`checked`] turns it into the CLI command line it runs (`jobs`), or into
//! a [`Refusal`] that says why not. The checks are the CLI's own questions asked early (a
//! tag's form, whether it is kept, whether it may be rolled back to), so that a page gets
//! its answer at once; the command asks them again under the lock.

use hyper::StatusCode;

use crate::commands::Ctx;
use crate::commands::prune::Rules;
use crate::commands::releases::Row;
use crate::history::Mark;
use crate::lock::Holder;
use crate::release::Tag;
use crate::runtime::Runtime;

use super::pages;

/// What a page asked for.
#[derive(Debug)]
pub enum Action {
    Deploy,
    Rollback(String),
    Prune { rules: PruneRules, dry_run: bool },
    Mark { release: String, mark: Mark },
}

/// Prune rules as asked for (`older_than` as written, to show and pass on).
#[derive(Clone, Debug)]
pub struct PruneRules {
    pub rules: Rules,
    pub older_than: Option<String>,
}

/// Why an action was not started: the HTTP status, the message, and who holds the lock.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// Boxed: a refusal is rare and `Result<_, Refusal>` is on every action's path.
    pub holder: Option<Box<Holder>>,
}

impl Refusal {
    pub fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            holder: None,
        }
    }

    /// The request is fine, but not now or not for this release (409).
    pub fn busy(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::CONFLICT,
            message: message.into(),
            holder: None,
        }
    }

    pub fn locked(held: &crate::lock::Error) -> Refusal {
        let holder = match held {
            crate::lock::Error::Held { holder, .. } => holder.clone(),
            _ => None,
        };
        Refusal {
            status: StatusCode::CONFLICT,
            message: format!("refused: {held}; nothing was started"),
            holder,
        }
    }

    fn failed(e: crate::error::Error) -> Refusal {
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
            holder: None,
        }
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Action {
    pub fn rollback(fields: &[(String, String)]) -> Result<Action, Refusal> {
        match field(fields, "release") {
            Some(r) if !r.is_empty() => Ok(Action::Rollback(r.to_string())),
            _ => Err(Refusal::bad(
                "refused: say which release to roll back to (release=TAG)",
            )),
        }
    }

    pub fn prune(ctx: &Ctx, fields: &[(String, String)]) -> Result<Action, Refusal> {
        Ok(Action::Prune {
            rules: prune_rules(ctx, fields)?,
            dry_run: false,
        })
    }

    pub fn mark(fields: &[(String, String)]) -> Result<Action, Refusal> {
        let release = match field(fields, "release") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ => {
                return Err(Refusal::bad(
                    "refused: say which release to mark (release=TAG)",
                ));
            }
        };
        let mark = field(fields, "mark").unwrap_or_default();
        let mark = Mark::parse(mark).ok_or_else(|| {
            Refusal::bad(format!(
                "refused: a release is marked known-good or failed, not {mark:?}"
            ))
        })?;
        Ok(Action::Mark { release, mark })
    }
}

/// The largest `keep` the page accepts (a typo of a few more digits is not a rule).
const MAX_KEEP: usize = 100_000;

/// `keep` and `older_than` from a form or query; dockmaster.toml's retention where absent.
pub fn prune_rules(ctx: &Ctx, fields: &[(String, String)]) -> Result<PruneRules, Refusal> {
    let retention = &ctx.app().retention;
    let keep = match field(fields, "keep").filter(|k| !k.is_empty()) {
        None => retention.keep,
        Some(k) => k
            .parse::<usize>()
            .ok()
            .filter(|k| *k <= MAX_KEEP)
            .ok_or_else(|| {
                Refusal::bad(format!(
                    "refused: keep must be a whole number from 0 to {MAX_KEEP}, not {k:?}"
                ))
            })?,
    };
    let (older_than, written) = match field(fields, "older_than").filter(|o| !o.is_empty()) {
        None => (
            retention.older_than,
            retention
                .older_than
                .map(|d| humantime::format_duration(d).to_string()),
        ),
        Some(o) => (
            Some(
                crate::cli::parse_duration(o)
                    .map_err(|e| Refusal::bad(format!("refused: older_than: {e}")))?,
            ),
            Some(o.to_string()),
        ),
    };
    Ok(PruneRules {
        rules: Rules { keep, older_than },
        older_than: written,
    })
}

fn tag_of(release: &str) -> Result<Tag, Refusal> {
    release
        .parse::<Tag>()
        .map_err(|e| Refusal::bad(format!("refused: {e}; nothing was changed")))
}

/// The command line for an action, once the early checks pass.
pub async fn checked(ctx: &Ctx, action: Action) -> Result<Vec<String>, Refusal> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match action {
        Action::Deploy => Ok(s(&["deploy", "--yes"])),
        Action::Rollback(release) => {
            target(ctx, &release).await?;
            Ok(s(&["rollback", &release]))
        }
        Action::Prune { rules, .. } => {
            let mut args = s(&["prune", "--keep", &rules.rules.keep.to_string()]);
            if let Some(o) = &rules.older_than {
                args.extend(s(&["--older-than", o]));
            }
            Ok(args)
        }
        Action::Mark { release, mark } => {
            let tag = tag_of(&release)?;
            let releases = ctx.rt.releases().await.map_err(Refusal::failed)?;
            if !releases.iter().any(|r| r.tag == tag) {
                return Err(not_kept(ctx, &release));
            }
            Ok(s(&["mark", &release, mark.as_str()]))
        }
    }
}

fn not_kept(ctx: &Ctx, release: &str) -> Refusal {
    Refusal::bad(format!(
        "refused: no release {} is kept; nothing was changed",
        ctx.app().image_ref(release)
    ))
}

/// The releases and the rollback target's row, if the page may roll back to it.
async fn target(ctx: &Ctx, release: &str) -> Result<(Vec<Row>, usize), Refusal> {
    tag_of(release)?;
    let (rows, missing) = releases_view(ctx).await.map_err(Refusal::failed)?;
    let Some(i) = rows.iter().position(|r| r.tag == release) else {
        return Err(if missing.iter().any(|m| m.tag == release) {
            Refusal::busy(format!(
                "refused: {release} cannot be rolled back to: image missing (its image was removed); nothing was changed"
            ))
        } else {
            not_kept(ctx, release)
        });
    };
    if let Some(why) = pages::rollback_blocked(&rows[i], true) {
        return Err(Refusal::busy(format!(
            "refused: {release} cannot be rolled back to: {why}; nothing was changed"
        )));
    }
    Ok((rows, i))
}

/// The releases page's rows: the kept releases, and the releases the history knows whose
/// image is gone (newest first).
pub async fn releases_view(ctx: &Ctx) -> crate::error::Result<(Vec<Row>, Vec<pages::Missing>)> {
    let rows = crate::commands::releases::report(ctx).await?;
    let history = ctx.history()?;
    let marks = history.marks()?;
    let mut seen: std::collections::HashSet<String> = rows.iter().map(|r| r.tag.clone()).collect();
    let mut missing = vec![];
    for e in history.events(Some(500))? {
        let went_live = matches!(e.command.as_str(), "deploy" | "rollback" | "auto-rollback")
            && e.outcome == "succeeded";
        if let Some(tag) = e.to_release.filter(|_| went_live)
            && seen.insert(tag.clone())
        {
            missing.push(pages::Missing {
                mark: marks.get(&tag).copied(),
                tag,
            });
        }
    }
    Ok((rows, missing))
}

/// What the rollback confirm page shows.
pub struct ConfirmData {
    live: Option<Row>,
    target: Row,
    commits_undone: Option<Vec<String>>,
    how: String,
    env_keys: Vec<String>,
}

impl ConfirmData {
    pub fn view(&self) -> pages::Confirm<'_> {
        pages::Confirm {
            live: self.live.as_ref(),
            target: &self.target,
            commits_undone: self.commits_undone.clone(),
            how: self.how.clone(),
            env_keys: self.env_keys.clone(),
        }
    }
}

/// The confirm page's facts: from → to, the commits that stop running, how it switches,
/// the environment's keys (never values).
pub async fn confirm(ctx: &Ctx, release: &str) -> Result<ConfirmData, Refusal> {
    let (mut rows, i) = target(ctx, release).await?;
    let target = rows.remove(i);
    let live = rows.into_iter().find(|r| r.live);
    let app = ctx.app();
    let commits_undone = match &live {
        Some(l) => match crate::git::Checkout::find(&app.build.context).await {
            Ok(co) => co.commits_between(&target.commit, &l.commit, 50).await,
            Err(_) => None,
        },
        None => None,
    };
    let how = if target.standby == Some(crate::settings::Standby::Hot) {
        "it is the hot standby: one fresh health probe, then the traffic switches to it at once; no container starts".to_string()
    } else if ctx.rt.swarm().is_some() {
        format!(
            "a forward update of the Swarm service {}_{} to this image, gated on health as a deploy is",
            app.project.name, app.service
        )
    } else {
        "as `dockmaster rollback` does it: the release starts beside the live one and takes the traffic once healthy (start-first where it is safe, else the live one is replaced), then the old one is drained and stopped".to_string()
    };
    let env_keys = match ctx.rt.releases().await {
        Ok(releases) => match ctx.rt.serving(&releases).await {
            Ok(Some(s)) => env_keys(ctx, &s.container.id).await,
            _ => vec![],
        },
        Err(_) => vec![],
    };
    Ok(ConfirmData {
        live,
        target,
        commits_undone,
        how,
        env_keys,
    })
}

/// The live container's environment variable names, sorted; never their values.
async fn env_keys(ctx: &Ctx, container: &str) -> Vec<String> {
    let Ok(c) = ctx
        .engine()
        .docker()
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    else {
        return vec![];
    };
    keys_of(&c.config.and_then(|c| c.env).unwrap_or_default())
}

/// `KEY=value` entries → the keys, sorted, without the ones every container has.
fn keys_of(env: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map_or(kv.as_str(), |(k, _)| k)
                .to_string()
        })
        .filter(|k| k != "PATH" && k != "HOSTNAME" && k != "HOME")
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keys_never_values() {
        let env = [
            "PATH=/bin".to_string(),
            "DATABASE_URL=postgres://u:hunter2@db/x".to_string(),
            "EMPTY=".to_string(),
            "API_TOKEN=s3cr3t=with=equals".to_string(),
        ];
        let keys = keys_of(&env);
        assert_eq!(keys, ["API_TOKEN", "DATABASE_URL", "EMPTY"]);
        let shown = keys.join(",");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"));
    }
}
