//! HS256 JSON Web Tokens as vendors check them (Kling, Zhipu): the one parse and signature
//! check the mock's routes share; each route checks its own header and claims.

use base64::Engine as _;
use hmac::Mac;
use serde_json::Value;

pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    signature: Vec<u8>,
    /// `header.claims`, as signed.
    signed: String,
}

impl Jwt {
    /// A token's three parts, decoded; `None` when it is not a JWT.
    pub fn parse(token: &str) -> Option<Jwt> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts.as_slice() else { return None };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let json = |p: &str| b64.decode(p).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        Some(Jwt {
            header: json(header)?,
            claims: json(claims)?,
            signature: b64.decode(signature).ok()?,
            signed: format!("{header}.{claims}"),
        })
    }

    /// Whether it is signed with `secret` (HMAC-SHA256).
    pub fn signed_with(&self, secret: &str) -> bool {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(self.signed.as_bytes());
        mac.verify_slice(&self.signature).is_ok()
    }
}
