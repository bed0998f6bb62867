//! Multipart bodies, both ways: a consumer's `multipart/form-data` body is parsed by the host
//! (text fields go to the plugin, files stay in the host and are named by their field), and a
//! plugin's `form` body is encoded by the host, the consumer's files spliced in without a copy.
//!
//! Invariants: a file's bytes never cross into the plugin; the parse is bounded (the body was
//! read within the request limit; at most `MAX_PARTS` parts, text fields at most
//! `MAX_TEXT_BYTES`); a form the plugin builds names only files the consumer sent.

use super::CallError;
use crate::plugin::wit;
use bytes::Bytes;

/// The most parts one consumer form may have.
const MAX_PARTS: usize = 64;
/// The largest text field (a prompt) read from a form.
const MAX_TEXT_BYTES: usize = 1 << 20;

/// A file the consumer uploaded, held by the host for every attempt of the call.
#[derive(Debug, Clone)]
pub struct ClientFile {
    pub field: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// A consumer's form: what the plugin sees, and the files the host keeps.
#[derive(Debug, Clone, Default)]
pub struct Form {
    pub parts: Vec<wit::FormPart>,
    pub files: Vec<ClientFile>,
}

impl Form {
    /// The text fields, in order (files excluded).
    pub fn text_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parts.iter().filter_map(|p| match &p.value {
            wit::PartValue::Text(t) => Some((p.name.as_str(), t.as_str())),
            _ => None,
        })
    }

    /// A text field's value (the first of that name).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.parts.iter().find(|p| p.name == name).and_then(|p| match &p.value {
            wit::PartValue::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }
}

/// The boundary of a `multipart/form-data` content type; `None` for any other type.
pub fn boundary(content_type: &str) -> Option<Result<String, CallError>> {
    let mime = content_type.split(';').next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    Some(multer::parse_boundary(content_type).map_err(|_| bad_form("the multipart content type has no boundary")))
}

/// Parses a consumer's multipart body (already read within the body limit). The body starts
/// with its first boundary (no preamble; no client sends one) and has a part: multer skips a
/// preamble, so a JSON body sent under a multipart type with `--boundary--` inside a string
/// would read as an empty form, while a plugin relaying the consumer's bytes sent the JSON
/// that no reader of the host had checked.
pub async fn parse(body: Bytes, boundary: String) -> Result<Form, CallError> {
    let first = body.strip_prefix(b"\r\n").unwrap_or(&body[..]);
    if !(first.starts_with(b"--") && first[2..].starts_with(boundary.as_bytes())) {
        return Err(bad_form("the multipart body must start with its boundary"));
    }
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = Form::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(bad_form(&format!("the multipart body is malformed: {e}"))),
        };
        if form.parts.len() == MAX_PARTS {
            return Err(bad_form(&format!("a form may have at most {MAX_PARTS} parts")));
        }
        let Some(name) = field.name().map(str::to_string) else {
            return Err(bad_form("a multipart part has no name"));
        };
        let filename = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(|e| bad_form(&format!("the part '{name}' is malformed: {e}")))?;
        let value = if filename.is_some() {
            form.files.push(ClientFile {
                field: name.clone(),
                filename: filename.clone(),
                content_type: content_type.clone(),
                data,
            });
            wit::PartValue::ClientFile(name.clone())
        } else {
            if data.len() > MAX_TEXT_BYTES {
                return Err(bad_form(&format!("the field '{name}' is longer than {MAX_TEXT_BYTES} bytes")));
            }
            match String::from_utf8(data.to_vec()) {
                Ok(text) => wit::PartValue::Text(text),
                Err(_) => return Err(bad_form(&format!("the field '{name}' is not UTF-8 text; send it as a file"))),
            }
        };
        form.parts.push(wit::FormPart { name, filename, content_type, value });
    }
    if form.parts.is_empty() {
        return Err(bad_form("the multipart body has no part"));
    }
    Ok(form)
}

