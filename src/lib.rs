//! strata: a daemonless, declarative container-image builder.
//!
//! Flow: `frontend` (Dockerfile, KDL) → `graph` → `build` (scheduler) →
//! `exec` (one step, one layer) → `store` (an OCI image layout), with `oci`
//! for the formats, `mount` serving a stored image through FUSE, `registry`
//! for pull, push and the shared build cache, and `runtime` for `strata run`
//! and the container verbs.

pub mod build;
pub mod exec;
pub mod frontend;
pub mod graph;
pub mod mount;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod store;
