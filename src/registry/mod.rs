//! Registries: `pull`, `push`, `login`/`logout`, and the resolver of base
//! images that fetches what the store lacks. Speaks the OCI distribution API
//! through `client`; writes into the store only through its verifying blob
//! writer, its tags, index annotations (repo digests) and the records of the
//! compressed forms of pushed layers. Knows nothing of Dockerfiles or build steps.

pub mod auth;
pub mod cache;
mod client;
mod progress;
mod pull;
mod push;

use crate::oci::{Digest, ImageRef};
use crate::store::{Store, StoreError, StoredImage};

pub use client::Client;
pub use pull::{PulledImage, pull};
pub use push::{Compression, Pushed, push};

/// Docker's image config media type (OCI's is `oci::MEDIA_CONFIG`).
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's zstd layer (rare; skopeo writes OCI's).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// The largest manifest or index accepted, as containerd and the distribution registry do.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Blobs fetched or sent at once.
pub const PARALLEL: usize = 4;
/// The index annotation listing, comma-separated, the `name@digest` a
/// registry knows an image by (Docker's `RepoDigests`): set by pull and push.
pub const ANNOTATION_REPO_DIGESTS: &str = "dev.strata.repo-digests";

/// Why a registry operation failed; each names the reference, registry or digest.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("{what}: {message}")]
    Request { what: String, message: String },
    #[error("access to {registry} denied: {message}")]
    Denied { registry: String, message: String },
    #[error("{reference} not found on the registry ({message})")]
    NotFound { reference: String, message: String },
    #[error("{what} {digest} does not match its digest: the registry sent content hashing to {actual}")]
    DigestMismatch { what: String, digest: Digest, actual: Digest },
    #[error("{reference}: {message}")]
    Invalid { reference: String, message: String },
    #[error("credentials: {0}")]
    Auth(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Settings shared by pull and push.
#[derive(Clone, Debug)]
pub struct Options {
    /// Verify TLS certificates (off also allows plain HTTP).
    pub tls_verify: bool,
    /// `os/arch[/variant]` to pick from an index; the host's by default.
    pub platform: Option<String>,
    /// Print a line per blob on standard error.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { tls_verify: true, platform: None, verbose: true }
    }
}

/// When `FROM` fetches its base (`--pull=missing|always|never`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only when the store lacks the image (Docker's default).
    #[default]
    Missing,
    Always,
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "missing" => Ok(PullPolicy::Missing),
            "always" | "true" => Ok(PullPolicy::Always),
            "never" | "false" => Ok(PullPolicy::Never),
            other => Err(format!("--pull={other}: expected missing, always or never")),
        }
    }
}

/// A base image from the store, pulled first as `policy` says.
pub fn resolve_base(store: &Store, name: &str, policy: PullPolicy, options: &Options) -> Result<StoredImage> {
    let reference = || name.parse::<ImageRef>().map_err(|e| RegistryError::Invalid { reference: name.into(), message: e.to_string() });
    match policy {
        PullPolicy::Never => Ok(store.resolve(name)?),
        PullPolicy::Always => {
            pull(store, &reference()?, options)?;
            Ok(store.resolve(name)?)
        }
        PullPolicy::Missing => match store.resolve(name) {
            Err(StoreError::UnknownImage(_) | StoreError::UnknownDigest { .. }) if name.parse::<ImageRef>().is_ok() => {
                pull(store, &reference()?, options)?;
                Ok(store.resolve(name)?)
            }
            other => Ok(other?),
        },
    }
}

/// The `name@digest` references registries know `image` by, as `image inspect` shows them.
pub fn repo_digests(image: &StoredImage) -> Vec<String> {
    let recorded = image.manifest_descriptor.annotations.get(ANNOTATION_REPO_DIGESTS);
    recorded.map(|list| list.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default()
}

/// Records that `repository` holds `local` (a manifest in the store) as `remote`.
fn record_repo_digest(store: &Store, local: &Digest, repository: &str, remote: &Digest) -> Result<()> {
    let entry = format!("{repository}@{remote}");
    store.annotate(local, ANNOTATION_REPO_DIGESTS, |old| {
        // One digest per repository: a repository that moved on is replaced.
        let mut list: Vec<&str> =
            old.unwrap_or_default().split(',').filter(|s| !s.is_empty() && s.split('@').next() != Some(repository)).collect();
        list.push(&entry);
        list.sort_unstable();
        list.join(",")
    })?;
    Ok(())
}

/// Checks credentials against a registry, then records them; returns the file written.
pub fn login(registry: &str, credentials: auth::Credentials, tls_verify: bool) -> Result<std::path::PathBuf> {
    let registry = normalise_registry(registry);
    // The ping answers the challenge: Basic is checked by a second ping, Bearer by the token request.
    let client = Client::connect_with(&registry, "", "pull", tls_verify, Some(credentials.clone()))?;
    let mut response = client.send(ureq::http::Method::GET, &client.url("/v2/"), &[], &client::Payload::Empty)?;
    if !response.status().is_success() {
        return Err(RegistryError::Denied { registry, message: client::error_text(&mut response) });
    }
    auth::store(&registry, &credentials)
}

/// Forgets the credentials of a registry; false if none were stored.
pub fn logout(registry: &str) -> Result<bool> {
    auth::remove(&normalise_registry(registry))
}

/// `https://index.docker.io/v1/`, `docker.io` and no name at all are Docker Hub.
pub fn normalise_registry(text: &str) -> String {
    let host = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")).unwrap_or(text);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" => crate::oci::DEFAULT_DOMAIN.into(),
        other => other.into(),
    }
}

/// A reference as the user may write it for a registry: `docker://` is accepted and dropped.
pub fn parse_reference(text: &str) -> Result<ImageRef> {
    let text = text.strip_prefix("docker://").unwrap_or(text);
    text.parse().map_err(|e: crate::oci::RefError| RegistryError::Invalid { reference: text.into(), message: e.to_string() })
}

/// Prints a progress line on standard error when asked to.
fn note(options: &Options, line: std::fmt::Arguments) {
    if options.verbose {
        eprintln!("{line}");
    }
}
