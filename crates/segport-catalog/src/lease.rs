//! The right to work on a task, which the task queue hands out and every fenced change names
//! (a store snapshot registered for a task, a commit): at the bottom, so that the store manifest
//! and the task queue both speak of it without depending on each other.

/// The right to work on a task: its id and the attempt that holds it. Every change a worker
/// makes names its lease; a lease taken over by another attempt fences the old one out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLease {
    pub task_id: i64,
    pub attempt_id: String,
}
