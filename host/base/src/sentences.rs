//! Sentences cut from a text that arrives in pieces (a chat answer as it streams), for speech
//! prefetch (`compat-protocols.md` §4.2). The accelerator's clients hear where it cuts, so its
//! rules are kept:
//! - a sentence ends at `。！？…!?.` once it is at least `MIN_SENTENCE` long, or at another
//!   break (`，、；：,;:"'` or `——`) once it is at least `MIN_CLAUSE` long;
//! - its length counts ASCII letters and digits 1 and other characters 2; punctuation and
//!   spaces are not counted;
//! - a cut at the very end of the text received so far waits for more text (it might go on);
//!   the rest is flushed at the end; newlines are dropped (a space stays between words of a
//!   spaced script).
//!
//! Done better where the accelerator failed: a `.` followed by a letter or digit ends nothing
//! (`3.14`, `example.com`, `v1.2`), a run of end marks (`?!`, `……`, `...`) and the closing
//! quotes and brackets after it stay with their sentence, and a text without any break is cut
//! at a space (else anywhere) once it is `MAX_SENTENCE` long, so the buffer is bounded.
//!
//! Invariant: the sentences joined are the text without its newlines and with the spaces
//! between sentences trimmed, whatever pieces it arrived in (tests below).

/// The shortest sentence cut at an end mark, and at another break.
pub const MIN_SENTENCE: usize = 5;
pub const MIN_CLAUSE: usize = 40;
/// The longest sentence, by length and by characters: cut even without a break.
pub const MAX_SENTENCE: usize = 400;
pub const MAX_SENTENCE_CHARS: usize = 600;

#[derive(Debug, Default)]
pub struct Splitter {
    pending: String,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Takes the next piece of text; returns the sentences it completed.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        for c in piece.chars() {
            if c == '\n' || c == '\r' {
                // Dropped; between words of a spaced script, a space.
                if self.pending.chars().next_back().is_some_and(|l| l.is_ascii() && !l.is_ascii_whitespace()) {
                    self.pending.push(' ');
                }
                continue;
            }
            self.pending.push(c);
        }
        self.cut()
    }

    /// The text ended: the sentences left, the last one whatever its length.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = self.cut();
        let rest = std::mem::take(&mut self.pending);
        if let Some(s) = speakable(&rest) {
            out.push(s);
        }
        out
    }

    fn cut(&mut self) -> Vec<String> {
        // One pass over what is pending: each sentence is scanned once.
        let chars: Vec<(usize, char)> = self.pending.char_indices().collect();
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = next_cut(&chars, start) {
            let to = chars.get(end).map_or(self.pending.len(), |&(at, _)| at);
            if let Some(s) = speakable(&self.pending[chars[start].0..to]) {
                out.push(s);
            }
            start = end;
        }
        let done = chars.get(start).map_or(self.pending.len(), |&(at, _)| at);
        self.pending.drain(..done);
        out
    }
}

/// A sentence as it is spoken: trimmed, `None` when nothing in it is said.
fn speakable(s: &str) -> Option<String> {
    let s = s.trim();
    (s.chars().any(|c| weight(c) > 0)).then(|| s.to_string())
}

fn weight(c: char) -> usize {
    if c.is_ascii_alphanumeric() {
        1
    } else if c.is_whitespace() || is_punctuation(c) {
        0
    } else {
        2
    }
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32,
            0x2010..=0x205F | 0x3000..=0x303F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40 | 0xFF5B..=0xFF65)
}

fn is_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '…' | '!' | '?' | '.')
}

fn is_break(c: char) -> bool {
    matches!(c, '，' | '、' | '；' | '：' | ',' | ';' | ':' | '"' | '\'')
}

/// What may follow an end mark and still belong to its sentence.
fn is_closer(c: char) -> bool {
    is_end(c) || matches!(c, '”' | '’' | '"' | '\'' | '」' | '』' | '）' | ')' | '】' | '》')
}

