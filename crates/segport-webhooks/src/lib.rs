//! Webhook delivery for segport.
//!
//! Events are written to the catalog's outbox by the transactions that change what they report
//! (a job's or batch's end, a schedule's missed due time). The [`Dispatcher`] claims due
//! deliveries from it, signs each as the Standard Webhooks specification says ([`sign`]),
//! sends it through a client that calls only addresses the [`AddressPolicy`] permits (checked
//! on the address resolved for that very request, which is the one connected to), and records
//! the attempt: delivered, retried later with exponential backoff and jitter, or given up after
//! the retry window, which disables an endpoint that delivered nothing meanwhile.

mod dispatch;
mod guard;
mod sign;

pub use dispatch::{DispatchConfig, Dispatcher, RetryPolicy};
pub use guard::{AddressPolicy, Refused};
pub use sign::{sign, signature_header};
