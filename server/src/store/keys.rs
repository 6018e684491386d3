//! The RocksDB key layout. No key is built anywhere else.
//!
//! Ids never contain NUL (see `crate::ids`), so a NUL-terminated id can never be a prefix of
//! another id: `acme\0` is not a prefix of `acme2\0`. Integers are fixed-width big-endian, so
//! byte order equals numeric order.
//!
//! | column family | key                                                          | value          |
//! |---------------|--------------------------------------------------------------|----------------|
//! | `memories`    | memory_id                                                    | StoredMemory   |
//! | `meta`        | `t/` client_token                                            | StoredToken    |
//! | `meta`        | `r/` memory_id \0 scope \0 client_token (record tokens)      | StoredToken    |
//! | `apikeys`     | key_id                                                       | StoredApiKey   |
//! | `actors`      | memory_id \0 actor_id \0                                     | StoredActor    |
//! | `sessions`    | memory_id \0 actor_id \0 session_id \0                       | StoredSession  |
//! | `branches`    | memory_id \0 actor_id \0 session_id \0 branch \0             | StoredBranch   |
//! | `events`      | memory_id \0 actor_id \0 session_id \0 ts_us:u64 seq:u64     | StoredEvent    |
//! | `tokens`      | memory_id \0 actor_id \0 client_token                        | StoredToken    |
//! | `timers`      | deadline_us:u64 memory_id \0 actor_id \0 session_id \0       | (empty)        |
//! | `jobs`        | memory_id \0 actor_id \0 job_id                             | StoredJob      |
//! | `queue`       | due_us:u64 memory_id \0 actor_id \0 job_id                  | (empty)        |
//! | `records`     | memory_id \0 record_id \0                                   | StoredRecord   |
//! | `record_ns`   | memory_id \0 namespace \0 record_id \0                      | (empty)        |
//! | `record_history` | memory_id \0 record_id \0 version:u64                    | StoredRecord   |
//! | `actor_records`  | memory_id \0 actor_id \0 record_id \0                    | (empty)        |
//! | `index_log`   | seq:u64                                                      | StoredIndexChange |
//! | `vectors`     | kind:u8 memory_id \0 doc_key (record id, or event key)       | StoredVector   |
//!
//! Everything one actor owns in `actors`, `sessions`, `branches`, `events` and `tokens` starts
//! with the *actor prefix* `memory_id \0 actor_id \0`: one contiguous range per actor, which
//! the prefix bloom filters index, scans stay inside, and `DeleteActor` range-deletes. A whole
//! memory is the range of `memory_id \0`. Timers are ordered by deadline so the session sweeper
//! reads only what is due; stale timers (of deleted sessions) are dropped when they come due.
//!
//! Long-term memory: job ids are 16 hex digits of a time-based counter, so an actor's jobs
//! list in creation order; the `queue` holds one entry per runnable job, by due time (stale
//! entries of erased actors are dropped when they come due). `record_ns` indexes live records
//! by namespace (byte-prefix listings); `actor_records` lets `DeleteActor` find an actor's
//! records, which live outside its actor prefix.

use crate::error::{Result, ServiceError};

