//! The task queue: leases, fencing, the reaper, tenants' turns and caps, notifications.

use super::*;

suite!(
    task_leases_fence_and_reap,
    claims_take_turns_between_tenants,
    a_tenant_runs_at_most_its_cap,
    concurrent_claims_keep_the_cap,
    workers_and_running_tasks_as_operators_see_them,
);

/// Issue 20: workers say they are alive and are listed while recent; running tasks are listed
/// with their worker, all of them or one tenant's, as a naive filter over the claims finds.
async fn workers_and_running_tasks_as_operators_see_them(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let c = &db.catalog;
    let worker = |owner: &str| segport_catalog::WorkerInfo {
        owner: owner.into(),
        host: "h1".into(),
        slots: 2,
        started_ms: 100,
        seen_ms: 0,
    };
    c.register_worker(&worker("w1"), 1_000).await.unwrap();
    c.register_worker(&worker("w2"), 5_000).await.unwrap();
    c.register_worker(&worker("w1"), 6_000).await.unwrap();
    let live = c.live_workers(4_000).await.unwrap();
    assert_eq!(
        live.iter()
            .map(|w| (w.owner.as_str(), w.seen_ms, w.slots, w.started_ms))
            .collect::<Vec<_>>(),
        [("w1", 6_000, 2, 100), ("w2", 5_000, 2, 100)]
    );
    assert_eq!(c.live_workers(5_500).await.unwrap().len(), 1);
    c.forget_worker("w1").await.unwrap();
    assert_eq!(
        c.live_workers(0).await.unwrap().iter().map(|w| &w.owner).collect::<Vec<_>>(),
        ["w2"]
    );
    // An hour unseen: gone at the next word of any worker.
    c.register_worker(&worker("w3"), 5_000 + 3_600_001).await.unwrap();
    assert_eq!(
        c.live_workers(0).await.unwrap().iter().map(|w| &w.owner).collect::<Vec<_>>(),
        ["w3"]
    );

    let (a, b) = (tenant("org", "prod"), tenant("org", "dev"));
    let mut claimed = Vec::new();
    for (t, owner, at) in [(&a, "w3", 10_000), (&b, "w4", 11_000), (&a, "w4", 12_000)] {
        queued_batch(&db, t, at).await;
        let task = c.claim_task(owner, 60_000, at).await.unwrap().unwrap();
        claimed.push((task.batch_id.clone().unwrap().to_string(), t.clone(), owner, at));
    }
    queued_batch(&db, &a, 13_000).await; // queued, not running
    let all = c.running_tasks(None, 10).await.unwrap();
    let seen: Vec<_> =
        all.iter().map(|r| (r.batch_id.clone().unwrap(), r.owner.as_str(), r.since_ms)).collect();
    let expected: Vec<_> = claimed.iter().map(|(b, _, o, at)| (b.clone(), *o, *at)).collect();
    assert_eq!(seen, expected);
    assert!(all.iter().all(|r| r.kind == segport_catalog::TaskKind::Ingest && r.attempt == 1));
    let of_a = c.running_tasks(Some(&a), 10).await.unwrap();
    let expected: Vec<_> =
        claimed.iter().filter(|(_, t, _, _)| *t == a).map(|(b, _, _, _)| b.clone()).collect();
    assert_eq!(of_a.iter().map(|r| r.batch_id.clone().unwrap()).collect::<Vec<_>>(), expected);
    assert_eq!(c.running_tasks(None, 2).await.unwrap().len(), 2);
}

async fn task_leases_fence_and_reap(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let batch = queued_batch(&db, &t, 1_000).await;
    let c = &db.catalog;
    let first = c.claim_task("w1", 1_000, 10_000).await.unwrap().unwrap();
    assert_eq!((first.attempt, first.batch_id.as_ref()), (1, Some(&batch.id)));
    assert!(c.claim_task("w2", 1_000, 10_000).await.unwrap().is_none(), "one attempt at a time");
    assert!(c.heartbeat(&first.lease, 1_000, 10_500).await.unwrap().alive);
    assert!(
        c.reap_expired_tasks(11_000).await.unwrap().is_empty(),
        "the heartbeat extended the lease"
    );
    let reaped = c.reap_expired_tasks(12_000).await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert!(reaped[0].requeued);
    assert!(!c.heartbeat(&first.lease, 1_000, 12_001).await.unwrap().alive);
    assert!(c.running_attempts().await.unwrap().is_empty());

    let second = c.claim_task("w2", 1_000, 13_000).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease.attempt_id, first.lease.attempt_id);
    assert_eq!(c.running_attempts().await.unwrap(), vec![second.lease.attempt_id.clone()]);
    // The first attempt's late commit is fenced out and leaves nothing behind.
    assert!(matches!(
        c.commit_ingest(commit(&first.lease, &t, &batch, 13_100)).await,
        Err(E::LeaseLost)
    ));
    assert!(c.store_snapshot(&t, None).await.unwrap().files.is_empty());
    assert_eq!(c.get_batch(&t, &batch.id).await.unwrap().unwrap().status, BatchStatus::Staging);

    // A hand-back does not use up an attempt.
    assert!(c.release_task(&second.lease, 13_200).await.unwrap());
    let third = c.claim_task("w3", 1_000, 14_000).await.unwrap().unwrap();
    assert_eq!(third.attempt, 2);
    assert!(c.reap_expired_tasks(20_000).await.unwrap()[0].requeued);
    let last = c.claim_task("w3", 1_000, 21_000).await.unwrap().unwrap();
    assert_eq!(last.attempt, 3);
    let reaped = c.reap_expired_tasks(30_000).await.unwrap();
    assert!(!reaped[0].requeued, "no attempts left");
    let failed = c.get_batch(&t, &batch.id).await.unwrap().unwrap();
    assert_eq!(failed.status, BatchStatus::Failed);
    assert_eq!(failed.errors[0].code, "WORKER_LOST");
    assert!(c.claim_task("w4", 1_000, 31_000).await.unwrap().is_none());
}

