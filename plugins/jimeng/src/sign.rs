//! Volcengine's request signature ("V4", HMAC-SHA256), as the official SDK computes it
//! (`vendor-apis.md` §3.2): a canonical request over the method, path, sorted query, the
//! signed headers and the body's hash; a key derived from the secret key by date, region and
//! service; `Authorization: HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.

use hmac::Mac;
use sha2::{Digest, Sha256};
use tollgate_plugin_sdk::percent_encode;

/// Headers signed, in order (new-api's fixed set, which the SDK's rule also yields here).
pub const SIGNED_HEADERS: &str = "content-type;host;x-content-sha256;x-date";

/// What a request is signed with.
pub struct Signer<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers a signed request carries (besides `host`, which the client sets).
pub struct Signed {
    pub x_date: String,
    pub content_sha256: String,
    pub authorization: String,
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The canonical query: names sorted by bytes, names and values encoded, `k=v` joined by `&`.
pub fn canonical_query(pairs: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (percent_encode(k, false), percent_encode(v, false))).collect();
    sorted.sort();
    sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The `Host` header's value as signed: without a default port.
pub fn signed_host(authority: &str) -> &str {
    authority.strip_suffix(":443").or_else(|| authority.strip_suffix(":80")).unwrap_or(authority)
}

impl Signer<'_> {
    /// Signs `method path?query` to `host` with `body`, at `x_date` (`YYYYMMDDTHHMMSSZ`).
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        host: &str,
        body: &[u8],
        x_date: &str,
    ) -> Signed {
        let content_sha256 = hex::encode(Sha256::digest(body));
        let uri = if path.is_empty() { "/".to_string() } else { percent_encode(path, true) };
        let headers = format!(
            "content-type:application/json\nhost:{}\nx-content-sha256:{content_sha256}\nx-date:{x_date}\n",
            signed_host(host)
        );
        let canonical =
            format!("{method}\n{uri}\n{}\n{headers}\n{SIGNED_HEADERS}\n{content_sha256}", canonical_query(query));
        let short_date = &x_date[..8.min(x_date.len())];
        let scope = format!("{short_date}/{}/{}/request", self.region, self.service);
        let to_sign = format!("HMAC-SHA256\n{x_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
        let k_date = hmac(self.secret_key.as_bytes(), short_date);
        let k_region = hmac(&k_date, self.region);
        let k_service = hmac(&k_region, self.service);
        let k_signing = hmac(&k_service, "request");
        let signature = hex::encode(hmac(&k_signing, &to_sign));
        Signed {
            x_date: x_date.to_string(),
            content_sha256,
            authorization: format!(
                "HMAC-SHA256 Credential={}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}",
                self.access_key
            ),
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` for unix seconds (UTC).
pub fn x_date(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    let (year, month, day) = tollgate_plugin_sdk::calendar::civil_from_days(days);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_test_vector_passes() {
        let signer = Signer { access_key: "AKTEST", secret_key: "SKTEST", region: "cn-north-1", service: "cv" };
        let body = br#"{"req_key":"jimeng_vgfm_t2v_l20","prompt":"a cat"}"#;
        let query = [("Action", "CVSync2AsyncSubmitTask"), ("Version", "2022-08-31")];
        let s = signer.sign("POST", "/", &query, "visual.volcengineapi.com", body, "20250101T000000Z");
        assert_eq!(s.content_sha256, "a398ad4eae2f66e44cbd5e749f5ddb51ceb44d13a9788acce6783f12f2f9b392");
        assert_eq!(
            s.authorization,
            "HMAC-SHA256 Credential=AKTEST/20250101/cn-north-1/cv/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=6ca29ab60d85691c6a01dc8fd92e10f4fb17d3876866575be0df7180c0be6d6b"
        );
        // The default port is not signed.
        let on_443 = signer.sign("POST", "/", &query, "visual.volcengineapi.com:443", body, "20250101T000000Z");
        assert_eq!(on_443.authorization, s.authorization);
    }

    #[test]
    fn queries_are_sorted_and_encoded_as_rfc_3986_says() {
        assert_eq!(canonical_query(&[("b", "x y"), ("a", "1+2"), ("A", "~._-")]), "A=~._-&a=1%2B2&b=x%20y");
        assert_eq!(tollgate_plugin_sdk::percent_encode("/a b/ü", true), "/a%20b/%C3%BC");
    }

    #[test]
    fn dates_are_utc_in_the_signatures_format() {
        assert_eq!(x_date(0), "19700101T000000Z");
        assert_eq!(x_date(1_735_689_600), "20250101T000000Z");
        assert_eq!(x_date(1_709_210_096), "20240229T123456Z");
        assert_eq!(x_date(4_102_444_799), "20991231T235959Z");
    }
}
