//! The compose model as compose reads it: which files, merged how, under which project
//! name, and the parts of one service that dockmaster needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fs_err as fs;
use serde::Deserialize;
use serde_norway::{Mapping, Value};

use super::{Environment, Error, Result, interpolate};

/// File names compose looks for, in its order of preference.
const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
const OVERRIDE_FILES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// Where the compose files are and what they call the project.
#[derive(Clone, Debug)]
pub struct Project {
    pub name: String,
    /// The project directory: the first file's directory, as compose has it.
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub env: Environment,
    /// All files merged, not interpolated.
    model: Mapping,
}

/// The parts of one service dockmaster needs.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    /// `image:` as written (before interpolation).
    pub image_raw: Option<String>,
    pub build: Option<Build>,
    pub container_name: Option<String>,
    pub has_healthcheck: bool,
    /// The health check's `test`, as one line of text (to tell an HTTP probe from another).
    pub healthcheck_test: Option<String>,
    /// The health check's `interval`, when it sets one.
    pub healthcheck_interval: Option<Duration>,
    /// Container ports published on the host.
    pub publishes_ports: bool,
    /// TCP container ports the service serves on (`ports:` targets and `expose:`).
    pub container_ports: Vec<u16>,
    /// `network_mode:` when set (`host`, `service:x`, `container:x`, …).
    pub network_mode: Option<String>,
    /// Mounts that two containers of the service would share writable: named volumes and
    /// bind mounts without `:ro` (anonymous volumes and tmpfs are per container).
    pub shared_writable_mounts: Vec<String>,
    /// `restart:` (compose's default is `no`).
    pub restart: Option<String>,
    /// `stop_grace_period:`: how long compose waits after the stop signal before it kills
    /// the container (compose's default is 10s).
    pub stop_grace_period: Option<Duration>,
    /// `stop_signal:` (compose's default is the image's, else SIGTERM).
    pub stop_signal: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Build {
    pub context: PathBuf,
    pub dockerfile: Option<String>,
    pub target: Option<String>,
    pub args: Vec<(String, String)>,
}

/// How an `image:` template names the tag: `repo:${TAG_VAR:-latest}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTemplate {
    pub repository: String,
    /// The variable that carries the tag, when the tag part is exactly one variable.
    pub tag_var: Option<String>,
}

