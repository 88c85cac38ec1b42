//! `dockmaster mark <TAG> known-good|failed`: set a release's mark by hand (the release
//! page's mark buttons run this). Under the lock, recorded in the history as `mark`.

use std::time::Duration;

use crate::cli::MarkArgs;
use crate::commands::Ctx;
use crate::error::{Error, Result, exit};
use crate::history::{Mark, Outcome};
use crate::release::Tag;
use crate::runtime::Runtime;

pub async fn run(ctx: &Ctx, args: &MarkArgs, wait_lock: Option<Duration>) -> Result<u8> {
    let app = ctx.app();
    // The tag's form first: a typo must not even take the lock.
    let tag: Tag = args.tag.parse()?;
    let mark = Mark::from(args.mark);
    let lock = ctx.rt.lock("mark", wait_lock).await?;
    if let Some(t) = &lock.taken_over {
        ctx.printer.warn(t);
    }
    let history = ctx.history_under_lock().await?;
    let releases = ctx.rt.releases().await?;
    if !releases.iter().any(|r| r.tag == tag) {
        return Err(Error::bad_input(format!(
            "no release {} exists; nothing was marked",
            app.image_ref(&tag.to_string())
        ))
        .hint("`dockmaster releases` lists the kept releases"));
    }
    let tag = tag.to_string();
    let before = history.marks()?.get(&tag).copied();
    let rec = history.record("mark", None, Some(&tag))?;
    history.mark(&tag, mark)?;
    let reason = match before {
        Some(b) if b != mark => format!("marked {} (was {})", mark.as_str(), b.as_str()),
        _ => format!("marked {}", mark.as_str()),
    };
    rec.end(Outcome::Succeeded, Some(&reason))?;
    ctx.share_history(&history).await;
    ctx.printer.ok(&format!("{tag} is {}", reason));
    Ok(exit::OK)
}
