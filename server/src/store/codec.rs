//! The private storage format of values. Stored values are never the public API messages:
//! the API can evolve without a migration. Each value is one format byte followed by a
//! protobuf encoding of the structs below (protobuf so that fields can be added compatibly).
//! A value with an unknown format byte or a broken body is `DataLoss`, never a panic.

use crate::error::{Result, ServiceError};
use prost::Message;
use std::collections::BTreeMap;

/// Current storage format version, the first byte of every value.
pub const FORMAT_V1: u8 = 1;

/// Encodes a stored value.
pub fn encode<M: Message>(value: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.encoded_len());
    out.push(FORMAT_V1);
    value.encode(&mut out).expect("Vec<u8> grows as needed");
    out
}

/// Decodes a stored value written by [`encode`].
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => M::decode(body)
            .map_err(|err| ServiceError::DataLoss(format!("undecodable value: {err}"))),
        Some((version, _)) => Err(ServiceError::DataLoss(format!(
            "unknown storage format version {version}"
        ))),
        None => Err(ServiceError::DataLoss("empty value".into())),
    }
}

/// A memory's configuration.
#[derive(Clone, PartialEq, Message)]
pub struct StoredMemory {
    #[prost(string, tag = "1")]
    pub memory_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(uint32, tag = "4")]
    pub event_expiry_days: u32,
    #[prost(message, repeated, tag = "5")]
    pub strategies: Vec<StoredStrategy>,
    #[prost(message, optional, tag = "6")]
    pub session_policy: Option<StoredSessionPolicy>,
    #[prost(uint64, tag = "7")]
    pub create_us: u64,
    #[prost(uint64, tag = "8")]
    pub update_us: u64,
}

/// A long-term strategy, stored now and executed by the extraction pipeline.
#[derive(Clone, PartialEq, Message)]
pub struct StoredStrategy {
    #[prost(string, tag = "1")]
    pub strategy_id: String,
    /// `memd.v1.StrategyType` number.
    #[prost(int32, tag = "2")]
    pub strategy_type: i32,
    #[prost(string, tag = "3")]
    pub namespace_template: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub description: String,
    /// `None` for strategies stored before triggers existed: the type's defaults apply.
    #[prost(message, optional, tag = "6")]
    pub triggers: Option<StoredTriggers>,
    /// Zero: records never expire.
    #[prost(uint32, tag = "7")]
    pub record_expiry_days: u32,
    /// "builtin" or "llm" (empty: builtin).
    #[prost(string, tag = "8")]
    pub extractor: String,
    #[prost(message, optional, tag = "9")]
    pub llm: Option<StoredLlmSettings>,
    /// CUSTOM: the `memd.v1.StrategyType` it customises.
    #[prost(int32, tag = "10")]
    pub base_type: i32,
    #[prost(string, tag = "11")]
    pub prompt: String,
    /// `memd.v1.PromptMode` number.
    #[prost(int32, tag = "12")]
    pub prompt_mode: i32,
}

/// A strategy's choice of LLM endpoint and model (see `memd.v1.LlmSettings`). `base_url`,
/// `api_key_env` and the limits are only read to refuse strategies stored before memd
/// stopped accepting them.
#[derive(Clone, PartialEq, Message)]
pub struct StoredLlmSettings {
    #[prost(string, tag = "1")]
    pub base_url: String,
    #[prost(string, tag = "2")]
    pub model: String,
    #[prost(string, tag = "3")]
    pub api_key_env: String,
    #[prost(uint32, tag = "4")]
    pub timeout_seconds: u32,
    #[prost(uint32, tag = "5")]
    pub max_concurrent_requests: u32,
    #[prost(uint32, tag = "6")]
    pub tokens_per_minute: u32,
    #[prost(string, tag = "7")]
    pub endpoint: String,
}

/// When a strategy extracts (see `memd.v1.ExtractionTriggers`); zero turns a trigger off.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct StoredTriggers {
    #[prost(uint32, tag = "1")]
    pub message_count: u32,
    #[prost(uint32, tag = "2")]
    pub token_count: u32,
    #[prost(uint32, tag = "3")]
    pub idle_seconds: u32,
    #[prost(bool, tag = "4")]
    pub on_session_end: bool,
}

