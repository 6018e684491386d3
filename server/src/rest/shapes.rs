//! Pieces shared by the REST operations: parsing a body into a typed input (unknown members
//! refused by name), timestamps as epoch seconds, metadata values, pagination.

use super::errors::AwsError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Parses a JSON body into `T`. Every input struct denies unknown members, so a member of
/// the AgentCore model that memd does not handle is a ValidationException naming it, never
/// silently dropped. An empty body reads as `{}`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        // A member of the wrong type or name is named by its path; malformed JSON (syntax,
        // truncation, nesting past serde_json's 128 levels) is the body's fault.
        let path = err.path().to_string();
        let field = match err.inner().classify() {
            serde_json::error::Category::Data if path != "." && path != "?" => path,
            _ => "body".to_string(),
        };
        AwsError::validation(&field, err.into_inner())
    })?;
    deserializer
        .end()
        .map_err(|err| AwsError::validation("body", err))?;
    Ok(parsed)
}

/// A timestamp as AWS's JSON protocols send it: seconds since the Unix epoch, fractional.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct EpochSeconds(pub f64);

impl EpochSeconds {
    /// As a protobuf timestamp; out-of-range values are refused naming the field.
    pub fn to_proto(self, field: &str) -> Result<prost_types::Timestamp, AwsError> {
        let secs = self.0;
        // Year 0 to 9999, the range RFC 3339 (and memd's store) can represent.
        if !secs.is_finite() || !(-62_135_596_800.0..=253_402_300_799.0).contains(&secs) {
            return Err(AwsError::validation(
                field,
                "is not a timestamp between years 1 and 9999",
            ));
        }
        let whole = secs.floor();
        Ok(prost_types::Timestamp {
            seconds: whole as i64,
            nanos: (((secs - whole) * 1e9).round() as i32).min(999_999_999),
        })
    }
}

/// A protobuf timestamp as epoch seconds (microsecond precision, which memd stores).
pub fn epoch(ts: Option<&prost_types::Timestamp>) -> Value {
    match ts {
        Some(ts) => json!(ts.seconds as f64 + f64::from(ts.nanos / 1000) / 1e6),
        None => Value::Null,
    }
}

/// `{"stringValue": ...}`: the only metadata value memd's string metadata holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringValue {
    pub string_value: String,
}

/// The left side of a metadata filter: `{"metadataKey": ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeftIn {
    pub metadata_key: String,
}

/// A metadata map of `{"stringValue"}` values into memd's string map.
pub fn metadata_in(metadata: Option<BTreeMap<String, StringValue>>) -> BTreeMap<String, String> {
    metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.string_value))
        .collect()
}

/// memd's string metadata as AgentCore metadata values (absent when empty: the model's
/// record metadata needs at least one entry).
pub fn metadata_out<'a>(metadata: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    let map: serde_json::Map<String, Value> = metadata
        .into_iter()
        .map(|(k, v)| (k.clone(), json!({ "stringValue": v })))
        .collect();
    if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    }
}

/// `maxResults` (1..=max) as memd's page size; absent: memd's default.
pub fn page_size(max_results: Option<i64>, max: i64) -> Result<i32, AwsError> {
    match max_results {
        None => Ok(0),
        Some(n) if (1..=max).contains(&n) => Ok(n as i32),
        Some(_) => Err(AwsError::validation(
            "maxResults",
            format!("must be 1-{max}"),
        )),
    }
}

/// Drops `null` members (optional members that are absent), recursively, so responses carry
/// only what the model's parsers expect.
pub fn compact(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

/// A page token: memd's own, passed through; empty means the last page.
pub fn next_token(token: String) -> Value {
    if token.is_empty() {
        Value::Null
    } else {
        Value::String(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        actor_id: String,
        nested: Option<Vec<StringValue>>,
    }

    #[test]
    fn unknown_and_malformed_members_name_their_path() {
        let err = parse::<Input>(br#"{"actorId":"a","encryptionKeyArn":"x"}"#).unwrap_err();
        assert_eq!(err.code, "ValidationException");
        assert!(err.message.contains("encryptionKeyArn"), "{}", err.message);
        let err = parse::<Input>(br#"{"actorId":"a","nested":[{"numberValue":1}]}"#).unwrap_err();
        assert!(err.message.starts_with("nested[0]"), "{}", err.message);
        assert!(parse::<Input>(b"{\"actorId\":1}").is_err());
        assert!(parse::<Input>(b"{\"actorId\":\"a\"} trailing").is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            parse::<Value>(deep.as_bytes()).is_err(),
            "nesting is bounded"
        );
    }

    #[test]
    fn timestamps_round_trip_in_microseconds() {
        let ts = EpochSeconds(1_733_000_000.123456).to_proto("t").unwrap();
        assert_eq!(ts.seconds, 1_733_000_000);
        assert_eq!(epoch(Some(&ts)), json!(1_733_000_000.123456));
        assert!(EpochSeconds(f64::NAN).to_proto("t").is_err());
        assert!(EpochSeconds(1e15).to_proto("t").is_err());
    }
}
