//! A Swarm service as the place releases run: one service of a stack named after the compose
//! project, updated forward to the image of the release to put live, on every node that may
//! run it. dockmaster's history is the truth, not the service's `PreviousSpec`.

pub mod lock;
pub mod store;
