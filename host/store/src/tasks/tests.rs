use super::*;

/// A task of `user_id` first due at `first_poll_at` (for the store's tests).
pub(crate) fn new_task(user_id: i64, first_poll_at: i64) -> NewTask {
    NewTask {
        user_id,
        key_id: 1,
        channel: "video".into(),
        key_fingerprint: "fp".into(),
        plugin: "kling".into(),
        plugin_version: "1.0.0".into(),
        op: "video".into(),
        model: "kling-v2".into(),
        price_group: "default".into(),
        state: r#"{"vendor_id":"v1"}"#.into(),
        reserved_micros: 500_000,
        fee_micros: 0,
        request_id: "req-1".into(),
        first_poll_at,
        expires_at: first_poll_at + 3600,
        params: None,
        callback_url: None,
        chat_id: None,
        user_uuid: None,
    }
}

#[tokio::test]
async fn open_tasks_are_counted_per_user_and_only_up_to_the_bound() {
    let db = crate::open_for_test("tasks_count_open").await;
    for i in 0..3 {
        insert(&db, &format!("task_{i}"), &new_task(1, 100), 90).await.unwrap();
    }
    insert(&db, "task_other", &new_task(2, 100), 90).await.unwrap();
    let done = Outcome { status: SUCCEEDED, outputs: Some("[]"), ..Default::default() };
    assert!(finish(&db, "task_0", &done, 95).await.unwrap());
    assert_eq!(count_open(&db, 1, 10).await.unwrap(), 2, "an ended task is not open");
    assert_eq!(count_open(&db, 1, 1).await.unwrap(), 1, "counted up to the bound");
    assert_eq!(count_open(&db, 3, 10).await.unwrap(), 0);
}

#[tokio::test]
async fn each_due_task_is_leased_to_one_node_and_taken_over_when_its_lease_runs_out() {
    let db = crate::open_for_test("tasks_lease").await;
    for i in 0..6 {
        insert(&db, &format!("task_{i}"), &new_task(1, 100), 90).await.unwrap();
    }
    insert(&db, "task_later", &new_task(1, 500), 90).await.unwrap();
    // Two nodes claim at once: disjoint, and together every due task once.
    let (a, b) = tokio::join!(claim_due(&db, "node-a", 100, 30, 4), claim_due(&db, "node-b", 100, 30, 4));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<&str> = a.iter().chain(&b).map(|t| t.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.len() + b.len(), "no task leased twice");
    let rest = claim_due(&db, "node-c", 101, 30, 10).await.unwrap();
    assert_eq!(a.len() + b.len() + rest.len(), 6, "every due task, none not yet due");
    assert!(claim_due(&db, "node-c", 110, 30, 10).await.unwrap().is_empty(), "all leased");
    // Only the lease holder records progress; then the task is due again at its next poll.
    let t = &a.first().or(b.first()).unwrap().clone();
    let holder = t.lease_owner.clone().unwrap();
    assert!(!progress(&db, &t.id, "someone-else", Some(5), None, None, 200, 110).await.unwrap());
    assert!(progress(&db, &t.id, &holder, Some(40), Some("rendering"), Some("{}"), 200, 110).await.unwrap());
    let stored = get(&db, &t.id, 1).await.unwrap().unwrap();
    assert_eq!((stored.status.as_str(), stored.progress, stored.polls), (IN_PROGRESS, Some(40), 1));
    assert_eq!((stored.state.as_str(), stored.lease_owner), ("{}", None));
    // A lease given back untouched makes the task due again at once, for any node.
    let other = a.iter().chain(&b).find(|x| x.id != t.id).unwrap().clone();
    release(&db, &other.id, "not-the-holder").await.unwrap();
    assert!(claim_due(&db, "node-e", 111, 30, 10).await.unwrap().is_empty(), "only the holder releases");
    release(&db, &other.id, other.lease_owner.as_deref().unwrap()).await.unwrap();
    let again = claim_due(&db, "node-e", 111, 30, 10).await.unwrap();
    assert_eq!(again.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), [other.id.as_str()]);
    assert_eq!(again[0].polls, 0, "not counted as a poll");
    // A node that died: its leases run out and another node takes the tasks over.
    let taken = claim_due(&db, "node-d", 150, 30, 10).await.unwrap();
    assert_eq!(taken.len(), 5, "the five leased tasks whose leases ran out, not the one polled");
    assert!(taken.iter().all(|t| t.lease_owner.as_deref() == Some("node-d")));
}