/// Issue 7, point 15: tenant A queues 1,000 jobs, then tenant B one; with one worker slot, B's
/// job is claimed within the next two claims, and A's jobs go oldest first.
async fn claims_take_turns_between_tenants(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (a, b) = (tenant("org-a", "prod"), tenant("org-b", "prod"));
    let (da, db_) = (dataset(&db, &a).await, dataset(&db, &b).await);
    let mut queued_a = Vec::new();
    for i in 0..1000 {
        queued_a.push(job(&db, &a, &da, 1000 + i, false).await);
    }
    let job_b = job(&db, &b, &db_, 5000, false).await;
    let claim = || async { db.catalog.claim_task("w", 60_000, 6000).await.unwrap().unwrap() };
    let (first, second) = (claim().await, claim().await);
    let claimed = [first.job_id.unwrap(), second.job_id.unwrap()];
    assert!(claimed.contains(&job_b), "B's job waited behind A's backlog: {claimed:?}");
    assert!(claimed.contains(&queued_a[0]), "A's oldest goes first: {claimed:?}");
    // Then A's jobs, oldest first, the only tenant left.
    for expected in &queued_a[1..4] {
        assert_eq!(claim().await.job_id, Some(*expected));
    }
}

/// A task queued through one PostgreSQL catalog wakes a worker waiting on another (another
/// process in production) at once, through LISTEN/NOTIFY rather than the polling fallback.
#[tokio::test]
async fn postgres_notifies_other_processes_of_new_tasks() {
    let db = TestCatalog::postgres().await;
    let other = segport_catalog::connect(&segport_catalog::ConnectOptions::new(db.url.clone()))
        .await
        .unwrap();
    let t = tenant("org", "prod");
    // Start listening, and drain the wake-up that every new listener gets.
    other.wait_for_tasks(std::time::Duration::from_secs(5)).await;
    let waiter = tokio::spawn(async move {
        let start = std::time::Instant::now();
        other.wait_for_tasks(std::time::Duration::from_secs(20)).await;
        start.elapsed()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    queued_batch(&db, &t, 1_000).await;
    let waited = waiter.await.unwrap();
    assert!(waited < std::time::Duration::from_secs(5), "woken after {waited:?}");
}

/// With a cap of two running tasks per tenant, a tenant with many queued jobs runs two while
/// another tenant's job is claimed, and a third once one of its two ended.
async fn a_tenant_runs_at_most_its_cap(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (a, b) = (tenant("org-a", "prod"), tenant("org-b", "prod"));
    let (da, db_) = (dataset(&db, &a).await, dataset(&db, &b).await);
    for i in 0..5 {
        job(&db, &a, &da, 1_000 + i, false).await;
    }
    job(&db, &b, &db_, 2_000, false).await;
    let c = &db.catalog;
    let claim = || async { c.claim_task_within("w", 60_000, 3_000, Some(2)).await.unwrap() };
    let mut running_a = Vec::new();
    let mut claimed_b = 0;
    while let Some(task) = claim().await {
        if task.tenant == a {
            running_a.push(task);
        } else {
            claimed_b += 1;
        }
    }
    assert_eq!((running_a.len(), claimed_b), (2, 1), "A at its cap, B's job claimed");
    // Without a cap, A's third job is there to claim: the cap held it back.
    let ended = running_a.pop().unwrap();
    assert!(c.fail_task(&ended.lease, &[], 4_000).await.unwrap());
    let third = claim().await.expect("a slot of A's freed");
    assert_eq!(third.tenant, a);
    assert!(claim().await.is_none(), "A is at its cap again");
    assert!(c.claim_task("w", 60_000, 5_000).await.unwrap().is_some(), "uncapped, A's fourth");
}

/// Eight workers claiming at once never run more than the cap of one tenant's tasks.
async fn concurrent_claims_keep_the_cap(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    for i in 0..10 {
        job(&db, &t, &d, 1_000 + i, false).await;
    }
    let claims: Vec<_> = (0..8)
        .map(|w| {
            let c = db.catalog.clone();
            tokio::spawn(async move {
                c.claim_task_within(&format!("w{w}"), 60_000, 2_000, Some(2)).await.unwrap()
            })
        })
        .collect();
    let mut claimed = 0;
    for claim in claims {
        claimed += usize::from(claim.await.unwrap().is_some());
    }
    assert_eq!(claimed, 2, "claims past the cap");
    let running = db
        .catalog
        .list_export_jobs(
            &t,
            &JobListQuery {
                status: Some(JobStatus::Processing),
                after: None,
                skip: 0,
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.len(), 2, "jobs shown running");
}
