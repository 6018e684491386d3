//! API keys: generation, hashing, lookup and the request interceptor.
//!
//! A key reads `memd_<key_id>_<secret>`; only SHA-256(secret) is stored. Secrets carry
//! 190 bits of randomness, so a fast hash is the right tool (slow password hashes exist for
//! low-entropy human passwords). Keys are cached in memory and written through.

use super::limits::Limits;
use super::policy::Principal;
use crate::error::{Result, ServiceError};
use crate::ids::random_suffix;
use crate::store::Store;
use crate::store::codec::{StoredApiKey, StoredPolicy};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const PREFIX: &str = "memd_";

/// How requests without credentials are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No admin key configured: anonymous requests act as admin (loopback only unless the
    /// operator opted in). Requests that do carry a key still get that key's policy.
    Development,
    /// Every request needs a valid key.
    Enforced,
}

/// Resolves bearer secrets into principals.
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
    admin_sha256: Option<[u8; 32]>,
    keys: RwLock<HashMap<String, StoredApiKey>>,
    limits: Arc<Limits>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Authenticator {
    /// Loads stored keys. `admin_key` (from config or `MEMD_ADMIN_KEY`) enables enforcement.
    pub fn load(store: &Store, admin_key: Option<&str>) -> Result<Self> {
        let keys = store
            .all_api_keys()?
            .into_iter()
            .map(|k| (k.key_id.clone(), k))
            .collect();
        let admin_sha256 = admin_key
            .filter(|k| !k.is_empty())
            .map(|k| sha256(k.as_bytes()));
        let mode = if admin_sha256.is_some() {
            AuthMode::Enforced
        } else {
            AuthMode::Development
        };
        Ok(Self {
            mode,
            admin_sha256,
            keys: RwLock::new(keys),
            limits: Arc::default(),
        })
    }

    /// The same, with per-key quotas.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self {
            limits: Arc::new(limits),
            ..self
        }
    }

    /// The per-key quotas (see [`Limits`]).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Development or enforced.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Resolves the value of an `authorization` header (if any).
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal> {
        let Some(header) = header else {
            return match self.mode {
                AuthMode::Development => Ok(Principal::superuser()),
                AuthMode::Enforced => Err(ServiceError::Unauthenticated(
                    "missing `authorization: Bearer <api key>` header".into(),
                )),
            };
        };
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ServiceError::Unauthenticated(
                    "authorization header must be `Bearer <api key>`".into(),
                )
            })?
            .trim();
        if self
            .admin_sha256
            .is_some_and(|admin| admin == sha256(secret.as_bytes()))
        {
            return Ok(Principal::superuser());
        }
        let unknown = || ServiceError::Unauthenticated("unknown or revoked api key".into());
        let (key_id, key_secret) = secret
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or_else(unknown)?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys.get(key_id).ok_or_else(unknown)?;
        if key.revoke_us != 0 || key.secret_sha256 != sha256(key_secret.as_bytes()) {
            return Err(unknown());
        }
        Ok(Principal::with_policy(
            key.key_id.clone(),
            key.policy.as_ref().unwrap_or(&StoredPolicy::default()),
        )
        .limited_by(self.limits.clone()))
    }

    /// The SigV4 secret access key and principal of the key whose id is `access_key_id`;
    /// `None` when no key has that id. A revoked key, or one created before memd kept
    /// signing secrets, is refused.
    pub fn signing_key(&self, access_key_id: &str) -> Result<Option<(String, Principal)>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some(key) = keys.get(access_key_id) else {
            return Ok(None);
        };
        if key.revoke_us != 0 {
            return Err(ServiceError::Unauthenticated(format!(
                "api key {access_key_id} is revoked"
            )));
        }
        if key.signing_secret.is_empty() {
            return Err(ServiceError::Unauthenticated(format!(
                "api key {access_key_id} predates SigV4 support and can only be used as a Bearer key; create a new key for AWS SDKs"
            )));
        }
        let principal = Principal::with_policy(
            key.key_id.clone(),
            key.policy.as_ref().unwrap_or(&StoredPolicy::default()),
        )
        .limited_by(self.limits.clone());
        Ok(Some((key.signing_secret.clone(), principal)))
    }

    /// Creates and stores a key; returns it with its one-time secret.
    pub fn create_key(
        &self,
        store: &Store,
        name: String,
        policy: StoredPolicy,
        now_us: u64,
    ) -> Result<(StoredApiKey, String)> {
        let key_id = format!("k{}", random_suffix(11));
        let secret = random_suffix(37);
        let full = format!("{PREFIX}{key_id}_{secret}");
        let key = StoredApiKey {
            key_id: key_id.clone(),
            name,
            secret_sha256: sha256(secret.as_bytes()).to_vec(),
            policy: Some(policy),
            create_us: now_us,
            revoke_us: 0,
            signing_secret: full.clone(),
        };
        store.put_api_key(&key)?;
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.clone(), key.clone());
        Ok((key, full))
    }

    /// Revokes a key; it stops working immediately.
    pub fn revoke_key(&self, store: &Store, key_id: &str, now_us: u64) -> Result<()> {
        let mut key = store.api_key(key_id)?;
        if key.revoke_us == 0 {
            key.revoke_us = now_us;
            store.put_api_key(&key)?;
        }
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.key_id.clone(), key);
        Ok(())
    }
}

