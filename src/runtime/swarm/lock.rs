//! The cluster-wide lock: one uniquely named Swarm config object per app.
