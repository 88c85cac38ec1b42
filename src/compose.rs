//! The compose model (read by dockmaster itself, as compose reads it) and the compose
//! program (v1 `docker-compose` or v2 `docker compose`), detected once.
//!
//! Reading the files ourselves rather than through `docker compose config` keeps the
//! read-only commands (`releases`, `status`, `history`) fast and working where no compose
//! program is installed, and lets us see the *uninterpolated* `image:` so that we know which
//! variable carries the tag.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use fs_err as fs;
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

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

/// The variables compose interpolates with: `.env` of the project directory, overridden by
/// the process environment.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn load(dotenv: &Path) -> Result<Environment> {
        let mut vars = BTreeMap::new();
        if dotenv.is_file() {
            let iter = dotenvy::from_path_iter(dotenv).map_err(|e| {
                Error::bad_input(format!("cannot read {}: {e}", dotenv.display()))
                    .hint("fix the line it names; compose reads this file too")
            })?;
            for item in iter {
                let (k, v) = item.map_err(|e| {
                    Error::bad_input(format!("cannot parse {}: {e}", dotenv.display()))
                        .hint("fix the line it names; compose reads this file too")
                })?;
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
}

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`,
/// `${VAR:+alt}`, `${VAR+alt}`, `$VAR` and `$$`, as compose interpolates them.
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
        for f in &files {
            if !f.is_file() {
                return Err(Error::bad_input(format!(
                    "compose file {} does not exist",
                    f.display()
                ))
                .hint("pass the right one with -f/--file"));
            }
        }
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
            let text = fs::read_to_string(f).map_err(|e| Error::bad_input(e.to_string()))?;
            let value: Value = serde_yaml::from_str(&text).map_err(|e| {
                Error::bad_input(format!("{} is not valid YAML: {e}", f.display()))
                    .hint("`docker compose config` shows the same problem; fix the file")
            })?;
            match value {
                Value::Mapping(m) => merge(&mut model, m),
                Value::Null => {}
                _ => {
                    return Err(Error::bad_input(format!(
                        "{} is not a compose file (its top level is not a mapping)",
                        f.display()
                    ))
                    .hint("pass the right one with -f/--file"));
                }
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
            return Err(Error::bad_input(format!(
                "`{raw_name}` gives an empty compose project name"
            ))
            .hint("set COMPOSE_PROJECT_NAME in .env"));
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
        def.remove("image");
        def.remove("build");
        let def = self.interpolate_value(&Value::Mapping(def))?;
        let mut text = serde_yaml::to_string(&def).ok()?;
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
            .ok_or_else(|| {
                Error::bad_input(format!(
                    "service `{name}` is not in {}",
                    self.files_display()
                ))
                .hint(format!(
                    "the services are: {}",
                    self.service_names().join(", ")
                ))
            })?;
        let text = |key: &str| -> Result<Option<String>> {
            match def.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    let raw = scalar(v).ok_or_else(|| {
                        Error::bad_input(format!("`services.{name}.{key}` must be a string"))
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
                return Err(Error::bad_input(format!(
                    "`services.{name}.build` must be a path or a mapping"
                )));
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
        Ok(Service {
            name: name.to_string(),
            image_raw: def.get("image").and_then(scalar),
            build,
            container_name: text("container_name")?,
            has_healthcheck,
            publishes_ports: def
                .get("ports")
                .and_then(Value::as_sequence)
                .is_some_and(|p| !p.is_empty()),
            container_ports: container_ports(def, &|s| self.interpolate(s))?,
            network_mode: text("network_mode")?,
            shared_writable_mounts: shared_writable_mounts(def, &|s| self.interpolate(s))?,
            restart: text("restart")?,
        })
    }

    pub fn interpolate(&self, s: &str) -> Result<String> {
        interpolate(s, &self.env).map_err(|e| {
            Error::bad_input(format!("in {}: {e}", self.files_display()))
                .hint("fix the variable in the compose file or in .env")
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
    Err(Error::bad_input(format!(
        "no compose file in {} or its parents (looked for {})",
        cwd.display(),
        DEFAULT_FILES.join(", ")
    ))
    .hint("run dockmaster where your compose file is, or pass it with -f/--file"))
}

/// The compose program, detected in the background from the start of a command and
/// waited for only where compose is needed (a rollback to a standby container never is).
pub struct Detected {
    once: tokio::sync::OnceCell<Cli>,
    pending: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<Cli>>>>,
}

impl Detected {
    pub fn start() -> Detected {
        Detected {
            once: tokio::sync::OnceCell::new(),
            pending: std::sync::Mutex::new(Some(tokio::spawn(Cli::detect()))),
        }
    }

    pub async fn get(&self) -> Result<&Cli> {
        self.once
            .get_or_try_init(|| async {
                // Taken once: OnceCell runs this initializer at most once at a time.
                let task = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                match task {
                    Some(t) => t
                        .await
                        .map_err(|e| Error::failed(format!("compose detection failed: {e}")))?,
                    None => Cli::detect().await,
                }
            })
            .await
    }
}

/// Which compose program is installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    program: Vec<String>,
    /// 1 for the Python `docker-compose` 1.x, 2 for the Go one.
    pub major: u32,
}

impl Cli {
    /// Detect once: `DOCKMASTER_COMPOSE` if set (e.g. `docker-compose`), else the v2 plugin,
    /// else a `docker-compose` binary (which may itself be v1 or v2).
    pub async fn detect() -> Result<Cli> {
        let candidates: Vec<Vec<String>> = match std::env::var("DOCKMASTER_COMPOSE") {
            Ok(p) if !p.trim().is_empty() => {
                vec![p.split_whitespace().map(str::to_string).collect()]
            }
            _ => vec![
                vec!["docker".into(), "compose".into()],
                vec!["docker-compose".into()],
            ],
        };
        for program in candidates {
            let out = crate::engine::cli::command(&program[0])
                .args(&program[1..])
                .args(["version", "--short"])
                .stdin(Stdio::null())
                .output()
                .await;
            let Ok(out) = out else { continue };
            if !out.status.success() {
                continue;
            }
            let version = String::from_utf8_lossy(&out.stdout);
            let version = version.trim().trim_start_matches('v');
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(2);
            tracing::debug!(?program, version, "compose detected");
            return Ok(Cli { program, major });
        }
        Err(Error::failed(
            "no compose program found (neither `docker compose` nor `docker-compose`)",
        )
        .hint("install the compose plugin (docker-compose-plugin) or Debian's docker-compose"))
    }

    pub fn display(&self) -> String {
        format!("{} (v{})", self.program.join(" "), self.major)
    }

    /// A command for this project: program, `-p`, every `-f`, then the caller's arguments.
    pub fn command(&self, project: &Project, extra_files: &[PathBuf]) -> tokio::process::Command {
        let mut cmd = crate::engine::cli::command(&self.program[0]);
        cmd.args(&self.program[1..]);
        cmd.arg("-p").arg(&project.name);
        // Relative paths in the files resolve against the project directory whatever the
        // order of -f; pass it explicitly since an override file may live elsewhere.
        cmd.arg("--project-directory").arg(&project.dir);
        for f in project.files.iter().chain(extra_files) {
            cmd.arg("-f").arg(f);
        }
        cmd.current_dir(&project.dir);
        cmd.stdin(Stdio::null());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn interpolation_forms() {
        let e = env(&[("A", "x"), ("E", "")]);
        assert_eq!(interpolate("${A}", &e).unwrap(), "x");
        assert_eq!(interpolate("$A-$$", &e).unwrap(), "x-$");
        assert_eq!(interpolate("${B:-d}", &e).unwrap(), "d");
        assert_eq!(interpolate("${E:-d}", &e).unwrap(), "d");
        assert_eq!(interpolate("${E-d}", &e).unwrap(), "");
        assert_eq!(interpolate("${A:+y}", &e).unwrap(), "y");
        assert!(interpolate("${B:?needed}", &e).is_err());
        assert!(interpolate("${A", &e).is_err());
    }

    fn project_with(image: &str, vars: &[(&str, &str)]) -> (Project, Service) {
        let project = Project {
            name: "p".into(),
            dir: PathBuf::from("/tmp"),
            files: vec![],
            env: env(vars),
            model: Mapping::new(),
        };
        let service = Service {
            name: "api".into(),
            image_raw: Some(image.into()),
            build: None,
            container_name: None,
            has_healthcheck: false,
            publishes_ports: false,
            container_ports: vec![],
            network_mode: None,
            shared_writable_mounts: vec![],
            restart: None,
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
        serde_yaml::from_str(yaml).unwrap()
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
        let model = |env_value: &str, image: &str| Project {
            name: "p".into(),
            dir: PathBuf::from("/nonexistent"),
            files: vec![],
            env: env(&[("GREETING", env_value)]),
            model: service_def(&format!(
                "services:\n  api:\n    image: {image}\n    environment:\n      - GREETING=${{GREETING}}\n"
            )),
        };
        let a = model("hello", "repo:1").service_fingerprint("api").unwrap();
        let b = model("hello", "repo:2").service_fingerprint("api").unwrap();
        let c = model("bye", "repo:1").service_fingerprint("api").unwrap();
        assert_eq!(a, b, "the image is not part of it");
        assert_ne!(a, c, "an interpolated value is");
    }

    #[test]
    fn project_names_are_normalized_like_compose() {
        assert_eq!(normalize_project_name("My App.v2"), "myappv2");
        assert_eq!(normalize_project_name("backend"), "backend");
    }
}
