//! `dockmaster prune` and `dockmaster df`. (Being written: issue 4.)

use crate::cli::{JsonArg, PruneArgs};
use crate::commands::Ctx;
use crate::error::{Error, Result};
use crate::history::History;

pub async fn run(
    _ctx: &Ctx,
    _args: &PruneArgs,
    _wait_lock: Option<std::time::Duration>,
) -> Result<u8> {
    Err(Error::failed("prune is not available yet"))
}

pub async fn df(_ctx: &Ctx, _args: &JsonArg) -> Result<u8> {
    Err(Error::failed("df is not available yet"))
}

/// Retention after a successful deploy (`[retention] auto = true`).
pub async fn auto(_ctx: &Ctx, _history: &History) {}
