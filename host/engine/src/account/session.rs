//! Passwords (argon2id) and sessions (JWT, HS256).
//!
//! The signing secret is `jwt_secret` (or `TOLLGATE_JWT_SECRET`); when unset, a random secret
//! is created once in `<data_dir>/jwt.secret` (mode 0600) so that sessions survive restarts and
//! every node given the same file or setting accepts the same tokens. A token says who the
//! user is and its role; whether the user is still enabled, and whether the token was signed
//! out, is checked on every use (`users::session_holder`, one read).
//!
//! Signing out (`revoke`) records the token's SHA-256 in `revoked_sessions` until the token
//! would have expired: every node sharing the database refuses it from then on. Each sign-out
//! deletes the records of tokens past their expiry, so the table holds only the sessions
//! signed out within the last `session_ttl_hours`. Model calls take API keys, not sessions:
//! none of this is on their path.

use anyhow::{bail, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a session token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: i64,
    pub name: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    /// Random: two sign-ins of one user in one second are still two sessions, and signing
    /// out one leaves the other.
    #[serde(default)]
    pub jti: String,
}

/// What a task token carries: one consumer key's read access to one task (its progress
/// stream and archived files), for browsers, whose `EventSource` and `<video>` cannot send an
/// `Authorization` header. It is no session: it lacks a session's claims, and a session
/// token lacks `task`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskClaims {
    /// The consumer key id.
    sub: i64,
    task: String,
    exp: i64,
}