/// Column family names.
pub mod cf {
    pub const MEMORIES: &str = "memories";
    pub const META: &str = "meta";
    pub const API_KEYS: &str = "apikeys";
    pub const ACTORS: &str = "actors";
    pub const SESSIONS: &str = "sessions";
    pub const BRANCHES: &str = "branches";
    pub const EVENTS: &str = "events";
    pub const TOKENS: &str = "tokens";
    pub const TIMERS: &str = "timers";
    pub const JOBS: &str = "jobs";
    pub const QUEUE: &str = "queue";
    pub const RECORDS: &str = "records";
    pub const RECORD_NS: &str = "record_ns";
    pub const RECORD_HISTORY: &str = "record_history";
    pub const ACTOR_RECORDS: &str = "actor_records";
    pub const INDEX_LOG: &str = "index_log";
    pub const VECTORS: &str = "vectors";
    /// Session transitions and record changes for watchers, by sequence number.
    pub const CHANGES: &str = "changes";
    /// Every column family, in creation order.
    pub const ALL: [&str; 18] = [
        MEMORIES,
        META,
        API_KEYS,
        ACTORS,
        SESSIONS,
        BRANCHES,
        EVENTS,
        TOKENS,
        TIMERS,
        JOBS,
        QUEUE,
        RECORDS,
        RECORD_NS,
        RECORD_HISTORY,
        ACTOR_RECORDS,
        INDEX_LOG,
        VECTORS,
        CHANGES,
    ];
    /// Column families whose keys start with the actor prefix (range-deleted with an actor).
    pub const ACTOR_SCOPED: [&str; 7] = [
        ACTORS,
        SESSIONS,
        BRANCHES,
        EVENTS,
        TOKENS,
        JOBS,
        ACTOR_RECORDS,
    ];
    /// Column families whose keys start with `memory_id \0` (range-deleted with a memory).
    pub const MEMORY_SCOPED: [&str; 10] = [
        ACTORS,
        SESSIONS,
        BRANCHES,
        EVENTS,
        TOKENS,
        JOBS,
        ACTOR_RECORDS,
        RECORDS,
        RECORD_NS,
        RECORD_HISTORY,
    ];
}

const SEP: u8 = 0;

fn push_id(key: &mut Vec<u8>, id: &str) {
    debug_assert!(!id.as_bytes().contains(&SEP), "ids are validated NUL-free");
    key.extend_from_slice(id.as_bytes());
    key.push(SEP);
}

/// Splits off one NUL-terminated id.
fn take_id<'a>(key: &'a [u8], what: &str) -> Result<(&'a str, &'a [u8])> {
    let end = key
        .iter()
        .position(|&b| b == SEP)
        .ok_or_else(|| ServiceError::DataLoss(format!("key without {what} terminator")))?;
    let id = std::str::from_utf8(&key[..end])
        .map_err(|_| ServiceError::DataLoss(format!("{what} in key is not UTF-8")))?;
    Ok((id, &key[end + 1..]))
}

/// The smallest key greater than every key starting with `prefix` (`prefix` ends in NUL).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    // Every prefix here ends with the NUL separator, so bumping it to 0x01 never overflows.
    let last = end.last_mut().expect("prefixes are never empty");
    *last += 1;
    end
}

/// The smallest key greater than every key starting with `prefix` (any bytes).
pub fn prefix_successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): nothing is greater; callers clamp with their own upper bound.
    vec![u8::MAX; prefix.len() + 1]
}

/// `memory_id \0`: everything of one memory in an actor-scoped column family.
pub fn memory_prefix(memory_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(memory_id.len() + 1);
    push_id(&mut key, memory_id);
    key
}

/// `memory_id \0 actor_id \0`: the actor prefix; also the key of the actor's `actors` entry.
pub fn actor_prefix(memory_id: &str, actor_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(memory_id.len() + actor_id.len() + 2);
    push_id(&mut key, memory_id);
    push_id(&mut key, actor_id);
    key
}

/// `memory_id \0 actor_id \0 session_id \0`: the session's key and its events' prefix.
pub fn session_key(memory_id: &str, actor_id: &str, session_id: &str) -> Vec<u8> {
    let mut key = actor_prefix(memory_id, actor_id);
    push_id(&mut key, session_id);
    key
}

/// Decodes an `actors` key into (memory_id, actor_id).
pub fn decode_actor_key(key: &[u8]) -> Result<(&str, &str)> {
    let (memory_id, rest) = take_id(key, "memory_id")?;
    let (actor_id, _) = take_id(rest, "actor_id")?;
    Ok((memory_id, actor_id))
}

/// Decodes a `sessions` key into (memory_id, actor_id, session_id).
pub fn decode_session_key(key: &[u8]) -> Result<(&str, &str, &str)> {
    let (memory_id, rest) = take_id(key, "memory_id")?;
    let (actor_id, rest) = take_id(rest, "actor_id")?;
    let (session_id, _) = take_id(rest, "session_id")?;
    Ok((memory_id, actor_id, session_id))
}

/// Key of a branch record of a session.
pub fn branch_key(session_key: &[u8], branch: &str) -> Vec<u8> {
    let mut key = session_key.to_vec();
    push_id(&mut key, branch);
    key
}

