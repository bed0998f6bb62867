//! Ark's OpenAI-shaped ops: Doubao chat (`POST /chat/completions`; thinking models'
//! `reasoning_content` and cached tokens pass through) and Seedream images
//! (`POST /images/generations`, billed per image Ark made).
//!
//! A Seedream request can make a series of images (`sequential_image_generation = "auto"`, up
//! to `sequential_image_generation_options.max_images`, 15 by default): the op is quoted, so
//! that the reservation covers every image the request may make, never just one; what is
//! charged is what Ark counted (`usage.generated_images`), not the answer's entries (a
//! series lists failed images too).

use serde_json::Value;
use tollgate_plugin_sdk::openai_compat::Vendor;
use tollgate_plugin_sdk::{AdapterError, ErrorKind, Manifest, UpstreamResponse, Usage};

/// The most images one Seedream request may make.
pub const MAX_IMAGES: u64 = 15;

pub struct ArkCompat;

impl Vendor for ArkCompat {
    fn manifest() -> Manifest {
        unreachable!("the ark plugin's manifest is its own")
    }

    fn path(op: &str) -> Option<&'static str> {
        match op {
            "chat" => Some("/chat/completions"),
            "images" => Some("/images/generations"),
            _ => None,
        }
    }

    fn classify(response: &UpstreamResponse) -> AdapterError {
        let v: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        super::error_of(response.status, &v)
    }
}

/// The images a Seedream request may make: a series' `max_images`, else `n`, else one.
pub fn images_quote(body: &tollgate_plugin_sdk::Body) -> Result<Usage, AdapterError> {
    let f = body.object("Seedream takes its reference images as URLs, not as files")?;
    let bad = |m: String| AdapterError::new(ErrorKind::BadRequest, m);
    let count = |v: Option<&Value>, name: &str| -> Result<Option<u64>, AdapterError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n @ 1..=MAX_IMAGES) => Ok(Some(n)),
                _ => Err(bad(format!("'{name}' must be 1 to {MAX_IMAGES}, not {v}"))),
            },
        }
    };
    // The body goes as it came: a case-blind reader must find no other copy of these.
    tollgate_plugin_sdk::exact_fields(
        &f,
        &["n", "sequential_image_generation", "sequential_image_generation_options"],
    )?;
    if let Some(Value::Object(options)) = f.get("sequential_image_generation_options") {
        tollgate_plugin_sdk::exact_fields(options, &["max_images"])?;
    }
    let n = count(f.get("n"), "n")?.unwrap_or(1);
    // Anything but no series or "disabled" may make a series: reserved as one.
    let series = match f.get("sequential_image_generation") {
        None | Some(Value::Null) => 1,
        Some(Value::String(s)) if s == "disabled" => 1,
        Some(_) => {
            let options = f.get("sequential_image_generation_options");
            count(options.and_then(|o| o.get("max_images")), "max_images")?.unwrap_or(MAX_IMAGES)
        }
    };
    Ok(Usage { images: Some(n.max(series) as u32), ..Usage::default() })
}
