//! `pull`: manifest (an index resolved to one platform), config and layers
//! into the store. The manifest is kept as the exact bytes the registry sent,
//! so its digest survives and a push gives it back unchanged; layers stay as
//! the registry compressed them (the config's diff_ids name their contents),
//! as a loaded OCI layout's do. Every blob is verified while it streams into
//! the store's blob writer; one that does not match leaves nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ureq::http::{Method, StatusCode};

use super::client::{self, Client, Payload};
use super::progress::{Transfer, Transfers};
use super::{MAX_MANIFEST, Options, PARALLEL, RegistryError, Result, note};
use crate::oci::{self, Descriptor, Digest, ImageConfig, ImageRef, Index, Manifest, Platform};
use crate::store::{Store, StoreError};

/// What a pull stored.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The image id: the config's digest.
    pub id: Digest,
}

/// Every manifest type a pull accepts, for the Accept header.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

fn is_index(media_type: &str) -> bool {
    media_type == oci::MEDIA_INDEX || media_type == oci::DOCKER_MANIFEST_LIST
}

fn is_manifest(media_type: &str) -> bool {
    media_type == oci::MEDIA_MANIFEST || media_type == oci::DOCKER_MANIFEST
}

/// Layer media types strata can unpack.
pub(super) fn known_layer(media_type: &str) -> bool {
    [oci::MEDIA_LAYER, oci::MEDIA_LAYER_GZIP, oci::MEDIA_LAYER_ZSTD, oci::DOCKER_LAYER, oci::DOCKER_LAYER_GZIP, super::DOCKER_LAYER_ZSTD]
        .contains(&media_type)
}

/// Pulls `reference` into the store and tags it (a pull by digest stays untagged).
pub fn pull(store: &Store, reference: &ImageRef, options: &Options) -> Result<PulledImage> {
    // Held shared: garbage collection cannot free blobs written but not yet tagged.
    let _build = store.lock_build()?;
    let shown = reference.full();
    let started = Instant::now();
    let client = Client::connect(reference.domain(), &reference.repository(), "pull", options.tls_verify)?;
    let wanted = reference.digest.as_ref().map_or_else(|| reference.tag.clone(), Digest::to_string);
    let (mut bytes, mut media_type) = fetch_manifest(&client, &shown, &wanted, reference.digest.as_ref())?;
    if is_index(&media_type) {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Invalid { reference: shown.clone(), message: format!("parse image index: {e}") })?;
        let chosen = choose_platform(&index, options.platform.as_deref(), &shown)?;
        (bytes, media_type) = fetch_manifest(&client, &shown, chosen.digest.as_str(), Some(&chosen.digest))?;
    }
    if !is_manifest(&media_type) {
        return Err(RegistryError::Invalid { reference: shown, message: format!("unsupported manifest media type {media_type:?}") });
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Invalid { reference: shown.clone(), message: format!("parse manifest: {e}") })?;
    if let Some(layer) = manifest.layers.iter().find(|l| !known_layer(&l.media_type)) {
        return Err(RegistryError::Invalid {
            reference: shown,
            message: format!("layer {} has an unsupported media type {:?}", layer.digest, layer.media_type),
        });
    }
    if manifest.config.media_type != oci::MEDIA_CONFIG && manifest.config.media_type != super::DOCKER_CONFIG {
        return Err(RegistryError::Invalid {
            reference: shown,
            message: format!("config has an unsupported media type {:?}", manifest.config.media_type),
        });
    }
    let transfers = Transfers::new(options);
    fetch_blob(&client, store, &manifest.config, &shown, &transfers.start("pull", &manifest.config))?;
    let config: ImageConfig = store.read_json(&manifest.config.digest, "image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::Invalid {
            reference: shown,
            message: format!("the config lists {} diff_ids for {} layers", config.rootfs.diff_ids.len(), manifest.layers.len()),
        });
    }
    fetch_layers(&client, store, &manifest.layers, &shown, &transfers)?;
    let (digest, size) = store.write_blob(&bytes)?;
    let variant = config.extra.get("variant").and_then(|v| v.as_str()).map(str::to_string);
    let descriptor = Descriptor {
        media_type: media_type.clone(),
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: Some(Platform { architecture: config.architecture.clone(), os: config.os.clone(), variant }),
    };
    if reference.digest.is_some() {
        store.add_untagged(&descriptor)?;
    } else {
        let tag = ImageRef { name: reference.name.clone(), tag: reference.tag.clone(), digest: None };
        store.set_tag(&tag, &descriptor)?;
    }
    // The manifest is the registry's bytes: its digest is the one the registry knows.
    super::record_repo_digest(store, &descriptor.digest, &reference.name, &descriptor.digest)?;
    note(options, format_args!("pulled {shown} ({}) in {:.1}s", descriptor.digest, started.elapsed().as_secs_f64()));
    Ok(PulledImage { id: manifest.config.digest })
}

