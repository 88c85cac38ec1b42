//! Which strategy puts a release live on one host: a pure decision over what the compose
//! file (and the image) say about the service.

use crate::error::{Error, Result};
use crate::runtime::Choice;
use crate::settings::Strategy;

/// What the strategy depends on.
#[derive(Clone, Debug, Default)]
pub struct ServiceFacts {
    /// Container ports the service serves on (compose `ports:`/`expose:`, else the image's
    /// `EXPOSE`, else `[health] port`).
    pub ports: Vec<u16>,
    pub network_mode: Option<String>,
    /// Named volumes and writable bind mounts two containers of the service would share.
    pub shared_writable_mounts: Vec<String>,
}

/// `--strategy` (`requested`), else `strategy` in dockmaster.toml (`configured`), else
/// start-first unless the service makes it unsafe (the README's "Switching" section).
pub fn choose_strategy(
    facts: &ServiceFacts,
    requested: Option<Strategy>,
    configured: Option<Strategy>,
) -> Result<Choice> {
    let ports = &facts.ports;
    let recreate = |why: String| Choice {
        strategy: Strategy::Recreate,
        ports: vec![],
        why,
    };
    let blocker = if let Some(mode) = &facts.network_mode {
        Some(format!(
            "the service has `network_mode: {mode}`, so a proxy cannot take over its address"
        ))
    } else if ports.is_empty() {
        Some(
            "no container port is known (no `ports:` or `expose:` in the compose file, no EXPOSE in the image)"
                .to_string(),
        )
    } else {
        None
    };
    let proxying = format!(
        "proxying port{} {}",
        if ports.len() == 1 { "" } else { "s" },
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    match requested.or(configured) {
        Some(Strategy::Recreate) => Ok(recreate(if requested.is_some() {
            "recreate, as asked with --strategy".into()
        } else {
            "recreate, as set in dockmaster.toml".into()
        })),
        Some(Strategy::StartFirst) => match blocker {
            Some(b) => Err(
                Error::bad_input(format!("start-first is not possible: {b}"))
                    .hint("use --strategy recreate, or add `expose: [\"<port>\"]` to the service"),
            ),
            None => Ok(Choice {
                strategy: Strategy::StartFirst,
                why: format!(
                    "start-first, as {} ({proxying})",
                    if requested.is_some() {
                        "asked with --strategy"
                    } else {
                        "set in dockmaster.toml"
                    },
                ),
                ports: ports.clone(),
            }),
        },
        None => {
            if let Some(b) = blocker {
                return Ok(recreate(format!("recreate: {b}")));
            }
            if let Some(m) = facts.shared_writable_mounts.first() {
                return Ok(recreate(format!(
                    "recreate: `{m}` would be mounted writable in two containers at once; set strategy = \"start-first\" in dockmaster.toml if the app allows that"
                )));
            }
            Ok(Choice {
                strategy: Strategy::StartFirst,
                why: format!("start-first (zero downtime; {proxying})"),
                ports: ports.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ports: &[u16]) -> ServiceFacts {
        ServiceFacts {
            ports: ports.to_vec(),
            ..ServiceFacts::default()
        }
    }

    #[test]
    fn start_first_where_safe() {
        let c = choose_strategy(&facts(&[8080]), None, None).unwrap();
        assert_eq!(c.strategy, Strategy::StartFirst);
        assert_eq!(c.ports, [8080]);
        assert_eq!(c.why, "start-first (zero downtime; proxying port 8080)");
        let c = choose_strategy(&facts(&[80, 443]), None, None).unwrap();
        assert!(c.why.ends_with("proxying ports 80, 443)"), "{}", c.why);
    }

    #[test]
    fn recreate_with_the_reason_where_start_first_is_unsafe() {
        let c = choose_strategy(&facts(&[]), None, None).unwrap();
        assert_eq!(c.strategy, Strategy::Recreate);
        assert!(c.why.contains("no container port is known"), "{}", c.why);
        let mut f = facts(&[8080]);
        f.network_mode = Some("host".into());
        let c = choose_strategy(&f, None, None).unwrap();
        assert!(c.why.contains("network_mode: host"), "{}", c.why);
        let mut f = facts(&[8080]);
        f.shared_writable_mounts = vec!["data:/data".into()];
        let c = choose_strategy(&f, None, None).unwrap();
        assert_eq!(c.strategy, Strategy::Recreate);
        assert!(c.why.contains("`data:/data` would be mounted writable"));
    }

    #[test]
    fn an_explicit_choice_wins_and_an_impossible_one_is_bad_input() {
        // The flag beats the file.
        let c = choose_strategy(
            &facts(&[8080]),
            Some(Strategy::Recreate),
            Some(Strategy::StartFirst),
        )
        .unwrap();
        assert_eq!(c.strategy, Strategy::Recreate);
        assert_eq!(c.why, "recreate, as asked with --strategy");
        // Shared mounts do not stop an explicit start-first: the user said the app allows it.
        let mut f = facts(&[8080]);
        f.shared_writable_mounts = vec!["data:/data".into()];
        let c = choose_strategy(&f, None, Some(Strategy::StartFirst)).unwrap();
        assert_eq!(c.strategy, Strategy::StartFirst);
        assert!(c.why.starts_with("start-first, as set in dockmaster.toml"));
        // No port: start-first cannot work, and asking for it is an error (exit 2).
        let e = choose_strategy(&facts(&[]), Some(Strategy::StartFirst), None).unwrap_err();
        assert_eq!(e.code(), crate::error::exit::BAD_INPUT);
        assert!(e.to_string().contains("start-first is not possible"));
    }
}
