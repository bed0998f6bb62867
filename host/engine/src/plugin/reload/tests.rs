use super::*;

/// A scratch plugin folder named `name` holding `a.wasm` ("one", not a plugin), and the
/// file's path.
fn folder(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.wasm");
    std::fs::write(&file, b"one").unwrap();
    (dir, file)
}

fn registry(dir: &Path) -> Arc<PluginRegistry> {
    let runtime = Runtime::new(dir.join(".cache"), 8, 100, 1000, 2, false).unwrap();
    PluginRegistry::new(runtime, dir.to_path_buf(), |_| false)
}

/// A rescan reads every plugin file; reading must not trigger the next rescan, while a
/// file written, replaced or removed must.
#[tokio::test]
async fn reading_the_folder_is_not_a_change() {
    let (dir, file) = folder("watch");
    let registry = registry(&dir);
    let (_watcher, mut events) = registry.watch_folder().unwrap();
    let quiet = Duration::from_millis(300);

    for _ in 0..3 {
        assert_eq!(std::fs::read(&file).unwrap(), b"one");
        let _ = std::fs::read_dir(&dir).unwrap().count();
    }
    assert!(
        tokio::time::timeout(quiet, events.recv()).await.is_err(),
        "reading the folder's files was taken for a change"
    );

    std::fs::write(&file, b"two").unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(changed, Ok(Some(())), "a file written was not seen");
    while tokio::time::timeout(quiet, events.recv()).await.is_ok() {}

    std::fs::remove_file(&file).unwrap();
    let removed = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(removed, Ok(Some(())), "a file removed was not seen");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stamp: none while the file is fresh; it moves with a rewrite that keeps the length
/// and the modification time (`cp -p`, an editor restoring the time), through the status
/// change time; and a scan trusting it skips an unchanged file, reads a rewritten one.
#[tokio::test]
async fn a_rewrite_that_keeps_length_and_time_moves_the_stamp() {
    let (dir, file) = folder("stamp");
    let before = std::fs::metadata(&file).unwrap();
    let later = |m: &std::fs::Metadata| m.modified().unwrap() + SETTLED + Duration::from_secs(1);
    assert_eq!(Stamp::at(&before, std::time::SystemTime::now()), None, "fresh: no stamp");
    let settled = Stamp::at(&before, later(&before));
    assert!(settled.is_some());

    // Past the clock's tick (the status change time is coarse), rewritten, time restored.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&file, b"two").unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(before.modified().unwrap()).unwrap();
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
    assert_ne!(Stamp::at(&after, later(&after)), settled, "the rewrite left the stamp as it was");

    // Through a registry: a quiet rescan skips a settled, unchanged file; a full scan and a
    // quiet one after a rewrite read it.
    tokio::time::sleep(SETTLED + Duration::from_millis(100)).await;
    let registry = registry(&dir);
    let counts = || {
        let (read, failed) = (&registry.files_read, &registry.loads_failed);
        (read.load(std::sync::atomic::Ordering::Relaxed), failed.load(std::sync::atomic::Ordering::Relaxed))
    };
    registry.scan().await.unwrap();
    assert_eq!(counts(), (1, 1), "read, and not a plugin");
    registry.scan_files(true).await.unwrap();
    assert_eq!(counts(), (1, 1), "settled and unchanged: not read again");
    registry.scan().await.unwrap();
    assert_eq!(counts(), (2, 1), "a full scan reads every file");
    std::fs::write(&file, b"six").unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(before.modified().unwrap()).unwrap();
    registry.scan_files(true).await.unwrap();
    assert_eq!(counts(), (3, 2), "the rewrite was not read");
    assert_eq!(registry.status()[0].sha256, sha256_hex(b"six"));
    std::fs::remove_dir_all(&dir).unwrap();
}