#[tokio::test]
async fn a_task_ends_once_and_only_its_owner_sees_it() {
    let db = crate::open_for_test("tasks_end").await;
    insert(&db, "task_a", &new_task(7, 100), 90).await.unwrap();
    assert!(get(&db, "task_a", 8).await.unwrap().is_none(), "another user's task is not found");
    assert_eq!(list(&db, 8, 10).await.unwrap().len(), 0);
    assert_eq!(list(&db, 7, 10).await.unwrap().len(), 1);
    let ok = Outcome { status: SUCCEEDED, outputs: Some("[]"), charge_micros: Some(400_000), ..Default::default() };
    let failed = Outcome { status: FAILED, error_kind: Some("upstream_fault"), ..Default::default() };
    // Two settlements race (two nodes, a poll and a cancel): exactly one wins.
    let (x, y) = tokio::join!(finish(&db, "task_a", &ok, 200), finish(&db, "task_a", &failed, 200));
    assert!(x.unwrap() ^ y.unwrap(), "exactly one transition settles the task");
    assert!(!finish(&db, "task_a", &ok, 300).await.unwrap(), "never twice");
    let t = get(&db, "task_a", 7).await.unwrap().unwrap();
    assert!(t.is_final());
    assert!(claim_due(&db, "n", 10_000, 30, 10).await.unwrap().is_empty(), "a final task is never polled");
    assert!(finish(&db, "task_a", &Outcome { status: QUEUED, ..Default::default() }, 1).await.is_err());
    insert(&db, "task_b", &new_task(8, 100), 95).await.unwrap();
    let all = search(&db, &Filter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["task_b", "task_a"]);
    let mine = Filter { user_id: Some(7), status: Some(t.status.clone()), limit: 10, ..Default::default() };
    assert_eq!(search(&db, &mine).await.unwrap().len(), 1);
    let none = Filter { plugin: Some("suno".into()), channel: Some("video".into()), limit: 10, ..Default::default() };
    assert!(search(&db, &none).await.unwrap().is_empty());
    let of_model = |m: &str| Filter { model: Some(m.into()), user_id: Some(8), limit: 10, ..Default::default() };
    assert_eq!(search(&db, &of_model("kling-v2")).await.unwrap().len(), 1);
    assert!(search(&db, &of_model("suno-v4")).await.unwrap().is_empty(), "another model");
}

/// A user granted 1.000000, and a key of theirs.
async fn account(db: &Db) {
    sqlx::query("INSERT INTO users (name, balance_micros, created_at, updated_at) VALUES ('u', 1000000, 0, 0)")
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO consumer_keys (name, key_hash, key_prefix, created_at, updated_at, user_id) \
         VALUES ('k', 'h', 'p', 0, 0, 1)",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledger (entry_id, key_id, user_id, amount_micros, kind, created_at) \
         VALUES ('grant-1', 1, 1, 1000000, 'grant', 0)",
    )
    .execute(db)
    .await
    .unwrap();
}

