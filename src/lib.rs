//! strata: a daemonless, declarative container-image builder.
//!
//! Flow: `frontend` (Dockerfile, KDL) → `graph` → `build` (scheduler) →
//! `exec` (one step, one layer) → `store` (an OCI image layout), with `oci`
//! for the formats, and `mount` serving a stored image through FUSE.

pub mod build;
pub mod exec;
pub mod frontend;
pub mod graph;
pub mod mount;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod store;
