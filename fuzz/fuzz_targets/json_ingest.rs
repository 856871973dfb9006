//! `POST /api/v1/ingest`: one JSON object or an array of them into vitals.
//! A batch is all or nothing; what is accepted is within every bound the
//! parser promises; a refusal is a 400 or 413 with a message.
#![no_main]

use agent_immune::api::ingest::parse_batch;
use agent_immune::immune::core::MAX_AGENT_ID_LEN;
use agent_immune_fuzz::{NOW, check_vitals};
use libfuzzer_sys::fuzz_target;

const MAX_BATCH: usize = 8;

fuzz_target!(|data: &[u8]| {
    let mut n = 0u64;
    let mut fresh_ids = || {
        n += 1;
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&n.to_be_bytes());
        (trace, n.to_be_bytes())
    };
    match parse_batch(data, MAX_BATCH, NOW, &mut fresh_ids) {
        Ok(batch) => {
            assert!(!batch.is_empty() && batch.len() <= MAX_BATCH);
            for v in &batch {
                check_vitals(v);
                assert!(!v.agent_id.trim().is_empty());
                assert!(v.agent_id.len() <= MAX_AGENT_ID_LEN);
                assert!(!v.agent_id.chars().any(char::is_control));
                assert!(v.latency_ms <= 86_400_000.0);
            }
        }
        Err(e) => {
            assert!(
                e.status == http::StatusCode::BAD_REQUEST
                    || e.status == http::StatusCode::PAYLOAD_TOO_LARGE,
                "{e:?}"
            );
            assert!(!e.message.is_empty());
        }
    }
});
