//! Thin gRPC adapters: validate → convert → store call (off the async executor) → convert.

pub mod control;
pub mod convert;
pub mod memory;
mod validate;

use crate::error::Result;
use sha2::{Digest, Sha256};

/// Runs blocking store work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}

/// Identity of a request for idempotency: SHA-256 of its deterministic protobuf encoding
/// (maps are BTreeMaps) with the client token cleared.
fn request_hash<M: prost::Message + Clone>(request: &M, clear_token: impl FnOnce(&mut M)) -> Vec<u8> {
    let mut copy = request.clone();
    clear_token(&mut copy);
    Sha256::digest(copy.encode_to_vec()).to_vec()
}
