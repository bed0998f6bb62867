//! Server-sent events: an incremental parser (bytes in, complete events out) and a writer.
//!
//! The host frames upstream streams with this parser and the test harness uses the same code,
//! so a plugin sees identical events in unit tests and in production. It follows the WHATWG
//! rules that matter for vendor streams: LF, CRLF or CR line ends; `:` comment lines ignored;
//! several `data:` lines joined by `\n`; one optional space after the colon; an event is
//! dispatched at a blank line. A chunk may end anywhere, even inside a CRLF pair.

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// The largest line or event the parser holds; a stream with a larger one is broken (or
/// hostile) and is refused rather than buffered without end.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// Incremental SSE parser.
#[derive(Default)]
pub struct Parser {
    /// A line or an event outgrew `MAX_EVENT_BYTES`: the stream must be ended.
    overflow: bool,
    /// Bytes of an incomplete line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` of the next chunk belongs to it.
    after_cr: bool,
    current: Event,
    has_data: bool,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a line or an event exceeded `MAX_EVENT_BYTES`; nothing more is parsed.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Feeds one network chunk, appending the events it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) {
        if self.overflow {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) {
            let (head, rest) = chunk.split_at(pos);
            let is_cr = rest[0] == b'\r';
            chunk = &rest[1..];
            if is_cr {
                if chunk.is_empty() {
                    self.after_cr = true;
                } else if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                }
            }
            if self.line.is_empty() {
                self.line_done(head, out);
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
                self.line = line;
                self.line.clear();
            }
        }
        self.line.extend_from_slice(chunk);
        if self.line.len() > MAX_EVENT_BYTES || self.current.data.len() > MAX_EVENT_BYTES {
            self.overflow = true;
            self.line = Vec::new();
            self.current = Event::default();
        }
    }

    /// Ends the stream: an event without its closing blank line is still delivered, since
    /// several vendors end their last event with a single newline.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.dispatch(out);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // Valid UTF-8 (every vendor's) is checked at the standard library's pace; the lossy
        // reading, a byte at a time, only for what is not.
        let value = match std::str::from_utf8(value) {
            Ok(v) => std::borrow::Cow::Borrowed(v),
            Err(_) => String::from_utf8_lossy(value),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.current.event = Some(value.into_owned()),
            b"id" => self.current.id = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.has_data {
            out.push(std::mem::take(&mut self.current));
        } else {
            self.current = Event::default();
        }
        self.has_data = false;
    }
}

/// Appends one event in wire form (`event:`, `id:`, one `data:` line per line, blank line).
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    if let Some(i) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(i.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            p.feed(c, &mut out);
        }
        p.finish(&mut out);
        out
    }

    #[test]
    fn a_line_or_event_beyond_the_cap_stops_the_parser_instead_of_growing() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        p.feed(b"data: ", &mut out);
        for _ in 0..5 {
            p.feed(&chunk, &mut out);
        }
        assert!(p.overflowed());
        p.feed(b"\n\ndata: after\n\n", &mut out);
        assert!(out.is_empty(), "nothing is parsed after an overflow");
        // Many data lines that each fit, but together exceed the cap.
        let mut p = Parser::new();
        let line = format!("data: {}\n", "y".repeat(1 << 20));
        for _ in 0..5 {
            p.feed(line.as_bytes(), &mut out);
        }
        assert!(p.overflowed() && out.is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_and_the_rest_kept() {
        let input = b"data: a\xffb\xe2\x82\n\nevent: \xc3\ndata: \xe2\x82\xac\n\n";
        let want = vec![
            Event { event: None, data: "a\u{FFFD}b\u{FFFD}".into(), id: None },
            Event { event: Some("\u{FFFD}".into()), data: "\u{20AC}".into(), id: None },
        ];
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), want, "piece size {piece}");
        }
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input = b": comment\r\nevent: delta\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata:  y\n\nid: 7\rdata:z\r\r";
        let want = vec![
            Event { event: Some("delta".into()), data: "{\"a\":1}".into(), id: None },
            Event { event: None, data: "x\n y".into(), id: None },
            Event { event: None, data: "z".into(), id: Some("7".into()) },
        ];
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), want, "piece size {piece}");
        }
    }

    #[test]
    fn last_event_without_blank_line_is_delivered() {
        assert_eq!(parse_in_pieces(b"data: end\n", 100)[0].data, "end");
        assert_eq!(parse_in_pieces(b"data: end", 100)[0].data, "end");
    }

    #[test]
    fn event_without_data_is_dropped() {
        assert!(parse_in_pieces(b"event: ping\n\n", 3).is_empty());
    }

    #[test]
    fn writer_round_trips() {
        let mut buf = Vec::new();
        write_event(&mut buf, Some("message_start"), None, "line1\nline2");
        let got = parse_in_pieces(&buf, 4);
        assert_eq!(got[0].event.as_deref(), Some("message_start"));
        assert_eq!(got[0].data, "line1\nline2");
    }
}