/// `kind memory_id \0`: one memory's embeddings of one kind (`vectors`).
pub fn vector_prefix(kind: u8, memory_id: &str) -> Vec<u8> {
    let mut key = vec![kind];
    push_id(&mut key, memory_id);
    key
}

/// `kind memory_id \0 doc_key`: one document's embedding.
pub fn vector_key(kind: u8, memory_id: &str, doc_key: &[u8]) -> Vec<u8> {
    let mut key = vector_prefix(kind, memory_id);
    key.extend_from_slice(doc_key);
    key
}

/// Decodes a `vectors` key into (kind, memory_id, doc_key).
pub fn decode_vector_key(key: &[u8]) -> Result<(u8, &str, &[u8])> {
    let (&kind, rest) = key
        .split_first()
        .ok_or_else(|| ServiceError::DataLoss("empty vector key".into()))?;
    let (memory_id, doc_key) = take_id(rest, "memory_id")?;
    Ok((kind, memory_id, doc_key))
}

/// Position of an event within its session: server-assigned, unique, time-ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventSeq {
    /// The event timestamp in microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Server-wide arrival counter: orders events with equal timestamps.
    pub seq: u64,
}

impl EventSeq {
    /// Encoded width in keys.
    pub const LEN: usize = 16;

    /// Fixed-width big-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ts_us.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Parses the 16-byte form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let (ts, seq) = bytes.split_at(8);
        Some(Self {
            ts_us: u64::from_be_bytes(ts.try_into().ok()?),
            seq: u64::from_be_bytes(seq.try_into().ok()?),
        })
    }

    /// The public event id: 32 lowercase hex characters.
    pub fn to_event_id(self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Parses a public event id; `None` for anything that is not one.
    pub fn parse_event_id(id: &str) -> Option<Self> {
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Self::from_bytes(&hex::decode(id).ok()?)
    }
}

/// Key of an event: the session key followed by the event's [`EventSeq`].
pub fn event_key(session_key: &[u8], seq: EventSeq) -> Vec<u8> {
    let mut key = Vec::with_capacity(session_key.len() + EventSeq::LEN);
    key.extend_from_slice(session_key);
    key.extend_from_slice(&seq.to_bytes());
    key
}

/// Decodes an event key into its memory id and [`EventSeq`] (used by the compaction filter).
pub fn decode_event_key(key: &[u8]) -> Result<(&str, EventSeq)> {
    let (memory_id, rest) = take_id(key, "memory_id")?;
    let (_, rest) = take_id(rest, "actor_id")?;
    let (_, rest) = take_id(rest, "session_id")?;
    let seq = EventSeq::from_bytes(rest)
        .ok_or_else(|| ServiceError::DataLoss("event key with a bad sequence".into()))?;
    Ok((memory_id, seq))
}

/// The session key an event key starts with (the key is checked, as [`decode_event_key`]).
pub fn session_of_event(key: &[u8]) -> Result<&[u8]> {
    decode_event_key(key)?;
    Ok(&key[..key.len() - EventSeq::LEN])
}

/// Key of an event idempotency token (scoped to the actor).
pub fn event_token_key(memory_id: &str, actor_id: &str, token: &str) -> Vec<u8> {
    let mut key = actor_prefix(memory_id, actor_id);
    key.extend_from_slice(token.as_bytes());
    key
}

/// Key of a CreateMemory idempotency token in `meta`.
pub fn memory_token_key(token: &str) -> Vec<u8> {
    [b"t/".as_slice(), token.as_bytes()].concat()
}

/// Whose a record-creation token is: the record's actor, or for a record without one its
/// namespace. Tenants sharing a memory never meet (or block) each other's tokens.
pub fn record_token_scope(actor_id: &str, namespace: &str) -> Vec<u8> {
    if actor_id.is_empty() {
        [b"n\0".as_slice(), namespace.as_bytes()].concat()
    } else {
        [b"a\0".as_slice(), actor_id.as_bytes()].concat()
    }
}

/// Key of a record-creation idempotency token in `meta`: `r/ memory_id \0 scope \0 token`.
pub fn record_token_key(memory_id: &str, scope: &[u8], token: &str) -> Vec<u8> {
    [
        record_tokens_prefix(memory_id).as_slice(),
        scope,
        b"\0",
        token.as_bytes(),
    ]
    .concat()
}

