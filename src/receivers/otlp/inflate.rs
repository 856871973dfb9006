//! Request-body decompression with a hard cap on the inflated size: a
//! compressed body of 1 MiB can inflate to 1 GiB, and the cap must stop it
//! before it is allocated, not after.

use flate2::read::{MultiGzDecoder, ZlibDecoder};
use std::io::Read;

/// `Content-Encoding` of an OTLP/HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    /// HTTP "deflate" is the zlib format (RFC 9110).
    Deflate,
}

impl ContentEncoding {
    /// Parses the header; an unsupported coding is an error naming it.
    pub fn from_header(value: Option<&http::HeaderValue>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(Self::Identity);
        };
        let text = value.to_str().unwrap_or("").trim();
        if text.is_empty() || text.eq_ignore_ascii_case("identity") {
            Ok(Self::Identity)
        } else if text.eq_ignore_ascii_case("gzip") || text.eq_ignore_ascii_case("x-gzip") {
            Ok(Self::Gzip)
        } else if text.eq_ignore_ascii_case("deflate") {
            Ok(Self::Deflate)
        } else {
            let shown: String = text.chars().take(40).collect();
            Err(format!(
                "unsupported Content-Encoding {shown:?}; supported: gzip, deflate, identity"
            ))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid {encoding} body: {reason}")]
    Invalid {
        encoding: &'static str,
        reason: String,
    },
}

/// Inflates `compressed`, refusing as soon as the output would pass `limit`.
/// The output buffer never grows past `limit` bytes.
pub fn inflate(
    encoding: ContentEncoding,
    compressed: &[u8],
    limit: usize,
) -> Result<Vec<u8>, InflateError> {
    match encoding {
        ContentEncoding::Identity => {
            if compressed.len() > limit {
                return Err(InflateError::TooLarge { limit });
            }
            Ok(compressed.to_vec())
        }
        // Multi-member: concatenated gzip members are one valid gzip body.
        ContentEncoding::Gzip => read_capped(
            MultiGzDecoder::new(compressed),
            "gzip",
            compressed.len(),
            limit,
        ),
        ContentEncoding::Deflate => read_capped(
            ZlibDecoder::new(compressed),
            "deflate",
            compressed.len(),
            limit,
        ),
    }
}

fn read_capped(
    mut reader: impl Read,
    encoding: &'static str,
    compressed_len: usize,
    limit: usize,
) -> Result<Vec<u8>, InflateError> {
    // OTLP compresses about 5-10x; start there and grow by doubling, capped.
    let mut out: Vec<u8> = Vec::with_capacity(compressed_len.saturating_mul(8).min(limit));
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(InflateError::Invalid {
                    encoding,
                    reason: e.to_string(),
                });
            }
        };
        let needed = out.len() + n;
        if needed > limit {
            return Err(InflateError::TooLarge { limit });
        }
        if needed > out.capacity() {
            let target = out.capacity().saturating_mul(2).max(needed).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn gzip_best(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_round_trip() {
        let data = b"hello otlp".repeat(1000);
        assert_eq!(
            inflate(ContentEncoding::Gzip, &gzip(&data), 1 << 20).unwrap(),
            data
        );
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&data).unwrap();
        let deflated = enc.finish().unwrap();
        assert_eq!(
            inflate(ContentEncoding::Deflate, &deflated, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn bomb_is_refused_without_growing_past_the_limit() {
        // 1 GiB of zeros as 1024 gzip members of 1 MiB each (~1 MiB total).
        let member = gzip_best(&vec![0u8; 1 << 20]);
        let bomb = member.repeat(1024);
        assert!(bomb.len() < 2 << 20);
        let limit = 4 << 20;
        assert_eq!(
            inflate(ContentEncoding::Gzip, &bomb, limit),
            Err(InflateError::TooLarge { limit })
        );
        // Exactly at the limit is fine, and the buffer stayed within it.
        let ok = inflate(ContentEncoding::Gzip, &member.repeat(4), limit).unwrap();
        assert_eq!(ok.len(), limit);
        assert!(ok.capacity() <= limit);
    }

    #[test]
    fn corrupt_gzip_names_the_encoding() {
        let mut body = gzip(b"some data that is long enough to matter");
        let n = body.len();
        body.truncate(n - 10);
        let err = inflate(ContentEncoding::Gzip, &body, 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                InflateError::Invalid {
                    encoding: "gzip",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn content_encoding_header() {
        let parse =
            |v: &str| ContentEncoding::from_header(Some(&http::HeaderValue::from_str(v).unwrap()));
        assert_eq!(
            ContentEncoding::from_header(None),
            Ok(ContentEncoding::Identity)
        );
        assert_eq!(parse("GZIP"), Ok(ContentEncoding::Gzip));
        assert_eq!(parse("deflate"), Ok(ContentEncoding::Deflate));
        assert!(parse("br").unwrap_err().contains("\"br\""));
    }
}
