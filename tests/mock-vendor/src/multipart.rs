//! The one reading of a `multipart/form-data` request the mock's routes share.

use crate::Ctx;
use bytes::Bytes;

/// One part of a form.
pub struct Part {
    pub name: String,
    /// Set for a file.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// The request's form parts, in order; `None` when the request is not a form, `Err` (the
/// reason) when the form is malformed.
pub async fn parts(cx: &Ctx) -> Option<Result<Vec<Part>, String>> {
    let ct = cx.headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(ct).ok()?;
    let body = cx.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let filename = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(|m| m.to_string());
                match field.bytes().await {
                    Ok(data) => out.push(Part { name, filename, content_type, data }),
                    Err(_) => return Some(Err("a part is malformed".into())),
                }
            }
            Ok(None) => return Some(Ok(out)),
            Err(e) => return Some(Err(format!("malformed multipart body: {e}"))),
        }
    }
}

/// An upload form of exactly a text `purpose` and a file `file` (OpenAI's files API, and
/// SiliconFlow's): (purpose, file name, bytes), or what is wrong.
pub async fn purpose_and_file(cx: &Ctx) -> Result<(String, String, Bytes), String> {
    let parts = match parts(cx).await {
        None => return Err("expected a multipart/form-data body".into()),
        Some(result) => result?,
    };
    let (mut purpose, mut file) = (None, None);
    for part in parts {
        match (part.name.as_str(), part.filename) {
            ("purpose", None) => purpose = Some(String::from_utf8_lossy(&part.data).into_owned()),
            ("file", Some(f)) => file = Some((f, part.data)),
            (name, _) => return Err(format!("unexpected part '{name}'")),
        }
    }
    match (purpose, file) {
        (Some(purpose), Some((filename, data))) => Ok((purpose, filename, data)),
        _ => Err("'purpose' and 'file' are required".into()),
    }
}
