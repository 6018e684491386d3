//! Thin gRPC adapters: validate → convert → store call (off the async executor) → convert.

mod context;
pub mod control;
pub mod convert;
#[doc(hidden)]
pub mod fuzzing;
pub mod memory;
pub mod metadata_limit;
mod record_batches;
mod records;
mod search;
mod validate;
mod watch;
pub mod workers;

use crate::error::Result;
use sha2::{Digest, Sha256};

/// Runs blocking store work on tokio's blocking pool, unless the request's deadline passes
/// before a thread takes it up.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let deadline = crate::deadline::current();
    tokio::task::spawn_blocking(move || {
        crate::deadline::check_at(deadline, "its storage work started")?;
        work()
    })
    .await?
}

/// Identity of a request for idempotency: SHA-256 of its deterministic protobuf encoding
/// (maps are BTreeMaps) with the client token taken out. Empty when there is no token, so
/// requests without one pay nothing.
fn request_hash<M: prost::Message>(
    request: &mut M,
    token: impl Fn(&mut M) -> &mut String,
) -> Vec<u8> {
    if token(request).is_empty() {
        return Vec::new();
    }
    let taken = std::mem::take(token(request));
    let digest = Sha256::digest(request.encode_to_vec()).to_vec();
    *token(request) = taken;
    digest
}
