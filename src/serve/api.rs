//! The JSON API: the same reports as `status --json`, `releases --json` and
//! `history --json` (one function each in `commands`), and the OpenAPI document that
//! describes them.

use crate::commands::Ctx;

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

fn encode<T: serde::Serialize>(v: &T) -> Answer {
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
        let named = super::openapi("dm_session_1");
        assert_eq!(
            named["components"]["securitySchemes"]["session"]["name"],
            "dm_session_1"
        );
    }
}
