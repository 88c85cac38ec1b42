//! `dockmaster completions <shell>`: the shell completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell as Generator;

use crate::cli::{Cli, CompletionsArgs, Shell};
use crate::output::Printer;

pub fn run(args: &CompletionsArgs, printer: &Printer) -> u8 {
    let generator = match args.shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut public_command(), "dockmaster", &mut script);
    printer.raw(&script);
    crate::error::exit::OK
}

/// The command line as users see it: without the hidden subcommands (the proxy's internal
/// modes) and hidden flags, which clap keeps in the tree and clap_complete's generators list anyway. clap
/// cannot remove a subcommand, so the root is rebuilt with the visible ones.
pub fn public_command() -> clap::Command {
    let cli = Cli::command();
    let mut public = clap::Command::new("dockmaster")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .propagate_version(true)
        .subcommand_required(true)
        // Nor the hidden global flag `--actor` (what `serve` passes to its actions).
        .args(cli.get_arguments().filter(|a| !a.is_hide_set()).cloned());
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        public = public.subcommand(sub.clone());
    }
    public
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_command_has_every_visible_subcommand_and_no_hidden_one() {
        let cli = Cli::command();
        let public = public_command();
        let names = |c: &clap::Command, hidden: bool| -> Vec<String> {
            c.get_subcommands()
                .filter(|s| s.is_hide_set() == hidden)
                .map(|s| s.get_name().to_string())
                .collect()
        };
        assert_eq!(names(&public, false), names(&cli, false));
        assert!(names(&public, true).is_empty());
        assert!(names(&cli, true).contains(&"proxy".to_string()));
        // Every visible flag, and not the hidden `--actor`.
        assert_eq!(
            public.get_arguments().count(),
            cli.get_arguments().filter(|a| !a.is_hide_set()).count()
        );
        assert!(public.get_arguments().all(|a| a.get_id() != "actor"));
        assert!(cli.get_arguments().any(|a| a.get_id() == "actor"));
    }
}
