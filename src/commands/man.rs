//! `dockmaster man`: the man page (roff) on stdout, from the same definitions as `--help`.
//!
//! One page, dockmaster(1), with every command and its options in a COMMANDS section:
//! clap_mangen's own layout points at a page per subcommand (dockmaster-deploy(1), …),
//! which a single installed page would leave dangling.

use clap::Arg;
use roff::{Roff, bold, italic, roman};

use crate::output::Printer;

pub fn run(printer: &Printer) -> anyhow::Result<u8> {
    printer.raw(&page()?);
    Ok(crate::error::exit::OK)
}

pub fn page() -> std::io::Result<Vec<u8>> {
    let cmd = crate::commands::completions::public_command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut synopsis = vec![bold(format!("dockmaster {}", sub.get_name()))];
        for arg in sub.get_positionals().filter(|a| !a.is_hide_set()) {
            synopsis.push(roman(" "));
            synopsis.push(italic(value_name(arg)));
        }
        roff.control("SS", []).text(synopsis);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let mut head = vec![];
            if let Some(s) = arg.get_short() {
                head.push(bold(format!("-{s}")));
                if arg.get_long().is_some() {
                    head.push(roman(", "));
                }
            }
            if let Some(l) = arg.get_long() {
                head.push(bold(format!("--{l}")));
            }
            if arg.get_action().takes_values() {
                if !head.is_empty() {
                    head.push(roman(" "));
                }
                head.push(italic(value_name(arg)));
            }
            roff.control("TP", []).text(head);
            let mut help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() && arg.get_action().takes_values() {
                help.push_str(&format!(" [possible values: {}]", values.join(", ")));
            }
            roff.text([roman(help)]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "done"),
        (
            "1",
            "the operation failed (the message says what is live now), or a doctor check failed",
        ),
        (
            "2",
            "bad input (unknown or malformed tag, bad flag or config); nothing changed",
        ),
        ("3", "another operation holds the lock"),
    ] {
        roff.control("TP", []).text([bold(code)]);
        roff.text([roman(what)]);
    }
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn value_name(arg: &Arg) -> String {
    let name = arg.get_value_names().and_then(|n| n.first()).map_or_else(
        || arg.get_id().to_string().to_uppercase(),
        ToString::to_string,
    );
    format!("<{name}>")
}
