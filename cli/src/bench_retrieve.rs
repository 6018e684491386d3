//! `memctl bench retrieve`: RetrieveMemoryRecords (KEYWORD, top 10) over N synthetic records in
//! one memory, at concurrency 1 and 16, against a floor measured in the same run: the same
//! queries on a bare records index (same schema and query, no gRPC, no RocksDB hydration).
//! Also prints the index size on disk and the process RSS (server and client share it).

use crate::Globals;
use crate::bench::{LocalServer, Stats, connections, drive};
use clap::Args;
use memd_client::{MemdClient, pb};
use memd_server::retrieval::{Access, RecordIndex, RecordSearch};
use memd_server::store::codec::StoredRecord;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct RetrieveArgs {
    /// Record counts to measure, one fresh server each.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    records: Vec<usize>,
    /// Seconds measured per concurrency level.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

const NAMES: [&str; 16] = [
    "Ana", "Ben", "Chloe", "Dev", "Ema", "Femi", "Gus", "Hana", "Ivo", "Jia", "Kai", "Lea", "Milo",
    "Nia", "Omar", "Pia",
];
const VERBS: [&str; 8] = [
    "booked",
    "cancelled",
    "prefers",
    "visited",
    "ordered",
    "returned",
    "reviewed",
    "paid",
];
const THINGS: [&str; 16] = [
    "window seat",
    "kayak tour",
    "pottery class",
    "ramen dinner",
    "train ticket",
    "hotel room",
    "concert pass",
    "yoga retreat",
    "museum tour",
    "bike rental",
    "cooking course",
    "boat trip",
    "wine tasting",
    "city guide",
    "ski lesson",
    "jazz night",
];
const CITIES: [&str; 16] = [
    "Lisbon", "Denver", "Osaka", "Nairobi", "Oslo", "Lima", "Hanoi", "Quebec", "Porto", "Seoul",
    "Dakar", "Bergen", "Cusco", "Hobart", "Tunis", "Kyoto",
];

/// A deterministic pseudo-random pick (no RNG state to share between tasks).
fn pick<'a>(list: &[&'a str], n: usize, salt: usize) -> &'a str {
    let mixed = (n.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) >> 7;
    list[mixed % list.len()]
}

fn text(n: usize) -> String {
    format!(
        "{} {} the {} in {} for order {n} on day {}.",
        pick(&NAMES, n, 1),
        pick(&VERBS, n, 2),
        pick(&THINGS, n, 3),
        pick(&CITIES, n, 4),
        n % 365
    )
}

