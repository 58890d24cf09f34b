//! The task queue: leases, fencing, the reaper, tenants' turns and caps, notifications.

use super::*;

suite!(
    task_leases_fence_and_reap,
    claims_take_turns_between_tenants,
    a_tenant_runs_at_most_its_cap,
    concurrent_claims_keep_the_cap,
);

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
