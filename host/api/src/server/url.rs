//! Percent-decoding of query strings and path segments: the one copy the admin API, the user
//! routes and plugin routes share. Invalid escapes stay as they are; invalid UTF-8 is replaced.

/// `a=1&b=x%20y` → map (percent-decoded, `+` as space).
pub fn query_params(query: &str) -> std::collections::HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes; `+` is a space in a query (`plus_is_space`), itself in a path.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            (b'+', ..) if plus_is_space => out.push(b' '),
            (b, ..) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_path_segments_decode() {
        let q = query_params("model=gpt-4o%2Dmini&x=a+b&empty=&flag");
        assert_eq!(q["model"], "gpt-4o-mini");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["empty"], "");
        assert_eq!(q["flag"], "");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz%4", true), "%zz%4");
        assert_eq!(decode("gemini%3Apro+x", false), "gemini:pro+x");
    }
}
