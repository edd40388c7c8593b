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
        let file = Writeback { file: tmp, written: 0, flushed: 0 };
        Ok(BlobWriter { store: self.clone(), inner: DigestWriter::new(BufWriter::with_capacity(256 * 1024, file)) })
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
    inner: DigestWriter<BufWriter<Writeback>>,
}

/// How much is written before the kernel is asked to start writing it back.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A temp file that starts writeback as it fills, so the final fsync of a
/// large blob waits for the disk's tail only, not for all of it.
struct Writeback {
    file: tempfile::NamedTempFile,
    written: u64,
    flushed: u64,
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK_CHUNK {
            use std::os::fd::AsRawFd;
            // SAFETY: the fd is open for the life of self.file; the call only schedules I/O.
            unsafe {
                libc::sync_file_range(
                    self.file.as_file().as_raw_fd(),
                    self.flushed as i64,
                    (self.written - self.flushed) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// The digest and size of what was written so far.
    pub fn digest_and_size(&self) -> (Digest, u64) {
        self.inner.peek()
    }

    /// Flushes, fsyncs and moves the blob into place; returns its digest and size.
    /// With `expected`, a different digest is an error and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (digest, size, buffered) = self.inner.finish();
        let tmp = buffered
            .into_inner()
            .map_err(|e| StoreError::Io { action: "flush blob", path: self.store.strata_dir("tmp"), source: e.into_error() })?
            .file;
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
