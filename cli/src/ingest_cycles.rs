//! The leak check of `memctl bench ingest --cycles N --idle-seconds S`: the same
//! conversations ingested N times into the same server, each memory deleted before the next
//! (the last stays), with resident memory after each ingest and each delete, then after S
//! seconds idle. RSS that keeps growing from the second cycle on is a leak; the first warms
//! caches and arenas.

use crate::proc_stats;
use memd_client::MemdClient;
use serde_json::{Value, json};
use std::time::Duration;

/// One ingest of the conversations and what followed it.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// Seconds from the first turn to everything searchable.
    pub searchable: f64,
    pub rss_loaded_mib: f64,
    /// After the memory was deleted and the indexes had applied it (not for the last cycle).
    pub rss_deleted_mib: Option<f64>,
}

impl Cycle {
    pub fn json(&self) -> Value {
        json!({
            "searchable_seconds": self.searchable,
            "rss_loaded_mib": self.rss_loaded_mib,
            "rss_after_delete_mib": self.rss_deleted_mib,
        })
    }
}

/// Deletes the memory, waits until both indexes have applied that, and returns the RSS then.
pub async fn delete_and_settle(client: &MemdClient, memory_id: &str) -> anyhow::Result<f64> {
    client.delete_memory(memory_id).await?;
    for _ in 0..12_000 {
        let status = client.index_status().await?;
        if status.keyword_pending == 0 && status.vectors_pending == 0 {
            return Ok(proc_stats::rss_mib()?.0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the indexes did not apply the deletion of {memory_id} within 10 minutes")
}

/// RSS after ingesting, from the second cycle to the last (MiB): the leak check.
pub fn growth(cycles: &[Cycle]) -> Option<f64> {
    let (second, last) = (cycles.get(1)?, cycles.last()?);
    Some(last.rss_loaded_mib - second.rss_loaded_mib)
}

/// The cycles as printed rows.
pub fn print(cycles: &[Cycle], idle: Option<(u64, f64)>) {
    if cycles.len() > 1 {
        let rows = cycles
            .iter()
            .enumerate()
            .map(|(i, c)| {
                vec![
                    (i + 1).to_string(),
                    format!("{:.1}", c.searchable),
                    format!("{:.0}", c.rss_loaded_mib),
                    c.rss_deleted_mib
                        .map_or("-".into(), |rss| format!("{rss:.0}")),
                ]
            })
            .collect();
        crate::output::table(
            &["CYCLE", "SEARCHABLE S", "RSS MIB", "RSS AFTER DELETE MIB"],
            rows,
        );
        if let Some(growth) = growth(cycles) {
            println!(
                "RSS after ingest, cycle 2 to cycle {}: {growth:+.0} MiB (a leak grows with every cycle)",
                cycles.len()
            );
        }
    }
    if let Some((seconds, rss)) = idle {
        println!("after {seconds} s idle with the last cycle's data: RSS {rss:.0} MiB");
    }
}
