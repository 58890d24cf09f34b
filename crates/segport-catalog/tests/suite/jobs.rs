//! Export jobs: grouped creates, the job writer, reading and listing, cancel by status, maintained counts.

use super::*;

suite!(
    grouped_creates_share_a_transaction_and_fail_alone,
    the_job_writer_answers_every_concurrent_create,
    jobs_and_batches_round_trip,
    keyset_listing_orders_and_filters,
    listing_by_destination_and_creation_time,
    job_counts_are_maintained,
    cancel_by_status
);

async fn grouped_creates_share_a_transaction_and_fail_alone(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let mut stale = new_job(&db, &t, &d, 10, false).await;
    stale.merge_policy.version -= 1;
    let jobs = vec![
        (t.clone(), new_job(&db, &t, &d, 10, true).await),
        (t.clone(), stale),
        (t.clone(), new_job(&db, &t, &d, 11, false).await),
    ];
    let answers = db.catalog.create_export_jobs(jobs).await;
    assert_eq!(answers.len(), 3);
    assert!(matches!(answers[1], Err(E::Conflict(_))), "{:?}", answers[1]);
    let ids: Vec<i64> = [&answers[0], &answers[2]].iter().map(|a| a.as_ref().unwrap().id).collect();
    assert_ne!(ids[0], ids[1]);
    for (id, batches) in ids.iter().zip([2, 1]) {
        let rec = db.catalog.get_export_job(&t, *id).await.unwrap().unwrap();
        assert_eq!(rec.status, JobStatus::New);
        assert_eq!(rec.spec.destination.batch_ids().len(), batches);
        for b in rec.spec.destination.batch_ids() {
            assert_eq!(db.catalog.get_batch(&t, b).await.unwrap().unwrap().job_id, Some(*id));
        }
    }
    // Exactly the two created jobs have tasks.
    let mut claimed = Vec::new();
    while let Some(task) = db.catalog.claim_task("w", 60_000, 20).await.unwrap() {
        claimed.push(task.job_id.unwrap());
    }
    claimed.sort_unstable();
    assert_eq!(claimed, ids);
}

async fn the_job_writer_answers_every_concurrent_create(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let writer = std::sync::Arc::new(segport_catalog::group::JobWriter::new(db.catalog.clone()));
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..60 {
        let job = new_job(&db, &t, &d, 100 + i, i % 2 == 0).await;
        let (writer, t) = (writer.clone(), t.clone());
        creates.spawn(async move { writer.create(t, job).await.map(|r| (r.id, r.creation_ms)) });
    }
    let mut ids = Vec::new();
    while let Some(answer) = creates.join_next().await {
        let (id, creation_ms) = answer.unwrap().unwrap();
        let stored = db.catalog.get_export_job(&t, id).await.unwrap().unwrap();
        assert_eq!(stored.creation_ms, creation_ms, "each create is answered with its own job");
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 60);
}

