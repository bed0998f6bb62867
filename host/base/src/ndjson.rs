//! NDJSON framing: one JSON value per line. The host splits an upstream stream into lines with
//! this splitter and the SDK's harness does the same, so plugins see identical input.
//!
//! Invariants: a line is complete only at its `\n` (a trailing `\r` is dropped); blank lines are
//! dropped; a line longer than `MAX_LINE_BYTES` is never buffered whole (the splitter reports an
//! overflow and keeps nothing); invalid UTF-8 is replaced, never a panic.

/// The longest line kept, as the SSE parser's longest event.
pub const MAX_LINE_BYTES: usize = crate::sse::MAX_EVENT_BYTES;

#[derive(Debug, Default)]
pub struct Splitter {
    partial: Vec<u8>,
    overflowed: bool,
}

impl Splitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a line outgrew `MAX_LINE_BYTES`; the stream should be ended.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds one network chunk; completed lines are pushed to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<String>) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&chunk[..nl]);
            self.take_line(out);
            chunk = &chunk[nl + 1..];
        }
        if self.partial.len() + chunk.len() > MAX_LINE_BYTES {
            self.overflowed = true;
            self.partial.clear();
            return;
        }
        self.partial.extend_from_slice(chunk);
    }

    /// The end of the stream: a last line without its `\n` still counts.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        self.take_line(out);
    }

    fn take_line(&mut self, out: &mut Vec<String>) {
        if self.partial.len() > MAX_LINE_BYTES {
            self.overflowed = true;
        } else {
            let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(String::from_utf8_lossy(line).into_owned());
            }
        }
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], piece: usize) -> Vec<String> {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        for part in input.chunks(piece) {
            s.feed(part, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_the_same_whatever_the_chunk_boundaries() {
        let input = b"{\"a\":1}\r\n\n{\"b\":2}\n  \n{\"c\":3}";
        for piece in [1, 2, 7, 1000] {
            assert_eq!(split(input, piece), vec![r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#], "piece {piece}");
        }
    }

    #[test]
    fn an_endless_line_is_refused_not_buffered() {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..5 {
            s.feed(&block, &mut out);
        }
        assert!(s.overflowed());
        assert!(out.is_empty());
        assert!(s.partial.len() <= MAX_LINE_BYTES);
    }
}
