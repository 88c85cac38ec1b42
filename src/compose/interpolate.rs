//! Variables as compose interpolates them: where they come from (`.env`, then the process
//! environment) and the `${VAR:-x}` forms.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Error, Result};

/// The variables compose interpolates with: `.env` of the project directory, overridden by
/// the process environment.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn load(dotenv: &Path) -> Result<Environment> {
        let unreadable = |e: dotenvy::Error| Error::DotEnvUnreadable {
            path: dotenv.to_path_buf(),
            reason: e.to_string(),
        };
        let mut vars = BTreeMap::new();
        if dotenv.is_file() {
            for item in dotenvy::from_path_iter(dotenv).map_err(unreadable)? {
                let (k, v) = item.map_err(unreadable)?;
                vars.insert(k, v);
            }
        }
        for (k, v) in std::env::vars() {
            vars.insert(k, v);
        }
        Ok(Environment { vars })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Every variable: the `.env` file's, then the process's over them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Exactly these variables, without the process environment: for tests that must not
    /// depend on the environment they run in.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Environment {
        Environment {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`,
/// `${VAR:+alt}`, `${VAR+alt}`, `$VAR` and `$$`, as compose interpolates them.
///
/// The error is a sentence without the file: the caller knows which files it read
/// ([`super::Project::interpolate`] turns it into [`Error::Interpolation`]).
pub fn interpolate(s: &str, env: &Environment) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            out.push_str(&expand(expr, env)?);
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if len == 0 {
                return Err(format!(
                    "invalid `$` in `{s}`; write `$$` for a literal dollar"
                ));
            }
            out.push_str(env.get(&rest[..len]).unwrap_or(""));
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(expr: &str, env: &Environment) -> std::result::Result<String, String> {
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    if name.is_empty() {
        return Err(format!("invalid interpolation `${{{expr}}}`"));
    }
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    Ok(match op {
        "" => value.unwrap_or("").to_string(),
        _ if op.starts_with(":-") => {
            if set_nonempty {
                value.unwrap_or("").to_string()
            } else {
                interpolate(&op[2..], env)?
            }
        }
        _ if op.starts_with('-') => match value {
            Some(v) => v.to_string(),
            None => interpolate(&op[1..], env)?,
        },
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let strict = op.starts_with(":?");
            let ok = if strict {
                set_nonempty
            } else {
                value.is_some()
            };
            if !ok {
                let msg = op.trim_start_matches(':').trim_start_matches('?');
                return Err(format!(
                    "required variable {name} is missing a value: {msg}"
                ));
            }
            value.unwrap_or("").to_string()
        }
        _ if op.starts_with(":+") => {
            if set_nonempty {
                interpolate(&op[2..], env)?
            } else {
                String::new()
            }
        }
        _ if op.starts_with('+') => {
            if value.is_some() {
                interpolate(&op[1..], env)?
            } else {
                String::new()
            }
        }
        _ => return Err(format!("invalid interpolation `${{{expr}}}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_forms() {
        let e = Environment::from_pairs(&[("A", "x"), ("E", "")]);
        assert_eq!(interpolate("${A}", &e).unwrap(), "x");
        assert_eq!(interpolate("$A-$$", &e).unwrap(), "x-$");
        assert_eq!(interpolate("${B:-d}", &e).unwrap(), "d");
        assert_eq!(interpolate("${E:-d}", &e).unwrap(), "d");
        assert_eq!(interpolate("${E-d}", &e).unwrap(), "");
        assert_eq!(interpolate("${A:+y}", &e).unwrap(), "y");
        assert!(interpolate("${B:?needed}", &e).is_err());
        assert!(interpolate("${A", &e).is_err());
    }

    #[test]
    fn an_unparsable_dotenv_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "GOOD=1\nBAD LINE WITHOUT EQUALS\n").unwrap();
        let err = Environment::load(&path).unwrap_err();
        assert!(matches!(err, Error::DotEnvUnreadable { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