/// GETs a manifest or index (at most 4 MiB); verifies it against `expected`, or the digest the registry names.
fn fetch_manifest(client: &Client, shown: &str, wanted: &str, expected: Option<&Digest>) -> Result<(Vec<u8>, String)> {
    let url = client.repo_url(&format!("manifests/{wanted}"));
    let mut response = client.send(Method::GET, &url, &[("accept", ACCEPT)], &Payload::Empty)?;
    check_status(&mut response, client, shown)?;
    let too_large =
        || RegistryError::Invalid { reference: shown.into(), message: format!("the manifest is larger than {MAX_MANIFEST} bytes") };
    if response.body().content_length().is_some_and(|len| len > MAX_MANIFEST) {
        return Err(too_large());
    }
    let header_type = client::header(&response, "content-type").map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
    let header_digest = client::header(&response, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
    let bytes = response.body_mut().with_config().limit(MAX_MANIFEST).read_to_vec().map_err(|e| match e {
        ureq::Error::BodyExceedsLimit(_) => too_large(),
        e => RegistryError::Request { what: format!("GET {url}"), message: e.to_string() },
    })?;
    let actual = Digest::of(&bytes);
    if let Some(expected) = expected.or(header_digest.as_ref())
        && &actual != expected
    {
        return Err(RegistryError::DigestMismatch { what: format!("manifest of {shown}"), digest: expected.clone(), actual });
    }
    // The manifest's own mediaType wins over a generic Content-Type.
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let typed: Typed = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Invalid { reference: shown.into(), message: format!("parse manifest: {e}") })?;
    let media_type = typed
        .media_type
        .or(header_type.filter(|t| is_index(t) || is_manifest(t)))
        .unwrap_or_else(|| if typed.manifests.is_some() { oci::MEDIA_INDEX.into() } else { oci::MEDIA_MANIFEST.into() });
    Ok((bytes, media_type))
}

/// Turns a failed status into an error naming the reference.
fn check_status(response: &mut ureq::http::Response<ureq::Body>, client: &Client, shown: &str) -> Result<()> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let message = client::error_text(response);
    Err(match status {
        StatusCode::NOT_FOUND => RegistryError::NotFound { reference: shown.into(), message },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied { registry: client.registry.clone(), message },
        _ => RegistryError::Request { what: format!("pull {shown}"), message },
    })
}

/// The index entry for `platform` (`os/arch[/variant]`), else for this machine.
fn choose_platform<'a>(index: &'a Index, platform: Option<&str>, shown: &str) -> Result<&'a Descriptor> {
    let (os, arch, variant) = match platform {
        Some(text) => {
            let mut parts = text.split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                    (os.to_string(), arch.to_string(), variant.map(str::to_string))
                }
                _ => {
                    return Err(RegistryError::Invalid {
                        reference: shown.into(),
                        message: format!("--platform {text}: expected os/arch[/variant]"),
                    });
                }
            }
        }
        None => ("linux".to_string(), oci::host_architecture().to_string(), None),
    };
    let matches = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch && variant.as_ref().is_none_or(|v| p.variant.as_ref() == Some(v)))
    };
    index.manifests.iter().find(matches).ok_or_else(|| {
        let offered: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect();
        let wanted = match &variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        };
        RegistryError::Invalid {
            reference: shown.into(),
            message: format!("no manifest for {wanted} (the index offers {})", offered.join(", ")),
        }
    })
}