/// The tonic interceptor that attaches a [`Principal`] to every request.
#[derive(Debug, Clone)]
pub struct AuthInterceptor(pub Arc<Authenticator>);

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let header = match request.metadata().get("authorization") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        tonic::Status::unauthenticated("authorization header is not ASCII")
                    })?
                    .to_owned(),
            ),
            None => None,
        };
        let principal = self.0.authenticate(header.as_deref())?;
        self.0.limits.admit(&principal)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use memd_proto::v1::api_key_policy::Action;

    #[test]
    fn keys_authenticate_until_revoked() {
        let (_dir, store) = temp_store();
        let auth = Authenticator::load(&store, Some("root-secret")).unwrap();
        assert_eq!(auth.mode(), AuthMode::Enforced);
        assert!(auth.authenticate(None).is_err());
        assert!(auth.authenticate(Some("Bearer root-secret")).is_ok());
        let policy = StoredPolicy {
            memory_ids: vec!["*".into()],
            actor_patterns: vec!["a*".into()],
            namespace_prefixes: vec![],
            actions: vec![Action::Read as i32],
        };
        let (key, secret) = auth.create_key(&store, "reader".into(), policy, 1).unwrap();
        assert!(key.secret_sha256 != secret.as_bytes());
        let principal = auth
            .authenticate(Some(&format!("Bearer {secret}")))
            .unwrap();
        assert_eq!(principal.key_id.as_deref(), Some(key.key_id.as_str()));
        assert!(
            auth.authenticate(Some(&format!("Bearer {secret}x")))
                .is_err()
        );
        // Keys survive a reload from the store.
        let reloaded = Authenticator::load(&store, Some("root-secret")).unwrap();
        assert!(
            reloaded
                .authenticate(Some(&format!("Bearer {secret}")))
                .is_ok()
        );
        let (signing, signer) = auth.signing_key(&key.key_id).unwrap().unwrap();
        assert_eq!(
            signing, secret,
            "the SigV4 secret access key is the whole key"
        );
        assert_eq!(signer.key_id.as_deref(), Some(key.key_id.as_str()));
        assert!(auth.signing_key("kunknown").unwrap().is_none());
        auth.revoke_key(&store, &key.key_id, 2).unwrap();
        assert!(auth.signing_key(&key.key_id).is_err());
        assert!(
            auth.authenticate(Some(&format!("Bearer {secret}")))
                .is_err()
        );
    }

    #[test]
    fn development_mode_admits_anonymous_callers() {
        let (_dir, store) = temp_store();
        let auth = Authenticator::load(&store, None).unwrap();
        assert_eq!(auth.mode(), AuthMode::Development);
        assert!(
            auth.authenticate(None)
                .unwrap()
                .require_global_admin()
                .is_ok()
        );
        assert!(auth.authenticate(Some("Bearer nonsense")).is_err());
    }
}