impl Project {
    /// Find the compose files as compose does: `-f` flags, else `COMPOSE_FILE`, else the
    /// default names in the working directory or its parents (with the override file).
    pub fn load(explicit: &[PathBuf], cwd: &Path) -> Result<Project> {
        let cwd_env = Environment::load(&cwd.join(".env"))?;
        let files: Vec<PathBuf> = if !explicit.is_empty() {
            explicit.iter().map(|f| cwd.join(f)).collect()
        } else if let Some(list) = cwd_env.get("COMPOSE_FILE").filter(|s| !s.is_empty()) {
            let sep = cwd_env.get("COMPOSE_PATH_SEPARATOR").unwrap_or(":");
            list.split(sep).map(|f| cwd.join(f)).collect()
        } else {
            discover(cwd)?
        };
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::FileMissing {
                path: missing.clone(),
            });
        }
        // Not empty: `-f` and COMPOSE_FILE gave at least one name each, `discover` one file.
        let dir = files[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.to_path_buf());
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        let env = if dir == cwd {
            cwd_env
        } else {
            Environment::load(&dir.join(".env"))?
        };

        let mut model = Mapping::new();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|cause| Error::Unreadable {
                path: f.clone(),
                cause,
            })?;
            for document in documents(f, &text)? {
                merge(&mut model, document);
            }
        }

        let top_name = model
            .get("name")
            .and_then(Value::as_str)
            .map(|n| interpolate(n, &env).unwrap_or_else(|_| n.to_string()));
        let raw_name = env
            .get("COMPOSE_PROJECT_NAME")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or(top_name)
            .unwrap_or_else(|| {
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        let name = normalize_project_name(&raw_name);
        if name.is_empty() {
            return Err(Error::EmptyProjectName { raw: raw_name });
        }
        let files = files
            .into_iter()
            .map(|f| fs::canonicalize(&f).unwrap_or(f))
            .collect();
        Ok(Project {
            name,
            dir,
            files,
            env,
            model,
        })
    }

    /// A fingerprint of what compose would create for the service apart from its image:
    /// the merged definition with every variable interpolated, and the contents of its
    /// `env_file`s. Two containers created with the same fingerprint got the same settings
    /// from compose. `None` when something cannot be read (then nothing is reused).
    pub fn service_fingerprint(&self, name: &str) -> Option<String> {
        let def = self
            .model
            .get("services")
            .and_then(Value::as_mapping)?
            .get(name)?
            .as_mapping()?;
        let mut def = def.clone();
        // `remove` swaps the last key into the removed one's place; the serialized order is
        // part of the fingerprint kept in container labels, so it stays a swap.
        def.remove("image");
        def.remove("build");
        let def = self.interpolate_value(&Value::Mapping(def))?;
        let mut text = serde_norway::to_string(&def).ok()?;
        let env_files: Vec<String> = match def.get("env_file") {
            Some(Value::String(f)) => vec![f.clone()],
            Some(Value::Sequence(s)) => s
                .iter()
                .filter_map(|v| match v {
                    Value::String(f) => Some(f.clone()),
                    Value::Mapping(m) => m.get("path").and_then(Value::as_str).map(str::to_string),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        for f in env_files {
            text.push_str(&std::fs::read_to_string(self.dir.join(f)).ok()?);
        }
        // FNV-1a: stable across builds and versions (the fingerprint is kept in a label).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Some(format!("{h:016x}"))
    }

    fn interpolate_value(&self, v: &Value) -> Option<Value> {
        Some(match v {
            Value::String(s) => Value::String(interpolate(s, &self.env).ok()?),
            Value::Sequence(items) => Value::Sequence(
                items
                    .iter()
                    .map(|i| self.interpolate_value(i))
                    .collect::<Option<_>>()?,
            ),
            Value::Mapping(m) => {
                let mut out = Mapping::new();
                for (k, v) in m {
                    out.insert(k.clone(), self.interpolate_value(v)?);
                }
                Value::Mapping(out)
            }
            other => other.clone(),
        })
    }

    pub fn service_names(&self) -> Vec<String> {
        self.model
            .get("services")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.keys()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn service(&self, name: &str) -> Result<Service> {
        let def = self
            .model
            .get("services")
            .and_then(Value::as_mapping)
            .and_then(|m| m.get(name))
            .and_then(Value::as_mapping)
            .ok_or_else(|| Error::ServiceNotFound {
                service: name.to_string(),
                files: self.files_display(),
                available: self.service_names(),
            })?;
        let text = |key: &str| -> Result<Option<String>> {
            match def.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    let raw = scalar(v).ok_or_else(|| Error::BadValue {
                        service: name.to_string(),
                        key: key.to_string(),
                        expected: "a string",
                    })?;
                    self.interpolate(&raw).map(Some)
                }
            }
        };
        let build = match def.get("build") {
            None | Some(Value::Null) => None,
            Some(Value::String(ctx)) => Some(Build {
                context: self.dir.join(self.interpolate(ctx)?),
                dockerfile: None,
                target: None,
                args: vec![],
            }),
            Some(Value::Mapping(b)) => {
                let get = |k: &str| -> Result<Option<String>> {
                    b.get(k)
                        .and_then(scalar)
                        .map(|s| self.interpolate(&s))
                        .transpose()
                };
                let context = get("context")?.unwrap_or_else(|| ".".into());
                let mut args = vec![];
                match b.get("args") {
                    Some(Value::Mapping(m)) => {
                        for (k, v) in m {
                            if let (Some(k), Some(v)) = (k.as_str(), scalar(v)) {
                                args.push((k.to_string(), self.interpolate(&v)?));
                            }
                        }
                    }
                    Some(Value::Sequence(s)) => {
                        for item in s.iter().filter_map(Value::as_str) {
                            let item = self.interpolate(item)?;
                            match item.split_once('=') {
                                Some((k, v)) => args.push((k.to_string(), v.to_string())),
                                None => {
                                    if let Some(v) = self.env.get(&item) {
                                        args.push((item.clone(), v.to_string()));
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
                Some(Build {
                    context: self.dir.join(context),
                    dockerfile: get("dockerfile")?,
                    target: get("target")?,
                    args,
                })
            }
            Some(_) => {
                return Err(Error::BadValue {
                    service: name.to_string(),
                    key: "build".into(),
                    expected: "a path or a mapping",
                });
            }
        };
        let healthcheck = def.get("healthcheck").and_then(Value::as_mapping);
        let has_healthcheck = healthcheck.is_some_and(|h| {
            h.get("disable").and_then(Value::as_bool) != Some(true)
                && h.get("test").is_some_and(|t| match t {
                    Value::Sequence(s) => s.first().and_then(Value::as_str) != Some("NONE"),
                    Value::String(s) => !s.is_empty(),
                    _ => false,
                })
        });
        let healthcheck_test = healthcheck
            .filter(|_| has_healthcheck)
            .and_then(|h| h.get("test"))
            .map(|t| match t {
                Value::Sequence(s) => s.iter().filter_map(scalar).collect::<Vec<_>>().join(" "),
                other => scalar(other).unwrap_or_default(),
            });
        let healthcheck_interval = healthcheck
            .filter(|_| has_healthcheck)
            .and_then(|h| h.get("interval"))
            .and_then(scalar)
            .and_then(|v| self.interpolate(&v).ok())
            .and_then(|v| parse_compose_duration(&v));
        Ok(Service {
            name: name.to_string(),
            healthcheck_interval,
            image_raw: def.get("image").and_then(scalar),
            build,
            container_name: text("container_name")?,
            has_healthcheck,
            healthcheck_test,
            publishes_ports: def
                .get("ports")
                .and_then(Value::as_sequence)
                .is_some_and(|p| !p.is_empty()),
            container_ports: container_ports(def, &|s| self.interpolate(s))?,
            network_mode: text("network_mode")?,
            shared_writable_mounts: shared_writable_mounts(def, &|s| self.interpolate(s))?,
            restart: text("restart")?,
            stop_grace_period: text("stop_grace_period")?
                .map(|value| {
                    parse_compose_duration(&value).ok_or_else(|| Error::BadStopGracePeriod {
                        service: name.to_string(),
                        value,
                    })
                })
                .transpose()?,
            stop_signal: text("stop_signal")?,
        })
    }

    pub fn interpolate(&self, s: &str) -> Result<String> {
        interpolate(s, &self.env).map_err(|reason| Error::Interpolation {
            files: self.files_display(),
            reason,
        })
    }

    pub fn files_display(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The TCP container ports of `ports:` (short and long syntax) and `expose:`.
fn container_ports(def: &Mapping, interp: &dyn Fn(&str) -> Result<String>) -> Result<Vec<u16>> {
    let mut out: Vec<u16> = vec![];
    let mut add_spec = |spec: &str| {
        let (spec, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        if proto != "tcp" {
            return;
        }
        // `[ip:][host:]container`; an IPv6 ip is in brackets.
        let container = spec.rsplit(':').next().unwrap_or(spec);
        let (lo, hi) = container.split_once('-').unwrap_or((container, container));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
            for p in lo..=hi.min(lo.saturating_add(64)) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    };
    for key in ["ports", "expose"] {
        for item in def
            .get(key)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            match item {
                Value::Mapping(m) => {
                    let proto = m.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
                    if let Some(t) = m.get("target").and_then(scalar) {
                        add_spec(&format!("{}/{proto}", interp(&t)?));
                    }
                }
                other => {
                    if let Some(s) = scalar(other) {
                        add_spec(&interp(&s)?);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Named volumes and writable bind mounts (see [`Service::shared_writable_mounts`]).
fn shared_writable_mounts(
    def: &Mapping,
    interp: &dyn Fn(&str) -> Result<String>,
) -> Result<Vec<String>> {
    let mut out = vec![];
    for item in def
        .get("volumes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        match item {
            Value::String(s) => {
                let s = interp(s)?;
                let parts: Vec<&str> = s.split(':').collect();
                // `/path` alone is an anonymous volume: each container gets its own.
                if parts.len() < 2 {
                    continue;
                }
                let ro = parts
                    .get(2)
                    .is_some_and(|m| m.split(',').any(|o| o == "ro" || o == "readonly"));
                if !ro {
                    out.push(format!("{}:{}", parts[0], parts[1]));
                }
            }
            Value::Mapping(m) => {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or("volume");
                let ro = m.get("read_only").and_then(Value::as_bool) == Some(true);
                let source = m.get("source").and_then(scalar);
                let target = m.get("target").and_then(scalar).unwrap_or_default();
                if ro || !(kind == "volume" || kind == "bind") {
                    continue;
                }
                if let Some(src) = source {
                    out.push(format!("{}:{target}", interp(&src)?));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Service {
    /// Split `image:` into repository and tag variable, interpolating the repository part.
    pub fn image_template(&self, project: &Project) -> Result<Option<ImageTemplate>> {
        let Some(raw) = &self.image_raw else {
            return Ok(None);
        };
        // The tag separator is the last `:` that is outside `${...}` and after the last `/`
        // (a registry host may carry a port: `host:5000/repo:tag`).
        let mut depth = 0usize;
        let mut split = None;
        let bytes = raw.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b'/' if depth == 0 => split = None,
                b':' if depth == 0 => split = Some(i),
                _ => {}
            }
        }
        let (repo_raw, tag_raw) = match split {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw.as_str(), None),
        };
        let repository = project.interpolate(repo_raw)?;
        let tag_var = tag_raw.and_then(single_variable);
        Ok(Some(ImageTemplate {
            repository,
            tag_var,
        }))
    }
}

/// `${NAME}`, `${NAME:-x}`, `${NAME-x}` or `$NAME`: the variable's name.
fn single_variable(s: &str) -> Option<String> {
    let name = if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        let len = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, op) = inner.split_at(len);
        if !(op.is_empty() || op.starts_with(":-") || op.starts_with('-')) || op.contains('$') {
            return None;
        }
        name
    } else {
        let name = s.strip_prefix('$')?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        name
    };
    (!name.is_empty()).then(|| name.to_string())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Later files override earlier ones key by key; mappings merge, everything else replaces.
fn merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Compose's rule: lower case, only `a-z0-9_-`.
pub fn normalize_project_name(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect()
}

fn discover(cwd: &Path) -> Result<Vec<PathBuf>> {
    let mut dir = Some(cwd);
    while let Some(d) = dir {
        if let Some(main) = DEFAULT_FILES
            .iter()
            .map(|f| d.join(f))
            .find(|p| p.is_file())
        {
            let mut files = vec![main];
            if let Some(o) = OVERRIDE_FILES
                .iter()
                .map(|f| d.join(f))
                .find(|p| p.is_file())
            {
                files.push(o);
            }
            return Ok(files);
        }
        dir = d.parent();
    }
    Err(Error::NoFile {
        dir: cwd.to_path_buf(),
        looked_for: DEFAULT_FILES.join(", "),
    })
}

/// The documents of one file, in order, merge keys applied.
///
/// Compose v2 merges the documents of one file as if each were a file of its own given in
/// that order (compose-go #451); v1 refuses such a file. Reading them as v2 does keeps
/// dockmaster's model the one compose v2 runs.
fn documents(path: &Path, text: &str) -> Result<Vec<Mapping>> {
    let invalid = |reason: String| Error::InvalidYaml {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = vec![];
    for document in serde_norway::Deserializer::from_str(text) {
        let mut value = Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
        apply_merge_keys(&mut value).map_err(invalid)?;
        match value {
            Value::Mapping(m) => out.push(m),
            // An empty document (`---` alone, or a file of comments) adds nothing.
            Value::Null => {}
            _ => {
                return Err(Error::NotAMapping {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    Ok(out)
}

/// YAML merge keys (`<<: *common`, `<<: [*a, *b]`), which compose applies while it reads a
/// file and the YAML crate leaves as a `<<` key. The mapping's own keys win, then the merged
/// mappings in the order listed (the YAML merge rule). Children are resolved first so that
/// an anchor that itself merges another brings the keys of both.
fn apply_merge_keys(value: &mut Value) -> std::result::Result<(), String> {
    match value {
        Value::Mapping(m) => {
            for child in m.values_mut() {
                apply_merge_keys(child)?;
            }
            // `shift_remove` keeps the order of the other keys (the fingerprint's order).
            let Some(merged) = m.shift_remove("<<") else {
                return Ok(());
            };
            let sources = match merged {
                Value::Mapping(source) => vec![source],
                Value::Sequence(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::Mapping(source) => Ok(source),
                        _ => Err("a merge key `<<` lists something that is not a mapping"),
                    })
                    .collect::<std::result::Result<_, _>>()?,
                _ => {
                    return Err(
                        "a merge key `<<` must name a mapping (`<<: *anchor`) or a list of them"
                            .into(),
                    );
                }
            };
            for source in sources {
                for (k, v) in source {
                    if !m.contains_key(&k) {
                        m.insert(k, v);
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                apply_merge_keys(item)?;
            }
        }
        Value::Tagged(tagged) => apply_merge_keys(&mut tagged.value)?,
        _ => {}
    }
    Ok(())
}

/// A compose duration: Go's `time.ParseDuration`, one or more decimal numbers each with a
/// unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`: `1m30s`, `1.5s`, `500ms`). A bare number is
/// not one in compose, but it is taken as seconds here, as every other duration dockmaster
/// reads is. Fractions below a nanosecond are cut off, as Go does.
fn parse_compose_duration(text: &str) -> Option<Duration> {
    const NANOS_PER_SECOND: u128 = 1_000_000_000;
    // Go takes a sign; a negative grace period means nothing, so only `+` is let through.
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    let is_number = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    // `n` (integer and fraction) in nanoseconds, given nanoseconds per unit.
    let nanos = |n: &str, per_unit: u128| -> Option<u128> {
        let (int, frac) = n.split_once('.').unwrap_or((n, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut total = int.checked_mul(per_unit)?;
        let mut scale = per_unit;
        for digit in frac.bytes().map(|b| u128::from(b - b'0')) {
            scale /= 10;
            total = total.checked_add(digit * scale)?;
        }
        Some(total)
    };
    let total = if is_number(text) {
        nanos(text, NANOS_PER_SECOND)?
    } else {
        let mut total: u128 = 0;
        let mut rest = text;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let per_unit: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => NANOS_PER_SECOND,
                "m" => 60 * NANOS_PER_SECOND,
                "h" => 3_600 * NANOS_PER_SECOND,
                _ => return None,
            };
            if number.is_empty() {
                return None;
            }
            total = total.checked_add(nanos(number, per_unit)?)?;
            rest = after;
        }
        total
    };
    let secs = u64::try_from(total / NANOS_PER_SECOND).ok()?;
    // The remainder of a division by 10^9 fits in a u32.
    let subsec = u32::try_from(total % NANOS_PER_SECOND).ok()?;
    Some(Duration::new(secs, subsec))
}

#[cfg(test)]
impl Project {
    /// A project from YAML text, read as `load` reads a file, with no `.env` and no
    /// process environment.
    pub(crate) fn for_tests(name: &str, dir: &str, files: &[&str], yaml: &str) -> Project {
        let mut model = Mapping::new();
        for document in documents(Path::new("compose.yaml"), yaml).unwrap() {
            merge(&mut model, document);
        }
        Project {
            name: name.into(),
            dir: PathBuf::from(dir),
            files: files.iter().map(PathBuf::from).collect(),
            env: Environment::default(),
            model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str, vars: &[(&str, &str)]) -> Project {
        Project {
            env: Environment::from_pairs(vars),
            ..Project::for_tests("p", "/tmp", &["/tmp/compose.yaml"], yaml)
        }
    }

    fn project_with(image: &str, vars: &[(&str, &str)]) -> (Project, Service) {
        let project = project("", vars);
        let service = Service {
            name: "api".into(),
            image_raw: Some(image.into()),
            build: None,
            container_name: None,
            has_healthcheck: false,
            healthcheck_test: None,
            healthcheck_interval: None,
            publishes_ports: false,
            container_ports: vec![],
            network_mode: None,
            shared_writable_mounts: vec![],
            restart: None,
            stop_grace_period: None,
            stop_signal: None,
        };
        (project, service)
    }

    #[test]
    fn image_template_forms() {
        let cases = [
            (
                "scanium-backend:${BACKEND_TAG:-latest}",
                &[][..],
                "scanium-backend",
                Some("BACKEND_TAG"),
            ),
            (
                "${BACKEND_IMAGE:-org/repo}:${BACKEND_TAG:-latest}",
                &[][..],
                "org/repo",
                Some("BACKEND_TAG"),
            ),
            (
                "${BACKEND_IMAGE:-org/repo}:${BACKEND_TAG}",
                &[("BACKEND_IMAGE", "me/x")][..],
                "me/x",
                Some("BACKEND_TAG"),
            ),
            (
                "host:5000/repo:$TAG",
                &[][..],
                "host:5000/repo",
                Some("TAG"),
            ),
            ("repo:1.0", &[][..], "repo", None),
            ("repo", &[][..], "repo", None),
        ];
        for (image, vars, repo, var) in cases {
            let (p, s) = project_with(image, vars);
            let t = s.image_template(&p).unwrap().unwrap();
            assert_eq!(t.repository, repo, "{image}");
            assert_eq!(t.tag_var.as_deref(), var, "{image}");
        }
    }

    fn service_def(yaml: &str) -> Mapping {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn container_ports_from_ports_and_expose() {
        let def = service_def(
            "ports:\n  - \"127.0.0.1:18080:8080\"\n  - \"9000\"\n  - \"127.0.0.1::7000/tcp\"\n  - \"5353:53/udp\"\n  - target: 6000\n    published: 16000\nexpose:\n  - \"3000-3001\"\n  - 8080\n",
        );
        let ports = container_ports(&def, &|s| Ok(s.to_string())).unwrap();
        assert_eq!(ports, vec![8080, 9000, 7000, 6000, 3000, 3001]);
    }

    #[test]
    fn shared_writable_mounts_skip_read_only_anonymous_and_tmpfs() {
        let def = service_def(
            "volumes:\n  - data:/data\n  - ./conf:/conf:ro\n  - /cache\n  - ./uploads:/uploads:rw\n  - type: tmpfs\n    target: /tmp\n  - type: volume\n    source: db\n    target: /db\n    read_only: true\n  - type: bind\n    source: ./logs\n    target: /logs\n",
        );
        let mounts = shared_writable_mounts(&def, &|s| Ok(s.to_string())).unwrap();
        assert_eq!(
            mounts,
            vec!["data:/data", "./uploads:/uploads", "./logs:/logs"]
        );
    }

    #[test]
    fn fingerprint_changes_with_the_settings_not_the_image() {
        let model = |env_value: &str, image: &str| {
            project(
                &format!(
                    "services:\n  api:\n    image: {image}\n    environment:\n      - GREETING=${{GREETING}}\n"
                ),
                &[("GREETING", env_value)],
            )
        };
        let a = model("hello", "repo:1").service_fingerprint("api").unwrap();
        let b = model("hello", "repo:2").service_fingerprint("api").unwrap();
        let c = model("bye", "repo:1").service_fingerprint("api").unwrap();
        assert_eq!(a, b, "the image is not part of it");
        assert_ne!(a, c, "an interpolated value is");
    }

    /// The fingerprint is kept in container labels: a new YAML crate (or a new version of
    /// one) that serializes differently recreates every standby container once. These values
    /// were computed with serde_yaml 0.9.34, the crate before serde_norway.
    #[test]
    fn fingerprint_of_a_plain_file_is_what_serde_yaml_made() {
        let simple = project(
            "services:\n  api:\n    image: repo:1\n    environment:\n      - GREETING=hello\n",
            &[],
        );
        assert_eq!(
            simple.service_fingerprint("api").as_deref(),
            Some("0e2f5e1ba7f1e721")
        );

        let rich: Mapping = serde_norway::from_str(RICH_SERVICE).unwrap();
        let mut services = Mapping::new();
        services.insert("api".into(), Value::Mapping(rich));
        let mut model = Mapping::new();
        model.insert("services".into(), Value::Mapping(services));
        let rich = Project {
            model,
            ..project("", &[])
        };
        assert_eq!(
            rich.service_fingerprint("api").as_deref(),
            Some("5ad7ae3c09e3fe66")
        );
    }

    #[test]
    fn project_names_are_normalized_like_compose() {
        assert_eq!(normalize_project_name("My App.v2"), "myappv2");
        assert_eq!(normalize_project_name("backend"), "backend");
    }

    #[test]
    fn anchors_and_aliases_are_expanded() {
        let p = project(
            "x-env: &env\n  A: \"1\"\nx-ports: &ports\n  - \"8080:80\"\nservices:\n  api:\n    build: .\n    environment: *env\n    ports: *ports\n",
            &[],
        );
        let api = p.service("api").unwrap();
        assert!(api.publishes_ports);
        assert_eq!(api.container_ports, vec![80]);
        assert_eq!(
            p.model["services"]["api"]["environment"]["A"],
            Value::from("1")
        );
    }

    /// Compose applies merge keys; before serde_norway dockmaster did not, and a `build:`
    /// that came through `<<: *common` was not seen.
    #[test]
    fn merge_keys_bring_build_image_healthcheck_and_ports() {
        let p = project(
            "x-common: &common\n  build:\n    context: ./app\n    target: prod\n  image: shop:${TAG:-latest}\n  healthcheck:\n    test: [\"CMD\", \"true\"]\n  ports:\n    - \"8080:80\"\n  restart: always\nservices:\n  api:\n    <<: *common\n    restart: unless-stopped\n",
            &[],
        );
        let api = p.service("api").unwrap();
        let build = api.build.as_ref().expect("build: through the merge key");
        assert_eq!(build.context, PathBuf::from("/tmp/./app"));
        assert_eq!(build.target.as_deref(), Some("prod"));
        assert_eq!(api.image_raw.as_deref(), Some("shop:${TAG:-latest}"));
        assert!(api.has_healthcheck);
        assert!(api.publishes_ports);
        assert_eq!(api.container_ports, vec![80]);
        assert_eq!(
            api.restart.as_deref(),
            Some("unless-stopped"),
            "own keys win"
        );
        assert!(p.model["services"]["api"].get("<<").is_none());
    }

    #[test]
    fn a_list_of_merges_takes_the_first_mapping_that_has_a_key() {
        let p = project(
            "x-a: &a\n  image: a:1\n  stop_signal: SIGINT\nx-b: &b\n  image: b:1\n  build: ./b\n  container_name: from-b\nservices:\n  api:\n    <<: [*a, *b]\n    container_name: own\n",
            &[],
        );
        let api = p.service("api").unwrap();
        assert_eq!(api.image_raw.as_deref(), Some("a:1"), "earlier wins");
        assert_eq!(api.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(
            api.build.map(|b| b.context),
            Some(PathBuf::from("/tmp/./b"))
        );
        assert_eq!(api.container_name.as_deref(), Some("own"));
    }

    #[test]
    fn a_merged_anchor_that_merges_brings_both() {
        let p = project(
            "x-base: &base\n  build: .\nx-web: &web\n  <<: *base\n  ports: [\"80\"]\nservices:\n  api:\n    <<: *web\n",
            &[],
        );
        let api = p.service("api").unwrap();
        assert!(api.build.is_some());
        assert_eq!(api.container_ports, vec![80]);
    }

    #[test]
    fn a_merge_key_on_a_scalar_is_invalid_yaml() {
        let err = documents(
            Path::new("/x/compose.yaml"),
            "services:\n  api:\n    <<: 3\n",
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidYaml { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("/x/compose.yaml is not valid YAML: a merge key")
        );
    }

    #[test]
    fn documents_of_one_file_merge_in_order_like_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(
            &file,
            "services:\n  api:\n    build: .\n    restart: always\n---\n# an empty document\n---\nservices:\n  api:\n    restart: \"no\"\n  worker:\n    image: busybox\n",
        )
        .unwrap();
        let p = Project::load(&[file], dir.path()).unwrap();
        assert_eq!(p.service_names(), ["api", "worker"]);
        let api = p.service("api").unwrap();
        assert!(api.build.is_some(), "kept from the first document");
        assert_eq!(
            api.restart.as_deref(),
            Some("no"),
            "the later document wins"
        );
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_refused() {
        let err = documents(Path::new("c.yaml"), "services: {}\n---\n- a\n").unwrap_err();
        assert!(matches!(err, Error::NotAMapping { .. }), "{err:?}");
    }

    #[test]
    fn stop_grace_period_and_signal() {
        let p = project(
            "services:\n  a:\n    stop_grace_period: 1m30s\n    stop_signal: SIGQUIT\n  b:\n    stop_grace_period: ${GRACE:-5s}\n  c:\n    stop_grace_period: 20\n  d:\n    image: x\n",
            &[],
        );
        let a = p.service("a").unwrap();
        assert_eq!(a.stop_grace_period, Some(Duration::from_secs(90)));
        assert_eq!(a.stop_signal.as_deref(), Some("SIGQUIT"));
        let b = p.service("b").unwrap();
        assert_eq!(b.stop_grace_period, Some(Duration::from_secs(5)));
        let c = p.service("c").unwrap();
        assert_eq!(c.stop_grace_period, Some(Duration::from_secs(20)));
        let d = p.service("d").unwrap();
        assert_eq!((d.stop_grace_period, d.stop_signal), (None, None));

        let p = project(
            "services:\n  b:\n    stop_grace_period: ${GRACE:-5s}\n",
            &[("GRACE", "2m")],
        );
        assert_eq!(
            p.service("b").unwrap().stop_grace_period,
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn a_malformed_stop_grace_period_names_the_service_and_the_value() {
        let p = project("services:\n  api:\n    stop_grace_period: 10 sec\n", &[]);
        let err = p.service("api").unwrap_err();
        assert!(
            matches!(&err, Error::BadStopGracePeriod { service, value } if service == "api" && value == "10 sec"),
            "{err:?}"
        );
        let err = crate::error::Error::from(err);
        assert_eq!(err.kind(), crate::error::Kind::BadInput);
        let text = err.to_string();
        assert!(
            text.contains("`services.api.stop_grace_period` is `10 sec`"),
            "{text}"
        );
        assert!(text.contains("\nhint: "), "{text}");
    }

    #[test]
    fn compose_durations() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("250µs", Duration::from_micros(250)),
            ("30", Duration::from_secs(30)),
            ("2.5", Duration::from_millis(2500)),
            ("0", Duration::ZERO),
            (" 10s ", Duration::from_secs(10)),
            ("+5s", Duration::from_secs(5)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_compose_duration(text), Some(want), "{text}");
        }
        for bad in [
            "", "s", "10 s", "10x", "1.2.3s", "-5s", "+", "1d", "ms10", ".s",
        ] {
            assert_eq!(parse_compose_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_errors_keep_their_words_and_hints() {
        let dir = tempfile::tempdir().unwrap();
        let err = Project::load(&[PathBuf::from("missing.yml")], dir.path()).unwrap_err();
        assert!(matches!(err, Error::FileMissing { .. }), "{err:?}");
        let text = crate::error::Error::from(err).to_string();
        assert!(text.contains("missing.yml does not exist"), "{text}");
        assert!(
            text.ends_with("hint: pass the right one with -f/--file"),
            "{text}"
        );

        let err = Error::NoFile {
            dir: dir.path().to_path_buf(),
            looked_for: DEFAULT_FILES.join(", "),
        };
        assert!(err.to_string().starts_with("no compose file in"));

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "services: [\n").unwrap();
        let err = Project::load(&[bad], dir.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidYaml { .. }), "{err:?}");

        let list = dir.path().join("list.yaml");
        std::fs::write(&list, "- a\n").unwrap();
        let err = Project::load(&[list], dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotAMapping { .. }), "{err:?}");
    }

    #[test]
    fn an_unknown_service_lists_the_others() {
        let p = project(
            "services:\n  api:\n    build: .\n  db:\n    image: pg\n",
            &[],
        );
        let err = crate::error::Error::from(p.service("web").unwrap_err()).to_string();
        assert!(
            err.starts_with("service `web` is not in /tmp/compose.yaml"),
            "{err}"
        );
        assert!(err.ends_with("hint: the services are: api, db"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key() {
        let p = project("services:\n  api:\n    container_name: [a]\n", &[]);
        let err = p.service("api").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`services.api.container_name` must be a string"
        );
        let p = project("services:\n  api:\n    build: 3\n", &[]);
        let err = p.service("api").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`services.api.build` must be a path or a mapping"
        );
    }

    const RICH_SERVICE: &str = "image: repo:${TAG:-latest}\ncontainer_name: web\nbuild:\n  context: .\nrestart: unless-stopped\nports:\n  - \"127.0.0.1:18080:8080\"\n  - 9000\n  - target: 6000\n    published: 16000\nenvironment:\n  A: \"yes\"\n  B: 'on'\n  C: ''\n  D: null\n  E: 1.50\n  F: 0x1F\n  G: \"~\"\n  H: \"multi\\nline\\n\"\n  I: \"  lead\"\n  J: \"a: b\"\n  K: \"#x\"\n  L: \"2024-01-01\"\n  M: \"010\"\n  N: true\nhealthcheck:\n  test: [\"CMD\", \"wget\", \"-q\", \"--spider\", \"http://localhost:8080/\"]\n  interval: 1s\nvolumes:\n  - data:/data\n  - type: bind\n    source: ./x\n    target: /x\nlabels:\n  com.example.desc: \"Accounting webapp\"\ncommand: >\n  sh -c 'echo hi && sleep 1000'\nlong: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbb ccccccccccccccccc\"\nunicode: \"héllo ✓\"\nempty_list: []\nempty_map: {}\nnested:\n  - - a\n    - b\n";
}
