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
