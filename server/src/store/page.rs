//! Opaque page tokens. A token carries the position of the last returned item and a digest
//! of the listing's scope (memory, actor, filters...). A token presented with another scope,
//! or one that does not decode, is INVALID_ARGUMENT; a forged position can only ever point
//! inside the caller's own, already authorised, scope because it is appended to it.

use crate::error::{Result, ServiceError};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

const TOKEN_VERSION: u8 = 1;
const DIGEST_LEN: usize = 8;

/// Default and maximum page sizes.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// Bytes of payload a page carries at most: a page stops early (with a `next_page_token`)
/// rather than exceed it, so that any listing fits the gRPC message limit. A single item
/// larger than this (an event may be 10 MiB) still comes, alone on its page.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Validates a `page_size` field: 0 means the default, 1-100 is taken as is.
pub fn page_size(field: &str, requested: i32) -> Result<usize> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(ServiceError::invalid(field, "must not be negative")),
        n if n as usize > MAX_PAGE_SIZE => Err(ServiceError::invalid(
            field,
            format!("must be at most {MAX_PAGE_SIZE}"),
        )),
        n => Ok(n as usize),
    }
}

fn digest(scope: &[u8]) -> [u8; DIGEST_LEN] {
    let full = Sha256::digest(scope);
    full[..DIGEST_LEN]
        .try_into()
        .expect("digest is longer than 8 bytes")
}

/// Encodes the position `cursor` within `scope`.
pub fn encode(scope: &[u8], cursor: &[u8]) -> String {
    let mut raw = Vec::with_capacity(1 + DIGEST_LEN + cursor.len());
    raw.push(TOKEN_VERSION);
    raw.extend_from_slice(&digest(scope));
    raw.extend_from_slice(cursor);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a page token for `scope`: `None` for the first page.
pub fn decode(field: &str, token: &str, scope: &[u8]) -> Result<Option<Vec<u8>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ServiceError::invalid(field, "is not a page token of this listing");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if raw.len() < 1 + DIGEST_LEN || raw[0] != TOKEN_VERSION || raw[1..=DIGEST_LEN] != digest(scope)
    {
        return Err(invalid());
    }
    Ok(Some(raw[1 + DIGEST_LEN..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_scope() {
        let token = encode(b"events/m/a/s", b"cursor");
        assert_eq!(
            decode("page_token", &token, b"events/m/a/s").unwrap(),
            Some(b"cursor".to_vec())
        );
        assert!(decode("page_token", &token, b"events/m/b/s").is_err());
        assert!(decode("page_token", "!!!", b"x").is_err());
        assert!(decode("page_token", "AA", b"x").is_err());
        assert_eq!(decode("page_token", "", b"x").unwrap(), None);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size("page_size", 0).unwrap(), 20);
        assert_eq!(page_size("page_size", 100).unwrap(), 100);
        assert!(page_size("page_size", 101).is_err());
        assert!(page_size("page_size", -1).is_err());
    }
}
