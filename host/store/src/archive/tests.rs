use super::*;
use crate::tasks::{self, NewTask};

fn task(user_id: i64) -> NewTask {
    NewTask { reserved_micros: 0, ..tasks::tests::new_task(user_id, 0) }
}

fn file(n: i64, sha: char) -> Output {
    Output {
        n,
        sha256: sha.to_string().repeat(64),
        size_bytes: 10,
        content_type: "video/mp4".into(),
        source_url: "https://cdn.example.com/a.mp4".into(),
    }
}

/// A task that succeeded with `files`, downloaded (held) first as the archive does.
async fn succeed(db: &Db, id: &str, user: i64, files: &[Output], now: i64) {
    for f in files {
        assert!(hold(db, &f.sha256, now + 10).await.unwrap());
    }
    record_task(db, id, user, files, now).await;
}

/// A task that succeeded with `files`, recording (releasing) the holds of their downloads.
async fn record_task(db: &Db, id: &str, user: i64, files: &[Output], now: i64) {
    tasks::insert(db, id, &task(user), 0).await.unwrap();
    let ok = tasks::Outcome { status: tasks::SUCCEEDED, archived: files, ..Default::default() };
    assert!(tasks::finish_and_settle(db, id, None, &ok, 0, now).await.unwrap().is_some());
}

#[tokio::test]
async fn files_are_found_for_their_owner_and_a_blob_goes_with_the_last_task_naming_it() {
    let db = crate::open_for_test("archive_rows").await;
    succeed(&db, "task_a", 1, &[file(0, 'a'), file(1, 'b')], 100).await;
    succeed(&db, "task_b", 2, &[file(0, 'a')], 100).await;
    assert_eq!(output(&db, "task_a", 1, 1).await.unwrap().unwrap().sha256, "b".repeat(64));
    assert!(output(&db, "task_a", 1, 2).await.unwrap().is_none(), "another user's task");
    assert!(output(&db, "task_a", 2, 1).await.unwrap().is_none());
    assert_eq!(outputs(&db, "task_a").await.unwrap().len(), 2);

    // A running task is not deleted; another user's is not found.
    tasks::insert(&db, "task_run", &task(1), 0).await.unwrap();
    assert_eq!(delete_task(&db, "task_run", 1).await.unwrap(), Some(Err("queued".into())));
    assert_eq!(delete_task(&db, "task_a", 2).await.unwrap(), None);
    // Blob a is still task_b's: only b goes.
    assert_eq!(delete_task(&db, "task_a", 1).await.unwrap(), Some(Ok(vec!["b".repeat(64)])));
    assert!(output(&db, "task_a", 0, 1).await.unwrap().is_none());
    assert!(tasks::get(&db, "task_a", 1).await.unwrap().is_none());
    assert_eq!(delete_task(&db, "task_b", 2).await.unwrap(), Some(Ok(vec!["a".repeat(64)])));
}

#[tokio::test]
async fn retention_removes_old_files_and_frees_blobs_no_live_file_names() {
    let db = crate::open_for_test("archive_retention").await;
    succeed(&db, "task_old", 1, &[file(0, 'a'), file(1, 'b')], 100).await;
    succeed(&db, "task_new", 1, &[file(0, 'b')], 500).await;
    let mut freed = expire(&db, 200, 600, 100).await.unwrap();
    freed.sort();
    assert_eq!(freed, vec!["a".repeat(64)], "b is still named by the newer task");
    assert_eq!(output(&db, "task_old", 0, 1).await.unwrap().unwrap().removed_at, Some(600));
    assert_eq!(output(&db, "task_new", 0, 1).await.unwrap().unwrap().removed_at, None);
    assert!(expire(&db, 200, 700, 100).await.unwrap().is_empty(), "nothing is removed twice");
    assert_eq!(expire(&db, 1000, 800, 100).await.unwrap(), vec!["b".repeat(64)]);
}

