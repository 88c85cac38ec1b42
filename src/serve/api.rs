//! The JSON API: the same reports as `status --json`, `releases --json` and
//! `history --json` (one function each in `commands`), and the OpenAPI document that
//! describes them.

use crate::commands::Ctx;
use crate::commands::prune::Rules;

use super::actions::{self, Action, Refusal};

const OPENAPI: &str = include_str!("openapi.json");

/// The OpenAPI document, with this server's session cookie name.
pub fn openapi(cookie: &str) -> serde_json::Value {
    // The document is ours and checked by a test: it always parses.
    let mut doc: serde_json::Value =
        serde_json::from_str(OPENAPI).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(scheme) = doc.pointer_mut("/components/securitySchemes/session/name") {
        *scheme = cookie.into();
    }
    doc
}

/// A route's answer: the JSON text, or an error for `{"error": …}` with its status.
pub type Answer = Result<String, (u16, String)>;

pub fn encode<T: serde::Serialize>(v: &T) -> Answer {
    serde_json::to_string_pretty(v).map_err(|e| (500, format!("cannot encode JSON: {e}")))
}

fn failed(e: crate::error::Error) -> (u16, String) {
    (500, e.to_string())
}

pub async fn status(ctx: &Ctx) -> Answer {
    encode(&crate::commands::status::report(ctx).await.map_err(failed)?)
}

pub async fn releases(ctx: &Ctx) -> Answer {
    encode(
        &crate::commands::releases::report(ctx)
            .await
            .map_err(failed)?,
    )
}

pub async fn history(ctx: &Ctx, limit: Option<usize>) -> Answer {
    encode(
        &crate::commands::history::report(ctx, limit)
            .await
            .map_err(failed)?,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    release: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    keep: Option<u64>,
    older_than: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkBody {
    release: String,
    mark: String,
}

fn body<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Refusal> {
    // No body at all is an empty object (a deploy needs nothing).
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| Refusal::bad(format!("refused: the JSON body does not fit: {e}")))
}

/// An action route's JSON body as an [`Action`] (`name`: deploy, rollback, prune, mark).
pub fn action(name: &str, bytes: &[u8], ctx: &Ctx) -> Result<Action, Refusal> {
    let pair = |k: &str, v: String| (k.to_string(), v);
    match name {
        "deploy" => body::<Nothing>(bytes).map(|_| Action::Deploy),
        "rollback" => {
            let b: RollbackBody = body(bytes)?;
            Action::rollback(&[pair("release", b.release)])
        }
        "prune" => {
            let b: PruneBody = body(bytes)?;
            let mut fields = vec![];
            if let Some(k) = b.keep {
                fields.push(pair("keep", k.to_string()));
            }
            if let Some(o) = b.older_than {
                fields.push(pair("older_than", o));
            }
            Ok(Action::Prune {
                rules: actions::prune_rules(ctx, &fields)?,
                dry_run: b.dry_run,
            })
        }
        _ => {
            let b: MarkBody = body(bytes)?;
            Action::mark(&[pair("release", b.release), pair("mark", b.mark)])
        }
    }
}

/// `POST /api/prune` with `dry_run`: what would go and what stays, and why.
pub async fn prune_plan(ctx: &Ctx, rules: Rules) -> Answer {
    let (decisions, usage) = crate::commands::prune::plan(ctx, rules)
        .await
        .map_err(failed)?;
    let estimated_bytes = crate::commands::prune::estimate(&decisions, &usage);
    let (removed, kept): (Vec<_>, Vec<_>) = decisions.into_iter().partition(|d| d.remove);
    encode(&serde_json::json!({
        "dry_run": true,
        "keep": rules.keep,
        "older_than_seconds": rules.older_than.map(|d| d.as_secs()),
        "removed": removed,
        "kept": kept,
        "estimated_bytes": estimated_bytes,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_parses_and_lists_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
        for path in [
            "/api/status",
            "/api/releases",
            "/api/history",
            "/api/openapi.json",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
            assert!(
                doc["paths"][path]["get"]["responses"]["401"].is_object(),
                "{path}"
            );
        }
        for path in ["/api/deploy", "/api/rollback", "/api/prune", "/api/mark"] {
            let post = &doc["paths"][path]["post"];
            assert!(post["responses"]["403"].is_object(), "{path}");
            assert!(post["responses"]["409"].is_object(), "{path}");
            assert_eq!(post["security"][0]["csrf"], serde_json::json!([]), "{path}");
        }
        assert!(doc["paths"]["/api/jobs/{id}"]["get"].is_object());
        let named = super::openapi("dm_session_1");
        assert_eq!(
            named["components"]["securitySchemes"]["session"]["name"],
            "dm_session_1"
        );
    }
}
