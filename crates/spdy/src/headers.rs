//! Name/value header blocks (SPDY/3 section 2.6.10): marshalling and the per-direction zlib
//! contexts primed with the SPDY/3 dictionary (section 2.6.10.1).

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::Error;

/// A decompressed block larger than this is refused: a few KiB is normal, and zlib can expand
/// a small frame enormously.
const MAX_DECODED_BLOCK: usize = 1 << 20;

/// Length-prefixed words that start the SPDY/3 dictionary, in the spec's order.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's unprefixed tail (status codes, phrases, dates, common values).
const DICT_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414\
415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad \
Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 \
Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, \
Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/\
xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=\
iso-8859-1,utf-,*,enq=0.";

/// The SPDY/3 zlib dictionary (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICT_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICT_TAIL.as_bytes());
        d
    })
}

/// Serializes headers: names lowercased, repeated names joined into one NUL-separated value
/// (the spec forbids a name twice in one block).
pub fn marshal(headers: &[(String, String)]) -> Vec<u8> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(merged.len() as u32).to_be_bytes());
    for (n, v) in &merged {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], Error> {
    if buf.len() < n {
        return Err(Error::Headers(format!("block truncated in {what}")));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u32(buf: &mut &[u8], what: &str) -> Result<usize, Error> {
    let b = take(buf, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Parses a decompressed block; a NUL-separated value becomes one pair per value. Names are
/// lowercased rather than refused, since some peers send canonical-case names.
pub fn unmarshal(mut buf: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let count = take_u32(&mut buf, "pair count")?;
    if count > buf.len() / 8 {
        return Err(Error::Headers(format!(
            "{count} pairs announced in {} bytes",
            buf.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_u32(&mut buf, "name length")?;
        let name = take(&mut buf, n, "name")?;
        if name.is_empty() {
            return Err(Error::Headers("empty header name".into()));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let n = take_u32(&mut buf, "value length")?;
        let value = take(&mut buf, n, "value")?;
        for v in value.split(|b| *b == 0) {
            out.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    if !buf.is_empty() {
        return Err(Error::Headers(format!("{} trailing bytes", buf.len())));
    }
    Ok(out)
}

/// Compression context for header blocks we send (one per session).
pub struct HeaderEncoder {
    z: Compress,
}

impl HeaderEncoder {
    pub fn new() -> Result<Self, Error> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary())
            .map_err(|e| Error::Headers(format!("zlib dictionary: {e}")))?;
        Ok(HeaderEncoder { z })
    }

    /// Appends the compressed block to `out`, sync-flushed so the peer can decode it alone.
    pub fn encode(&mut self, headers: &[(String, String)], out: &mut Vec<u8>) -> Result<(), Error> {
        let raw = marshal(headers);
        let mut input = &raw[..];
        loop {
            out.reserve(raw.len() / 2 + 64);
            let before = self.z.total_in();
            self.z
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| Error::Headers(format!("zlib compress: {e}")))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // The flush is complete once all input is in and zlib left output room unused.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// Decompression context for header blocks we receive (one per session).
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        if block.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_DECODED_BLOCK {
                    return Err(Error::Headers(format!(
                        "decompressed block exceeds {MAX_DECODED_BLOCK} bytes"
                    )));
                }
                out.reserve(out.len());
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let status = match self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(s) => Some(s),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| Error::Headers(format!("zlib dictionary: {e}")))?;
                    None
                }
                Err(e) => return Err(Error::Headers(format!("zlib decompress: {e}"))),
            };
            let used = (self.z.total_in() - in0) as usize;
            let made = (self.z.total_out() - out0) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if status == Some(Status::StreamEnd) {
                return Err(Error::Headers("zlib stream ended inside a session".into()));
            }
            if status.is_some() && used == 0 && made == 0 && out.len() < out.capacity() {
                return Err(Error::Headers("zlib made no progress on the block".into()));
            }
        }
        unmarshal(&out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> (String, String) {
        (n.to_string(), v.to_string())
    }

    #[test]
    fn dictionary_has_spec_length() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn blocks_round_trip_through_one_context_per_direction() {
        let mut enc = HeaderEncoder::new().unwrap();
        let mut dec = HeaderDecoder::default();
        let first = vec![
            h("streamType", "error"),
            h("port", "8080"),
            h("requestid", "0"),
        ];
        let second = vec![
            h("streamtype", "data"),
            h("x", "a"),
            h("x", "b"),
            h("empty", ""),
        ];
        for (block, want) in [
            (
                &first,
                vec![
                    h("streamtype", "error"),
                    h("port", "8080"),
                    h("requestid", "0"),
                ],
            ),
            (&second, second.clone()),
            (
                &first,
                vec![
                    h("streamtype", "error"),
                    h("port", "8080"),
                    h("requestid", "0"),
                ],
            ),
        ] {
            let mut wire = Vec::new();
            enc.encode(block, &mut wire).unwrap();
            assert_eq!(dec.decode(&wire).unwrap(), want);
        }
    }

    #[test]
    fn later_blocks_depend_on_the_shared_context() {
        let mut enc = HeaderEncoder::new().unwrap();
        let mut a = Vec::new();
        enc.encode(&[h("streamtype", "stdout")], &mut a).unwrap();
        let mut b = Vec::new();
        enc.encode(&[h("streamtype", "stdout")], &mut b).unwrap();
        // A fresh decoder cannot start in the middle of a session's zlib stream.
        assert!(HeaderDecoder::default().decode(&b).is_err());
        let mut dec = HeaderDecoder::default();
        dec.decode(&a).unwrap();
        assert_eq!(dec.decode(&b).unwrap(), vec![h("streamtype", "stdout")]);
    }

    #[test]
    fn hand_built_block_decodes_per_spec() {
        // zlib stream with FDICT set and the SPDY/3 dictionary's Adler-32, built with the
        // flate2 primitives directly (independently of HeaderEncoder::encode).
        let raw = b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error";
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).unwrap();
        let mut wire = Vec::with_capacity(256);
        z.compress_vec(raw, &mut wire, FlushCompress::Sync).unwrap();
        // FDICT bit (0x20) in FLG; DICTID is the Adler-32 of the dictionary.
        assert_eq!(wire[1] & 0x20, 0x20);
        let adler = adler32(dictionary());
        assert_eq!(
            u32::from_be_bytes([wire[2], wire[3], wire[4], wire[5]]),
            adler
        );
        let got = HeaderDecoder::default().decode(&wire).unwrap();
        assert_eq!(got, vec![h("streamtype", "error")]);
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn malformed_blocks_are_errors() {
        assert!(unmarshal(b"\0\0\0\x05").is_err());
        assert!(unmarshal(b"\0\0\0\x01\0\0\0\x00\0\0\0\0").is_err());
        assert!(unmarshal(b"\0\0\0\x01\0\0\0\x09abc").is_err());
        assert!(HeaderDecoder::default().decode(b"not zlib at all").is_err());
    }

    #[test]
    fn zip_bomb_is_bounded() {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).unwrap();
        let big = vec![b'a'; 4 << 20];
        let mut wire = Vec::with_capacity(64 << 10);
        z.compress_vec(&big, &mut wire, FlushCompress::Sync)
            .unwrap();
        assert!(wire.len() < 64 << 10);
        let err = HeaderDecoder::default().decode(&wire).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
