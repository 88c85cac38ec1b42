//! `dockmaster history`: the recorded events, newest first.

use crate::cli::HistoryArgs;
use crate::commands::Ctx;
use crate::error::{Result, exit};
use crate::output::{human_duration, table};

/// What `history --json` prints and `/api/history` serves: the events, newest first.
pub async fn report(ctx: &Ctx, limit: Option<usize>) -> Result<Vec<crate::history::Event>> {
    Ok(ctx.history_shared().await?.events(limit)?)
}

pub async fn run(ctx: &Ctx, args: &HistoryArgs) -> Result<u8> {
    let events = report(ctx, args.limit).await?;
    if args.json {
        ctx.printer.json(&events);
        return Ok(exit::OK);
    }
    if events.is_empty() {
        ctx.printer
            .warn(&format!("no events recorded for {} yet", ctx.app().id()));
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.started_at
                    .get(..19)
                    .unwrap_or(&e.started_at)
                    .replace('T', " "),
                e.command.clone(),
                e.from_release.clone().unwrap_or_else(|| "-".into()),
                e.to_release.clone().unwrap_or_else(|| "-".into()),
                e.outcome.clone(),
                e.duration_ms
                    .map(|ms| human_duration(std::time::Duration::from_millis(ms.max(0) as u64)))
                    .unwrap_or_else(|| "-".into()),
                format!("{}@{}", e.user, e.host),
                e.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let t = table(
        &[
            "ID",
            "STARTED (UTC)",
            "COMMAND",
            "FROM",
            "TO",
            "OUTCOME",
            "TOOK",
            "BY",
            "WHY",
        ],
        &rows,
    );
    ctx.printer.out(t.trim_end());
    Ok(exit::OK)
}
