//! Command line. Doc comments are the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dockmaster",
    version,
    about = "Build, release and roll back a docker compose service from a git checkout, with no registry.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Compose file (repeatable, as with compose). Default: COMPOSE_FILE, else
    /// compose.yaml / docker-compose.yml here or in a parent directory.
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The compose service to release, when the compose file has several with `build:`.
    #[arg(long, global = true, value_name = "NAME")]
    pub service: Option<String>,
    /// Where the history and lock live. Default: `state_dir` in dockmaster.toml, else
    /// $DOCKMASTER_STATE_DIR, else $XDG_STATE_HOME/dockmaster or ~/.local/state/dockmaster.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where releases run: `compose` (one host) or `swarm` (a Swarm service). Default:
    /// `runtime` in dockmaster.toml, else compose.
    #[arg(long, global = true, value_name = "RUNTIME")]
    pub runtime: Option<crate::settings::RuntimeKind>,
    /// Wait this long for another operation's lock instead of exiting 3 (e.g. 2m).
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_duration)]
    pub wait_lock: Option<Duration>,
    /// More detail on stderr (every external command, with its status).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// (Internal) who the history and the lock record: `dockmaster serve` starts the
    /// actions a page asks for with `--actor web`.
    #[arg(long, global = true, value_enum, hide = true)]
    pub actor: Option<Actor>,
}

/// Who acts, when it is not the user running dockmaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Actor {
    /// An action taken on the release page.
    Web,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Web => "web",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Update the checkout, build the release, put it live, gate on health.
    Deploy(DeployArgs),
    /// Put a kept release live again (default: the newest known-good one before the live one).
    Rollback(RollbackArgs),
    /// List the kept releases, newest first.
    Releases(ReleasesArgs),
    /// Remove old releases; never the live one, the rollback target, `latest` or one in use.
    Prune(PruneArgs),
    /// Mark a release known-good or failed (a no-tag rollback skips failed releases and
    /// prefers known-good ones).
    Mark(MarkArgs),
    /// What is live, its health, and whether it is what dockmaster put there.
    Status(JsonArg),
    /// The recorded deploys, rollbacks and prunes, newest first.
    History(HistoryArgs),
    /// The live container's logs.
    Logs(LogsArgs),
    /// Check the setup: engine, compose, checkout, disk, health check, restarts, drift.
    Doctor(JsonArg),
    /// Disk use of the app's images: total, shared, reclaimable.
    Df(JsonArg),
    /// The proxy's traffic counters per release, in the Prometheus text format.
    Metrics,
    /// Serve the release page (status, releases, history) and its JSON API; prints the
    /// login URL on stderr. Ctrl-C stops it.
    Serve(ServeArgs),
    /// Print a shell completion script, e.g. `dockmaster completions bash > /etc/bash_completion.d/dockmaster`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `dockmaster man | man -l -`.
    Man,
    /// (Internal) the switch proxy, run inside the service's container.
    #[command(hide = true)]
    Proxy(crate::proxy::ProxyArgs),
    /// (Internal) talk to the switch proxy from inside its container.
    #[command(hide = true)]
    ProxyCtl(ProxyCtlArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args, Clone)]
pub struct ProxyCtlArgs {
    #[arg(long, default_value_t = crate::proxy::CONTROL_PORT)]
    pub control: u16,
    /// `switch <host> <drain_ms>`, `status` or `health`.
    #[arg(required = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DeployArgs {
    /// Deploy the checkout as it is, without fetching.
    #[arg(long)]
    pub no_pull: bool,
    /// If the new release fails its health gate, leave it in place (no automatic rollback).
    #[arg(long)]
    pub no_rollback: bool,
    /// Health gate timeout (default 60s, or [health] timeout in dockmaster.toml).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Say what would happen; change nothing (no fetch, no build, no switch).
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Answer yes to questions.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// How to switch: start-first (zero downtime) or recreate. Default: dockmaster.toml,
    /// else start-first where it is safe.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub strategy: Option<crate::settings::Strategy>,
    /// After going live, watch the release this long (e.g. 10m) and roll back on its own
    /// if it degrades (5xx, connection errors, latency, restarts). Default: [watch]
    /// duration in dockmaster.toml, else no watch.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    /// The release to put live, e.g. 2026.01.09-def4567.
    pub tag: Option<String>,
    /// How to switch: start-first (zero downtime) or recreate. Default: dockmaster.toml,
    /// else start-first where it is safe.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub strategy: Option<crate::settings::Strategy>,
    /// Answer yes to questions (re-deploying the live release).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Health gate timeout (default 60s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ReleasesArgs {
    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PruneArgs {
    /// Keep the N newest releases (by build time).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Remove only releases built longer ago than this (e.g. 14d).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Print what would go and the space it would free; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove untagged images left by this app's builds.
    #[arg(long)]
    pub dangling: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct MarkArgs {
    /// The release, e.g. 2026.01.09-def4567.
    pub tag: String,
    /// The mark: known-good or failed.
    #[arg(value_enum)]
    pub mark: MarkArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MarkArg {
    KnownGood,
    Failed,
}

impl From<MarkArg> for crate::history::Mark {
    fn from(m: MarkArg) -> Self {
        match m {
            MarkArg::KnownGood => crate::history::Mark::KnownGood,
            MarkArg::Failed => crate::history::Mark::Failed,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Where to listen. Anything but a loopback address is reachable from the network
    /// (a warning says so).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8765")]
    pub listen: std::net::SocketAddr,
    /// Also accept requests addressed to this host name (e.g. `nas.local`, or the name a
    /// reverse proxy forwards), with or without a port. Repeatable. Every other `Host` is
    /// refused (DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct JsonArg {
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct HistoryArgs {
    /// Show at most N events.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    /// Number of lines from the end.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub tail: usize,
    /// Follow the log. After `logs`, `-f` means this (as in `docker logs -f`); name the
    /// compose file there with `--file`.
    #[arg(long = "follow")]
    pub follow: bool,
}

/// `60s`, `2m`, `14d`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); try 90s, 5m or 14d"))
}

/// `-f` is `--file` everywhere (the contract) except after `logs`, where it is `--follow`
/// (also the contract, and what `docker logs -f` taught everyone).
pub fn rewrite_logs_follow(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut seen_logs = false;
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || skip_value {
            skip_value = false;
            out.push(arg);
            continue;
        }
        let s = arg.to_string_lossy();
        if !seen_logs
            && (s == "-f"
                || s == "--file"
                || s == "--service"
                || s == "--state-dir"
                || s == "--wait-lock")
        {
            skip_value = true;
        } else if !seen_logs && s == "logs" {
            seen_logs = true;
        } else if seen_logs && s == "-f" {
            out.push("--follow".into());
            continue;
        }
        out.push(arg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        rewrite_logs_follow(args.iter().map(|a| a.into()).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dash_f_after_logs_means_follow_and_before_it_means_file() {
        assert_eq!(
            rewrite(&["dm", "-f", "a.yml", "logs", "-f"]),
            ["dm", "-f", "a.yml", "logs", "--follow"]
        );
        assert_eq!(rewrite(&["dm", "logs", "-f", "--tail", "5"])[2], "--follow");
        // The value of a flag before `logs` is never taken for the subcommand.
        assert_eq!(
            rewrite(&["dm", "--service", "logs", "deploy", "-f", "x.yml"]),
            ["dm", "--service", "logs", "deploy", "-f", "x.yml"]
        );
        assert_eq!(
            rewrite(&["dm", "deploy", "-f", "x.yml"]),
            ["dm", "deploy", "-f", "x.yml"]
        );
    }

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
