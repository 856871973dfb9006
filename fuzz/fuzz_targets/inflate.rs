//! The OTLP/HTTP request-body inflate path. Byte 0 picks the encoding, bytes
//! 1-2 the size cap; the rest is the body. The output never passes the cap
//! (not even in capacity), and the cap is exact: the same body inflates
//! under a cap of its inflated size and is refused one byte below it.
#![no_main]

use agent_immune::receivers::otlp::inflate::{ContentEncoding, InflateError, inflate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, cap_hi, cap_lo, body @ ..] = data else {
        return;
    };
    let encoding = match selector % 3 {
        0 => ContentEncoding::Gzip,
        1 => ContentEncoding::Deflate,
        _ => ContentEncoding::Identity,
    };
    // Up to 1 MiB, in 16-byte steps: small enough to be hit by a few bytes
    // of a compression bomb.
    let limit = usize::from(u16::from_be_bytes([*cap_hi, *cap_lo])) * 16;
    match inflate(encoding, body, limit) {
        Ok(out) => {
            assert!(out.len() <= limit, "{} > {limit}", out.len());
            assert!(
                out.capacity() <= limit,
                "capacity {} > {limit}",
                out.capacity()
            );
            assert_eq!(inflate(encoding, body, out.len()).as_deref(), Ok(&out[..]));
            if !out.is_empty() {
                let below = out.len() - 1;
                assert_eq!(
                    inflate(encoding, body, below),
                    Err(InflateError::TooLarge { limit: below })
                );
            }
            if encoding == ContentEncoding::Identity {
                assert_eq!(out, body);
            }
        }
        Err(InflateError::TooLarge { limit: l }) => assert_eq!(l, limit),
        Err(InflateError::Invalid { reason, .. }) => assert!(!reason.is_empty()),
    }
});
