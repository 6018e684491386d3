//! Wall-clock helpers: the server keeps times as microseconds since the Unix epoch.

use prost_types::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Microseconds to a protobuf timestamp.
pub fn to_timestamp(us: u64) -> Timestamp {
    Timestamp {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

/// A protobuf timestamp to microseconds; `None` before 1970, past year 9999, or malformed.
pub fn from_timestamp(ts: &Timestamp) -> Option<u64> {
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    Some(ts.seconds as u64 * 1_000_000 + ts.nanos as u64 / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        let us = 1_700_000_000_123_456;
        assert_eq!(from_timestamp(&to_timestamp(us)), Some(us));
        assert_eq!(
            from_timestamp(&Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            from_timestamp(&Timestamp {
                seconds: 1,
                nanos: -1
            }),
            None
        );
    }
}
