//! Conversions from stored values and store views to API messages.

use crate::store::codec::StoredRecord;
use crate::store::codec::{
    StoredApiKey, StoredContent, StoredEvent, StoredMemory, StoredPayload, StoredPolicy,
    StoredStrategy, StoredTriggers,
};
use crate::store::keys::EventSeq;
use crate::store::{EventView, JobView, SessionView};
use crate::time::to_timestamp;
use memd_proto::v1 as pb;

pub fn memory(m: &StoredMemory) -> pb::Memory {
    let policy = m.session_policy.unwrap_or_default();
    pb::Memory {
        memory_id: m.memory_id.clone(),
        name: m.name.clone(),
        description: m.description.clone(),
        event_expiry_days: m.event_expiry_days as i32,
        strategies: m.strategies.iter().map(strategy).collect(),
        session_policy: Some(pb::SessionPolicy {
            idle_timeout_seconds: policy.idle_timeout_seconds,
            max_duration_seconds: policy.max_duration_seconds,
            idle_after_seconds: policy.idle_after_seconds,
        }),
        create_time: Some(to_timestamp(m.create_us)),
        update_time: Some(to_timestamp(m.update_us)),
    }
}

// Retired LLM fields are shown as stored, so that an admin sees why a strategy fails.
#[allow(deprecated)]
pub fn strategy(s: &StoredStrategy) -> pb::MemoryStrategy {
    pb::MemoryStrategy {
        strategy_id: s.strategy_id.clone(),
        r#type: s.strategy_type,
        namespace_template: s.namespace_template.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        triggers: Some(triggers(crate::store::triggers(s))),
        record_expiry_days: s.record_expiry_days as i32,
        extractor: if s.extractor.is_empty() {
            "builtin".into()
        } else {
            s.extractor.clone()
        },
        llm: s.llm.as_ref().map(|l| pb::LlmSettings {
            base_url: l.base_url.clone(),
            model: l.model.clone(),
            api_key_env: l.api_key_env.clone(),
            timeout_seconds: l.timeout_seconds,
            max_concurrent_requests: l.max_concurrent_requests,
            tokens_per_minute: l.tokens_per_minute,
            endpoint: l.endpoint.clone(),
        }),
        base_type: s.base_type,
        prompt: s.prompt.clone(),
        prompt_mode: s.prompt_mode,
    }
}

fn triggers(t: StoredTriggers) -> pb::ExtractionTriggers {
    pb::ExtractionTriggers {
        message_count: t.message_count,
        token_count: t.token_count,
        idle_seconds: t.idle_seconds,
        on_session_end: t.on_session_end,
    }
}

pub fn api_key(k: &StoredApiKey) -> pb::ApiKey {
    let policy = k.policy.clone().unwrap_or_default();
    pb::ApiKey {
        key_id: k.key_id.clone(),
        name: k.name.clone(),
        policy: Some(api_key_policy(policy)),
        create_time: Some(to_timestamp(k.create_us)),
        revoke_time: (k.revoke_us != 0).then(|| to_timestamp(k.revoke_us)),
    }
}

fn api_key_policy(p: StoredPolicy) -> pb::ApiKeyPolicy {
    pb::ApiKeyPolicy {
        memory_ids: p.memory_ids,
        actor_patterns: p.actor_patterns,
        namespace_prefixes: p.namespace_prefixes,
        actions: p.actions,
    }
}

pub fn event(view: EventView) -> pb::Event {
    let EventView {
        memory_id,
        actor_id,
        session_id,
        seq,
        stored,
    } = view;
    let StoredEvent {
        create_us,
        payload,
        branch,
        metadata,
        client_token: _,
        branch_root_seq,
    } = stored;
    let branch = (!branch.is_empty()).then(|| pb::Branch {
        name: branch,
        root_event_id: EventSeq::from_bytes(&branch_root_seq)
            .map(EventSeq::to_event_id)
            .unwrap_or_default(),
    });
    pb::Event {
        memory_id,
        actor_id,
        session_id,
        event_id: seq.to_event_id(),
        event_timestamp: Some(to_timestamp(seq.ts_us)),
        payload: payload.into_iter().map(payload_item).collect(),
        branch,
        metadata,
        create_time: Some(to_timestamp(create_us)),
    }
}

fn payload_item(item: StoredPayload) -> pb::PayloadItem {
    use pb::payload_item::Content;
    let content = item.content.map(|content| match content {
        StoredContent::Conversational(turn) => Content::Conversational(pb::Conversational {
            role: turn.role,
            text: turn.text,
            name: turn.name,
        }),
        StoredContent::Blob(bytes) => Content::Blob(bytes),
        StoredContent::Json(json) => Content::Json(json),
    });
    pb::PayloadItem { content }
}

pub fn session(view: SessionView) -> pb::Session {
    pb::Session {
        memory_id: view.memory_id,
        actor_id: view.actor_id,
        session_id: view.session_id,
        state: view.state as i32,
        create_time: Some(to_timestamp(view.create_us)),
        last_event_time: Some(to_timestamp(view.last_event_us)),
        event_count: view.event_count as i64,
        terminate_time: Some(to_timestamp(view.terminate_us)),
        last_ping_time: (view.last_ping_us != 0).then(|| to_timestamp(view.last_ping_us)),
    }
}

pub fn record(r: StoredRecord, memory_id: &str) -> pb::MemoryRecord {
    pb::MemoryRecord {
        memory_record_id: r.record_id,
        memory_id: memory_id.to_string(),
        namespace: r.namespace,
        strategy_id: r.strategy_id,
        text: r.text,
        metadata: r.metadata.into_iter().collect(),
        create_time: Some(to_timestamp(r.create_us)),
        update_time: Some(to_timestamp(r.update_us)),
        valid_from: Some(to_timestamp(r.valid_from_us)),
        invalid_from: (r.invalid_from_us != 0).then(|| to_timestamp(r.invalid_from_us)),
        source_event_ids: r.source_event_ids,
        actor_id: r.actor_id,
        session_id: r.session_id,
        extractor: r.extractor,
        extractor_version: r.extractor_version,
        version: r.version as i64,
        superseded_by: r.superseded_by,
    }
}

pub fn job(view: JobView) -> pb::ExtractionJob {
    let job = view.job;
    pb::ExtractionJob {
        job_id: view.job_id,
        memory_id: view.memory_id,
        strategy_id: job.strategy_id,
        actor_id: view.actor_id,
        session_id: job.session_id,
        status: job.status,
        attempts: job.attempts as i32,
        failure_reason: job.failure_reason,
        event_ids: job
            .event_seqs
            .iter()
            .filter_map(|s| EventSeq::from_bytes(s))
            .map(EventSeq::to_event_id)
            .collect(),
        trigger: job.trigger,
        create_time: Some(to_timestamp(job.create_us)),
        next_attempt_time: (job.due_us != 0).then(|| to_timestamp(job.due_us)),
    }
}