/// Where the sentence starting at `chars[start]` ends (the index of the first character after
/// it), if it is known yet.
fn next_cut(chars: &[(usize, char)], start: usize) -> Option<usize> {
    let mut length = 0;
    let mut last_space = None;
    for i in start..chars.len() {
        let (_, c) = chars[i];
        length += weight(c);
        let next = chars.get(i + 1).map(|&(_, n)| n);
        let cut_after = if is_end(c) && length >= MIN_SENTENCE {
            // A dot before a letter or digit is inside a number, a name or an address.
            if c == '.' && next.is_some_and(|n| n.is_alphanumeric()) {
                None
            } else {
                let mut j = i + 1;
                while chars.get(j).is_some_and(|&(_, n)| is_closer(n)) {
                    j += 1;
                }
                Some(j)
            }
        } else if length >= MIN_CLAUSE && (is_break(c) || (c == '—' && next == Some('—'))) {
            Some(if c == '—' { i + 2 } else { i + 1 })
        } else {
            None
        };
        if let Some(j) = cut_after {
            // At the very end of what arrived: it might go on (the end flushes it).
            return (j < chars.len()).then_some(j);
        }
        if c.is_whitespace() {
            last_space = Some(i);
        }
        // Bounded whatever it holds (punctuation and spaces count no length).
        if length >= MAX_SENTENCE || i + 1 - start >= MAX_SENTENCE_CHARS {
            return Some(last_space.filter(|&s| s > start).unwrap_or(i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in(text: &str, piece_chars: usize) -> Vec<String> {
        let mut s = Splitter::new();
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(piece_chars) {
            out.extend(s.push(&piece.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    fn split(text: &str) -> Vec<String> {
        let whole = split_in(text, text.chars().count().max(1));
        for n in [1, 2, 3, 7] {
            assert_eq!(split_in(text, n), whole, "in pieces of {n} characters: {text}");
        }
        whole
    }

    #[test]
    fn sentences_end_at_end_marks_once_long_enough() {
        assert_eq!(split("今天天气很好。我们去公园吧！"), ["今天天气很好。", "我们去公园吧！"]);
        // Two CJK characters are 4: too short to stand alone.
        assert_eq!(split("你好。今天天气很好！"), ["你好。今天天气很好！"]);
        assert_eq!(split("Hello there. How are you?"), ["Hello there.", "How are you?"]);
    }

    #[test]
    fn numbers_addresses_and_runs_of_marks_stay_whole() {
        assert_eq!(
            split("The value is 3.14 today. Visit example.com now. Version v1.2 ships."),
            ["The value is 3.14 today.", "Visit example.com now.", "Version v1.2 ships."]
        );
        assert_eq!(split("Really?! Yes... Truly."), ["Really?!", "Yes... Truly."], "Yes is too short alone");
        assert_eq!(split("他说：“今天很好。”然后走了。"), ["他说：“今天很好。”", "然后走了。"]);
    }

    #[test]
    fn other_breaks_cut_only_long_clauses() {
        let long = "这是一个非常非常长的句子，它有很多很多的字，一直说一直说，没有停下来的意思，还在继续";
        let parts = split(long);
        assert!(parts.len() > 1, "{parts:?}");
        assert!(parts[0].ends_with('，'), "{parts:?}");
        assert_eq!(parts.concat(), long);
        assert_eq!(split("a, b, c, d."), ["a, b, c, d."], "short clauses are not cut");
        let dash = "This clause runs long enough to be cut at the dash——and then it goes on";
        assert_eq!(split(dash), ["This clause runs long enough to be cut at the dash——", "and then it goes on"]);
    }

    #[test]
    fn a_mark_at_the_end_of_what_arrived_waits_for_more() {
        let mut s = Splitter::new();
        assert!(s.push("The value is 3.").is_empty(), "it might be 3.14");
        assert_eq!(s.push("14. Next"), ["The value is 3.14."]);
        assert_eq!(s.finish(), ["Next"]);
    }

    #[test]
    fn newlines_are_dropped_and_a_text_without_breaks_is_still_cut() {
        assert_eq!(split("First line\nis here. Second\r\nline."), ["First line is here.", "Second line."]);
        assert_eq!(split("第一行\n第二行。"), ["第一行第二行。"]);
        let words = "word ".repeat(200);
        let parts = split(&words);
        assert!(parts.len() >= 2, "{parts:?}");
        assert_eq!(parts.join(" "), words.trim(), "cut at spaces, nothing lost");
        assert!(split("  ...  ").is_empty(), "nothing to say");
        // Punctuation and spaces count no length, yet bound the sentence too.
        let marks = ", ".repeat(1_000);
        let mut s = Splitter::new();
        assert!(s.push(&marks).is_empty(), "nothing said");
        assert!(s.pending.len() < 2 * MAX_SENTENCE_CHARS, "the buffer stays bounded");
        // A cut by length that ends exactly where the text received so far ends: said once.
        let unbroken = "汉".repeat(450);
        let parts = split(&unbroken);
        assert_eq!(parts.concat(), unbroken, "{parts:?}");
        let letters = "a".repeat(1_000);
        assert_eq!(split(&letters).concat(), letters);
    }
}
