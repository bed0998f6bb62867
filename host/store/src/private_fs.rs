//! Files and folders only the gateway's user may read: `data_dir` (the database, the compile
//! cache), the session secret. Created with their final mode from the first moment (0700
//! folders, 0600 files), never written wider and narrowed after; a new secret is created
//! exclusively (`create_new`: an existing file or a planted symlink is never followed).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Creates `dir` and its missing parents, each new one 0700. An existing folder is left as
/// it is (the operator's choice), with a warning when others may read it.
pub fn create_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        builder.mode(0o700);
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.mode() & 0o777), "this folder holds the gateway's data and others may read it; chmod 700 it");
            }
        }
    }
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes a new file that only its owner may read; fails if `path` exists.
pub fn write_new(path: &Path, contents: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn folders_and_secrets_are_private_from_the_start_and_never_overwritten() {
        let root = std::env::temp_dir().join(format!("tollgate-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(root.join("a")).unwrap().mode() & 0o777, 0o700);
        let secret = dir.join("secret");
        write_new(&secret, b"s").unwrap();
        assert_eq!(std::fs::metadata(&secret).unwrap().mode() & 0o777, 0o600);
        assert!(write_new(&secret, b"t").is_err(), "an existing file is never overwritten");
        let link = dir.join("link");
        std::os::unix::fs::symlink(root.join("elsewhere"), &link).unwrap();
        assert!(write_new(&link, b"x").is_err(), "a planted symlink is not followed");
        assert!(!root.join("elsewhere").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