/// A plugin's text with the consumer's files written in as `data:` URIs, each where its one
/// placeholder stands (`text-with-files`): the bytes never passed through the plugin.
pub fn write_files_into(t: &wit::TextWithFiles, files: &[ClientFile]) -> Result<String, CallError> {
    use base64::Engine as _;
    // Every placeholder is found in the plugin's text before anything is written into it.
    let mut spots = Vec::with_capacity(t.files.len());
    for (placeholder, field) in &t.files {
        let mut found = t.text.match_indices(placeholder.as_str()).map(|(at, _)| at);
        let (Some(at), None, false) = (found.next(), found.next(), placeholder.is_empty()) else {
            return Err(CallError::plugin(format!(
                "the plugin's placeholder for the consumer's file '{field}' is not in its text exactly once"
            )));
        };
        let Some(f) = files.iter().find(|f| &f.field == field) else {
            return Err(CallError::plugin(format!(
                "the plugin named the consumer's file '{field}', which the consumer did not send"
            )));
        };
        spots.push((at, at + placeholder.len(), f));
    }
    spots.sort_by_key(|s| s.0);
    if spots.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(CallError::plugin("the plugin's placeholders for the consumer's files overlap"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let grown: usize = spots.iter().map(|(_, _, f)| f.data.len() / 3 * 4 + 64).sum();
    let mut out = String::with_capacity(t.text.len() + grown);
    let mut from = 0;
    for (start, end, f) in spots {
        out.push_str(&t.text[from..start]);
        let content_type = f.content_type.as_deref().filter(|c| is_media_type(c)).unwrap_or("application/octet-stream");
        out.push_str("data:");
        out.push_str(content_type);
        out.push_str(";base64,");
        b64.encode_string(&f.data, &mut out);
        from = end;
    }
    out.push_str(&t.text[from..]);
    Ok(out)
}

/// A bare `type/subtype` of token characters: safe inside a `data:` URI and a JSON string.
fn is_media_type(c: &str) -> bool {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    c.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

/// Encodes a plugin's form as `multipart/form-data`: the content type and the body's pieces
/// (the consumer's files are shared, not copied).
pub fn encode(parts: &[wit::FormPart], files: &[ClientFile]) -> Result<(String, Vec<Bytes>), CallError> {
    let boundary = format!("tollgate-{}", hex::encode(rand::random::<[u8; 12]>()));
    let mut pieces = Vec::with_capacity(parts.len() * 2 + 1);
    for part in parts {
        let (data, filename, content_type) = match &part.value {
            wit::PartValue::Text(t) => {
                (Bytes::copy_from_slice(t.as_bytes()), part.filename.clone(), part.content_type.clone())
            }
            wit::PartValue::Bytes(b) => (Bytes::copy_from_slice(b), part.filename.clone(), part.content_type.clone()),
            wit::PartValue::ClientFile(field) => {
                let Some(f) = files.iter().find(|f| &f.field == field) else {
                    return Err(CallError::plugin(format!(
                        "the plugin named the consumer's file '{field}', which the consumer did not send"
                    )));
                };
                (
                    f.data.clone(),
                    part.filename.clone().or_else(|| f.filename.clone()),
                    part.content_type.clone().or_else(|| f.content_type.clone()),
                )
            }
        };
        let mut head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quoted(&part.name)?);
        if let Some(f) = &filename {
            head.push_str(&format!("; filename=\"{}\"", quoted(f)?));
        }
        head.push_str("\r\n");
        if let Some(ct) = &content_type {
            if ct.contains(['\r', '\n']) {
                return Err(CallError::plugin("a form part's content type contains a line break"));
            }
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        pieces.push(Bytes::from(head));
        pieces.push(data);
        pieces.push(Bytes::from_static(b"\r\n"));
    }
    pieces.push(Bytes::from(format!("--{boundary}--\r\n")));
    Ok((format!("multipart/form-data; boundary={boundary}"), pieces))
}

/// A name or file name inside a quoted header parameter.
fn quoted(s: &str) -> Result<String, CallError> {
    if s.contains(['\r', '\n']) {
        return Err(CallError::plugin("a form part's name contains a line break"));
    }
    Ok(s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn bad_form(message: &str) -> CallError {
    CallError::new(400, "invalid_request_error", "invalid_multipart", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_consumer_form_round_trips_with_its_file_kept_in_the_host() {
        let parts = vec![
            wit::FormPart {
                name: "model".into(),
                filename: None,
                content_type: None,
                value: wit::PartValue::Text("whisper-1".into()),
            },
            wit::FormPart {
                name: "file".into(),
                filename: Some("a \"b\".wav".into()),
                content_type: Some("audio/wav".into()),
                value: wit::PartValue::Bytes(vec![0, 159, 146, 150, b'\r', b'\n', b'-', b'-']),
            },
        ];
        let (ct, pieces) = encode(&parts, &[]).unwrap();
        let body: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let form = parse(Bytes::from(body), boundary(&ct).unwrap().unwrap()).await.unwrap();
        assert_eq!(form.text("model"), Some("whisper-1"));
        assert!(matches!(&form.parts[1].value, wit::PartValue::ClientFile(f) if f == "file"));
        assert_eq!(form.files[0].data.as_ref(), &[0, 159, 146, 150, b'\r', b'\n', b'-', b'-']);
        assert_eq!(form.files[0].filename.as_deref(), Some("a \"b\".wav"));
        assert_eq!(form.files[0].content_type.as_deref(), Some("audio/wav"));

        // Upstream: the plugin names the consumer's file, the host splices the same bytes in.
        let forward = vec![wit::FormPart {
            name: "audio".into(),
            filename: None,
            content_type: None,
            value: wit::PartValue::ClientFile("file".into()),
        }];
        let (_, pieces) = encode(&forward, &form.files).unwrap();
        assert_eq!(pieces[1].as_ptr(), form.files[0].data.as_ptr(), "the file is shared, not copied");
        let missing = vec![wit::FormPart { value: wit::PartValue::ClientFile("other".into()), ..forward[0].clone() }];
        assert!(encode(&missing, &form.files).is_err());
    }

    #[tokio::test]
    async fn a_body_that_is_no_form_is_refused_not_read_as_an_empty_one() {
        let refused = |body: &'static str| async move {
            let Err(e) = parse(Bytes::from(body), "zz".into()).await else { panic!("{body}: read as a form") };
            (e.status, e.message)
        };
        // JSON under a multipart type: multer would take it all as a preamble.
        let (status, message) = refused(r#"{"model":"tts-1","input":"long","x":"--zz--"}"#).await;
        assert_eq!(status, 400);
        assert!(message.contains("start with its boundary"), "{message}");
        assert!(refused("--zz--\r\n").await.1.contains("no part"));
        let form = "\r\n--zz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--zz--\r\n";
        assert_eq!(parse(Bytes::from(form), "zz".into()).await.unwrap().text("model"), Some("m"));
    }

    #[tokio::test]
    async fn malformed_forms_are_a_400() {
        assert!(boundary("application/json").is_none());
        assert!(boundary("multipart/form-data").unwrap().is_err());
        let e = parse(Bytes::from_static(b"--x\r\nbroken"), "x".into()).await.unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "invalid_multipart"));
        let text = format!(
            "--x\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\n{}\r\n--x--\r\n",
            "a".repeat(MAX_TEXT_BYTES + 1)
        );
        assert_eq!(parse(Bytes::from(text), "x".into()).await.unwrap_err().status, 400);
    }

    #[test]
    fn files_are_written_into_a_plugins_text_once_each_and_only_where_it_says() {
        let file = |field: &str, ct: Option<&str>, data: &'static [u8]| ClientFile {
            field: field.into(),
            filename: None,
            content_type: ct.map(Into::into),
            data: Bytes::from_static(data),
        };
        let files = [file("file", Some("audio/wav"), b"RIFF"), file("other", Some("x\"y/z"), b"hi")];
        let t = |text: &str, spots: &[(&str, &str)]| wit::TextWithFiles {
            text: text.into(),
            files: spots.iter().map(|(p, f)| (p.to_string(), f.to_string())).collect(),
        };
        let both = t(r#"{"a":"@F@","b":"@O@"}"#, &[("@O@", "other"), ("@F@", "file")]);
        assert_eq!(
            write_files_into(&both, &files).unwrap(),
            r#"{"a":"data:audio/wav;base64,UklGRg==","b":"data:application/octet-stream;base64,aGk="}"#,
            "a content type that is no bare media type is not written"
        );
        for bad in [
            t("@F@ @F@", &[("@F@", "file")]),
            t("none", &[("@F@", "file")]),
            t("@F@", &[("@F@", "gone")]),
            t("x", &[("", "file")]),
            t("@F@@", &[("@F@", "file"), ("F@@", "other")]),
        ] {
            assert_eq!(write_files_into(&bad, &files).unwrap_err().code, "plugin_error", "{}", bad.text);
        }
    }
}
