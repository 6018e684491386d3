//! Validated identifiers. Every id is checked once at the API edge; store keys rely on the
//! invariants here (no NUL bytes, bounded length) for their layout.

use crate::error::{Result, ServiceError};
use rand::Rng;

/// Checks `value` against `[A-Za-z0-9][A-Za-z0-9<extra>]*` with a length of 1..=max.
fn check_id(field: &str, value: &str, max: usize, extra: &str) -> Result<()> {
    if value.is_empty() {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if !first_ok || !rest_ok {
        return Err(ServiceError::invalid(
            field,
            format!("must match [A-Za-z0-9][A-Za-z0-9{extra}]*"),
        ));
    }
    Ok(())
}

/// Validates an actor id: 1-255 characters of `[A-Za-z0-9][A-Za-z0-9-_/:]*`.
pub fn actor_id(field: &str, value: &str) -> Result<()> {
    check_id(field, value, 255, "-_/:")
}

/// Validates a session id: 1-100 characters of `[A-Za-z0-9][A-Za-z0-9-_]*`.
pub fn session_id(field: &str, value: &str) -> Result<()> {
    check_id(field, value, 100, "-_")
}

/// Validates a memory id: 1-100 characters of `[A-Za-z0-9][A-Za-z0-9-_]*`.
pub fn memory_id(field: &str, value: &str) -> Result<()> {
    check_id(field, value, 100, "-_")
}

/// Validates a branch name (same shape as a session id). The empty name is the main branch
/// and is handled by callers.
pub fn branch_name(field: &str, value: &str) -> Result<()> {
    check_id(field, value, 100, "-_")
}

/// Validates a memory name: 1-48 characters of `[A-Za-z][A-Za-z0-9_-]*`.
pub fn memory_name(field: &str, value: &str) -> Result<()> {
    check_id(field, value, 48, "-_")?;
    if !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(ServiceError::invalid(field, "must start with a letter"));
    }
    Ok(())
}

/// Validates an idempotency token: 1-128 printable ASCII characters.
pub fn client_token(field: &str, value: &str) -> Result<()> {
    if value.len() > 128 {
        return Err(ServiceError::invalid(
            field,
            "must be at most 128 characters",
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServiceError::invalid(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A random lowercase alphanumeric string of `len` characters.
pub fn random_suffix(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new memory id: the memory's name and a random suffix, e.g. `support-k3j9x0a1b2`.
pub fn new_memory_id(name: &str) -> String {
    format!("{name}-{}", random_suffix(10))
}

/// A new session id. With an idempotency token the id is derived from it, so that a retried
/// request lands in the same session.
pub fn new_session_id(client_token: &str) -> String {
    if client_token.is_empty() {
        format!("s-{}", random_suffix(20))
    } else {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(client_token.as_bytes());
        format!("s-{}", &hex::encode(digest)[..20])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids() {
        assert!(actor_id("actor_id", "acme/user-1:x_y").is_ok());
        assert!(actor_id("actor_id", "").is_err());
        assert!(actor_id("actor_id", "/leading").is_err());
        assert!(actor_id("actor_id", "nul\0").is_err());
        assert!(actor_id("actor_id", &"a".repeat(255)).is_ok());
        let err = actor_id("actor_id", &"a".repeat(256)).unwrap_err();
        assert!(err.to_string().starts_with("actor_id:"), "{err}");
    }

    #[test]
    fn session_ids_reject_slashes() {
        assert!(session_id("session_id", "s-1_2").is_ok());
        assert!(session_id("session_id", "a/b").is_err());
        assert!(session_id("session_id", &"a".repeat(101)).is_err());
    }

    #[test]
    fn generated_session_ids_are_valid_and_token_stable() {
        assert!(session_id("s", &new_session_id("")).is_ok());
        assert_eq!(new_session_id("tok"), new_session_id("tok"));
        assert_ne!(new_session_id(""), new_session_id(""));
    }

    #[test]
    fn memory_names() {
        assert!(memory_name("name", "Support_bot-1").is_ok());
        assert!(memory_name("name", "1abc").is_err());
        assert!(memory_id("m", &new_memory_id("Support")).is_ok());
    }
}
