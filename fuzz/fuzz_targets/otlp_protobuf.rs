//! OTLP protobuf as both receivers take it: the walk over the bytes that
//! counts items and finds too-deep values before decoding, the decoder for
//! each signal (too-deep values blanked), then (for traces) the genai
//! recogniser and turn assembly on whatever decodes.
#![no_main]

use agent_immune::pipeline::consumer::Signal;
use agent_immune::receivers::otlp::config::OtlpReceiverConfig;
use agent_immune::receivers::otlp::{decode, protowalk};
use agent_immune_fuzz::{check_detection, check_walk_agrees};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// The receiver's default `max_attribute_depth`, read once.
static DEPTH: LazyLock<u32> = LazyLock::new(|| OtlpReceiverConfig::default().max_attribute_depth);

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    for signal in Signal::ALL {
        // What the walk refuses never reaches the decoder (a 400).
        let Ok(shape) = protowalk::shape(signal, data, *DEPTH) else {
            continue;
        };
        match decode::from_protobuf(signal, bytes.clone(), &shape.too_deep) {
            Ok(received) => {
                assert_eq!(
                    shape.items, received.items,
                    "the walk counts the items the decoder finds"
                );
                assert_eq!(
                    received.protobuf, bytes,
                    "protobuf is forwarded as received"
                );
                check_walk_agrees(&received);
                if let Some(request) = &received.traces {
                    check_detection(request, received.items);
                }
            }
            Err(e) => assert!(!e.client_message.is_empty() && !e.log_message.is_empty()),
        }
    }
});
