//! API keys: stored with a SHA-256 of their secret, never the secret itself.

use super::codec::{self, StoredApiKey};
use super::keys::cf;
use super::{Store, page};
use crate::error::{Result, ServiceError};

impl Store {
    /// Every API key, revoked ones included (loaded once by the authenticator).
    pub fn all_api_keys(&self) -> Result<Vec<StoredApiKey>> {
        self.range(cf::API_KEYS, &[], &[0xff], false)
            .map(|item| item.and_then(|(_, value)| codec::decode(&value)))
            .collect()
    }

    /// Stores a new or updated key.
    pub fn put_api_key(&self, key: &StoredApiKey) -> Result<()> {
        self.space.track(self.db.put_cf_opt(
            self.cf(cf::API_KEYS),
            key.key_id.as_bytes(),
            codec::encode(key),
            &self.write_opts,
        ))?;
        Ok(())
    }

    /// One key by id.
    pub fn api_key(&self, key_id: &str) -> Result<StoredApiKey> {
        self.get_decoded(cf::API_KEYS, key_id.as_bytes())?
            .ok_or_else(|| ServiceError::not_found(format!("api key {key_id}")))
    }

    /// One page of keys in id order.
    pub fn list_api_keys(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<StoredApiKey>, String)> {
        const SCOPE: &[u8] = b"apikeys";
        let start = match page::decode("page_token", page_token, SCOPE)? {
            Some(cursor) => [cursor.as_slice(), &[0]].concat(),
            None => Vec::new(),
        };
        let mut keys: Vec<StoredApiKey> = Vec::new();
        for item in self.range(cf::API_KEYS, &start, &[0xff], false) {
            let (_, value) = item?;
            if keys.len() == page_size {
                let token = page::encode(SCOPE, keys[page_size - 1].key_id.as_bytes());
                return Ok((keys, token));
            }
            keys.push(codec::decode(&value)?);
        }
        Ok((keys, String::new()))
    }
}
