//! Content-addressed blobs under `blobs/sha256/`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::{Result, Store, StoreError, io_err};
use crate::oci::{Digest, DigestWriter};

impl Store {
    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// Stores `bytes` as a blob; returns its digest and size.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            self.write_file(&path, bytes)?;
        }
        Ok((digest, bytes.len() as u64))
    }

    /// A writer that hashes as it writes and becomes a blob on `commit`.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.strata_dir("tmp");
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("create temp file in", &dir))?;
        Ok(BlobWriter { store: self.clone(), inner: DigestWriter::new(BufWriter::with_capacity(256 * 1024, tmp)) })
    }

    /// Reads a whole blob and checks its digest (for small JSON blobs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => StoreError::Io { action: "read blob", path: path.clone(), source: e },
        })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::Corrupt { expected: digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => StoreError::Io { action: "open blob", path: path.clone(), source: e },
        })
    }
}

/// A blob being written; dropped without `commit`, it leaves nothing behind.
pub struct BlobWriter {
    store: Store,
    inner: DigestWriter<BufWriter<tempfile::NamedTempFile>>,
}

impl BlobWriter {
    /// Flushes, fsyncs and moves the blob into place; returns its digest and size.
    /// With `expected`, a different digest is an error and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (digest, size, buffered) = self.inner.finish();
        let tmp = buffered.into_inner().map_err(|e| StoreError::Io {
            action: "flush blob",
            path: self.store.strata_dir("tmp"),
            source: e.into_error(),
        })?;
        if let Some(expected) = expected
            && expected != &digest
        {
            return Err(StoreError::Corrupt { expected: expected.clone(), actual: digest });
        }
        let path = self.store.blob_path(&digest);
        if !path.exists() {
            tmp.as_file().sync_all().map_err(io_err("fsync", tmp.path()))?;
            tmp.persist(&path).map_err(|e| StoreError::Io { action: "rename into place", path: path.clone(), source: e.error })?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
