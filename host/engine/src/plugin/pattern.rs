//! Route patterns of plugins' native routes: `/v1/videos/{id}`,
//! `/v1beta/models/{model}:generateContent`.
//!
//! A pattern is segments separated by `/`; a segment is a literal, or one `{name}` parameter
//! with an optional literal prefix and suffix. A parameter matches a non-empty part of one
//! segment (never a `/`). Invariants: a pattern that parses has distinct parameter names; a
//! literal segment matches only itself; `overlaps` is conservative (it may say two patterns
//! overlap when no path matches both, never the reverse).

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param { prefix: String, name: String, suffix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern> {
        let Some(rest) = pattern.strip_prefix('/') else { bail!("route '{pattern}' must start with '/'") };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for seg in rest.split('/') {
            match (seg.find('{'), seg.find('}')) {
                (None, None) => {
                    if seg.contains(['?', '#']) {
                        bail!("route '{pattern}' must not contain a query or fragment");
                    }
                    segments.push(Segment::Literal(seg.to_string()))
                }
                (Some(open), Some(close)) if open < close => {
                    let name = &seg[open + 1..close];
                    let (prefix, suffix) = (&seg[..open], &seg[close + 1..]);
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        bail!("route '{pattern}': a parameter name is ASCII letters, digits or '_'");
                    }
                    if suffix.contains(['{', '}']) || prefix.contains(['{', '}']) {
                        bail!("route '{pattern}': at most one parameter per segment");
                    }
                    if names.contains(&name) {
                        bail!("route '{pattern}': the parameter '{name}' appears twice");
                    }
                    names.push(name);
                    segments.push(Segment::Param {
                        prefix: prefix.to_string(),
                        name: name.to_string(),
                        suffix: suffix.to_string(),
                    });
                }
                _ => bail!("route '{pattern}' has an unbalanced '{{' or '}}'"),
            }
        }
        Ok(Pattern { segments })
    }

    /// True when the pattern has no parameter (it matches exactly one path).
    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Param { name: n, .. } if n == name))
    }

    /// How many literal bytes the pattern pins: among patterns matching one path, the most
    /// specific wins.
    pub fn specificity(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.len() + 1,
                Segment::Param { prefix, suffix, .. } => prefix.len() + suffix.len(),
            })
            .sum()
    }

    /// The path's parameters, when the pattern matches it.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        let mut parts = rest.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param { prefix, name, suffix } => {
                    let value = part.strip_prefix(prefix.as_str())?.strip_suffix(suffix.as_str())?;
                    if value.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), value.to_string()));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }

    /// The literal text before the first parameter (the whole pattern when it has none).
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param { prefix, .. } => {
                    out.push_str(prefix);
                    return out;
                }
            }
        }
        out
    }

    /// Could one path match both patterns?
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Literal(l), p @ Segment::Param { .. }) | (p @ Segment::Param { .. }, Segment::Literal(l)) => {
                    Pattern { segments: vec![p.clone()] }.matches(&format!("/{l}")).is_some()
                }
                (Segment::Param { prefix: p1, suffix: s1, .. }, Segment::Param { prefix: p2, suffix: s2, .. }) => {
                    (p1.starts_with(p2.as_str()) || p2.starts_with(p1.as_str()))
                        && (s1.ends_with(s2.as_str()) || s2.ends_with(s1.as_str()))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn parameters_match_one_segment_and_respect_prefixes_and_suffixes() {
        let videos = p("/v1/videos/{id}");
        assert_eq!(videos.matches("/v1/videos/vid_1"), Some(vec![("id".into(), "vid_1".into())]));
        assert_eq!(videos.matches("/v1/videos/"), None, "a parameter is never empty");
        assert_eq!(videos.matches("/v1/videos/a/b"), None, "a parameter never spans a '/'");
        assert_eq!(videos.matches("/v1/videos"), None);
        let gemini = p("/v1beta/models/{model}:generateContent");
        assert_eq!(
            gemini.matches("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(vec![("model".into(), "gemini-2.5-flash".into())])
        );
        assert_eq!(gemini.matches("/v1beta/models/gemini:streamGenerateContent"), None);
        assert_eq!(gemini.literal_prefix(), "/v1beta/models/");
        assert!(p("/v1/t2a_v2").is_literal());
        assert_eq!(p("/v1/t2a_v2").matches("/v1/t2a_v2"), Some(vec![]));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["v1/x", "/v1/{", "/v1/{a}{b}", "/v1/{}", "/v1/{a}/{a}", "/v1/x?y", "/v1/{a-b}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_is_found_where_one_path_matches_both() {
        assert!(p("/v1/videos/{id}").overlaps(&p("/v1/videos/{other}")));
        assert!(p("/v1/videos/{id}").overlaps(&p("/v1/videos/latest")));
        assert!(!p("/v1/videos/{id}").overlaps(&p("/v1/videos/{id}/content")));
        assert!(!p("/m/{m}:generateContent").overlaps(&p("/m/{m}:streamGenerateContent")));
        assert!(p("/m/{m}:x").overlaps(&p("/m/{m}")));
    }
}