#[tokio::test]
async fn a_blob_is_deleted_only_when_no_download_holds_it_and_no_live_row_names_it() {
    let db = crate::open_for_test("archive_holds").await;
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    // Two downloads of a hold it until 1000; their tasks have not recorded it yet.
    assert!(hold(&db, &a, 1000).await.unwrap());
    assert!(claim_deletion(&db, &a, 500).await.unwrap().is_none(), "held");
    assert!(sweepable(&db, 500, 10).await.unwrap().is_empty());
    // A shorter hold never shortens a longer one.
    assert!(hold(&db, &a, 800).await.unwrap());
    assert!(claim_deletion(&db, &a, 900).await.unwrap().is_none());
    // One task records it: the row keeps it, and the other download still holds it.
    record_task(&db, "task_a", 1, &[file(0, 'a')], 600).await;
    assert_eq!(delete_task(&db, "task_a", 1).await.unwrap(), Some(Ok(vec![a.clone()])));
    assert!(claim_deletion(&db, &a, 900).await.unwrap().is_none(), "the other download's hold");
    // The other task records it too; the rows keep it while they live.
    record_task(&db, "task_b", 1, &[file(0, 'a')], 600).await;
    assert!(claim_deletion(&db, &a, 700).await.unwrap().is_none(), "named by a live row");
    assert!(sweepable(&db, 700, 10).await.unwrap().is_empty());
    assert_eq!(delete_task(&db, "task_b", 1).await.unwrap(), Some(Ok(vec![a.clone()])));
    // No hold and no row: claimed at once; while it is being deleted, a new download of
    // the same bytes is refused its hold (it stores them later), and nobody else claims it.
    assert_eq!(claim_deletion(&db, &a, 700).await.unwrap(), Some(700));
    assert!(!hold(&db, &a, 5000).await.unwrap());
    assert!(claim_deletion(&db, &a, 2001).await.unwrap().is_none());
    // A task that downloaded it before the claim cannot name it now: it downloads again.
    tasks::insert(&db, "task_c", &task(1), 0).await.unwrap();
    let ok = tasks::Outcome { status: tasks::SUCCEEDED, archived: &[file(0, 'a')], ..Default::default() };
    assert!(tasks::finish_and_settle(&db, "task_c", None, &ok, 0, 800).await.is_err());
    forget(&db, &a, 699).await.unwrap();
    assert!(!hold(&db, &a, 5000).await.unwrap(), "another claim's mark forgets nothing");
    forget(&db, &a, 700).await.unwrap();
    assert!(hold(&db, &a, 5000).await.unwrap(), "deleted: stored anew");

    // A download whose task never recorded its blob: swept once its hold is over, or
    // released. A deletion cut short (claimed, never forgotten) is taken again later.
    assert!(hold(&db, &b, 1000).await.unwrap());
    assert!(sweepable(&db, 999, 10).await.unwrap().is_empty());
    assert_eq!(sweepable(&db, 1000, 10).await.unwrap(), vec![b.clone()]);
    release(&db, &b).await.unwrap();
    assert_eq!(sweepable(&db, 10, 10).await.unwrap(), vec![b.clone()]);
    assert_eq!(claim_deletion(&db, &b, 1000).await.unwrap(), Some(1000));
    assert!(sweepable(&db, 1001, 10).await.unwrap().is_empty());
    let later = 1000 + STALE_DELETION_SECS + 1;
    assert_eq!(sweepable(&db, later, 10).await.unwrap(), vec![b.clone()]);
    assert_eq!(claim_deletion(&db, &b, later).await.unwrap(), Some(later));
    forget(&db, &b, 1000).await.unwrap();
    let much_later = later + STALE_DELETION_SECS + 1;
    assert!(sweepable(&db, much_later, 10).await.unwrap().contains(&b), "the old claim forgot nothing");
    forget(&db, &b, later).await.unwrap();
    assert!(!sweepable(&db, much_later, 10).await.unwrap().contains(&b));
    // A blob with no row (stored before rows were kept) is claimed all the same.
    assert!(claim_deletion(&db, &"c".repeat(64), 10).await.unwrap().is_some());
    assert!(hold(&db, &"0".repeat(63), 1).await.is_err(), "not a hash");
}

#[tokio::test]
async fn blobs_are_put_by_rename_read_back_and_deleted_and_bad_names_are_refused() {
    let dir = std::env::temp_dir().join(format!("tollgate-blobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let blobs = Blobs::open(&dir, None).unwrap();
    let (temp, _file) = blobs.create_temp().await.unwrap();
    let (other, _) = blobs.create_temp().await.unwrap();
    assert_ne!(temp, other);
    std::fs::write(&temp, b"bytes").unwrap();
    let sha = "c".repeat(64);
    blobs.put(&temp, &sha).await.unwrap();
    assert!(!temp.exists());
    let read = |offset, len| {
        let blobs = blobs.clone();
        let sha = sha.clone();
        async move {
            use futures_util::TryStreamExt;
            let chunks: Vec<bytes::Bytes> = blobs.read(&sha, offset, len).await.unwrap()?.try_collect().await.unwrap();
            Some(chunks.concat())
        }
    };
    assert_eq!(read(0, 5).await.as_deref(), Some(&b"bytes"[..]));
    assert_eq!(read(1, 3).await.as_deref(), Some(&b"yte"[..]));
    assert_eq!(read(5, 0).await.as_deref(), Some(&b""[..]));
    blobs.delete(&sha).await.unwrap();
    blobs.delete(&sha).await.unwrap();
    assert!(read(0, 5).await.is_none());
    assert!(blobs.read("../../etc/passwd", 0, 1).await.is_err());
    assert!(blobs.put(&temp, &"C".repeat(64)).await.is_err());
    // A young download (maybe another node's) survives a start.
    Blobs::open(&dir, None).unwrap();
    assert!(other.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
