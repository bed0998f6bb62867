//! Text cut to a size (vendor messages and errors are kept bounded, never split inside a
//! character), and text counted as vendors bill it.

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Characters as MiniMax bills them (and the host and plugins reserve them): CJK ideographs,
/// CJK punctuation and full-width forms count 2, every other character 1.
pub fn vendor_characters(text: &str) -> u64 {
    text.chars()
        .map(|c| match c as u32 {
            0x3000..=0x303F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF => 2,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cjk_counts_two() {
        assert_eq!(super::vendor_characters("ab你好，"), 2 + 4 + 2);
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("héllo", 3), "hé");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
