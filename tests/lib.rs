//! One integration test binary: every test drives the built `dockmaster` against the real
//! Docker engine with its own fixture app (see `support`).

mod support;

mod core;

mod switch;

mod storage;

mod safety;

mod golive;

mod proxy;

mod watch;

mod ship;

mod swarm;

mod serve;
mod serve_actions;

mod browser;

mod fuzz;
mod swarm_lock;
mod swarm_store;
