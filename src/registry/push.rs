//! `push`: a HEAD of the tag ends it when the registry already has the very
//! manifest; else blobs first (a HEAD check skips what the registry has, a
//! blob another repository of the registry holds is mounted, small ones go in
//! one PUT, large ones streamed in a PATCH), then the manifest. Local
//! layers are uncompressed; they are compressed into the store once and the
//! pair remembered under `strata/compressed/<diff_id>.<gzip|zstd>`, so a
//! second push compresses nothing. An image whose layers are all compressed
//! already (a pulled one) is pushed with its stored manifest bytes, so its
//! digest stays the one the source registry gave it.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ureq::http::{Method, StatusCode};

use indicatif::ProgressBar;

use super::client::{self, Client, Payload};
use super::progress::Transfers;
use super::{Options, PARALLEL, RegistryError, Result, note};
use crate::oci::{self, Descriptor, Digest, ImageRef, Manifest};
use crate::store::{Store, StoreError, StoredBlob, StoredImage};

/// How uncompressed local layers are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// gzip at a fast level (what every registry and runtime reads).
    #[default]
    Gzip,
    Zstd,
    /// As they are: plain tar.
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            other => Err(format!("unknown compression {other:?} (gzip, zstd, none)")),
        }
    }
}

/// Blobs up to this size go in one PUT; larger ones are streamed in a PATCH first.
const MONOLITHIC: u64 = 8 << 20;

fn is_uncompressed(media_type: &str) -> bool {
    media_type == oci::MEDIA_LAYER || media_type == oci::DOCKER_LAYER
}

/// The OCI media type for a Docker one (others unchanged).
fn oci_type(media_type: &str) -> &str {
    match media_type {
        oci::DOCKER_LAYER => oci::MEDIA_LAYER,
        oci::DOCKER_LAYER_GZIP => oci::MEDIA_LAYER_GZIP,
        super::DOCKER_LAYER_ZSTD => oci::MEDIA_LAYER_ZSTD,
        super::DOCKER_CONFIG => oci::MEDIA_CONFIG,
        other => other,
    }
}

/// What a push sent.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
}

