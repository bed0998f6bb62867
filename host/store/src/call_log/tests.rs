use super::*;

#[test]
fn placeholders_are_numbered_across_rows() {
    assert_eq!(placeholders(2, 3, true), "($1, $2, $3), ($4, $5, $6)");
    assert_eq!(placeholders(2, 2, false), "(?, ?), (?, ?)");
}

fn charge(request_id: &str, key_id: i64, micros: i64) -> CallRecord {
    CallRecord {
        request_id: request_id.into(),
        key_id: Some(key_id),
        user_id: Some(1),
        op: "chat".into(),
        status: 200,
        charge_micros: micros,
        ..CallRecord::default()
    }
}

#[tokio::test]
async fn charges_are_written_before_a_flood_of_free_records() {
    let (free_tx, free) = mpsc::channel(QUEUE);
    let (charges_tx, charges) = mpsc::channel(QUEUE);
    let mut queues = Queues { charges, free };
    for i in 0..BATCH + 10 {
        free_tx.try_send(CallRecord { request_id: format!("refused-{i}"), ..Default::default() }).unwrap();
    }
    charges_tx.try_send(charge("paid-1", 1, 5)).unwrap();
    charges_tx.try_send(charge("paid-2", 1, 5)).unwrap();
    // The first record taken is a charge, and the batch carries both before any free one.
    let mut batch = vec![queues.next().await.unwrap()];
    assert!(queues.take(&mut batch));
    assert_eq!(batch.len(), BATCH);
    assert_eq!(batch[0].request_id, "paid-1");
    assert_eq!(batch[1].request_id, "paid-2");
    assert!(batch[2..].iter().all(|r| r.charge_micros == 0));
    // Both queues closed: what is left is taken, then `take` says closed and `next` ends.
    drop((free_tx, charges_tx));
    let mut rest = Vec::new();
    assert!(!queues.take(&mut rest));
    assert_eq!(rest.len(), 12);
    assert!(queues.next().await.is_none());
}

#[tokio::test]
async fn the_queued_records_and_the_most_the_writer_found_waiting_are_counted() {
    let (log, mut rx) = CallLog::to_channel();
    for i in 0..3 {
        log.record(CallRecord { request_id: format!("free-{i}"), ..Default::default() });
    }
    assert_eq!(log.queued(), 3);
    rx.recv().await.unwrap();
    assert_eq!(log.queued(), 2);

    let db = with_one_user("peak").await;
    let (free_tx, free) = mpsc::channel(QUEUE);
    let (charges_tx, charges) = mpsc::channel(QUEUE);
    for i in 0..100 {
        free_tx
            .try_send(CallRecord { request_id: format!("free-{i}"), op: "chat".into(), ..Default::default() })
            .unwrap();
    }
    charges_tx.try_send(charge("paid", 1, 5)).unwrap();
    drop((free_tx, charges_tx));
    let counters = Counters { written: Arc::default(), queued_peak: Arc::default() };
    let (written, peak) = (counters.written.clone(), counters.queued_peak.clone());
    // The queues are closed: the writer drains them and ends.
    write_loop(db, Queues { charges, free }, counters, None).await;
    assert_eq!(written.load(Ordering::Relaxed), 101);
    assert_eq!(peak.load(Ordering::Relaxed), 101);
}

/// A database with user 1 (balance 1,000,000 micros) and its key 1.
async fn with_one_user(name: &str) -> crate::Db {
    let db = crate::open_for_test(name).await;
    sqlx::query("INSERT INTO users (name, balance_micros, created_at, updated_at) VALUES ('u', 1000000, 0, 0)")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO consumer_keys (name, key_hash, key_prefix, created_at, updated_at, user_id) \
             VALUES ('k', 'h', 'p', 0, 0, 1)",
    )
    .execute(&db)
    .await
    .unwrap();
    db
}

