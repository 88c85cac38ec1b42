//! `dockmaster doctor`. (Being written: issue 3.)

use crate::cli::JsonArg;
use crate::commands::Ctx;
use crate::error::{Error, Result};

pub async fn run(_ctx: &Ctx, _args: &JsonArg) -> Result<u8> {
    Err(Error::failed("doctor is not available yet"))
}
