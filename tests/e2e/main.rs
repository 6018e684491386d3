//! End-to-end tests: every RPC through the real server and the real client.

mod backup;
mod bench_ingest;
mod branches;
mod chaos;
mod deadlines;
mod disk_full;
mod durability;
mod embedding_backlog;
mod embedding_counts;
mod events;
mod extraction;
mod isolation;
mod limits;
mod llm;
mod locomo;
mod memories;
mod ops;
mod quotas;
mod records;
mod retrieval;
mod security;
mod self_statements;
mod semantic;
mod sessions;
mod startup;
mod tls;
mod transfer;
mod watch;
mod workers;

use tonic::Code;

/// Asserts that `result` failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} ({needle}), got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            assert!(
                status.message().contains(needle),
                "{:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}