#[tokio::test]
async fn a_batch_over_several_statements_writes_every_row_and_charges_each_request_once() {
    let db = with_one_user("rows").await;
    // Two statements of ROWS rows (kept prepared) and a remainder; request 0 again in the
    // second statement; then the same batch again, through the prepared statements.
    let mut batch: Vec<CallRecord> = (0..2 * ROWS + 5)
        .map(|i| CallRecord { model: Some(format!("m-{i}")), ..charge(&format!("req-{i}"), 1, i as i64 + 1) })
        .collect();
    batch[ROWS + 3] = CallRecord { model: Some("again".into()), ..charge("req-0", 1, 1) };
    let applied = insert(&db, &batch).await.unwrap();
    let expected: Vec<bool> = (0..batch.len()).map(|i| i != ROWS + 3).collect();
    assert_eq!(applied, expected);
    assert_eq!(insert(&db, &batch).await.unwrap(), vec![false; batch.len()], "each request is charged once");
    let count = |sql: &'static str| async { sqlx::query_as::<_, (i64,)>(sql).fetch_one(&db).await.unwrap().0 };
    assert_eq!(count("SELECT COUNT(*) FROM call_log").await, 2 * batch.len() as i64);
    assert_eq!(count("SELECT COUNT(*) FROM ledger").await, batch.len() as i64 - 1);
    let charged: i64 = (0..batch.len()).filter(|&i| i != ROWS + 3).map(|i| i as i64 + 1).sum();
    assert_eq!(count("SELECT balance_micros FROM users").await, 1_000_000 - charged);
    // Each row's columns are its own, in every statement.
    for i in [0, ROWS - 1, ROWS, 2 * ROWS - 1, 2 * ROWS, 2 * ROWS + 4] {
        let (model, micros): (String, i64) = sqlx::query_as(&format!(
            "SELECT model, charge_micros FROM call_log WHERE request_id = 'req-{i}' ORDER BY id LIMIT 1"
        ))
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!((model, micros), (format!("m-{i}"), i as i64 + 1));
    }
}

#[tokio::test]
async fn a_batch_of_new_charges_is_counted_and_applied_whole_with_balances_matching_the_ledger() {
    let db = with_one_user("counted").await;
    // Two prepared statements and a remainder, every request id new: the counted write
    // commits, nothing to undo.
    let batch: Vec<CallRecord> = (0..2 * ROWS + 5).map(|i| charge(&format!("new-{i}"), 1, 10 * i as i64 + 3)).collect();
    assert_eq!(insert(&db, &batch).await.unwrap(), vec![true; batch.len()]);
    let one = |sql: &'static str| async { sqlx::query_as::<_, (i64,)>(sql).fetch_one(&db).await.unwrap().0 };
    let charged: i64 = batch.iter().map(|r| r.charge_micros).sum();
    assert_eq!(one("SELECT COUNT(*) FROM ledger").await, batch.len() as i64);
    assert_eq!(one("SELECT COUNT(*) FROM call_log").await, batch.len() as i64);
    assert_eq!(one("SELECT CAST(-SUM(amount_micros) AS BIGINT) FROM ledger").await, charged);
    assert_eq!(one("SELECT balance_micros FROM users").await, 1_000_000 - charged);
    assert_eq!(one("SELECT spent_micros FROM consumer_keys").await, charged);
    // A conflict in the last, short chunk only, after full chunks were written counted:
    // the whole batch is written again, and only the new request ids charge.
    let mut again: Vec<CallRecord> = (0..2 * ROWS + 1).map(|i| charge(&format!("more-{i}"), 1, 1)).collect();
    again.push(charge("new-0", 1, 3));
    let expected: Vec<bool> = (0..again.len()).map(|i| i < 2 * ROWS + 1).collect();
    assert_eq!(insert(&db, &again).await.unwrap(), expected);
    let total = charged + 2 * ROWS as i64 + 1;
    assert_eq!(one("SELECT COUNT(*) FROM call_log").await, (batch.len() + again.len()) as i64);
    assert_eq!(one("SELECT CAST(-SUM(amount_micros) AS BIGINT) FROM ledger").await, total);
    assert_eq!(one("SELECT balance_micros FROM users").await, 1_000_000 - total);
    assert_eq!(one("SELECT spent_micros FROM consumer_keys").await, total);
}

#[tokio::test]
async fn a_request_id_is_charged_once_however_often_it_is_settled() {
    let db = with_one_user("ledger").await;
    let applied = insert(&db, &[charge("req-1", 1, 300), charge("req-1", 1, 300)]).await.unwrap();
    assert_eq!(applied, [true, false]);
    let applied = insert(&db, &[charge("req-1", 1, 300), charge("req-2", 1, 5)]).await.unwrap();
    assert_eq!(applied, [false, true]);
    let (entries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ledger").fetch_one(&db).await.unwrap();
    assert_eq!(entries, 2, "one ledger entry per request id");
    let (balance,): (i64,) = sqlx::query_as("SELECT balance_micros FROM users").fetch_one(&db).await.unwrap();
    assert_eq!(balance, 1_000_000 - 305);

    // A NUL in any text (PostgreSQL refuses it) does not hold back the charges beside it.
    let odd = CallRecord {
        model: Some("m\0odel".into()),
        chat_id: Some("chat\0".into()),
        user_uuid: Some("\0".into()),
        ..charge("req-3", 1, 7)
    };
    assert_eq!(insert(&db, &[odd, charge("req-4", 1, 1)]).await.unwrap(), [true, true]);
    let (model, chat): (String, String) =
        sqlx::query_as("SELECT model, chat_id FROM call_log WHERE request_id = 'req-3'").fetch_one(&db).await.unwrap();
    assert_eq!((model.as_str(), chat.as_str()), ("m\u{FFFD}odel", "chat\u{FFFD}"));
}