pub struct Sessions {
    /// Derives each user's webhook signing key.
    webhook_root: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl Sessions {
    /// Uses `secret`, else the secret file in `data_dir` (created if missing).
    pub fn new(secret: Option<&str>, data_dir: &Path, ttl_hours: u32) -> Result<Sessions> {
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => s.to_string(),
            None => read_or_create_secret(&data_dir.join("jwt.secret"))?,
        };
        if secret.len() < 16 {
            bail!("jwt_secret must be at least 16 characters");
        }
        Ok(Sessions {
            webhook_root: secret.as_bytes().to_vec(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl_secs: i64::from(ttl_hours.max(1)) * 3600,
        })
    }

    /// A token for the user; returns it and its expiry (unix seconds).
    pub fn issue(&self, user_id: i64, name: &str, role: &str) -> Result<(String, i64)> {
        let now = crate::store::now_unix();
        let claims = Claims {
            sub: user_id,
            name: name.into(),
            role: role.into(),
            iat: now,
            exp: now + self.ttl_secs,
            jti: hex::encode(rand::random::<[u8; 16]>()),
        };
        Ok((encode(&Header::default(), &claims, &self.encoding)?, claims.exp))
    }

    /// A token that reads task `task_id` as consumer key `key_id` for `ttl_secs`.
    pub fn issue_task_token(&self, key_id: i64, task_id: &str, ttl_secs: i64) -> Result<String> {
        let claims = TaskClaims { sub: key_id, task: task_id.into(), exp: crate::store::now_unix() + ttl_secs };
        Ok(encode(&Header::default(), &claims, &self.encoding)?)
    }

    /// The consumer key id of a valid, unexpired token for task `task_id`.
    pub fn verify_task_token(&self, token: &str, task_id: &str) -> Option<i64> {
        let claims = decode::<TaskClaims>(token, &self.decoding, &Validation::default()).ok()?.claims;
        (claims.task == task_id).then_some(claims.sub)
    }

    /// The key a user's callbacks are signed with (hex; the user reads it in
    /// `GET /v1/user/info`): HMAC of the user id under the gateway's secret, so that every
    /// node derives the same and no user learns another's.
    pub fn webhook_secret(&self, user_id: i64) -> String {
        use hmac::{Mac, SimpleHmac};
        let mut mac =
            <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(&self.webhook_root).expect("HMAC takes any key");
        mac.update(format!("tollgate-webhook:{user_id}").as_bytes());
        format!("whsec_{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &Validation::default()).ok().map(|d| d.claims)
    }
}

/// The name a session token is revoked under (hex SHA-256): the table never holds a token.
pub fn token_digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Signs out `token` (a session that verified, expiring at `expires_at`) on every node sharing
/// the database, and forgets the sign-outs of tokens that expired meanwhile.
pub async fn revoke(db: &crate::store::Db, token: &str, expires_at: i64) -> Result<()> {
    let mut tx = crate::store::begin_write(db).await?;
    sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < $1")
        .bind(crate::store::now_unix())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO revoked_sessions (token_sha256, expires_at) VALUES ($1, $2) ON CONFLICT (token_sha256) DO NOTHING",
    )
    .bind(token_digest(token))
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// True when a bearer value looks like a JWT rather than an API key.
pub fn looks_like_jwt(token: &str) -> bool {
    !token.starts_with("sk-") && token.split('.').count() == 3
}

fn read_or_create_secret(path: &Path) -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            if std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o077 != 0) {
                tracing::warn!(file = %path.display(), "the session secret was readable by others: now 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        return Ok(s.trim().to_string());
    }
    if let Some(dir) = path.parent() {
        crate::store::private_fs::create_dir(dir)?;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    crate::store::private_fs::write_new(path, secret.as_bytes())?;
    Ok(secret)
}

/// The longest password accepted (hashing cost grows with it).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// An argon2id hash of `password` (with a random salt), for storage. Blocks for tens of
/// milliseconds: on the request path, use `hash_password_off_workers`.
pub fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < 8 {
        bail!("a password needs at least 8 characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("a password has at most {MAX_PASSWORD_BYTES} bytes");
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES
        && PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Argon2 runs on tokio's blocking threads, at most one per core at a time: a burst of logins
/// waits its turn there and never stalls the workers that serve calls and streams.
async fn off_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static HASHING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let permits = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let _permit = HASHING
        .get_or_init(|| tokio::sync::Semaphore::new(permits))
        .acquire()
        .await
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(work).await.expect("password hashing does not panic")
}

/// `hash_password`, off the request workers.
pub async fn hash_password_off_workers(password: String) -> Result<String> {
    off_workers(move || hash_password(&password)).await
}

/// `verify_password`, off the request workers.
pub async fn verify_password_off_workers(password: String, stored: String) -> bool {
    off_workers(move || verify_password(&password, &stored)).await
}

/// A hash no password matches in practice, to verify against when a user does not exist (or
/// is disabled): the refusal then takes as long as a wrong password's, so the answer's time
/// does not tell which names exist.
pub fn stand_in_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let random: [u8; 24] = rand::random();
        hash_password(&hex::encode(random)).expect("a 48-character password hashes")
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(hash_password("short").is_err());

        let s = Sessions::new(Some("a-test-secret-of-some-length"), Path::new("/nonexistent"), 1).unwrap();
        let (token, exp) = s.issue(7, "ann", "admin").unwrap();
        assert!(looks_like_jwt(&token) && !looks_like_jwt("sk-tg-abc"));
        let c = s.verify(&token).unwrap();
        assert_eq!((c.sub, c.role.as_str(), c.exp), (7, "admin", exp));
        let other = Sessions::new(Some("another-secret-of-some-length"), Path::new("/nonexistent"), 1).unwrap();
        assert!(other.verify(&token).is_none(), "a token from another secret is refused");
        assert!(s.verify(&format!("{token}x")).is_none());
    }

    #[tokio::test]
    async fn a_signed_out_token_signs_in_no_one_and_its_record_goes_once_it_expired() {
        let db = crate::store::open_for_test("revoked_sessions").await;
        let new = super::super::NewUser {
            name: "ann".into(),
            role: "user".into(),
            balance: "0".into(),
            ..Default::default()
        };
        let id = super::super::create_user(&db, &new).await.unwrap();
        let s = Sessions::new(Some("a-test-secret-of-some-length"), Path::new("/nonexistent"), 1).unwrap();
        let (token, exp) = s.issue(id, "ann", "user").unwrap();
        let (other, _) = s.issue(id, "ann", "user").unwrap();
        let holder = |t: String| {
            let db = db.clone();
            async move { super::super::users::session_holder(&db, id, &t).await }
        };
        assert_eq!(holder(token.clone()).await.unwrap().map(|u| u.name), Some("ann".into()));
        revoke(&db, &token, exp).await.unwrap();
        revoke(&db, &token, exp).await.unwrap(); // twice: still one record
        assert!(holder(token.clone()).await.unwrap().is_none(), "the signed-out token is refused");
        assert!(holder(other.clone()).await.unwrap().is_some(), "another session of the user is not");
        let rows = || {
            sqlx::query_as::<_, (String, i64)>("SELECT token_sha256, expires_at FROM revoked_sessions").fetch_all(&db)
        };
        let stored = rows().await.unwrap();
        assert_eq!(stored, [(token_digest(&token), exp)], "the digest is stored, never the token");
        // A sign-out after the first token expired forgets the first.
        sqlx::query("UPDATE revoked_sessions SET expires_at = 1").execute(&db).await.unwrap();
        revoke(&db, &other, exp).await.unwrap();
        assert_eq!(rows().await.unwrap(), [(token_digest(&other), exp)]);
    }

    #[test]
    fn a_task_token_reads_one_task_and_is_no_session() {
        let s = Sessions::new(Some("a-test-secret-of-some-length"), Path::new("/nonexistent"), 1).unwrap();
        let t = s.issue_task_token(5, "task_a", 60).unwrap();
        assert_eq!(s.verify_task_token(&t, "task_a"), Some(5));
        assert_eq!(s.verify_task_token(&t, "task_b"), None, "another task");
        assert!(s.verify(&t).is_none(), "a task token is no session");
        let (session, _) = s.issue(5, "ann", "admin").unwrap();
        assert_eq!(s.verify_task_token(&session, "task_a"), None, "a session is no task token");
        let expired = s.issue_task_token(5, "task_a", -120).unwrap();
        assert_eq!(s.verify_task_token(&expired, "task_a"), None);
        let other = Sessions::new(Some("another-secret-of-some-length"), Path::new("/nonexistent"), 1).unwrap();
        assert_eq!(other.verify_task_token(&t, "task_a"), None);
    }
}
