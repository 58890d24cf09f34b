//! Why an evaluation stops: at the bottom of the engine, so that every stage can say it.

/// A cause of any kind, kept whole (not flattened to text) so that reports can show its chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why an evaluation stopped. The causes stay attached (`source()`); a job's message is their
/// chain (`segport_model::error::chain`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading the store failed (`STORE_READ_ERROR`).
    #[error("cannot read the store")]
    Store(#[source] Cause),
    /// Encoding the output failed (`OUTPUT_WRITE_ERROR`).
    #[error("cannot encode the output")]
    Output(#[source] Cause),
    #[error("the export was cancelled")]
    Cancelled,
}

impl EngineError {
    /// A store read failure caused by `cause` (an error, or a message).
    pub fn store(cause: impl Into<Cause>) -> Self {
        EngineError::Store(cause.into())
    }

    /// An output encoding failure caused by `cause` (an error, or a message).
    pub fn output(cause: impl Into<Cause>) -> Self {
        EngineError::Output(cause.into())
    }
}