/// Session ageing, with defaults already applied.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct StoredSessionPolicy {
    #[prost(uint32, tag = "1")]
    pub idle_timeout_seconds: u32,
    #[prost(uint32, tag = "2")]
    pub max_duration_seconds: u32,
    #[prost(uint32, tag = "3")]
    pub idle_after_seconds: u32,
}

/// An idempotency token: which request it was first used with and what it produced.
#[derive(Clone, PartialEq, Message)]
pub struct StoredToken {
    /// SHA-256 of the request's canonical encoding without the token.
    #[prost(bytes = "vec", tag = "1")]
    pub request_hash: Vec<u8>,
    /// For events: the event key; for memories: the memory id.
    #[prost(bytes = "vec", tag = "2")]
    pub target: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub create_us: u64,
}

/// An API key. Bearer authentication checks the secret's hash; SigV4 needs the key itself
/// (the verifier recomputes an HMAC keyed by it), so keys created since memd speaks SigV4
/// keep it too (see docs/security.md).
#[derive(Clone, PartialEq, Message)]
pub struct StoredApiKey {
    #[prost(string, tag = "1")]
    pub key_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bytes = "vec", tag = "3")]
    pub secret_sha256: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub policy: Option<StoredPolicy>,
    #[prost(uint64, tag = "5")]
    pub create_us: u64,
    /// Zero while the key is valid.
    #[prost(uint64, tag = "6")]
    pub revoke_us: u64,
    /// The whole key (`memd_<id>_<secret>`): the SigV4 secret access key. Empty for keys
    /// created before memd verified SigV4; those work with Bearer only.
    #[prost(string, tag = "7")]
    pub signing_secret: String,
}

/// An API key policy (see `memd.v1.ApiKeyPolicy`).
#[derive(Clone, PartialEq, Message)]
pub struct StoredPolicy {
    #[prost(string, repeated, tag = "1")]
    pub memory_ids: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub actor_patterns: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    pub namespace_prefixes: Vec<String>,
    /// `memd.v1.ApiKeyPolicy.Action` numbers.
    #[prost(int32, repeated, tag = "4")]
    pub actions: Vec<i32>,
}

/// An actor of a memory.
#[derive(Clone, PartialEq, Message)]
pub struct StoredActor {
    #[prost(uint64, tag = "1")]
    pub create_us: u64,
}

/// A session's bookkeeping; its state is derived from these times and the memory's policy.
#[derive(Clone, PartialEq, Message)]
pub struct StoredSession {
    /// Server time of the first event.
    #[prost(uint64, tag = "1")]
    pub create_us: u64,
    /// Server time of the latest event.
    #[prost(uint64, tag = "2")]
    pub last_event_us: u64,
    #[prost(uint64, tag = "3")]
    pub event_count: u64,
    /// The last state announced to transition subscribers (`memd.v1.SessionState` number).
    /// TERMINATED here is final, whatever later policy changes say.
    #[prost(int32, tag = "4")]
    pub announced_state: i32,
    /// When the sweeper announced termination (zero before).
    #[prost(uint64, tag = "5")]
    pub terminated_us: u64,
    /// Events waiting for each strategy's trigger (the extraction outbox's staging area).
    #[prost(message, repeated, tag = "6")]
    pub pending: Vec<StoredPending>,
    /// Server time of the latest PingSession (zero: never pinged).
    #[prost(uint64, tag = "7")]
    pub last_ping_us: u64,
}

/// Events of a session that a strategy has not yet turned into a job.
#[derive(Clone, PartialEq, Message)]
pub struct StoredPending {
    #[prost(string, tag = "1")]
    pub strategy_id: String,
    /// 16-byte `EventSeq`s, in arrival order.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub event_seqs: Vec<Vec<u8>>,
    /// Estimated tokens of those events.
    #[prost(uint64, tag = "3")]
    pub tokens: u64,
}

