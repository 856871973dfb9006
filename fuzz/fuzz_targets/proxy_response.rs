//! The LLM proxy's reading of a response: the bounded SSE parser and the
//! observer of stream events and JSON bodies, through the tee the proxy
//! feeds chunk by chunk. However the stream is cut into chunks, the same
//! events come out.
#![no_main]

use agent_immune::receivers::llm_proxy::sse::SseParser;
use agent_immune::receivers::llm_proxy::tee::Tee;
use libfuzzer_sys::fuzz_target;

/// Small, so events beyond the bound (skipped, never buffered) are reached.
const MAX_EVENT_BYTES: usize = 256;

fn events(chunks: &mut dyn Iterator<Item = &[u8]>) -> (Vec<Vec<u8>>, u32) {
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut |data| {
            assert!(data.len() <= MAX_EVENT_BYTES);
            out.push(data.to_vec());
        });
    }
    (out, parser.skipped_events)
}

fuzz_target!(|data: &[u8]| {
    let whole = events(&mut std::iter::once(data));
    let bytewise = events(&mut data.chunks(1));
    assert_eq!(whole, bytewise, "byte-by-byte feeding changed the events");
    let mut sizes = [1usize, 2, 3, 5, 8, 13].into_iter().cycle();
    let mut rest = data;
    let uneven = events(&mut std::iter::from_fn(|| {
        let n = sizes.next()?.min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        (!chunk.is_empty()).then_some(chunk)
    }));
    assert_eq!(whole, uneven, "uneven chunks changed the events");

    for (content_type, encoding) in [
        ("text/event-stream", None),
        ("application/json", None),
        ("text/event-stream", Some("gzip")),
    ] {
        let mut tee = Tee::new(Some(content_type), encoding);
        for chunk in data.chunks(7) {
            tee.feed(chunk);
        }
        let facts = tee.finish();
        assert!(
            facts
                .model
                .as_ref()
                .is_none_or(|m| m.chars().count() <= 200)
        );
        assert!(
            facts
                .error_type
                .as_ref()
                .is_none_or(|e| e.chars().count() <= 64)
        );
        assert!(facts.usage_known || (facts.input_tokens, facts.output_tokens) == (0, 0));
    }
});
