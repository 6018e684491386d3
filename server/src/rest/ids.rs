//! Identifiers as AgentCore spells them. memd's own ids travel inside them unchanged, so a
//! resource is the same through gRPC and REST; only the spelling differs:
//! - memory ids are already `name-xxxxxxxxxx`; ARNs `arn:aws:bedrock-agentcore:REGION:ACCOUNT:memory/ID`
//!   are accepted wherever a memory id is;
//! - event ids read `<event time in µs>#<sequence in hex>` (memd: 32 hex digits);
//! - record ids read `mem-memd-<memd id>` (the model wants `mem-` and 40-50 characters).

use super::errors::AwsError;
use crate::store::keys::EventSeq;

/// The account part of the ARNs memd returns: a self-hosted memd belongs to no AWS account.
pub const ACCOUNT: &str = "000000000000";
const RECORD_PREFIX: &str = "mem-memd-";

/// A memory id from a path or body: a plain id or a memory ARN.
pub fn memory_id(field: &str, value: &str) -> Result<String, AwsError> {
    let Some(arn) = value.strip_prefix("arn:") else {
        return Ok(value.to_string());
    };
    // arn:PARTITION:bedrock-agentcore:REGION:ACCOUNT:memory/ID
    let parts: Vec<&str> = arn.splitn(5, ':').collect();
    match parts[..] {
        [_, "bedrock-agentcore", _, _, resource] => resource
            .strip_prefix("memory/")
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| AwsError::validation(field, "is not a memory ARN")),
        _ => Err(AwsError::validation(field, "is not a memory ARN")),
    }
}

/// The ARN AgentCore returns for a memory.
pub fn memory_arn(region: &str, memory_id: &str) -> String {
    format!("arn:aws:bedrock-agentcore:{region}:{ACCOUNT}:memory/{memory_id}")
}

/// memd's event id in AgentCore's spelling.
pub fn rest_event_id(memd_id: &str) -> String {
    match EventSeq::parse_event_id(memd_id) {
        Some(seq) => format!("{:019}#{:016x}", seq.ts_us, seq.seq),
        None => memd_id.to_string(),
    }
}

/// AgentCore's spelling back to memd's event id.
pub fn memd_event_id(field: &str, rest_id: &str) -> Result<String, AwsError> {
    let bad = || AwsError::validation(field, "is not an event id memd returned (DIGITS#HEX)");
    let (ts, seq) = rest_id.split_once('#').ok_or_else(bad)?;
    if ts.is_empty() || seq.is_empty() || seq.len() > 16 {
        return Err(bad());
    }
    let ts_us = ts.parse::<u64>().map_err(|_| bad())?;
    let seq = u64::from_str_radix(seq, 16).map_err(|_| bad())?;
    Ok(EventSeq { ts_us, seq }.to_event_id())
}

/// memd's record id in AgentCore's spelling.
pub fn rest_record_id(memd_id: &str) -> String {
    format!("{RECORD_PREFIX}{memd_id}")
}

/// AgentCore's spelling back to memd's record id.
pub fn memd_record_id(field: &str, rest_id: &str) -> Result<String, AwsError> {
    rest_id
        .strip_prefix(RECORD_PREFIX)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::validation(
                field,
                "is not a memory record id memd returned (mem-memd-...)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_ids_and_arns() {
        assert_eq!(
            memory_id("m", "support-abcdefghij").unwrap(),
            "support-abcdefghij"
        );
        let arn = memory_arn("eu-west-1", "support-abcdefghij");
        assert_eq!(memory_id("m", &arn).unwrap(), "support-abcdefghij");
        assert!(memory_id("m", "arn:aws:s3:::bucket").is_err());
        assert!(memory_id("m", "arn:aws:bedrock-agentcore:r:1:memory/").is_err());
    }

    #[test]
    fn event_ids_round_trip_and_match_the_model_pattern() {
        let memd = EventSeq {
            ts_us: 1_733_000_000_123_456,
            seq: 42,
        }
        .to_event_id();
        let rest = rest_event_id(&memd);
        let (digits, hex) = rest.split_once('#').unwrap();
        assert!(digits.bytes().all(|b| b.is_ascii_digit()));
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(memd_event_id("e", &rest).unwrap(), memd);
        for bad in ["", "12", "#ab", "12#", "x#1", "1#zz", "1#12345678901234567"] {
            assert!(memd_event_id("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_ids_round_trip_within_the_model_length() {
        let memd = "0123456789abcdef0123456789abcdef";
        let rest = rest_record_id(memd);
        assert!((40..=50).contains(&rest.len()), "{rest}");
        assert!(rest.starts_with("mem-"));
        assert_eq!(memd_record_id("r", &rest).unwrap(), memd);
        assert!(memd_record_id("r", "mem-other").is_err());
    }
}
