//! dockmaster: build, release and roll back a docker compose service from a git checkout.

pub mod actor;
pub mod cli;
pub mod commands;
pub mod compose;
pub mod engine;
pub mod error;
pub mod git;
pub mod golive;
pub mod health;
pub mod history;
pub mod interrupt;
pub mod lock;
pub mod output;
pub mod proxy;
pub mod release;
pub mod runtime;
pub mod serve;
pub mod settings;
pub mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands::Ctx;
use crate::engine::Engine;
use crate::error::exit;
use crate::output::Printer;
use crate::runtime::AnyRuntime;
use crate::settings::App;

/// Parse the command line, run the command, print the error if any, return the exit code.
pub fn run() -> ExitCode {
    let args = cli::rewrite_logs_follow(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::BAD_INPUT,
            });
        }
    };
    let filter = if cli.global.verbose {
        "dockmaster=debug"
    } else {
        "dockmaster=warn"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOCKMASTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();

    // The proxy serves many connections for as long as the service runs: all cores (it
    // is the one long-lived mode). Every other command is a short sequence of engine calls.
    let runtime = match &cli.command {
        Command::Proxy(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .min(4),
            )
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error::code_of(&e))
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<u8> {
    // The proxy modes run inside the proxy's container: no compose file, no engine.
    match &cli.command {
        Command::Proxy(a) => return proxy::serve(a.clone()).await.map(|()| exit::OK),
        Command::ProxyCtl(a) => return proxy::ctl(a.control, &a.words).await,
        Command::Completions(a) => return Ok(commands::completions::run(a, &Printer::new())),
        Command::Man => return commands::man::run(&Printer::new()),
        _ => {}
    }
    interrupt::install();
    if let Some(actor) = cli.global.actor {
        actor::set(actor);
    }
    let app = match (App::resolve(&cli.global), &cli.command) {
        (Ok(app), _) => app,
        // doctor checks the engine, the docker CLI, compose and the disk without an app,
        // and says what is missing for the rest.
        (Err(e), Command::Doctor(a)) => {
            let engine = Engine::connect().await.map_err(|e| e.to_string());
            return Ok(commands::doctor::run_without_app(engine, e.into(), a.json).await?);
        }
        // Through the user-facing error: its kind is the exit code, its hint the last line.
        (Err(e), _) => return Err(error::Error::from(e).into()),
    };
    let engine = match (Engine::connect().await, &cli.command) {
        (Ok(e), _) => e,
        // doctor's first check is the engine: without one it still reports the rest.
        (Err(e), Command::Doctor(a)) => {
            return Ok(commands::doctor::run_without_engine(&app, e.to_string(), a.json).await?);
        }
        // Through the user-facing error, so that the message ends in its hint.
        (Err(e), _) => return Err(error::Error::from(e).into()),
    };
    let ctx = Ctx {
        rt: AnyRuntime::new(app, engine),
        printer: Printer::new(),
    };
    let wait = cli.global.wait_lock;
    let code = match &cli.command {
        Command::Deploy(a) => commands::deploy::run(&ctx, a, wait).await?,
        Command::Rollback(a) => commands::rollback::run(&ctx, a, wait).await?,
        Command::Releases(a) => commands::releases::run(&ctx, a).await?,
        Command::Prune(a) => commands::prune::run(&ctx, a, wait).await?,
        Command::Mark(a) => commands::mark::run(&ctx, a, wait).await?,
        Command::Status(a) => commands::status::run(&ctx, a).await?,
        Command::History(a) => commands::history::run(&ctx, a).await?,
        Command::Logs(a) => commands::logs::run(&ctx, a).await?,
        Command::Doctor(a) => commands::doctor::run(&ctx, a).await?,
        Command::Df(a) => commands::df::run(&ctx, a).await?,
        Command::Metrics => commands::metrics::run(&ctx).await?,
        Command::Serve(a) => serve::run(ctx, a, &cli.global).await?,
        Command::Proxy(_) | Command::ProxyCtl(_) | Command::Completions(_) | Command::Man => {
            unreachable!("handled above")
        }
    };
    Ok(code)
}
