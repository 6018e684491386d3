//! Entry points for the fuzz targets in `fuzz/`: each takes untrusted bytes the way memd
//! receives them (a protobuf request body, a page token, a stored value) and runs every
//! check and conversion memd applies to them. Whatever the bytes, they must return: an
//! error is fine, a panic is a bug. Not part of memd's API.

use super::{search, validate};
use crate::extraction::LlmEndpoints;
use crate::ids;
use crate::store::{codec, keys, page};
use memd_proto::v1 as pb;
use prost::Message;

/// `CreateEvent`: ids, payload (conversational turns and JSON blobs), metadata, branch,
/// timestamp.
pub fn create_event(data: &[u8]) {
    if let Ok(req) = pb::CreateEventRequest::decode(data) {
        check_create_event(req);
    }
}

/// What `CreateEvent` checks of a decoded request (also reached from the REST API's body).
pub fn check_create_event(req: pb::CreateEventRequest) {
    let _ = ids::memory_id("memory_id", &req.memory_id);
    let _ = ids::actor_id("actor_id", &req.actor_id);
    let _ = ids::session_id("session_id", &req.session_id);
    let _ = ids::client_token("client_token", &req.client_token);
    let _ = validate::event_timestamp(req.event_timestamp.as_ref());
    let _ = validate::metadata(&req.metadata);
    let _ = validate::branch(req.branch.as_ref());
    let _ = validate::extraction_mode(req.extraction_mode);
    let _ = validate::payload(req.payload);
}

/// `ListEvents`: its filter (branch, metadata conditions), page size and page token.
pub fn list_events(data: &[u8]) {
    let Ok(req) = pb::ListEventsRequest::decode(data) else {
        return;
    };
    let _ = validate::event_filter(req.filter);
    let _ = page::page_size("page_size", req.page_size);
    let _ = page::decode("page_token", &req.page_token, req.session_id.as_bytes());
}

/// `RetrieveMemoryRecords`: mode, top_k, query, namespace, metadata filters (numbers and
/// RFC 3339 times), page token.
pub fn retrieve_records(data: &[u8]) {
    let Ok(req) = pb::RetrieveMemoryRecordsRequest::decode(data) else {
        return;
    };
    let _ = validate::namespace_prefix("namespace", &req.namespace);
    let _ = page::decode("page_token", &req.page_token, req.namespace.as_bytes());
    if let Some(criteria) = req.search_criteria {
        let _ = search::search_mode("search_criteria.mode", criteria.mode);
        let _ = search::top_k("search_criteria.top_k", criteria.top_k);
        let _ = search::query_text("search_criteria.search_query", &criteria.search_query);
        let _ = search::metadata_matches(&criteria.metadata_filters);
    }
}

/// `CreateMemory`: strategies (namespace templates, triggers, LLM settings), session policy,
/// description, expiry.
pub fn create_memory(data: &[u8]) {
    let Ok(req) = pb::CreateMemoryRequest::decode(data) else {
        return;
    };
    let _ = ids::memory_name("name", &req.name);
    let _ = validate::description("description", &req.description);
    let _ = validate::event_expiry_days(req.event_expiry_days);
    let _ = validate::session_policy(req.session_policy.as_ref());
    let _ = validate::strategies(req.strategies, &LlmEndpoints::default());
}

/// `CreateApiKey`: the policy (memory ids, actor globs, namespace prefixes, actions).
pub fn create_api_key(data: &[u8]) {
    let Ok(req) = pb::CreateApiKeyRequest::decode(data) else {
        return;
    };
    let _ = validate::api_key_policy(req.policy);
}

/// A page token as a client sends it back (any string), against a fixed scope.
pub fn page_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let _ = page::decode("page_token", &token, b"memory\0actor\0session\0");
}

/// Stored values as read back from RocksDB: every value type's decoder.
pub fn stored_values(data: &[u8]) {
    let _ = codec::decode::<codec::StoredMemory>(data);
    let _ = codec::decode::<codec::StoredApiKey>(data);
    let _ = codec::decode::<codec::StoredSession>(data);
    let _ = codec::decode::<codec::StoredEvent>(data);
    let _ = codec::decode::<codec::StoredRecord>(data);
    let _ = codec::decode::<codec::StoredJob>(data);
    let _ = codec::decode::<codec::StoredIndexChange>(data);
    let _ = codec::decode::<codec::StoredChange>(data);
    let _ = codec::decode::<codec::StoredVector>(data);
    let _ = codec::decode::<codec::StoredBranch>(data);
}

/// Stored keys as read back from RocksDB, and event ids as clients send them.
pub fn store_keys(data: &[u8]) {
    let _ = keys::decode_actor_key(data);
    let _ = keys::decode_session_key(data);
    let _ = keys::decode_vector_key(data);
    let _ = keys::decode_event_key(data);
    let _ = keys::decode_timer_key(data);
    let _ = keys::decode_job_key(data);
    let _ = keys::decode_queue_key(data);
    let _ = keys::decode_record_ns_key(data);
    let _ = keys::decode_actor_record_key(data);
    let _ = keys::session_of_event(data);
    let _ = keys::legacy_record_token(data);
    let _ = keys::EventSeq::from_bytes(data);
    let _ = keys::EventSeq::parse_event_id(&String::from_utf8_lossy(data));
}
