//! The side channel of a proxied response: every chunk that goes to the
//! client is also fed here, decompressed if needed (in small steps, so a
//! compression bomb cannot balloon), and read for vitals: event by event
//! for a stream, or captured up to a bound and parsed at the end for JSON.

use super::response::{ResponseFacts, ResponseObserver};
use super::sse::SseParser;
use flate2::write::{GzDecoder, ZlibDecoder};
use std::io::Write;

/// Largest stream event read for vitals (a Responses `response.completed`
/// event carries the whole output).
pub const MAX_SSE_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Largest non-streamed JSON body read for vitals; beyond it the response
/// still passes through whole, its usage is just unknown.
pub const MAX_JSON_CAPTURE_BYTES: usize = 16 * 1024 * 1024;
/// Compressed bytes inflated per step: deflate expands at most ~1032x, so
/// one step yields at most about 1 MiB.
const INFLATE_STEP: usize = 1024;

enum Decoder {
    Identity,
    Gzip(GzDecoder<Vec<u8>>),
    Deflate(ZlibDecoder<Vec<u8>>),
    /// An encoding the proxy cannot read (it asked for gzip/deflate only).
    Unreadable,
}

enum Reader {
    Sse(SseParser),
    Json {
        captured: Vec<u8>,
        overflow: bool,
    },
    /// Neither JSON nor a stream (audio, files): nothing to read.
    Ignore,
}

pub struct Tee {
    decoder: Decoder,
    reader: Reader,
    observer: ResponseObserver,
    /// Decoding failed part-way: stop reading, keep what was learned.
    broken: bool,
}

impl Tee {
    /// A tee for a response with these `Content-Type` and
    /// `Content-Encoding` header values.
    pub fn new(content_type: Option<&str>, content_encoding: Option<&str>) -> Self {
        let media = content_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let reader = if media == "text/event-stream" {
            Reader::Sse(SseParser::new(MAX_SSE_EVENT_BYTES))
        } else if media.is_empty() || media == "application/json" || media.ends_with("+json") {
            Reader::Json {
                captured: Vec::new(),
                overflow: false,
            }
        } else {
            Reader::Ignore
        };
        let decoder = match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
            None => Decoder::Identity,
            Some(e) if e.is_empty() || e == "identity" => Decoder::Identity,
            Some(e) if e == "gzip" || e == "x-gzip" => Decoder::Gzip(GzDecoder::new(Vec::new())),
            Some(e) if e == "deflate" => Decoder::Deflate(ZlibDecoder::new(Vec::new())),
            Some(_) => Decoder::Unreadable,
        };
        Self {
            decoder,
            reader,
            observer: ResponseObserver::default(),
            broken: false,
        }
    }

    /// Reads one chunk of the body as it was sent to the client.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.broken || matches!(self.reader, Reader::Ignore) {
            return;
        }
        match &mut self.decoder {
            Decoder::Identity => read(&mut self.reader, &mut self.observer, chunk),
            Decoder::Unreadable => self.broken = true,
            Decoder::Gzip(d) => {
                self.broken = !inflate_into(d, chunk, |out| {
                    read(&mut self.reader, &mut self.observer, out)
                });
            }
            Decoder::Deflate(d) => {
                self.broken = !inflate_into(d, chunk, |out| {
                    read(&mut self.reader, &mut self.observer, out)
                });
            }
        }
    }

    /// Parts of the response too large to read for vitals (stream events
    /// beyond [`MAX_SSE_EVENT_BYTES`], a JSON body beyond
    /// [`MAX_JSON_CAPTURE_BYTES`]); they passed through unread.
    pub fn oversized(&self) -> u64 {
        match &self.reader {
            Reader::Sse(parser) => u64::from(parser.skipped_events),
            Reader::Json { overflow, .. } => u64::from(*overflow),
            Reader::Ignore => 0,
        }
    }

    /// The facts learned; a JSON body is parsed here, once complete.
    pub fn finish(mut self) -> ResponseFacts {
        if let Reader::Json { captured, overflow } = &self.reader
            && !*overflow
            && !captured.is_empty()
        {
            self.observer.observe_body(captured);
        }
        self.observer.finish()
    }
}

/// Something `inflate_into` can drive: a flate2 write-side decoder.
trait Inflate: Write {
    fn output(&mut self) -> &mut Vec<u8>;
}

impl Inflate for GzDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl Inflate for ZlibDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

/// Inflates `chunk` step by step, handing each step's output on; false when
/// the data is not valid.
fn inflate_into(
    decoder: &mut impl Inflate,
    chunk: &[u8],
    mut on_output: impl FnMut(&[u8]),
) -> bool {
    for step in chunk.chunks(INFLATE_STEP) {
        if decoder.write_all(step).is_err() || decoder.flush().is_err() {
            return false;
        }
        let output = decoder.output();
        if !output.is_empty() {
            on_output(output);
            output.clear();
        }
    }
    true
}

fn read(reader: &mut Reader, observer: &mut ResponseObserver, bytes: &[u8]) {
    match reader {
        Reader::Sse(parser) => parser.feed(bytes, &mut |data| observer.observe_event(data)),
        Reader::Json { captured, overflow } => {
            if *overflow {
                return;
            }
            if captured.len() + bytes.len() > MAX_JSON_CAPTURE_BYTES {
                *overflow = true;
                *captured = Vec::new();
            } else {
                captured.extend_from_slice(bytes);
            }
        }
        Reader::Ignore => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    #[test]
    fn json_body_in_pieces() {
        let body =
            br#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4},"choices":[]}"#;
        let mut tee = Tee::new(Some("application/json; charset=utf-8"), None);
        for piece in body.chunks(7) {
            tee.feed(piece);
        }
        let facts = tee.finish();
        assert_eq!((facts.input_tokens, facts.output_tokens), (3, 4));
    }

    #[test]
    fn gzipped_json_body() {
        let body = br#"{"model":"m","usage":{"prompt_tokens":30,"completion_tokens":40}}"#;
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(body).unwrap();
        let gz = enc.finish().unwrap();
        let mut tee = Tee::new(Some("application/json"), Some("gzip"));
        for piece in gz.chunks(5) {
            tee.feed(piece);
        }
        let facts = tee.finish();
        assert_eq!((facts.input_tokens, facts.output_tokens), (30, 40));
    }

    #[test]
    fn gzip_bomb_is_not_captured() {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..(MAX_JSON_CAPTURE_BYTES / zeros.len() + 2) {
            enc.write_all(&zeros).unwrap();
        }
        let gz = enc.finish().unwrap();
        let mut tee = Tee::new(Some("application/json"), Some("gzip"));
        tee.feed(&gz);
        assert!(matches!(tee.reader, Reader::Json { overflow: true, .. }));
        assert_eq!(tee.oversized(), 1);
        assert!(!tee.finish().usage_known);
    }

    #[test]
    fn stream_events() {
        let mut tee = Tee::new(Some("text/event-stream"), None);
        tee.feed(b"data: {\"model\":\"m\",\"choices\":[]}\n\ndata: {\"model\":\"m\",\"choices\":[],\"usa");
        tee.feed(b"ge\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        assert_eq!(tee.oversized(), 0);
        let facts = tee.finish();
        assert!(facts.usage_known);
        assert_eq!(facts.output_tokens, 2);
    }

    #[test]
    fn unreadable_encoding_yields_unknown_usage() {
        let mut tee = Tee::new(Some("application/json"), Some("br"));
        tee.feed(b"\x00\x01");
        assert!(!tee.finish().usage_known);
    }
}
