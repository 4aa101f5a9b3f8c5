//! Layer media types and decompression. The compression actually used is detected from the
//! stream's magic bytes; the media type only has to be one we accept.

use std::io::{self, BufReader, Chain, Cursor, Read};

use crate::error::{Error, Result};

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Errors unless `media_type` is a layer type we can apply.
pub fn check_media_type(media_type: &str) -> Result<()> {
    if ACCEPTED.contains(&media_type) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "unsupported layer media type {media_type:?}"
        )))
    }
}

type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// The uncompressed view of a layer stream.
pub(crate) enum Decompressed<R: Read> {
    Plain(Sniffed<R>),
    Gzip(Box<flate2::read::MultiGzDecoder<Sniffed<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Sniffed<R>>>>),
}

impl<R: Read> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressed::Plain(r) => r.read(buf),
            Decompressed::Gzip(r) => r.read(buf),
            Decompressed::Zstd(r) => r.read(buf),
        }
    }
}

/// Checks the media type, sniffs the magic bytes and wraps `r` in the right decoder.
pub(crate) fn open<R: Read>(mut r: R, media_type: &str) -> Result<Decompressed<R>> {
    check_media_type(media_type)?;
    let mut head = Vec::with_capacity(4);
    // Read up to 4 bytes; short reads are legal, so loop until we have them or hit EOF.
    while head.len() < 4 {
        let mut byte = [0u8; 4];
        let want = 4 - head.len();
        let n = r.read(&mut byte[..want]).map_err(Error::reading)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let is_gzip = head.starts_with(GZIP_MAGIC);
    let is_zstd = head.starts_with(ZSTD_MAGIC);
    let stream = Cursor::new(head).chain(r);
    Ok(if is_gzip {
        Decompressed::Gzip(Box::new(flate2::read::MultiGzDecoder::new(stream)))
    } else if is_zstd {
        let decoder = zstd::stream::read::Decoder::new(stream)
            .map_err(|e| Error::InvalidArgument(format!("zstd stream: {e}")))?;
        Decompressed::Zstd(Box::new(decoder))
    } else {
        Decompressed::Plain(stream)
    })
}

/// Public, boxed form of [`open`] for callers that want the raw tar stream.
pub fn decompress<'a>(
    r: Box<dyn Read + Send + 'a>,
    media_type: &str,
) -> Result<Box<dyn Read + Send + 'a>> {
    Ok(Box::new(open(r, media_type)?))
}