/// `[start, end)` of every record token of every memory in `meta`.
pub fn all_record_tokens() -> (Vec<u8>, Vec<u8>) {
    (b"r/".to_vec(), b"r0".to_vec())
}

/// A record token key from before tokens were scoped (`r/ memory_id \0 token`): its memory id
/// and token; `None` for a scoped key.
pub fn legacy_record_token(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(b"r/")?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let (memory_id, token) = (&rest[..nul], &rest[nul + 1..]);
    if token.contains(&0) {
        return None;
    }
    Some((
        std::str::from_utf8(memory_id).ok()?,
        std::str::from_utf8(token).ok()?,
    ))
}

/// `r/ memory_id \0`: every record token of a memory in `meta`.
pub fn record_tokens_prefix(memory_id: &str) -> Vec<u8> {
    [b"r/".as_slice(), &memory_prefix(memory_id)].concat()
}

/// Key of a session timer: the deadline first, so due timers are a prefix of the CF.
pub fn timer_key(deadline_us: u64, session_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + session_key.len());
    key.extend_from_slice(&deadline_us.to_be_bytes());
    key.extend_from_slice(session_key);
    key
}

/// Decodes a timer key into (deadline_us, session key).
pub fn decode_timer_key(key: &[u8]) -> Result<(u64, &[u8])> {
    if key.len() < 9 {
        return Err(ServiceError::DataLoss("short timer key".into()));
    }
    let (deadline, session) = key.split_at(8);
    Ok((
        u64::from_be_bytes(deadline.try_into().expect("8 bytes")),
        session,
    ))
}

/// Key of a job: the actor prefix and the job id.
pub fn job_key(memory_id: &str, actor_id: &str, job_id: &str) -> Vec<u8> {
    let mut key = actor_prefix(memory_id, actor_id);
    key.extend_from_slice(job_id.as_bytes());
    key
}

/// Decodes a job key into (memory_id, actor_id, job_id).
pub fn decode_job_key(key: &[u8]) -> Result<(&str, &str, &str)> {
    let (memory_id, rest) = take_id(key, "memory_id")?;
    let (actor_id, rest) = take_id(rest, "actor_id")?;
    let job_id = std::str::from_utf8(rest)
        .map_err(|_| ServiceError::DataLoss("job id in key is not UTF-8".into()))?;
    Ok((memory_id, actor_id, job_id))
}

/// Key of a queue entry: due time first, so runnable jobs are a prefix of the CF.
pub fn queue_key(due_us: u64, job_key: &[u8]) -> Vec<u8> {
    timer_key(due_us, job_key)
}

/// Decodes a queue key into (due_us, job key).
pub fn decode_queue_key(key: &[u8]) -> Result<(u64, &[u8])> {
    decode_timer_key(key)
}

/// Key of a record in `records` (and, with a version appended, in `record_history`).
pub fn record_key(memory_id: &str, record_id: &str) -> Vec<u8> {
    let mut key = memory_prefix(memory_id);
    push_id(&mut key, record_id);
    key
}

