//! Group commit of export job creations: creates that arrive together share one transaction,
//! so that one durable commit serves many requests. A create waits for at most the group
//! being written ahead of it; under light load a group is a single job and nothing changes.
//!
//! A few writers take turns collecting the pending creates, so that one group is being
//! collected while others commit. Each create gets the answer of its own job: a job whose merge
//! policy changed meanwhile fails alone (see [`Jobs::create_export_jobs`]).

use std::sync::{Arc, OnceLock};

use segport_model::job::ExportJobRecord;
use segport_model::Tenant;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{CatalogError, Jobs, NewExportJob, Result};

/// Groups being committed at once.
const WRITERS: usize = 4;
/// Most jobs in one transaction.
const MOST_PER_GROUP: usize = 256;

type Pending = (Tenant, NewExportJob, oneshot::Sender<Result<ExportJobRecord>>);

/// Creates export jobs, grouping the concurrent ones into shared transactions.
pub struct JobWriter {
    catalog: Arc<dyn Jobs>,
    /// Started on first use, inside the runtime that serves the requests.
    queue: OnceLock<mpsc::Sender<Pending>>,
}

impl JobWriter {
    pub fn new(catalog: Arc<dyn Jobs>) -> Self {
        Self { catalog, queue: OnceLock::new() }
    }

    /// Inserts `job`, with the jobs created at the same moment, in one transaction.
    pub async fn create(&self, tenant: Tenant, job: NewExportJob) -> Result<ExportJobRecord> {
        let queue = self.queue.get_or_init(|| start(self.catalog.clone()));
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((tenant, job, _))) =
            queue.send((tenant, job, reply)).await
        {
            // The writers are gone (the runtime is shutting down): write it alone.
            return self.catalog.create_export_job(&tenant, job).await;
        }
        answer.await.map_err(|_| {
            CatalogError::Conflict("the job writer stopped before answering; retry".into())
        })?
    }
}

fn start(catalog: Arc<dyn Jobs>) -> mpsc::Sender<Pending> {
    let (sender, receiver) = mpsc::channel(WRITERS * MOST_PER_GROUP);
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..WRITERS {
        tokio::spawn(write_groups(catalog.clone(), receiver.clone()));
    }
    sender
}

async fn write_groups(catalog: Arc<dyn Jobs>, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut group = Vec::new();
        {
            // One writer collects at a time: what is pending now, without waiting for more.
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            while group.len() < MOST_PER_GROUP {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        let (jobs, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|(tenant, job, reply)| ((tenant, job), reply)).unzip();
        let answers = catalog.create_export_jobs(jobs).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A caller that went away no longer needs its answer; its job stands.
            let _ = reply.send(answer);
        }
    }
}