/// An extraction job (see `memd.v1.ExtractionJob`). Written in the same batch as the event
/// or session transition that triggered it; deleted in the same batch as its results.
#[derive(Clone, PartialEq, Message)]
pub struct StoredJob {
    #[prost(string, tag = "1")]
    pub strategy_id: String,
    #[prost(string, tag = "2")]
    pub session_id: String,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub event_seqs: Vec<Vec<u8>>,
    /// The session had ended when the job was made (summaries and episodes are final).
    #[prost(bool, tag = "4")]
    pub session_ended: bool,
    #[prost(string, tag = "5")]
    pub trigger: String,
    /// `memd.v1.ExtractionJobStatus` number (PENDING or FAILED; RUNNING is not stored).
    #[prost(int32, tag = "6")]
    pub status: i32,
    #[prost(uint32, tag = "7")]
    pub attempts: u32,
    #[prost(string, tag = "8")]
    pub failure_reason: String,
    #[prost(uint64, tag = "9")]
    pub create_us: u64,
    /// Due time of its `queue` entry (zero when it has none: failed or self-managed).
    #[prost(uint64, tag = "10")]
    pub due_us: u64,
    /// The current lease of an external worker (empty: none).
    #[prost(string, tag = "11")]
    pub lease_token: String,
    #[prost(uint64, tag = "12")]
    pub lease_until_us: u64,
    /// When the job may run (self-managed jobs have no queue entry but may be in backoff).
    #[prost(uint64, tag = "13")]
    pub not_before_us: u64,
}

/// A change the search indexes must pick up (written with the change itself).
#[derive(Clone, PartialEq, Message)]
pub struct StoredIndexChange {
    #[prost(string, tag = "1")]
    pub memory_id: String,
    /// A record changed (see the index log for the other kinds).
    #[prost(string, tag = "2")]
    pub record_id: String,
    /// An event changed: its key in `events`.
    #[prost(bytes = "vec", tag = "3")]
    pub event_key: Vec<u8>,
    /// With nothing else set: the actor was erased.
    #[prost(string, tag = "4")]
    pub actor_id: String,
    /// Server time the entry was logged (0 in entries older than the field): how far each
    /// index lags, in seconds.
    #[prost(uint64, tag = "5")]
    pub logged_us: u64,
}

/// An entry of the change log (`changes`): a session transition (`session_id` set) or a
/// record change (`record_id` set).
#[derive(Clone, PartialEq, Message)]
pub struct StoredChange {
    /// Server time of the change.
    #[prost(uint64, tag = "1")]
    pub at_us: u64,
    #[prost(string, tag = "2")]
    pub memory_id: String,
    #[prost(string, tag = "3")]
    pub actor_id: String,
    #[prost(string, tag = "4")]
    pub session_id: String,
    /// `memd.v1.SessionState` numbers of a transition.
    #[prost(int32, tag = "5")]
    pub from_state: i32,
    #[prost(int32, tag = "6")]
    pub to_state: i32,
    #[prost(string, tag = "7")]
    pub record_id: String,
    #[prost(string, tag = "8")]
    pub namespace: String,
    #[prost(string, tag = "9")]
    pub strategy_id: String,
    #[prost(int64, tag = "10")]
    pub version: i64,
    /// `memd.v1.RecordChangeKind` number.
    #[prost(int32, tag = "11")]
    pub record_kind: i32,
}

/// A document's embedding (int8 codes of a unit vector) with what searches filter it by.
#[derive(Clone, PartialEq, Message)]
pub struct StoredVector {
    /// Records: namespace, strategy, actor; events: actor, session, "".
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    /// Records: expiry (0 = never); events: the event time.
    #[prost(uint64, tag = "2")]
    pub time: u64,
    #[prost(float, tag = "3")]
    pub scale: f32,
    #[prost(bytes = "vec", tag = "4")]
    pub codes: Vec<u8>,
    /// The first 8 bytes of the SHA-256 of the text embedded (0 in vectors stored before it
    /// was kept): an update that leaves the text alone reuses the vector.
    #[prost(fixed64, tag = "5")]
    pub text_hash: u64,
}

/// How far the embeddings follow the index log, and from which model they come.
#[derive(Clone, PartialEq, Message)]
pub struct StoredVectorState {
    #[prost(string, tag = "1")]
    pub fingerprint: String,
    #[prost(uint64, tag = "2")]
    pub applied: u64,
}