/// Fetches the layers the store lacks, `PARALLEL` at a time; the first error stops the rest.
fn fetch_layers(client: &Client, store: &Store, layers: &[Descriptor], shown: &str, transfers: &Transfers) -> Result<()> {
    let missing: Vec<&Descriptor> = layers.iter().filter(|l| !store.has_blob(&l.digest)).collect();
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(missing.len()) {
            scope.spawn(|| {
                loop {
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    let Some(layer) = missing.get(next.fetch_add(1, Ordering::SeqCst)) else { return };
                    let transfer = transfers.start("pull", layer);
                    match fetch_blob(client, store, layer, shown, &transfer) {
                        Ok(()) => transfer.done(),
                        Err(e) => {
                            if let Ok(mut slot) = failure.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    match failure.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Streams one blob into the store, verifying size and digest; a dropped
/// connection resumes with a Range request (or starts over if the registry
/// ignores it). Nothing stays in the store unless the digest matches.
fn fetch_blob(client: &Client, store: &Store, blob: &Descriptor, shown: &str, transfer: &Transfer) -> Result<()> {
    if store.has_blob(&blob.digest) {
        return Ok(());
    }
    let what = format!("blob {} of {shown}", blob.digest);
    let url = client.repo_url(&format!("blobs/{}", blob.digest));
    let mut writer = store.blob_writer()?;
    let mut written: u64 = 0;
    let mut attempt = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let range = format!("bytes={written}-");
        let headers: Vec<(&str, &str)> = if written > 0 { vec![("range", range.as_str())] } else { Vec::new() };
        let mut response = client.send(Method::GET, &url, &headers, &Payload::Empty).map_err(|e| match e {
            RegistryError::Request { message, .. } => {
                RegistryError::Request { what: what.clone(), message: format!("the registry stopped answering ({message})") }
            }
            other => other,
        })?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT if written > 0 => {}
            StatusCode::OK => {
                if written > 0 {
                    writer = store.blob_writer()?;
                    written = 0;
                    transfer.bar.set_position(0);
                }
            }
            _ => {
                check_status(&mut response, client, &what)?;
                return Err(RegistryError::Request { what, message: format!("unexpected status {}", response.status()) });
            }
        }
        let mut reader = response.into_body().into_reader();
        let dropped = loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(e),
            };
            written += n as u64;
            if written > blob.size {
                return Err(RegistryError::Invalid {
                    reference: shown.into(),
                    message: format!("{what}: the registry sent more than its {} bytes", blob.size),
                });
            }
            writer.write_all(&buf[..n]).map_err(|source| StoreError::Io { action: "write", path: store.tmp_dir(), source })?;
            transfer.advance(n as u64);
        };
        match dropped {
            None => break,
            Some(e) if attempt < 4 => {
                attempt += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            Some(e) => return Err(RegistryError::Request { what, message: format!("connection lost after {written} bytes: {e}") }),
        }
    }
    if written != blob.size {
        return Err(RegistryError::Invalid {
            reference: shown.into(),
            message: format!("{what}: the registry sent {written} bytes, the manifest says {}", blob.size),
        });
    }
    match writer.commit(Some(&blob.digest)) {
        Ok(_) => Ok(()),
        Err(StoreError::Corrupt { expected, actual }) => {
            Err(RegistryError::DigestMismatch { what: format!("blob of {shown}"), digest: expected, actual })
        }
        Err(e) => Err(e.into()),
    }
}
