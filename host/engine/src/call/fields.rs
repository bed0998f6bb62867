//! A quoted request whose top-level fields repeat is refused (400 `duplicate_field`): the
//! plugin's quote might read one copy and the vendor another.

use super::CallRequest;
use crate::exchange::CallError;
use crate::plugin::wit;

/// Refuses a request that gives a top-level field (a JSON key, a form's text field) more than
/// once.
pub(super) fn refuse_repeated_fields(r: &CallRequest) -> Result<(), CallError> {
    let repeated = match &r.form {
        Some(form) => {
            let mut seen = std::collections::HashSet::new();
            form.parts
                .iter()
                .filter(|p| matches!(p.value, wit::PartValue::Text(_)))
                .find(|p| !seen.insert(&p.name))
                .map(|p| p.name.clone())
        }
        None => repeated_json_key(&r.body),
    };
    match repeated {
        Some(name) => Err(CallError::new(
            400,
            "invalid_request_error",
            "duplicate_field",
            format!("'{name}' is given more than once; give it once."),
        )),
        None => Ok(()),
    }
}

/// The first top-level key a JSON object repeats (`None` also for what is not an object).
fn repeated_json_key(body: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Ok(Some(key));
                }
            }
            Ok(None)
        }
    }
    serde_json::Deserializer::from_slice(body).deserialize_map(Keys).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_top_level_key_is_found_and_nested_ones_are_not_its_business() {
        assert_eq!(repeated_json_key(br#"{"size":"a","seconds":5,"size":"b"}"#).as_deref(), Some("size"));
        assert_eq!(repeated_json_key(br#"{"a":{"x":1,"x":2},"b":[{"y":1},{"y":2}]}"#), None);
        assert_eq!(repeated_json_key(br#"{"a":1}"#), None);
        assert_eq!(repeated_json_key(b"not json"), None);
        assert_eq!(repeated_json_key(b"[1,1]"), None);
    }
}
