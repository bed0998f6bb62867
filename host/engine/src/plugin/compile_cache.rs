//! The on-disk cache of compiled plugins. Its entries are native code that the gateway maps
//! and runs, so an entry is trusted only if this gateway wrote it:
//! - each entry is `HMAC-SHA256(key, code) || code`, the key kept in `.key` beside the
//!   entries (0600, created exclusively, in a 0700 folder);
//! - an entry whose MAC does not match (written by someone else, changed, truncated), a
//!   symlink, or anything but a regular file is ignored: the plugin is compiled again;
//! - entries are written to a new exclusive temporary file and renamed into place.

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};

const MAC_LEN: usize = 32;

pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl CompileCache {
    /// Opens (creating) the cache folder and its key.
    pub fn open(dir: PathBuf) -> Result<CompileCache> {
        crate::store::private_fs::create_dir(&dir)
            .with_context(|| format!("creating the compile cache {}", dir.display()))?;
        let key_file = dir.join(".key");
        let key = match regular_file(&key_file) {
            Some(bytes) if bytes.len() == 32 => bytes.try_into().expect("32 bytes"),
            Some(_) => bail!("{} is not a compile cache key; delete it", key_file.display()),
            None => {
                let key: [u8; 32] = rand::random();
                match crate::store::private_fs::write_new(&key_file, &key) {
                    Ok(()) => key,
                    // Another gateway sharing the folder created it first: use that one.
                    Err(_) => match regular_file(&key_file) {
                        Some(bytes) if bytes.len() == 32 => bytes.try_into().expect("32 bytes"),
                        _ => bail!("cannot create the compile cache key {}", key_file.display()),
                    },
                }
            }
        };
        Ok(CompileCache { dir, key })
    }

    /// The compiled code stored under `name`, if this gateway wrote it unchanged.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let bytes = regular_file(&path)?;
        if bytes.len() < MAC_LEN || self.mac().chain_update(&bytes[MAC_LEN..]).verify_slice(&bytes[..MAC_LEN]).is_err()
        {
            tracing::warn!(file = %path.display(), "compile cache entry not written by this gateway (or changed): compiling again");
            return None;
        }
        Some(bytes[MAC_LEN..].to_vec())
    }

    /// Stores compiled code under `name`.
    pub fn put(&self, name: &str, code: &[u8]) -> Result<()> {
        let mut sealed = self.mac().chain_update(code).finalize().into_bytes().to_vec();
        sealed.extend_from_slice(code);
        let tmp = self.dir.join(format!(".{name}.{:016x}.part", rand::random::<u64>()));
        crate::store::private_fs::write_new(&tmp, &sealed)?;
        std::fs::rename(&tmp, self.dir.join(name)).context("placing a compile cache entry")
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }
}

/// The contents of `path` if it is a regular file (not a symlink, device or folder).
fn regular_file(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    std::fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entries_this_gateway_wrote_unchanged_are_trusted() {
        let dir = std::env::temp_dir().join(format!("tollgate-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = CompileCache::open(dir.clone()).unwrap();
        cache.put("a.cwasm", b"native code").unwrap();
        assert_eq!(cache.get("a.cwasm").as_deref(), Some(&b"native code"[..]));
        assert_eq!(CompileCache::open(dir.clone()).unwrap().get("a.cwasm").as_deref(), Some(&b"native code"[..]));

        // Changed, planted, truncated or linked entries are ignored.
        let mut bytes = std::fs::read(dir.join("a.cwasm")).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(dir.join("a.cwasm"), &bytes).unwrap();
        assert_eq!(cache.get("a.cwasm"), None);
        std::fs::write(dir.join("b.cwasm"), b"someone else's code of some length, no MAC").unwrap();
        assert_eq!(cache.get("b.cwasm"), None);
        std::fs::write(dir.join("c.cwasm"), b"short").unwrap();
        assert_eq!(cache.get("c.cwasm"), None);
        cache.put("d.cwasm", b"real").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("d.cwasm"), dir.join("e.cwasm")).unwrap();
            assert_eq!(cache.get("e.cwasm"), None, "a symlink is not followed");
        }
        // Another gateway's key does not vouch for this one's entries.
        let other = std::env::temp_dir().join(format!("tollgate-cache-other-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&other);
        let stranger = CompileCache::open(other.clone()).unwrap();
        std::fs::copy(dir.join("d.cwasm"), other.join("d.cwasm")).unwrap();
        assert_eq!(stranger.get("d.cwasm"), None);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }
}
