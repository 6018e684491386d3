//! Every fuzz target's entry point, by name, for `fuzz/` (`memd-fuzz`): one per parser of
//! untrusted bytes. Each must return whatever the bytes are; a panic is a bug. Not part of
//! memd's API.

use crate::config::Config;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

/// A target's entry point: takes any bytes, must not panic.
pub type Entry = fn(&[u8]);

/// (name, entry point) of every target.
pub const TARGETS: &[(&str, Entry)] = &[
    ("create_event", crate::grpc::fuzzing::create_event),
    ("list_events", crate::grpc::fuzzing::list_events),
    ("retrieve_records", crate::grpc::fuzzing::retrieve_records),
    ("create_memory", crate::grpc::fuzzing::create_memory),
    ("create_api_key", crate::grpc::fuzzing::create_api_key),
    ("page_token", crate::grpc::fuzzing::page_token),
    ("stored_values", crate::grpc::fuzzing::stored_values),
    ("store_keys", crate::grpc::fuzzing::store_keys),
    ("metadata_value", metadata_value),
    ("config_toml", config_toml),
    ("rest_authorization", crate::rest::fuzzing::authorization),
    ("rest_route", crate::rest::fuzzing::route),
    ("rest_create_event", crate::rest::fuzzing::create_event_body),
    ("extractor", extractor),
    ("grpc_timeout", grpc_timeout),
];

/// A `grpc-timeout` header as a client sends it, combined with a server limit, then turned
/// into a deadline as [`crate::deadline::run`] does.
pub fn grpc_timeout(data: &[u8]) {
    let Ok(header) = tonic::codegen::http::HeaderValue::from_bytes(data) else {
        return;
    };
    for server in [None, Some(std::time::Duration::from_secs(60))] {
        if let Some(limit) = crate::deadline::request_limit(Some(&header), server) {
            let _ = std::time::Instant::now().checked_add(limit);
        }
    }
}

/// A metadata filter value: a number or an RFC 3339 time.
pub fn metadata_value(data: &[u8]) {
    let _ = crate::retrieval::metadata_number(&String::from_utf8_lossy(data));
}

/// A configuration file: parsed over the defaults, then validated, as `memd --config` does.
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(&text))
        .extract::<Config>();
    if let Ok(config) = parsed {
        let _ = config.validate();
        let _ = config.embedding_settings();
        let _ = config.llm_endpoints();
    }
}

/// The built-in extractor on one turn of any text: sentence splitting, statements,
/// attribution, relative dates, every record kind.
pub fn extractor(data: &[u8]) {
    use memd_extractor::{Extractor, Input, RecordKind, Role, Turn, builtin::BuiltinExtractor};
    let text = String::from_utf8_lossy(data).into_owned();
    let turn = Turn {
        event_id: "e1".into(),
        time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        role: Role::User,
        speaker: "Ann".into(),
        text,
    };
    for kind in [
        RecordKind::Fact,
        RecordKind::Preference,
        RecordKind::Summary,
        RecordKind::Episode,
    ] {
        let input = Input {
            kind,
            turns: std::slice::from_ref(&turn),
            context: &[],
            session_ended: true,
            state: None,
        };
        let _ = BuiltinExtractor.extract(&input);
    }
}