/// A long-term memory record (see `memd.v1.MemoryRecord`).
#[derive(Clone, PartialEq, Message)]
pub struct StoredRecord {
    #[prost(string, tag = "1")]
    pub record_id: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub strategy_id: String,
    #[prost(string, tag = "4")]
    pub text: String,
    #[prost(btree_map = "string, string", tag = "5")]
    pub metadata: BTreeMap<String, String>,
    #[prost(uint64, tag = "6")]
    pub create_us: u64,
    #[prost(uint64, tag = "7")]
    pub update_us: u64,
    #[prost(uint64, tag = "8")]
    pub valid_from_us: u64,
    /// Zero while the record is live.
    #[prost(uint64, tag = "9")]
    pub invalid_from_us: u64,
    #[prost(string, repeated, tag = "10")]
    pub source_event_ids: Vec<String>,
    #[prost(string, tag = "11")]
    pub actor_id: String,
    #[prost(string, tag = "12")]
    pub session_id: String,
    #[prost(string, tag = "13")]
    pub extractor: String,
    #[prost(string, tag = "14")]
    pub extractor_version: String,
    #[prost(uint64, tag = "15")]
    pub version: u64,
    #[prost(string, tag = "16")]
    pub superseded_by: String,
    /// Records this one superseded (their history is part of this one's).
    #[prost(string, repeated, tag = "17")]
    pub supersedes: Vec<String>,
    /// The consolidation slot: "running:KEY" or "exclusive:KEY", empty for none.
    #[prost(string, tag = "18")]
    pub slot: String,
    /// Zero: never expires.
    #[prost(uint64, tag = "19")]
    pub expire_us: u64,
    /// The extractor's own state for running records (a summary's counts and key points).
    #[prost(string, tag = "20")]
    pub extractor_state: String,
    /// The idempotency token it was created with through the API (freed on deletion).
    #[prost(string, tag = "21")]
    pub client_token: String,
    /// Words that help find the record without being part of it: for a record drawn from
    /// one turn, that turn and the turn before it. Keyword-indexed, never returned.
    #[prost(string, tag = "22")]
    pub search_context: String,
}

/// A conversation branch of a session.
#[derive(Clone, PartialEq, Message)]
pub struct StoredBranch {
    /// The event the branch forks off (16-byte `EventSeq`).
    #[prost(bytes = "vec", tag = "1")]
    pub root_seq: Vec<u8>,
    /// The branch the root event belongs to ("" = main).
    #[prost(string, tag = "2")]
    pub parent: String,
    #[prost(uint64, tag = "3")]
    pub create_us: u64,
}

/// An immutable event.
#[derive(Clone, PartialEq, Message)]
pub struct StoredEvent {
    /// Server time the event was stored; drives expiry.
    #[prost(uint64, tag = "1")]
    pub create_us: u64,
    #[prost(message, repeated, tag = "2")]
    pub payload: Vec<StoredPayload>,
    /// "" = main branch.
    #[prost(string, tag = "3")]
    pub branch: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub metadata: BTreeMap<String, String>,
    /// The idempotency token it was created with, so deleting the event deletes the token.
    #[prost(string, tag = "5")]
    pub client_token: String,
    /// The branch's root event id when `branch` is set (echoed back in `Event.branch`).
    #[prost(bytes = "vec", tag = "6")]
    pub branch_root_seq: Vec<u8>,
}

/// One payload item of an event.
#[derive(Clone, PartialEq, Message)]
pub struct StoredPayload {
    #[prost(oneof = "StoredContent", tags = "1, 2, 3")]
    pub content: Option<StoredContent>,
}

/// The content of a payload item.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum StoredContent {
    #[prost(message, tag = "1")]
    Conversational(StoredTurn),
    #[prost(bytes = "vec", tag = "2")]
    Blob(Vec<u8>),
    #[prost(string, tag = "3")]
    Json(String),
}

/// A conversation turn.
#[derive(Clone, PartialEq, Message)]
pub struct StoredTurn {
    /// `memd.v1.Role` number.
    #[prost(int32, tag = "1")]
    pub role: i32,
    #[prost(string, tag = "2")]
    pub text: String,
    /// Who spoke; empty for the default (actor id for users, the role otherwise).
    #[prost(string, tag = "3")]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let actor = StoredActor { create_us: 42 };
        let bytes = encode(&actor);
        assert_eq!(decode::<StoredActor>(&bytes).unwrap(), actor);
        assert!(matches!(
            decode::<StoredActor>(&[]),
            Err(ServiceError::DataLoss(_))
        ));
        assert!(matches!(
            decode::<StoredActor>(&[9, 1]),
            Err(ServiceError::DataLoss(_))
        ));
        assert!(matches!(
            decode::<StoredActor>(&[FORMAT_V1, 0xff]),
            Err(ServiceError::DataLoss(_))
        ));
    }
}