async fn jobs_and_batches_round_trip(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let id = job(&db, &t, &d, 5000, true).await;
    let rec = db.catalog.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::New);
    assert_eq!(rec.creation_ms, 5000);
    let batch_ids = rec.spec.destination.batch_ids();
    assert_eq!(batch_ids.len(), 2);
    for b in batch_ids {
        let batch = db.catalog.get_batch(&t, b).await.unwrap().unwrap();
        assert_eq!(batch.status, BatchStatus::Loading);
        assert_eq!(batch.job_id, Some(id));
        assert_eq!(batch.dataset_id, d.id);
    }
    let listed = db
        .catalog
        .list_batches(
            &t,
            &BatchFilter { dataset_id: Some(d.id.clone()), status: None },
            &ListQuery { limit: 10, start: 0 },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    let none = db
        .catalog
        .list_batches(
            &t,
            &BatchFilter { dataset_id: None, status: Some(BatchStatus::Success) },
            &ListQuery { limit: 10, start: 0 },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn keyset_listing_orders_and_filters(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    // Several jobs share a creation time so that ties are broken by id.
    let mut expected = Vec::new();
    for i in 0..9 {
        let id = job(&db, &t, &d, 1000 + (i / 3), false).await;
        expected.push((1000 + (i / 3), id));
    }
    expected.sort_by(|a, b| b.cmp(a));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .catalog
            .list_export_jobs(
                &t,
                &JobListQuery { status: None, after, skip: 0, limit: 4, ..Default::default() },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|j| (j.creation_ms, j.id)));
        // Lists leave the policy's body in the table; one job has it whole.
        assert!(page.iter().all(|j| j.merge_policy.is_none()));
        let one = db.catalog.get_export_job(&t, page[0].id).await.unwrap().unwrap();
        assert_eq!(
            one.merge_policy.as_ref().map(|p| p.to_ref()),
            Some(one.spec.merge_policy.clone())
        );
        let last = page.last().unwrap();
        after = Some((last.creation_ms, last.id));
    }
    assert_eq!(seen, expected);

    let skipped = db
        .catalog
        .list_export_jobs(
            &t,
            &JobListQuery { status: None, after: None, skip: 7, limit: 10, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(skipped.iter().map(|j| (j.creation_ms, j.id)).collect::<Vec<_>>(), expected[7..]);

    db.catalog.cancel_export_job(&t, expected[0].1, 9).await.unwrap();
    let failed = db
        .catalog
        .list_export_jobs(
            &t,
            &JobListQuery {
                status: Some(JobStatus::Failed),
                after: None,
                skip: 0,
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, expected[0].1);
    let counts = db.catalog.count_jobs().await.unwrap();
    let new = counts.iter().find(|c| c.status == JobStatus::New).map(|c| c.n);
    assert_eq!(new, Some(8));
}

/// Issue 20: jobs listed by destination dataset and creation time (with and without a status),
/// paged by keyset, equal a naive filter over every job created.
async fn listing_by_destination_and_creation_time(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let (d1, d2) = (dataset(&db, &t).await, dataset(&db, &t).await);
    // (creation_ms, id, dataset, failed)
    let mut all = Vec::new();
    for i in 0..12i64 {
        let d = if i % 3 == 0 { &d2 } else { &d1 };
        let id = job(&db, &t, d, 1000 + i / 2, false).await;
        let failed = i % 4 == 1;
        if failed {
            db.catalog.cancel_export_job(&t, id, 5000).await.unwrap();
        }
        all.push((1000 + i / 2, id, d.id.clone(), failed));
    }
    // Another sandbox's job into the same dataset id is never listed.
    job(&db, &tenant("org", "dev"), &d1, 1003, false).await;
    for dataset_id in [None, Some(d1.id.clone()), Some(d2.id.clone())] {
        for status in [None, Some(JobStatus::New), Some(JobStatus::Failed)] {
            for since in [None, Some(1003)] {
                let mut expected: Vec<(i64, i64)> = all
                    .iter()
                    .filter(|(ms, _, d, failed)| {
                        dataset_id.as_ref().is_none_or(|want| want == d)
                            && since.is_none_or(|s| *ms >= s)
                            && status.is_none_or(|s| (s == JobStatus::Failed) == *failed)
                    })
                    .map(|(ms, id, _, _)| (*ms, *id))
                    .collect();
                expected.sort_by(|a, b| b.cmp(a));
                let (mut seen, mut after) = (Vec::new(), None);
                loop {
                    let query = JobListQuery {
                        status,
                        dataset_id: dataset_id.clone(),
                        created_since_ms: since,
                        after,
                        skip: 0,
                        limit: 2,
                    };
                    let page = db.catalog.list_export_jobs(&t, &query).await.unwrap();
                    let Some(last) = page.last() else { break };
                    after = Some((last.creation_ms, last.id));
                    seen.extend(page.iter().map(|j| (j.creation_ms, j.id)));
                }
                assert_eq!(seen, expected, "{dataset_id:?} {status:?} {since:?}");
            }
        }
    }
}

/// Issue 7, point 16: job counts by tenant and status are maintained as jobs are created,
/// claimed, cancelled, requeued and deleted, folded or not, and equal a count of the jobs.
async fn job_counts_are_maintained(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let (a, b) = (tenant("org-a", "prod"), tenant("org-b", "dev"));
    let (da, db_) = (dataset(&db, &a).await, dataset(&db, &b).await);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(job(&db, &a, &da, 100 + i, false).await);
    }
    for i in 0..5 {
        job(&db, &b, &db_, 200 + i, false).await;
    }
    let maintained = || async {
        db.catalog
            .count_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|c| ((c.org, c.status.to_string()), c.n))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
    // Claims (NEW → PROCESSING), cancels (NEW → FAILED), a finished job deleted, a fold in
    // the middle, leases expiring (PROCESSING → NEW).
    for _ in 0..6 {
        db.catalog.claim_task("w", 1, 300).await.unwrap().unwrap();
    }
    assert!(db.catalog.fold_job_counts().await.unwrap() > 0);
    for id in &ids[8..11] {
        db.catalog.cancel_export_job(&a, *id, 400).await.unwrap();
    }
    db.catalog.cancel_export_job(&a, ids[8], 401).await.unwrap();
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
    db.catalog.reap_expired_tasks(10_000).await.unwrap();
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
    db.catalog.fold_job_counts().await.unwrap();
    assert_eq!(db.catalog.fold_job_counts().await.unwrap(), 0, "nothing left to fold");
    assert_eq!(maintained().await, counted(&db, &[&a, &b]).await);
}

/// The oracle of the maintained counts: every job of the tenants listed and counted.
async fn counted(db: &TestCatalog, tenants: &[&Tenant]) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for t in tenants {
        let all = db
            .catalog
            .list_export_jobs(
                t,
                &JobListQuery {
                    status: None,
                    after: None,
                    skip: 0,
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for j in all {
            *out.entry((j.org.clone(), j.status.to_string())).or_default() += 1;
        }
    }
    out
}

async fn cancel_by_status(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let t = tenant("org", "prod");
    let d = dataset(&db, &t).await;
    let id = job(&db, &t, &d, 1000, false).await;
    assert_eq!(
        db.catalog.cancel_export_job(&t, id, 2000).await.unwrap(),
        Some(CancelOutcome::CancelledNew)
    );
    let rec = db.catalog.get_export_job(&t, id).await.unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert_eq!(rec.errors[0].code, "EXPORT_CANCELLED");
    assert_eq!(rec.finished_ms, Some(2000));
    let batch =
        db.catalog.get_batch(&t, rec.spec.destination.batch_ids()[0]).await.unwrap().unwrap();
    assert_eq!(batch.status, BatchStatus::Failed);
    // A finished job is deleted; its batch stays.
    assert_eq!(
        db.catalog.cancel_export_job(&t, id, 3000).await.unwrap(),
        Some(CancelOutcome::DeletedFinished)
    );
    assert!(db.catalog.get_export_job(&t, id).await.unwrap().is_none());
    assert!(db.catalog.get_batch(&t, &batch.id).await.unwrap().is_some());
    assert_eq!(db.catalog.cancel_export_job(&t, id, 4000).await.unwrap(), None);
}