async fn money(db: &Db) -> (i64, i64, i64, i64) {
    let (balance, ledger): (i64, i64) = sqlx::query_as(
        "SELECT u.balance_micros, CAST((SELECT SUM(l.amount_micros) FROM ledger l WHERE l.user_id = u.id) AS BIGINT) \
         FROM users u WHERE u.id = 1",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let (spent, charged): (i64, i64) = sqlx::query_as(
        "SELECT k.spent_micros, CAST(COALESCE((SELECT -SUM(l.amount_micros) FROM ledger l \
         WHERE l.key_id = k.id AND l.kind = 'charge'), 0) AS BIGINT) FROM consumer_keys k WHERE k.id = 1",
    )
    .fetch_one(db)
    .await
    .unwrap();
    (balance, ledger, spent, charged)
}

fn submit_record(request_id: &str) -> CallRecord {
    CallRecord {
        request_id: request_id.into(),
        key_id: Some(1),
        user_id: Some(1),
        op: "video".into(),
        status: 200,
        created_at: 90,
        ..CallRecord::default()
    }
}

#[tokio::test]
async fn a_task_holds_its_reservation_and_is_settled_once_by_what_it_cost() {
    let db = crate::open_for_test("tasks_money").await;
    account(&db).await;
    let mut t = new_task(1, 100);
    t.request_id = "req-v".into();
    create_with_hold(&db, "task_v", &t, &submit_record("req-v"), 90).await.unwrap();
    // The hold is on the ledger at once: it survives a restart of the node.
    assert_eq!(money(&db).await, (500_000, 500_000, 500_000, 500_000));
    // The same request id cannot hold twice; nothing of the second attempt is written.
    let mut again = new_task(1, 100);
    again.request_id = "req-v".into();
    assert!(create_with_hold(&db, "task_w", &again, &submit_record("req-v"), 90).await.is_err());
    assert!(get(&db, "task_w", 1).await.unwrap().is_none());
    // Two nodes settle at once (a poll and a cancel): one gives back 0.5 - 0.3, once.
    let ok = Outcome { status: SUCCEEDED, outputs: Some("[]"), ..Default::default() };
    let cancel = Outcome { status: CANCELLED, ..Default::default() };
    let (x, y) = tokio::join!(
        finish_and_settle(&db, "task_v", None, &ok, 300_000, 200),
        finish_and_settle(&db, "task_v", None, &cancel, 0, 200)
    );
    let settled: Vec<i64> = [x.unwrap(), y.unwrap()].into_iter().flatten().map(|s| s.refund_micros).collect();
    assert_eq!(settled.len(), 1, "exactly one settlement");
    let (balance, ledger, spent, charged) = money(&db).await;
    assert_eq!((balance, spent), (1_000_000 - 500_000 + settled[0], 500_000 - settled[0]));
    assert_eq!((balance, spent), (ledger, charged), "the ledger's invariants hold");
    assert_eq!(finish_and_settle(&db, "task_v", None, &ok, 0, 300).await.unwrap(), None, "never again");
}

#[tokio::test]
async fn only_the_lease_holder_settles_a_poll_and_never_beyond_the_hold() {
    let db = crate::open_for_test("tasks_lease_settle").await;
    account(&db).await;
    create_with_hold(&db, "task_l", &new_task(1, 100), &submit_record("req-l"), 90).await.unwrap();
    // Leased by node A at its expiry time: neither expiry nor node B can end it meanwhile.
    let leased = claim_due(&db, "node-a", 3700, 60, 10).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert!(overdue(&db, 3750, 10).await.unwrap().is_empty(), "a task being polled does not expire");
    assert_eq!(overdue(&db, 3761, 10).await.unwrap().len(), 1, "once its lease ran out, it does");
    let ok = Outcome { status: SUCCEEDED, message: Some(&"é".repeat(2000)), ..Default::default() };
    assert_eq!(finish_and_settle(&db, "task_l", Some("node-b"), &ok, 1, 110).await.unwrap(), None);
    // Node A reports more than was held: the task costs its hold, no more.
    let settled = finish_and_settle(&db, "task_l", Some("node-a"), &ok, 9_000_000, 110).await.unwrap().unwrap();
    assert_eq!(settled.refund_micros, 0);
    assert_eq!(money(&db).await, (500_000, 500_000, 500_000, 500_000));
    let t = get(&db, "task_l", 1).await.unwrap().unwrap();
    assert_eq!(t.charge_micros, Some(500_000));
    assert!(t.message.unwrap().len() <= 1024, "the vendor's message is bounded");
}

#[tokio::test]
async fn a_failed_task_gives_its_hold_back_whole() {
    let db = crate::open_for_test("tasks_refund").await;
    account(&db).await;
    create_with_hold(&db, "task_f", &new_task(1, 100), &submit_record("req-1"), 90).await.unwrap();
    let failed = Outcome { status: FAILED, error_kind: Some("content_filtered"), ..Default::default() };
    let settled = finish_and_settle(&db, "task_f", None, &failed, 0, 200).await.unwrap().unwrap();
    assert_eq!((settled.refund_micros, settled.user_id), (500_000, 1));
    assert_eq!(money(&db).await, (1_000_000, 1_000_000, 0, 0));
    let t = get(&db, "task_f", 1).await.unwrap().unwrap();
    assert_eq!((t.status.as_str(), t.charge_micros), (FAILED, Some(0)));
}

#[tokio::test]
async fn overdue_tasks_are_found_and_state_is_capped() {
    let db = crate::open_for_test("tasks_overdue").await;
    insert(&db, "task_old", &new_task(1, 100), 90).await.unwrap();
    assert!(overdue(&db, 3699, 10).await.unwrap().is_empty());
    assert_eq!(overdue(&db, 3700, 10).await.unwrap(), vec!["task_old".to_string()]);
    let mut big = new_task(1, 100);
    big.state = "x".repeat(MAX_STATE_BYTES + 1);
    assert!(insert(&db, "task_big", &big, 90).await.is_err());
    assert_eq!(new_id(u128::MAX).len(), "task_".len() + 32);
}

#[tokio::test]
async fn pages_follow_a_cursor_of_the_owners_tasks_in_either_order() {
    let db = crate::open_for_test("tasks_page").await;
    for (id, at, op) in
        [("task_1", 10, "video"), ("task_2", 20, "music"), ("task_3", 20, "video"), ("task_4", 30, "video")]
    {
        let t = NewTask { op: op.into(), ..new_task(1, 100) };
        insert(&db, id, &t, at).await.unwrap();
    }
    insert(&db, "task_other", &new_task(2, 100), 25).await.unwrap();
    let ids = |v: Vec<Task>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let newest = ids(page(&db, 1, Some("video"), None, 2, false).await.unwrap());
    assert_eq!(newest, ["task_4", "task_3"]);
    assert_eq!(ids(page(&db, 1, Some("video"), Some("task_3"), 2, false).await.unwrap()), ["task_1"]);
    assert_eq!(ids(page(&db, 1, None, Some("task_3"), 5, false).await.unwrap()), ["task_2", "task_1"]);
    assert_eq!(ids(page(&db, 1, Some("video"), Some("task_1"), 5, true).await.unwrap()), ["task_3", "task_4"]);
    // Another user's task is no cursor.
    assert!(page(&db, 1, None, Some("task_other"), 5, false).await.unwrap().is_empty());
    let mut with_params = new_task(1, 100);
    with_params.params = Some(r#"{"seconds":"8"}"#.into());
    insert(&db, "task_p", &with_params, 40).await.unwrap();
    assert_eq!(get(&db, "task_p", 1).await.unwrap().unwrap().params.as_deref(), Some(r#"{"seconds":"8"}"#));
    with_params.params = Some("x".repeat(MAX_PARAMS_BYTES + 1));
    assert!(insert(&db, "task_q", &with_params, 40).await.is_err());
}

#[tokio::test]
async fn a_finished_tasks_callback_is_claimed_by_one_node_retried_and_ends_delivered_or_failed() {
    let db = crate::open_for_test("tasks_callbacks").await;
    let mut t = new_task(1, 100);
    t.callback_url = Some("https://hooks.example.com/a".into());
    insert(&db, "task_cb", &t, 90).await.unwrap();
    insert(&db, "task_none", &new_task(1, 100), 90).await.unwrap();
    assert!(claim_callbacks(&db, 200, 60, 10).await.unwrap().is_empty(), "nothing before the end");
    let ok = Outcome { status: SUCCEEDED, ..Default::default() };
    for id in ["task_cb", "task_none"] {
        assert!(finish(&db, id, &ok, 150).await.unwrap());
    }
    let (a, b) = tokio::join!(claim_callbacks(&db, 200, 60, 10), claim_callbacks(&db, 200, 60, 10));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "one node delivers it; a task without a callback has none");
    let claimed = a.into_iter().chain(b).next().unwrap();
    assert_eq!((claimed.id.as_str(), claimed.callback_state.as_deref()), ("task_cb", Some("pending")));
    assert!(claim_callbacks(&db, 230, 60, 10).await.unwrap().is_empty(), "held while it is tried");
    callback_attempted(&db, "task_cb", false, Some(300)).await.unwrap();
    assert!(claim_callbacks(&db, 299, 60, 10).await.unwrap().is_empty());
    assert_eq!(claim_callbacks(&db, 300, 60, 10).await.unwrap().len(), 1, "retried when due");
    callback_attempted(&db, "task_cb", true, None).await.unwrap();
    let t = get(&db, "task_cb", 1).await.unwrap().unwrap();
    assert_eq!((t.callback_state.as_deref(), t.callback_attempts), (Some("delivered"), 2));
    assert!(claim_callbacks(&db, 10_000, 60, 10).await.unwrap().is_empty());
    // A last failed attempt ends it.
    let mut t2 = new_task(1, 100);
    t2.callback_url = Some("https://hooks.example.com/b".into());
    insert(&db, "task_cb2", &t2, 90).await.unwrap();
    assert!(finish(&db, "task_cb2", &ok, 150).await.unwrap());
    callback_attempted(&db, "task_cb2", false, None).await.unwrap();
    assert_eq!(get(&db, "task_cb2", 1).await.unwrap().unwrap().callback_state.as_deref(), Some("failed"));
}

#[tokio::test]
async fn a_submit_and_an_end_write_their_events_and_one_claimer_takes_each() {
    let db = crate::open_for_test("tasks_events").await;
    account(&db).await;
    use events::{announce, claim, claim_missed, of_task, pending_after, prune, unclaim, Interest};
    let mut t = new_task(1, 1_000);
    t.chat_id = Some("c1".into());
    create_with_hold(&db, "task_ev", &t, &submit_record("req-ev"), 100).await.unwrap();
    let events = pending_after(&db, &[1], 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].event_status.as_str(), events[0].task.id.as_str()), ("queued", "task_ev"));
    assert_eq!(events[0].task.state, "", "the plugin's state is not read");
    assert!(pending_after(&db, &[2], 0, 10).await.unwrap().is_empty(), "another user's tasks are not theirs");
    assert!(pending_after(&db, &[1], events[0].event_id, 10).await.unwrap().is_empty(), "after the last one");

    let ended = Outcome { status: SUCCEEDED, ..Default::default() };
    finish_and_settle(&db, "task_ev", None, &ended, 400, 110).await.unwrap().unwrap();
    let events = pending_after(&db, &[1], 0, 10).await.unwrap();
    let statuses: Vec<&str> = events.iter().map(|e| e.event_status.as_str()).collect();
    assert_eq!(statuses, ["queued", "succeeded"]);
    assert_eq!(events[0].task.status, "succeeded", "the task as it is now");
    assert_eq!(events[1].task.charge_micros, Some(400));

    // Two nodes reading the same event: one pushes it; given back, it is pending again.
    let first = events[0].event_id;
    assert!(claim(&db, first).await.unwrap());
    assert!(!claim(&db, first).await.unwrap());
    assert_eq!(pending_after(&db, &[1], 0, 10).await.unwrap().len(), 1);
    unclaim(&db, first).await.unwrap();

    // A registration's replay: its model, its chat (or none named), claimed at once.
    let interest = |chat: Option<&str>, model: &str| Interest {
        user_id: 1,
        model: model.into(),
        chat_id: chat.map(str::to_string),
        user_uuid: Some("u9".into()),
    };
    assert!(claim_missed(&db, &interest(Some("c2"), "kling-v2"), 0, 10).await.unwrap().is_empty(), "another chat");
    assert!(claim_missed(&db, &interest(None, "other"), 0, 10).await.unwrap().is_empty(), "another model");
    assert!(claim_missed(&db, &Interest { user_id: 2, ..interest(None, "kling-v2") }, 0, 10).await.unwrap().is_empty());
    let missed = claim_missed(&db, &interest(Some("c1"), "kling-v2"), 0, 10).await.unwrap();
    assert_eq!(missed.len(), 2);
    assert!(claim_missed(&db, &interest(Some("c1"), "kling-v2"), 0, 10).await.unwrap().is_empty(), "claimed");
    assert!(interest(Some("c1"), "kling-v2").matches(&missed[0].task));

    announce(&db, "task_ev", 120).await.unwrap();
    // An operator reads a task's events, delivered or not, oldest first.
    let history = of_task(&db, "task_ev").await.unwrap();
    assert_eq!(
        history.iter().map(|(s, _, at)| (s.as_str(), *at)).collect::<Vec<_>>(),
        [("queued", 100), ("succeeded", 110), ("succeeded", 120)]
    );
    assert!(of_task(&db, "task_other").await.unwrap().is_empty());
    assert_eq!(prune(&db, 110).await.unwrap(), 1, "the submit's event is past the window");
    assert_eq!(pending_after(&db, &[1], 0, 10).await.unwrap().len(), 1);
    assert_eq!(of_task(&db, "task_ev").await.unwrap().len(), 2);
}
