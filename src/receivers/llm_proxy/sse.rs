//! An incremental, bounded Server-Sent Events parser: fed the stream's
//! chunks as they pass through, it hands over each complete event's `data`.
//! Chunks may split lines and `\r\n` anywhere. An event larger than the
//! bound is skipped (counted), never buffered whole.

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The current event grew beyond `max_event_bytes`: drop it at its end.
    oversized: bool,
    /// The current line is beyond the bound: ignore it up to its end.
    line_overflow: bool,
    /// The previous chunk ended in `\r` (a following `\n` belongs to it).
    after_cr: bool,
    max_event_bytes: usize,
    /// Events skipped because they exceeded the bound.
    pub skipped_events: u32,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            oversized: false,
            line_overflow: false,
            after_cr: false,
            max_event_bytes,
            skipped_events: 0,
        }
    }

    /// Consumes `bytes`, calling `on_data` with the data of every event
    /// that completes in them.
    pub fn feed(&mut self, mut bytes: &[u8], on_data: &mut impl FnMut(&[u8])) {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_line_bytes(&bytes[..pos]);
            self.end_line(on_data);
            let crlf = bytes[pos] == b'\r' && bytes.get(pos + 1) == Some(&b'\n');
            if bytes[pos] == b'\r' && pos + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[pos + 1 + usize::from(crlf)..];
        }
        self.push_line_bytes(bytes);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.max_event_bytes {
            // Drop the rest of this line and, at its end, the whole event.
            self.line_overflow = true;
            self.oversized = true;
            self.line.clear();
            self.data.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, on_data: &mut impl FnMut(&[u8])) {
        if self.line_overflow {
            self.line_overflow = false;
            self.line.clear();
            return;
        }
        if self.line.is_empty() {
            // Blank line: the event is complete.
            if self.oversized {
                self.skipped_events = self.skipped_events.saturating_add(1);
            } else if self.has_data {
                on_data(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return;
        }
        if !self.oversized && !self.line.starts_with(b":") {
            let line = &self.line;
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (&line[..], &b""[..]),
            };
            if field == b"data" {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    self.oversized = true;
                    self.data.clear();
                } else {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
            }
        }
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]], max: usize) -> (Vec<String>, u32) {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |d| {
                out.push(String::from_utf8_lossy(d).into_owned())
            });
        }
        (out, parser.skipped_events)
    }

    #[test]
    fn splits_anywhere() {
        let stream = b"data: {\"a\":1}\n\n: comment\n\nevent: x\ndata: line1\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        let whole = events(&[stream], 1024).0;
        assert_eq!(whole, ["{\"a\":1}", "line1\nline2", "[DONE]"]);
        // Every split point, including between \r and \n.
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(events(&[a, b], 1024).0, whole, "split at {split}");
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes, 1024).0, whole);
    }

    #[test]
    fn bare_cr_ends_lines() {
        assert_eq!(events(&[b"data: a\r\rdata: b\r", b"\r"], 64).0, ["a", "b"]);
    }

    #[test]
    fn oversized_events_are_skipped_not_buffered() {
        let big = format!("data: {}\n\ndata: small\n\n", "x".repeat(100));
        let (out, skipped) = events(&[big.as_bytes()], 50);
        assert_eq!(out, ["small"]);
        assert_eq!(skipped, 1);
        // Many data lines adding up beyond the bound.
        let many = format!("{}\ndata: ok\n\n", "data: 0123456789\n".repeat(10));
        let (out, skipped) = events(&[many.as_bytes()], 50);
        assert_eq!(out, ["ok"]);
        assert_eq!(skipped, 1);
        // An oversized line followed by more lines of the same event: the
        // whole event is dropped, and the next one is intact.
        let mixed = format!("data: {}\ndata: tail\n\ndata: next\n\n", "y".repeat(100));
        let (out, skipped) = events(&[mixed.as_bytes()], 50);
        assert_eq!(out, ["next"]);
        assert_eq!(skipped, 1);
    }
}
