//! OTLP/JSON as the HTTP receiver takes it: scanned before decoding (too-deep
//! containers found), decoded with OTLP JSON rules and re-encoded to
//! protobuf once; the protobuf handed downstream must decode
//! to the same request and walk to the same count.
#![no_main]

use agent_immune::pipeline::consumer::Signal;
use agent_immune::receivers::otlp::config::OtlpReceiverConfig;
use agent_immune::receivers::otlp::{decode, jsonscan};
use agent_immune_fuzz::{check_detection, check_walk_agrees};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// The receiver's default `max_attribute_depth`, read once.
static DEPTH: LazyLock<u32> = LazyLock::new(|| OtlpReceiverConfig::default().max_attribute_depth);

fuzz_target!(|data: &[u8]| {
    let shape = jsonscan::shape(data, *DEPTH);
    for signal in Signal::ALL {
        match decode::from_json(signal, data, &shape.too_deep) {
            Ok(received) => {
                // Our own encoding: the walk must understand all of it.
                let walked = agent_immune::receivers::otlp::protowalk::count_items(
                    signal,
                    &received.protobuf,
                );
                assert_eq!(walked, Some(received.items));
                check_walk_agrees(&received);
                let again = decode::from_protobuf(signal, received.protobuf.clone(), &[])
                    .expect("what from_json encoded decodes");
                assert_eq!(again.items, received.items);
                assert_eq!(again.traces, received.traces);
                if let Some(request) = &received.traces {
                    check_detection(request, received.items);
                }
            }
            Err(e) => {
                assert!(!e.client_message.is_empty());
                assert!(e.log_message.contains("line "), "{}", e.log_message);
            }
        }
    }
});
