//! OTLP protobuf as both receivers take it: the byte walk that counts items
//! before decoding, the decoder for each signal, then (for traces) the
//! genai recogniser and turn assembly on whatever decodes.
#![no_main]

use agent_immune::pipeline::consumer::Signal;
use agent_immune::receivers::otlp::decode;
use agent_immune_fuzz::{check_detection, check_walk_agrees};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    for signal in Signal::ALL {
        match decode::from_protobuf(signal, bytes.clone()) {
            Ok(received) => {
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