/// Key of a record version in `record_history`.
pub fn record_history_key(memory_id: &str, record_id: &str, version: u64) -> Vec<u8> {
    let mut key = record_key(memory_id, record_id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// Key of a live record in the namespace index.
pub fn record_ns_key(memory_id: &str, namespace: &str, record_id: &str) -> Vec<u8> {
    let mut key = namespace_prefix(memory_id, namespace);
    push_id(&mut key, record_id);
    key
}

/// `memory_id \0 namespace \0`: the index range of one namespace exactly.
pub fn namespace_prefix(memory_id: &str, namespace: &str) -> Vec<u8> {
    let mut key = memory_prefix(memory_id);
    push_id(&mut key, namespace);
    key
}

/// Decodes a `record_ns` key into (namespace, record_id).
pub fn decode_record_ns_key(key: &[u8]) -> Result<(&str, &str)> {
    let (_, rest) = take_id(key, "memory_id")?;
    let (namespace, rest) = take_id(rest, "namespace")?;
    let (record_id, _) = take_id(rest, "record_id")?;
    Ok((namespace, record_id))
}

/// Key of an actor's record in `actor_records`.
pub fn actor_record_key(memory_id: &str, actor_id: &str, record_id: &str) -> Vec<u8> {
    let mut key = actor_prefix(memory_id, actor_id);
    push_id(&mut key, record_id);
    key
}

/// Decodes an `actor_records` key into its record id.
pub fn decode_actor_record_key(key: &[u8]) -> Result<&str> {
    let (_, rest) = take_id(key, "memory_id")?;
    let (_, rest) = take_id(rest, "actor_id")?;
    Ok(take_id(rest, "record_id")?.0)
}

/// Prefix extractor for actor-scoped CFs: the key up to and including the second NUL.
pub fn actor_prefix_of(key: &[u8]) -> &[u8] {
    let mut seen = 0;
    for (i, &b) in key.iter().enumerate() {
        if b == SEP {
            seen += 1;
            if seen == 2 {
                return &key[..=i];
            }
        }
    }
    key
}

/// Whether `key` holds a whole actor prefix (the prefix extractor's domain).
pub fn has_actor_prefix(key: &[u8]) -> bool {
    key.iter().filter(|&&b| b == SEP).count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9_/:-]{0,20}"
    }

    proptest! {
        #[test]
        fn session_key_round_trips(m in id(), a in id(), s in id()) {
            let key = session_key(&m, &a, &s);
            prop_assert_eq!(decode_session_key(&key).unwrap(), (m.as_str(), a.as_str(), s.as_str()));
            let prefix = actor_prefix(&m, &a);
            prop_assert_eq!(actor_prefix_of(&key), prefix.as_slice());
        }

        #[test]
        fn event_key_round_trips(m in id(), a in id(), s in id(), ts: u64, seq: u64) {
            let ev = EventSeq { ts_us: ts, seq };
            let key = event_key(&session_key(&m, &a, &s), ev);
            prop_assert_eq!(decode_event_key(&key).unwrap(), (m.as_str(), ev));
            prop_assert_eq!(EventSeq::parse_event_id(&ev.to_event_id()), Some(ev));
        }

        #[test]
        fn event_byte_order_is_logical_order(a: (u64, u64), b: (u64, u64)) {
            let sk = session_key("m", "a", "s");
            let ea = EventSeq { ts_us: a.0, seq: a.1 };
            let eb = EventSeq { ts_us: b.0, seq: b.1 };
            prop_assert_eq!(event_key(&sk, ea).cmp(&event_key(&sk, eb)), ea.cmp(&eb));
            prop_assert_eq!(ea.to_event_id().cmp(&eb.to_event_id()), ea.cmp(&eb));
        }

        #[test]
        fn timer_order_is_deadline_order(d1: u64, d2: u64, s1 in id(), s2 in id()) {
            let k1 = timer_key(d1, &session_key("m", "a", &s1));
            let k2 = timer_key(d2, &session_key("m", "a", &s2));
            if d1 != d2 {
                prop_assert_eq!(k1.cmp(&k2), d1.cmp(&d2));
            }
            prop_assert_eq!(decode_timer_key(&k1).unwrap().0, d1);
        }

        #[test]
        fn actor_ranges_never_overlap(a in id(), b in id()) {
            prop_assume!(a != b);
            let pa = actor_prefix("m", &a);
            let key_b = event_key(&session_key("m", &b, "s"), EventSeq { ts_us: 1, seq: 1 });
            let inside = key_b.as_slice() >= pa.as_slice() && key_b < prefix_end(&pa);
            prop_assert!(!inside);
        }
    }

    #[test]
    fn prefix_successors() {
        assert_eq!(prefix_successor(b"acme/"), b"acme0".to_vec());
        assert_eq!(prefix_successor(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_successor(b""), vec![0xff]);
    }

    #[test]
    fn bad_event_ids_are_rejected() {
        assert_eq!(EventSeq::parse_event_id("zz"), None);
        assert_eq!(EventSeq::parse_event_id(&"G".repeat(32)), None);
        assert_eq!(EventSeq::parse_event_id(&"A".repeat(32)), None);
    }
}