fn query(n: usize) -> String {
    format!(
        "{} {} {}",
        pick(&THINGS, n, 5),
        pick(&CITIES, n, 6),
        pick(&VERBS, n, 7)
    )
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn load(client: &MemdClient, memory_id: &str, count: usize) -> anyhow::Result<()> {
    let chunks: Vec<Vec<pb::MemoryRecordInput>> = (0..count)
        .map(|n| pb::MemoryRecordInput {
            namespace: format!("/users/u{}/facts", n % 100),
            text: text(n),
            ..Default::default()
        })
        .collect::<Vec<_>>()
        .chunks(100)
        .map(<[_]>::to_vec)
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let chunks = Arc::new(chunks);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, chunks, next, memory_id) = (
            client.clone(),
            chunks.clone(),
            next.clone(),
            memory_id.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                client
                    .batch_create_memory_records(&memory_id, chunk.clone())
                    .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn search_request(memory_id: &str, n: usize) -> pb::RetrieveMemoryRecordsRequest {
    pb::RetrieveMemoryRecordsRequest {
        memory_id: memory_id.into(),
        search_criteria: Some(pb::SearchCriteria {
            search_query: query(n),
            top_k: 10,
            mode: pb::SearchMode::Keyword as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The floor: the same queries on a bare index of the same records, on blocking threads.
fn bare_floor(count: usize, concurrency: usize, measure: Duration) -> anyhow::Result<Stats> {
    let dir = tempfile::tempdir()?;
    let (index, _) = RecordIndex::open(dir.path())?;
    for n in 0..count {
        let record = StoredRecord {
            record_id: format!("r{n}"),
            namespace: format!("/users/u{}/facts", n % 100),
            text: text(n),
            ..Default::default()
        };
        index.upsert("bench", &record)?;
    }
    index.commit(1)?;
    let index = Arc::new(index);
    let counter = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + Duration::from_millis(300) + measure;
    let measure_from = Instant::now() + Duration::from_millis(300);
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (index, counter) = (index.clone(), counter.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
                let mut latencies = Vec::new();
                loop {
                    let started = Instant::now();
                    if started >= end {
                        return Ok(latencies);
                    }
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    index.search(&RecordSearch {
                        memory_id: "bench".into(),
                        query: query(n),
                        namespace_prefix: String::new(),
                        strategy_id: None,
                        actor_id: None,
                        limit: 10,
                        access: Access::default(),
                        metadata: Vec::new(),
                        now_us: 1,
                    })?;
                    if started >= measure_from {
                        latencies.push(started.elapsed().as_micros() as u32);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        all.extend(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("floor thread panicked"))??,
        );
    }
    Ok(Stats::from(all, measure))
}

pub async fn run(ctx: &Globals, args: RetrieveArgs) -> anyhow::Result<()> {
    let measure = Duration::from_secs_f64(args.seconds);
    let mut rows = Vec::new();
    for &count in &args.records {
        let server = LocalServer::start_with(|config| config.sync_writes = false).await?;
        let client = MemdClient::connect(server.endpoint.clone(), None).await?;
        let memory_id = client
            .create_memory(pb::CreateMemoryRequest {
                name: "bench_retrieve".into(),
                ..Default::default()
            })
            .await?
            .memory_id;
        let loading = Instant::now();
        load(&client, &memory_id, count).await?;
        // Indexed once the last record is found by its unique order number.
        let last = format!("order {}", count - 1);
        loop {
            let mut probe = search_request(&memory_id, 0);
            probe.search_criteria.as_mut().expect("set").search_query = last.clone();
            let found = client.retrieve_memory_records(probe).await?;
            if found.memory_records.iter().any(|r| {
                r.memory_record
                    .as_ref()
                    .is_some_and(|r| r.text.contains(&last))
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let loaded = loading.elapsed();
        eprintln!(
            "{count} records written and indexed in {:.1} s",
            loaded.as_secs_f64()
        );
        let index_bytes = dir_size(&server.data_dir().join("index/records"));
        for concurrency in [1usize, 16] {
            let clients = connections(&server.endpoint, None, concurrency).await?;
            let counter = Arc::new(AtomicUsize::new(0));
            let memory = memory_id.clone();
            let api = drive(concurrency, measure, move |worker| {
                let client = clients[worker % clients.len()].clone();
                let request = search_request(&memory, counter.fetch_add(1, Ordering::Relaxed));
                async move {
                    client.retrieve_memory_records(request).await?;
                    Ok(())
                }
            })
            .await?;
            let floor =
                tokio::task::spawn_blocking(move || bare_floor(count, concurrency, measure))
                    .await??;
            rows.push((count, concurrency, api, floor, index_bytes, rss_mb()));
        }
        server.stop().await;
    }
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(count, concurrency, api, floor, bytes, rss)| {
                json!({
                    "records": count,
                    "concurrency": concurrency,
                    "retrieve": api.json(),
                    "bare_index_search": floor.json(),
                    "p50_vs_floor": api.p50_us / floor.p50_us,
                    "index_bytes": bytes,
                    "rss_mb": rss,
                })
            })
            .collect();
        crate::output::print_json(&serde_json::Value::Array(out));
        return Ok(());
    }
    crate::output::table(
        &[
            "RECORDS",
            "CONC",
            "QPS",
            "P50/P99 µs",
            "FLOOR QPS",
            "FLOOR P50/P99 µs",
            "P50 VS FLOOR",
            "INDEX MB",
            "RSS MB",
        ],
        rows.iter()
            .map(|(count, concurrency, api, floor, bytes, rss)| {
                vec![
                    count.to_string(),
                    concurrency.to_string(),
                    format!("{:.0}", api.per_second),
                    format!("{:.0} / {:.0}", api.p50_us, api.p99_us),
                    format!("{:.0}", floor.per_second),
                    format!("{:.0} / {:.0}", floor.p50_us, floor.p99_us),
                    format!("{:.2}", api.p50_us / floor.p50_us),
                    format!("{:.1}", *bytes as f64 / 1e6),
                    format!("{rss:.0}"),
                ]
            })
            .collect(),
    );
    println!(
        "KEYWORD (BM25) top-10; the hybrid target (p50 <= 10 ms, p99 <= 30 ms at 1M records incl. query embedding) waits for the embedding index"
    );
    Ok(())
}
