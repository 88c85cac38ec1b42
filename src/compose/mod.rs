//! The compose model (read by dockmaster itself, as compose reads it) and the compose
//! program (v1 `docker-compose` or v2 `docker compose`), detected once.
//!
//! Reading the files ourselves rather than through `docker compose config` keeps the
//! read-only commands (`releases`, `status`, `history`) fast and working where no compose
//! program is installed, and lets us see the *uninterpolated* `image:` so that we know which
//! variable carries the tag.
//!
//! YAML is read with `serde_norway`, a maintained fork of `serde_yaml` 0.9 (deprecated
//! upstream) with the same API and the same emitter: the files parse as before and
//! `Project::service_fingerprint`, kept in container labels, stays the same for the same
//! file (a unit test pins values serde_yaml made). Like serde_yaml it leaves YAML merge keys
//! (`<<: *common`) as a `<<` key; `model` applies them, as compose does. A file of several
//! YAML documents (`---`) is read as compose v2 reads it: each document merged over the
//! ones before it, like one more `-f` file.

mod error;
mod interpolate;
mod model;
mod program;

pub use error::Error;
pub use interpolate::{Environment, interpolate};
pub use model::{Build, ImageTemplate, Project, Service, normalize_project_name};
pub use program::{Cli, Detected};

pub type Result<T, E = Error> = std::result::Result<T, E>;
