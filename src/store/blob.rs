//! Content-addressed blobs under `blobs/sha256/`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use super::{Result, Store, StoreError, io_err};
use crate::oci::{Descriptor, Digest, DigestWriter};

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
        let dir = self.tmp_dir();
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("create temp file in", &dir))?;
        let file = Writeback { file: tmp, direct: false, written: 0, flushed: 0 };
        Ok(BlobWriter { store: self.clone(), chunk: Chunk::new(), sink: Some(Sink::Here(DigestWriter::new(io::sink()), file)) })
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

    /// The uncompressed size of a layer (what Docker shows as an image's size).
    /// A compressed layer is measured once, by uncompressing it against its
    /// diff_id, and the figure kept under `strata/layer-sizes/`.
    pub fn uncompressed_size(&self, layer: &Descriptor, diff_id: &Digest) -> Result<u64> {
        if &layer.digest == diff_id {
            return Ok(layer.size);
        }
        let record = self.strata_dir("layer-sizes").join(diff_id.hex());
        if let Some(size) = fs::read_to_string(&record).ok().and_then(|text| text.trim().parse().ok()) {
            return Ok(size);
        }
        let unpack_err = |message: String| StoreError::Unpack { digest: layer.digest.clone(), message };
        let blob = io::BufReader::with_capacity(256 * 1024, self.open_blob(&layer.digest)?);
        let mut reader = super::snapshot::decompress(blob).map_err(|e| unpack_err(e.to_string()))?;
        let mut hashed = DigestWriter::new(io::sink());
        let size = io::copy(&mut reader, &mut hashed).map_err(|e| unpack_err(e.to_string()))?;
        let (actual, _, _) = hashed.finish();
        if &actual != diff_id {
            return Err(unpack_err(format!("uncompresses to {actual}, not its diff_id {diff_id}")));
        }
        let dir = self.strata_dir("layer-sizes");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        self.write_file_with(&record, size.to_string().as_bytes(), false)?;
        Ok(size)
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
///
/// Bytes are gathered in chunks. Once a blob outgrows one chunk, hashing and
/// writing move to a thread of their own, so that whoever produces the bytes
/// (a tar of the build context, say) runs beside sha256 instead of before it,
/// and the chunks go to disk with direct I/O: a large layer then streams at
/// the disk's speed instead of waiting on page-cache writeback at the fsync.
pub struct BlobWriter {
    store: Store,
    chunk: Chunk,
    /// `None` only while committing or dropping.
    sink: Option<Sink>,
}

/// Bytes handed to the hashing thread at a time.
const CHUNK: usize = 1 << 20;

/// Chunks queued for each thread; with the one being filled, the one being
/// hashed and the one being written, this bounds the memory a blob writer
/// holds (chunks are reused, never more than 2 × QUEUED + 3 of them).
const QUEUED: usize = 2;

/// The alignment direct I/O asks of buffers, offsets and lengths.
const ALIGN: usize = 4096;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

/// A chunk buffer aligned for direct I/O, and how much of it is filled.
struct Chunk {
    blocks: Box<[Block]>,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk { blocks: vec![Block([0; ALIGN]); CHUNK / ALIGN].into_boxed_slice(), len: 0 }
    }

    fn buffer(&mut self) -> &mut [u8] {
        // SAFETY: the blocks are CHUNK contiguous, initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), CHUNK) }
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: as in `buffer`; len <= CHUNK.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Where chunks go: hashed and written here, or by two threads, one hashing
/// and one writing, so that sha256 and the disk work at the same time.
enum Sink {
    Here(Hashing, Writeback),
    Threads { full: SyncSender<Chunk>, empty: Receiver<Chunk>, hashing: JoinHandle<Hashing>, writing: JoinHandle<io::Result<Writeback>> },
}

/// The running digest and size.
type Hashing = DigestWriter<io::Sink>;

/// The blob written: its digest, its size, and whether the store lacked it.
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    pub added: bool,
}

/// How much is written through the page cache before the kernel is asked to
/// start writing it back.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A temp file written with direct I/O while what it is given allows it, else
/// through the page cache, starting writeback as it fills so that the final
/// fsync waits for the disk's tail only.
struct Writeback {
    file: tempfile::NamedTempFile,
    direct: bool,
    written: u64,
    flushed: u64,
}

impl Writeback {
    /// Turns direct I/O on or off; false if the file system refuses it.
    fn set_direct(&mut self, on: bool) -> bool {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let file = self.file.as_file();
        let done = fcntl(file, FcntlArg::F_GETFL).is_ok_and(|flags| {
            let mut flags = OFlag::from_bits_retain(flags);
            flags.set(OFlag::O_DIRECT, on);
            fcntl(file, FcntlArg::F_SETFL(flags)).is_ok()
        });
        self.direct = on && done;
        done
    }

    /// Schedules writeback of what the page cache holds beyond the last call.
    fn start_writeback(&mut self) {
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
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.direct {
            let aligned = (buf.as_ptr() as usize | buf.len() | self.written as usize).is_multiple_of(ALIGN);
            if aligned {
                match self.file.write(buf) {
                    Ok(n) if n.is_multiple_of(ALIGN) => {
                        self.written += n as u64;
                        self.flushed = self.written;
                        return Ok(n);
                    }
                    Ok(n) => {
                        // A short, unaligned write: go on through the page cache.
                        self.written += n as u64;
                        self.flushed = self.written;
                        self.set_direct(false);
                        return Ok(n);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(e),
                }
            }
            // Unaligned bytes (a blob's tail) or a device with stricter rules.
            if !self.set_direct(false) {
                return Err(io::Error::other("cannot turn direct I/O off"));
            }
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Hands the full chunk on, starting the threads for the first one.
    fn pass_chunk(&mut self) -> io::Result<()> {
        match self.sink.take() {
            Some(Sink::Here(mut hasher, mut file)) => {
                file.set_direct(true);
                let (full, to_hash) = mpsc::sync_channel::<Chunk>(QUEUED);
                let (hashed, to_write) = mpsc::sync_channel::<Chunk>(QUEUED);
                let (recycle, empty) = mpsc::channel();
                let hashing = thread::Builder::new().name("blob-hash".into()).spawn(move || {
                    for chunk in to_hash {
                        hasher.write_all(chunk.filled()).expect("hashing into io::sink cannot fail");
                        if hashed.send(chunk).is_err() {
                            break; // the writing thread failed; its error is reported
                        }
                    }
                    hasher
                })?;
                let writing = thread::Builder::new().name("blob-write".into()).spawn(move || {
                    for chunk in to_write {
                        file.write_all(chunk.filled())?;
                        // The producer may have stopped taking chunks back; that is no error.
                        let _ = recycle.send(chunk);
                    }
                    Ok(file)
                })?;
                self.sink = Some(Sink::Threads { full, empty, hashing, writing });
                self.pass_chunk()
            }
            Some(Sink::Threads { full, empty, hashing, writing }) => {
                let mut next = empty.try_recv().unwrap_or_else(|_| Chunk::new());
                next.len = 0;
                let chunk = std::mem::replace(&mut self.chunk, next);
                if full.send(chunk).is_err() {
                    // A thread stopped on a write error: report it.
                    drop(full);
                    let _ = hashing.join();
                    return Err(join(writing).err().unwrap_or_else(|| io::Error::other("blob writer thread stopped")));
                }
                self.sink = Some(Sink::Threads { full, empty, hashing, writing });
                Ok(())
            }
            None => Err(io::Error::other("blob writer already finished")),
        }
    }

    /// Writes what is left and waits for the threads.
    fn finish_sink(&mut self) -> io::Result<(Hashing, Writeback)> {
        let (mut hasher, mut file) = match self.sink.take() {
            Some(Sink::Here(hasher, file)) => (hasher, file),
            Some(Sink::Threads { full, hashing, writing, .. }) => {
                drop(full);
                let hasher = hashing.join().map_err(|_| io::Error::other("blob hashing thread panicked"))?;
                (hasher, join(writing)?)
            }
            None => return Err(io::Error::other("blob writer already finished")),
        };
        hasher.write_all(self.chunk.filled())?;
        file.write_all(self.chunk.filled())?;
        Ok((hasher, file))
    }

    /// Flushes, fsyncs and moves the blob into place.
    /// With `expected`, a different digest is an error and nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<StoredBlob> {
        let tmp_dir = self.store.tmp_dir();
        let (hasher, file) = self.finish_sink().map_err(io_err("write blob in", &tmp_dir))?;
        let (digest, size, _) = hasher.finish();
        let tmp = file.file;
        if let Some(expected) = expected
            && expected != &digest
        {
            return Err(StoreError::Corrupt { expected: expected.clone(), actual: digest });
        }
        let path = self.store.blob_path(&digest);
        let added = !path.exists();
        if added {
            tmp.as_file().sync_all().map_err(io_err("fsync", tmp.path()))?;
            tmp.persist(&path).map_err(|e| StoreError::Io { action: "rename into place", path: path.clone(), source: e.error })?;
        }
        Ok(StoredBlob { digest, size, added })
    }
}

fn join(writing: JoinHandle<io::Result<Writeback>>) -> io::Result<Writeback> {
    writing.join().unwrap_or_else(|_| Err(io::Error::other("blob writing thread panicked")))
}

impl Drop for BlobWriter {
    /// Waits for the threads, so that the temp file is gone on return.
    fn drop(&mut self) {
        if let Some(Sink::Threads { full, hashing, writing, .. }) = self.sink.take() {
            drop(full);
            let _ = hashing.join();
            let _ = writing.join();
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.len == CHUNK {
            self.pass_chunk()?;
        }
        let start = self.chunk.len;
        let n = buf.len().min(CHUNK - start);
        self.chunk.buffer()[start..start + n].copy_from_slice(&buf[..n]);
        self.chunk.len += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ from chunk to chunk, so a misplaced chunk changes the digest.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        (dir, store)
    }

    fn leftovers(store: &Store) -> usize {
        fs::read_dir(store.tmp_dir()).expect("tmp dir").count()
    }

    #[test]
    fn a_blob_of_several_chunks_and_a_ragged_tail_is_stored_whole() {
        let (_dir, store) = temp_store();
        let data = pattern(3 * CHUNK + 12_345);
        let mut writer = store.blob_writer().expect("writer");
        // Odd-sized writes cross chunk boundaries at unaligned points.
        for piece in data.chunks(100_003) {
            writer.write_all(piece).expect("write");
        }
        let blob = writer.commit(None).expect("commit");
        assert_eq!(blob.digest, Digest::of(&data));
        assert_eq!(blob.size, data.len() as u64);
        assert!(blob.added);
        assert_eq!(fs::read(store.blob_path(&blob.digest)).expect("read blob"), data);
        assert_eq!(leftovers(&store), 0);
    }

    #[test]
    fn storing_the_same_large_blob_again_adds_nothing() {
        let (_dir, store) = temp_store();
        let data = pattern(2 * CHUNK);
        for added in [true, false] {
            let mut writer = store.blob_writer().expect("writer");
            writer.write_all(&data).expect("write");
            assert_eq!(writer.commit(None).expect("commit").added, added);
        }
        assert_eq!(leftovers(&store), 0);
    }

    #[test]
    fn a_wrong_expected_digest_or_a_dropped_writer_leaves_nothing() {
        let (_dir, store) = temp_store();
        let data = pattern(2 * CHUNK + 1);
        let mut writer = store.blob_writer().expect("writer");
        writer.write_all(&data).expect("write");
        let wrong = Digest::of(b"something else");
        assert!(matches!(writer.commit(Some(&wrong)), Err(StoreError::Corrupt { .. })));
        assert!(!store.has_blob(&Digest::of(&data)));

        let mut writer = store.blob_writer().expect("writer");
        writer.write_all(&data).expect("write");
        drop(writer);
        assert_eq!(leftovers(&store), 0);
        assert!(!store.has_blob(&Digest::of(&data)));
    }
}