/// Pushes the stored image `source` to `dest`.
pub fn push(store: &Store, source: &str, dest: &ImageRef, compression: Compression, options: &Options) -> Result<Pushed> {
    // Held shared: garbage collection cannot free the compressed layers made here while they are sent.
    let _build = store.lock_build()?;
    let started = Instant::now();
    let image = store.resolve(source)?;
    let shown = dest.full();
    let client = Client::connect(dest.domain(), &dest.repository(), "pull,push", options.tls_verify)?;
    if image.manifest.layers.len() != image.config.rootfs.diff_ids.len() {
        return Err(RegistryError::Invalid {
            reference: source.into(),
            message: "the config's diff_ids do not match the manifest's layers".into(),
        });
    }

    // Blob 0 is the config; blob i + 1 is layer i, compressed on the way when it is a local one.
    let count = image.manifest.layers.len() + 1;

    // When every blob's pushed form is known, the manifest is too: a registry whose tag already
    // names it holds the whole image (it accepts a manifest only once its blobs are there).
    if let Some(known) = known_blobs(store, &image, compression) {
        let (bytes, media_type) = manifest_bytes(store, &image, known)?;
        let digest = Digest::of(&bytes);
        let head =
            client.send(Method::HEAD, &client.repo_url(&format!("manifests/{}", dest.tag)), &[("accept", &media_type)], &Payload::Empty)?;
        if head.status() == StatusCode::OK && client::header(&head, "docker-content-digest") == Some(digest.as_str()) {
            super::record_repo_digest(store, &image.manifest_descriptor.digest, &dest.name, &digest)?;
            note(options, format_args!("{shown} already has {digest}"));
            return Ok(Pushed { digest, size: bytes.len() as u64 });
        }
    }

    let mount_from = mount_source(&image, dest);
    let transfers = Transfers::new(options);
    let sent: Vec<Mutex<Option<Descriptor>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(count) {
            scope.spawn(|| {
                loop {
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let result = (|| {
                        let blob = if i == 0 {
                            image.manifest.config.clone()
                        } else {
                            let layer = &image.manifest.layers[i - 1];
                            let diff_id = &image.config.rootfs.diff_ids[i - 1];
                            if is_uncompressed(&layer.media_type) && compression != Compression::None {
                                match remembered(store, diff_id, compression) {
                                    Some(known) => known,
                                    None => {
                                        // Compressed while it is sent; where the registry will not take a
                                        // stream, compressed into the store first and sent as a file.
                                        let transfer = transfers.start("push", layer);
                                        match stream_compressed(&client, store, layer, diff_id, compression, &shown, &transfer.bar) {
                                            Ok(blob) => {
                                                transfer.done();
                                                return Ok(blob);
                                            }
                                            Err(e @ RegistryError::Store(_)) => return Err(e),
                                            Err(_) => compressed(store, layer, diff_id, compression)?,
                                        }
                                    }
                                }
                            } else {
                                layer.clone()
                            }
                        };
                        let transfer = transfers.start("push", &blob);
                        if upload(&client, store, &blob, &shown, mount_from.as_deref(), &transfer.bar)? == Upload::Sent {
                            transfer.done();
                        } else {
                            drop(transfer);
                        }
                        Ok::<_, RegistryError>(blob)
                    })();
                    match result {
                        Ok(blob) => {
                            if let Ok(mut slot) = sent[i].lock() {
                                *slot = Some(blob);
                            }
                        }
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
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let blobs: Vec<Descriptor> = sent.into_iter().filter_map(|slot| slot.into_inner().ok().flatten()).collect();
    if blobs.len() != count {
        return Err(RegistryError::Invalid { reference: shown, message: "a blob upload stopped without an error".into() });
    }
    let (bytes, media_type) = manifest_bytes(store, &image, blobs)?;
    let digest = Digest::of(&bytes);
    let url = client.repo_url(&format!("manifests/{}", dest.tag));
    let mut response = client.send(Method::PUT, &url, &[("content-type", &media_type)], &Payload::Bytes(&bytes))?;
    if !response.status().is_success() {
        return Err(status_error(&mut response, &client, &format!("push manifest of {shown}")));
    }
    if let Some(theirs) = client::header(&response, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok())
        && theirs != digest
    {
        return Err(RegistryError::DigestMismatch { what: format!("manifest pushed to {shown}"), digest, actual: theirs });
    }
    super::record_repo_digest(store, &image.manifest_descriptor.digest, &dest.name, &digest)?;
    note(options, format_args!("pushed {shown} ({digest}) in {:.1}s", started.elapsed().as_secs_f64()));
    Ok(Pushed { digest, size: bytes.len() as u64 })
}

/// The manifest pushed for `image` whose blobs went as `blobs` (config first): the stored
/// bytes when nothing changed and the media types agree with the manifest's; else an OCI manifest.
fn manifest_bytes(store: &Store, image: &StoredImage, mut blobs: Vec<Descriptor>) -> Result<(Vec<u8>, String)> {
    let layers = blobs.split_off(1);
    let config = blobs.remove(0);
    let docker = image.manifest_descriptor.media_type == oci::DOCKER_MANIFEST;
    let agrees = |t: &str| if docker { t.starts_with("application/vnd.docker.") } else { oci_type(t) == t };
    let unchanged = layers == image.manifest.layers && agrees(&config.media_type) && layers.iter().all(|l| agrees(&l.media_type));
    if unchanged {
        return Ok((store.read_blob(&image.manifest_descriptor.digest)?, image.manifest_descriptor.media_type.clone()));
    }
    let retype = |d: &Descriptor| Descriptor { media_type: oci_type(&d.media_type).to_string(), ..d.clone() };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        config: retype(&config),
        layers: layers.iter().map(retype).collect(),
        annotations: image.manifest.annotations.clone(),
    };
    Ok((oci::to_blob(&manifest), oci::MEDIA_MANIFEST.to_string()))
}

/// The blobs `image` is pushed as (config first), if none needs compressing now.
fn known_blobs(store: &Store, image: &StoredImage, compression: Compression) -> Option<Vec<Descriptor>> {
    let layers = image.manifest.layers.iter().zip(&image.config.rootfs.diff_ids);
    let pushed = layers.map(|(layer, diff_id)| {
        if is_uncompressed(&layer.media_type) && compression != Compression::None {
            remembered(store, diff_id, compression)
        } else {
            Some(layer.clone())
        }
    });
    std::iter::once(Some(image.manifest.config.clone())).chain(pushed).collect()
}

/// Another repository of `dest`'s registry known to hold `image`: its blobs can be mounted, not sent.
fn mount_source(image: &StoredImage, dest: &ImageRef) -> Option<String> {
    super::repo_digests(image)
        .iter()
        .filter_map(|known| known.parse::<ImageRef>().ok())
        .find_map(|known| (known.domain() == dest.domain() && known.repository() != dest.repository()).then(|| known.repository()))
}

fn status_error(response: &mut ureq::http::Response<ureq::Body>, client: &Client, what: &str) -> RegistryError {
    let status = response.status();
    let message = client::error_text(response);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied { registry: client.registry.clone(), message },
        StatusCode::NOT_FOUND => RegistryError::NotFound { reference: what.into(), message },
        _ => RegistryError::Request { what: what.into(), message },
    }
}

/// The compressed form of the layer `diff_id` made by an earlier push, if its blob is still stored.
fn remembered(store: &Store, diff_id: &Digest, compression: Compression) -> Option<Descriptor> {
    let suffix = match compression {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => return None,
    };
    let record = store.strata_dir("compressed").join(format!("{}.{suffix}", diff_id.hex()));
    let known: Descriptor = serde_json::from_slice(&std::fs::read(record).ok()?).ok()?;
    store.has_blob(&known.digest).then_some(known)
}

/// The compressed form of an uncompressed layer: remembered, else made into the store now.
pub(super) fn compressed(store: &Store, layer: &Descriptor, diff_id: &Digest, compression: Compression) -> Result<Descriptor> {
    if compression == Compression::None {
        return Ok(layer.clone());
    }
    if let Some(known) = remembered(store, diff_id, compression) {
        return Ok(known);
    }
    let blob = make_compressed(store, layer, compression, io::sink(), &ProgressBar::hidden())?;
    remember(store, diff_id, compression, blob)
}

/// Compresses the local layer `layer` into a new store blob, writing the same bytes to `sink`;
/// `bar` counts the uncompressed bytes read.
fn make_compressed(store: &Store, layer: &Descriptor, compression: Compression, sink: impl Write, bar: &ProgressBar) -> Result<StoredBlob> {
    let io_err = |action: &'static str| {
        let path = store.blob_path(&layer.digest);
        move |source: io::Error| StoreError::Io { action, path, source }
    };
    let mut input = bar.wrap_read(BufReader::with_capacity(1 << 20, store.open_blob(&layer.digest)?));
    let mut both = Tee(store.blob_writer()?, sink);
    match compression {
        Compression::Gzip => {
            oci::gzip::compress(&mut input, &mut both).map_err(io_err("compress"))?;
        }
        _ => {
            let mut encoder = zstd::stream::write::Encoder::new(&mut both, 3).map_err(io_err("compress"))?;
            io::copy(&mut input, &mut encoder).map_err(io_err("compress"))?;
            encoder.finish().map_err(io_err("compress"))?;
        }
    }
    let Tee(writer, _) = both;
    Ok(writer.commit(None)?)
}

/// Records `blob` as the `compression` form of the layer `diff_id`; its descriptor.
fn remember(store: &Store, diff_id: &Digest, compression: Compression, blob: StoredBlob) -> Result<Descriptor> {
    let (suffix, media_type) = match compression {
        Compression::Zstd => ("zstd", oci::MEDIA_LAYER_ZSTD),
        _ => ("gzip", oci::MEDIA_LAYER_GZIP),
    };
    let descriptor =
        Descriptor { media_type: media_type.into(), digest: blob.digest, size: blob.size, annotations: BTreeMap::new(), platform: None };
    let dir = store.strata_dir("compressed");
    std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { action: "create", path: dir.clone(), source })?;
    store.write_file(&dir.join(format!("{}.{suffix}", diff_id.hex())), &oci::to_blob(&descriptor))?;
    Ok(descriptor)
}

/// Writes every byte to both.
struct Tee<A, B>(A, B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// The compressing thread's end of a stream to the upload: a few chunks in flight.
struct ChannelWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf.to_vec()).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The upload's end: ends when the compressing thread drops its writer.
struct ChannelReader {
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.chunks.recv() {
                Ok(next) => (self.chunk, self.at) = (next, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Compresses a local layer while a chunked PATCH sends it, keeping the compressed
/// copy in the store; once both end, the digest is known and the upload is closed
/// with it, and the pair is remembered. A compression that fails ends the stream
/// early and the upload is never closed, so the registry keeps nothing.
fn stream_compressed(
    client: &Client,
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    compression: Compression,
    shown: &str,
    bar: &ProgressBar,
) -> Result<Descriptor> {
    let what = format!("push layer {diff_id} to {shown}");
    let mut started = client.send(Method::POST, &client.repo_url("blobs/uploads/"), &[], &Payload::Empty)?;
    if started.status() != StatusCode::ACCEPTED {
        return Err(status_error(&mut started, client, &what));
    }
    let upload_url = upload_location(client, &started, &what)?;
    let (sender, chunks) = std::sync::mpsc::sync_channel(8);
    let (made, patched) = std::thread::scope(|scope| {
        let making = scope.spawn(|| make_compressed(store, layer, compression, ChannelWriter(sender), bar));
        let reader: Box<dyn io::Read + Send> = Box::new(ChannelReader { chunks, chunk: Vec::new(), at: 0 });
        let body = Payload::Stream(Mutex::new(Some(reader)));
        let patched = client.send(Method::PATCH, &upload_url, &[("content-type", "application/octet-stream")], &body);
        // The reader goes with the body: a compressor still writing stops.
        drop(body);
        (making.join(), patched)
    });
    // The upload's error first: a compressor that failed because the upload stopped reading says less.
    let mut patched = patched?;
    let blob = made.map_err(|_| RegistryError::Request { what: what.clone(), message: "the compressing thread panicked".into() })??;
    if patched.status() != StatusCode::ACCEPTED {
        return Err(status_error(&mut patched, client, &what));
    }
    let upload_url = upload_location(client, &patched, &what)?;
    close_upload(client, &upload_url, &blob.digest, &Payload::Empty, &what)?;
    remember(store, diff_id, compression, blob)
}

/// How a blob reached the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upload {
    /// The registry had it already.
    Present,
    /// Mounted from another repository of the same registry: no bytes sent.
    Mounted,
    Sent,
}

/// Sends one blob unless the registry has it, or mounts it from the repository
/// `mount_from` of the same registry. A failed upload session is started over
/// (a PATCH cannot be resumed blindly); `bar` counts the bytes sent.
pub(super) fn upload(
    client: &Client,
    store: &Store,
    blob: &Descriptor,
    shown: &str,
    mount_from: Option<&str>,
    bar: &ProgressBar,
) -> Result<Upload> {
    let head = client.send(Method::HEAD, &client.repo_url(&format!("blobs/{}", blob.digest)), &[], &Payload::Empty)?;
    if head.status() == StatusCode::OK {
        return Ok(Upload::Present);
    }
    let mut attempt = 0;
    loop {
        match upload_once(client, store, blob, shown, mount_from, bar) {
            Ok(how) => return Ok(how),
            Err(e @ (RegistryError::Denied { .. } | RegistryError::Store(_))) => return Err(e),
            Err(_) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

fn upload_once(
    client: &Client,
    store: &Store,
    blob: &Descriptor,
    shown: &str,
    mount_from: Option<&str>,
    bar: &ProgressBar,
) -> Result<Upload> {
    let what = format!("push blob {} to {shown}", blob.digest);
    // A mount request the registry cannot honour (unknown there, or no pull access) opens an upload session instead.
    let start = match mount_from {
        Some(from) => format!("blobs/uploads/?mount={}&from={from}", blob.digest.as_str().replace(':', "%3A")),
        None => "blobs/uploads/".to_string(),
    };
    let mut response = client.send(Method::POST, &client.repo_url(&start), &[], &Payload::Empty)?;
    if mount_from.is_some() && response.status() == StatusCode::CREATED {
        return Ok(Upload::Mounted);
    }
    if response.status() != StatusCode::ACCEPTED {
        return Err(status_error(&mut response, client, &what));
    }
    let mut upload_url = upload_location(client, &response, &what)?;
    let path = store.blob_path(&blob.digest);
    if !path.exists() {
        return Err(StoreError::MissingBlob(blob.digest.clone()).into());
    }
    let body = if blob.size > MONOLITHIC {
        let mut patched =
            client.send(Method::PATCH, &upload_url, &[("content-type", "application/octet-stream")], &Payload::File(&path, bar))?;
        if patched.status() != StatusCode::ACCEPTED {
            return Err(status_error(&mut patched, client, &what));
        }
        upload_url = upload_location(client, &patched, &what)?;
        Payload::Empty
    } else {
        Payload::File(&path, bar)
    };
    close_upload(client, &upload_url, &blob.digest, &body, &what)?;
    Ok(Upload::Sent)
}

/// Where an upload session goes on, from a response that opened or continued it.
fn upload_location(client: &Client, response: &ureq::http::Response<ureq::Body>, what: &str) -> Result<String> {
    client::header(response, "location")
        .map(|l| client.url(l))
        .ok_or_else(|| RegistryError::Request { what: what.into(), message: "the registry gave no upload location".into() })
}

/// Ends an upload session with the blob's digest (and `body`, its last bytes, if any).
fn close_upload(client: &Client, upload_url: &str, digest: &Digest, body: &Payload, what: &str) -> Result<()> {
    let separator = if upload_url.contains('?') { '&' } else { '?' };
    let put_url = format!("{upload_url}{separator}digest={}", digest.as_str().replace(':', "%3A"));
    let mut put = client.send(Method::PUT, &put_url, &[("content-type", "application/octet-stream")], body)?;
    if put.status() != StatusCode::CREATED {
        return Err(status_error(&mut put, client, what));
    }
    Ok(())
}
