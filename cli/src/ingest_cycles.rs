//! The leak check of `memctl bench ingest --cycles N --idle-seconds S`: the same
//! conversations ingested N times into the same server, each memory deleted before the next
//! (the last stays), with resident memory after each ingest and each delete, then after S
//! seconds idle. RSS that keeps growing from the second cycle on is a leak; the first warms
//! caches and arenas. Beside RSS each reading splits what holds it: the allocator's live
//! bytes, what it keeps freed in its arenas, and RocksDB's block cache (memtables included,
//! bounded by `memory_budget_mb`), so growth can be put down to one of them.

use crate::proc_stats;
use memd_client::MemdClient;
use serde_json::{Value, json};
use std::time::Duration;

/// What holds this process's memory at one moment, MiB.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub rss: f64,
    /// Allocated and not freed (glibc's `mallinfo2`; NaN with another allocator).
    pub heap_live: f64,
    /// Freed but kept in the allocator's arenas.
    pub heap_free: f64,
    /// RocksDB's block cache usage, memtables included (NaN when it could not be read).
    pub block_cache: f64,
}

impl Reading {
    /// Reads it now; `metrics` is the in-process server's metrics address.
    pub async fn take(metrics: &str) -> anyhow::Result<Self> {
        let heap = memd_server::allocator::heap();
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        let url = format!("http://{metrics}/metrics");
        let block_cache = tokio::task::spawn_blocking(move || block_cache_bytes(&url))
            .await?
            .map_or(f64::NAN, mib);
        Ok(Self {
            rss: proc_stats::rss_mib()?.0,
            heap_live: heap.map_or(f64::NAN, |h| mib(h.in_use)),
            heap_free: heap.map_or(f64::NAN, |h| mib(h.free)),
            block_cache,
        })
    }

    pub fn json(&self) -> Value {
        let finite = |v: f64| v.is_finite().then_some(v);
        json!({
            "rss_mib": self.rss,
            "heap_live_mib": finite(self.heap_live),
            "heap_free_held_mib": finite(self.heap_free),
            "rocksdb_block_cache_mib": finite(self.block_cache),
        })
    }
}

/// RocksDB's block cache usage from a Prometheus scrape (one cache shared by every column
/// family, so the largest reading is it).
fn block_cache_bytes(url: &str) -> Option<u64> {
    let body = ureq::get(url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    body.lines()
        .filter(|line| {
            line.starts_with("memd_rocksdb_property{")
                && line.contains("property=\"rocksdb.block-cache-usage\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .max()
}

/// One ingest of the conversations and what followed it.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// Seconds from the first turn to everything searchable.
    pub searchable: f64,
    pub loaded: Reading,
    /// After the memory was deleted and the indexes had applied it (not for the last cycle).
    pub deleted: Option<Reading>,
}

impl Cycle {
    pub fn json(&self) -> Value {
        json!({
            "searchable_seconds": self.searchable,
            "loaded": self.loaded.json(),
            "after_delete": self.deleted.as_ref().map(Reading::json),
        })
    }
}

/// Deletes the memory, waits until both indexes have applied that, and reads memory then.
pub async fn delete_and_settle(
    client: &MemdClient,
    memory_id: &str,
    metrics: &str,
) -> anyhow::Result<Reading> {
    client.delete_memory(memory_id).await?;
    for _ in 0..12_000 {
        let status = client.index_status().await?;
        if status.keyword_pending == 0 && status.vectors_pending == 0 {
            return Reading::take(metrics).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the indexes did not apply the deletion of {memory_id} within 10 minutes")
}

/// RSS after ingesting, from the second cycle to the last (MiB): the leak check.
pub fn growth(cycles: &[Cycle]) -> Option<f64> {
    let (second, last) = (cycles.get(1)?, cycles.last()?);
    Some(last.loaded.rss - second.loaded.rss)
}

/// The cycles as printed rows.
pub fn print(cycles: &[Cycle], idle: Option<(u64, Reading)>) {
    if cycles.len() > 1 {
        let rows = cycles
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let r = &c.loaded;
                vec![
                    (i + 1).to_string(),
                    format!("{:.1}", c.searchable),
                    format!("{:.0}", r.rss),
                    format!("{:.0}", r.heap_live),
                    format!("{:.0}", r.heap_free),
                    format!("{:.0}", r.block_cache),
                    c.deleted.map_or("-".into(), |d| {
                        format!(
                            "{:.0} ({:.0}/{:.0}/{:.0})",
                            d.rss, d.heap_live, d.heap_free, d.block_cache
                        )
                    }),
                ]
            })
            .collect();
        crate::output::table(
            &[
                "CYCLE",
                "SEARCHABLE S",
                "RSS MIB",
                "HEAP LIVE",
                "HEAP FREE HELD",
                "BLOCK CACHE",
                "AFTER DELETE: RSS (LIVE/FREE/CACHE)",
            ],
            rows,
        );
        if let Some(growth) = growth(cycles) {
            println!(
                "RSS after ingest, cycle 2 to cycle {}: {growth:+.0} MiB (a leak would grow with every cycle)",
                cycles.len()
            );
        }
    }
    if let Some((seconds, r)) = idle {
        println!(
            "after {seconds} s idle with the last cycle's data: RSS {:.0} MiB (heap live {:.0}, free held {:.0}, block cache {:.0})",
            r.rss, r.heap_live, r.heap_free, r.block_cache
        );
    }
}
