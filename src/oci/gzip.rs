//! gzip on every core, as one gzip member any reader accepts.
//!
//! The input is cut into 1 MiB chunks, each deflated on its own (rayon) at
//! the fast level; every chunk but the last ends with a sync flush, which
//! closes its deflate blocks on a byte boundary, so the chunks laid end to
//! end are one valid deflate stream (what `pigz --independent` writes). The
//! CRC-32 and length are taken over the input as it is read. Memory stays at
//! a few chunks per thread, whatever the layer's size, and the output depends
//! only on the input, never on how many threads compressed it.

use std::io::{self, Read, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

const CHUNK: usize = 1 << 20;

/// The gzip header: deflate, no name, no mtime (so the output is reproducible), unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Compresses all of `input` into `output` as gzip; returns the input's length.
pub fn compress(mut input: impl Read, mut output: impl Write) -> io::Result<u64> {
    output.write_all(&HEADER)?;
    let mut crc = crc32fast::Hasher::new();
    let mut length: u64 = 0;
    let batch = rayon::current_num_threads().max(1) * 2;
    // One chunk is read ahead, so the last one is known (it alone is finished rather than flushed).
    let mut ahead = read_chunk(&mut input)?;
    loop {
        let mut chunks = Vec::with_capacity(batch);
        let mut last = false;
        while chunks.len() < batch && !last {
            let next = read_chunk(&mut input)?;
            last = next.is_empty();
            chunks.push(std::mem::replace(&mut ahead, next));
        }
        for chunk in &chunks {
            crc.update(chunk);
            length += chunk.len() as u64;
        }
        let count = chunks.len();
        let deflated: Vec<io::Result<Vec<u8>>> =
            chunks.par_iter().enumerate().map(|(i, chunk)| deflate(chunk, last && i + 1 == count)).collect();
        for block in deflated {
            output.write_all(&block?)?;
        }
        if last {
            break;
        }
    }
    output.write_all(&crc.finalize().to_le_bytes())?;
    // ISIZE is the length modulo 2^32, as RFC 1952 defines it.
    output.write_all(&(length as u32).to_le_bytes())?;
    Ok(length)
}

/// Up to `CHUNK` bytes; empty at the end of the input.
fn read_chunk(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(CHUNK);
    input.take(CHUNK as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// Raw deflate of one chunk: finished if it is the last, else closed with a sync flush.
fn deflate(chunk: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::fast(), false);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut out = Vec::with_capacity(chunk.len() / 2 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress.compress_vec(&chunk[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete once all input is in and the output did not fill up.
            _ if !last && compress.total_in() as usize == chunk.len() && room_left => return Ok(out),
            _ => out.reserve(out.capacity().max(64 << 10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        // Compressible but not trivially: a counter mixed with a slow pattern.
        (0..len).map(|i| ((i / 7) as u8) ^ ((i % 251) as u8)).collect()
    }

    #[test]
    fn output_is_one_gzip_member_of_the_input_at_every_size() {
        for len in [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let input = data(len);
            let mut gz = Vec::new();
            assert_eq!(compress(input.as_slice(), &mut gz).expect("compress"), len as u64);
            // A single-member reader stops after the first member: it must see everything.
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut back).expect("gunzip");
            assert!(back == input, "round trip of {len} bytes");
            assert!(len < 1000 || gz.len() < len, "{len} bytes did not shrink: {}", gz.len());
        }
    }

    #[test]
    fn output_does_not_depend_on_the_number_of_threads() {
        let input = data(3 * CHUNK + 99);
        let with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let mut gz = Vec::new();
                compress(input.as_slice(), &mut gz).expect("compress");
                gz
            })
        };
        assert!(with(1) == with(3));
    }
}
