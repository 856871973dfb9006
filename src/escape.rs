//! Externally supplied text in line-oriented output (the console events,
//! the text log): control characters are shown escaped (`\n`, `\u{1b}`),
//! so a name sent by a client can neither start a forged line nor send a
//! terminal escape sequence.

use std::borrow::Cow;
use std::io::Write;

/// `text` with every control character escaped as Rust writes it
/// (`\n`, `\r`, `\t`, `\u{1b}`); borrowed when there is none.
pub fn controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One formatted log record with the control characters inside it escaped:
/// only its final newline and the colour codes (`ESC [ digits ; m`) the
/// formatter itself adds stay raw. The formatter already escapes `ESC` in
/// field values, so a raw `ESC [` here is always its own.
pub fn log_record(record: &[u8]) -> Cow<'_, [u8]> {
    let (body, newline) = match record.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (record, false),
    };
    let is_raw = |i: usize| match body[i] {
        b'\t' => true,
        0x1b => colour_code_len(&body[i..]).is_some(),
        b => !(b < 0x20 || b == 0x7f),
    };
    if (0..body.len()).all(is_raw) {
        return Cow::Borrowed(record);
    }
    let mut out = Vec::with_capacity(record.len() + 16);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == 0x1b
            && let Some(len) = colour_code_len(&body[i..])
        {
            out.extend_from_slice(&body[i..i + len]);
            i += len;
            continue;
        }
        if b != b'\t' && (b < 0x20 || b == 0x7f) {
            out.extend(std::ascii::escape_default(b));
        } else {
            out.push(b);
        }
        i += 1;
    }
    if newline {
        out.push(b'\n');
    }
    Cow::Owned(out)
}

/// Length of the SGR colour sequence (`ESC [ 0-9 ; ... m`) at the start of
/// `bytes`, if one is there.
fn colour_code_len(bytes: &[u8]) -> Option<usize> {
    let rest = bytes.strip_prefix(b"\x1b[")?;
    let params = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b';')
        .count();
    (rest.get(params) == Some(&b'm')).then_some(2 + params + 1)
}

/// Standard error for the text log: each record (the formatter writes one
/// per call) escaped by [`log_record`].
pub struct EscapedStderr;

impl Write for EscapedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&log_record(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_borrowed() {
        assert!(matches!(controls("planner-ü"), Cow::Borrowed("planner-ü")));
        assert_eq!(
            controls("evil\n2099 WARN x\x1b[31m\r"),
            "evil\\n2099 WARN x\\u{1b}[31m\\r"
        );
    }

    #[test]
    fn a_log_record_keeps_its_newline_and_colours_only() {
        let plain = b"2026 INFO agent=a done\n";
        assert!(matches!(log_record(plain), Cow::Borrowed(_)));
        let coloured = b"\x1b[32m INFO\x1b[0m \x1b[2mx\x1b[0m=1\n";
        assert_eq!(&*log_record(coloured), coloured);
        let forged = b"WARN agent=evil\n2099 WARN forged\r\x07 \x1b]0;title\n";
        assert_eq!(
            &*log_record(forged),
            b"WARN agent=evil\\n2099 WARN forged\\r\\x07 \\x1b]0;title\n"
        );
    }
}
