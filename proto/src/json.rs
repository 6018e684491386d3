//! memd.v1 messages as JSON, in the standard protobuf JSON mapping (lowerCamelCase field
//! names, RFC 3339 timestamps, enum value names), for files that outlive memd: `memctl
//! export` writes them and `memctl import` reads them back. Driven by the descriptor set, so
//! every field of every message is covered without hand-written conversions.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, SerializeOptions};
use std::sync::LazyLock;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("the build's own descriptor set")
});

/// Why a JSON value is not the message it should be.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

fn descriptor(full_name: &str) -> prost_reflect::MessageDescriptor {
    POOL.get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is not in the memd.v1 descriptor set"))
}

/// A memd.v1 message, named by its protobuf full name (e.g. "memd.v1.Event").
pub trait Named: Message + Default {
    const FULL_NAME: &'static str;
}

macro_rules! named {
    ($($ty:ident),* $(,)?) => {
        $(impl Named for crate::v1::$ty {
            const FULL_NAME: &'static str = concat!("memd.v1.", stringify!($ty));
        })*
    };
}

named!(Memory, Event, Session, MemoryRecord, MemoryStrategy);

/// The message as protobuf JSON; fields at their default value are left out.
pub fn to_json<M: Named>(message: &M) -> serde_json::Value {
    let dynamic =
        DynamicMessage::decode(descriptor(M::FULL_NAME), message.encode_to_vec().as_slice())
            .expect("a message decodes as its own type");
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(true),
        )
        .expect("protobuf JSON serialisation of a valid message")
}

/// Reads protobuf JSON back into the message; unknown fields are an error that names them.
pub fn from_json<M: Named>(value: serde_json::Value) -> Result<M, JsonError> {
    let dynamic = DynamicMessage::deserialize(descriptor(M::FULL_NAME), value)
        .map_err(|e| JsonError(format!("not a {}: {e}", M::FULL_NAME)))?;
    debug_assert_eq!(dynamic.descriptor().full_name(), M::FULL_NAME);
    M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| JsonError(format!("not a {}: {e}", M::FULL_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn an_event_survives_the_round_trip_and_reads_as_protobuf_json() {
        let event = v1::Event {
            memory_id: "m".into(),
            actor_id: "alice".into(),
            session_id: "s1".into(),
            event_id: "e1".into(),
            event_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000,
            }),
            payload: vec![v1::PayloadItem::default()],
            branch: Some(v1::Branch {
                name: "alt".into(),
                root_event_id: "e0".into(),
            }),
            metadata: [("k".to_string(), "v".to_string())].into(),
            create_time: None,
        };
        let json = to_json(&event);
        assert_eq!(json["actorId"], "alice");
        assert_eq!(json["eventTimestamp"], "2023-11-14T22:13:20.000005Z");
        assert_eq!(json["branch"]["rootEventId"], "e0");
        assert_eq!(from_json::<v1::Event>(json).unwrap(), event);
        let err = from_json::<v1::Event>(serde_json::json!({"actorID": "x"})).unwrap_err();
        assert!(err.to_string().contains("actorID"), "{err}");
    }
}
