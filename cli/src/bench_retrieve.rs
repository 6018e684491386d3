//! `memctl bench retrieve`: RetrieveMemoryRecords (HYBRID by default, top 10) over N synthetic
//! records in one memory, at concurrency 1 and 16, against floors measured in the same run on
//! the same data: one query embedding through the model, the bare vector scan (the server's
//! stored vectors, loaded into a bare index) and the bare BM25 search (same schema and query,
//! no gRPC, no RocksDB hydration). Also prints index sizes and the process RSS (server and
//! client share it).

use crate::Globals;
use crate::bench::{DataDir, LocalServer, Stats, connections, drive};
use clap::Args;
use memd_client::{MemdClient, pb};
use memd_server::embedding::Model;
use memd_server::retrieval::{
    RECORD_VECTORS, RecordIndex, RecordSearch, VectorEntry, VectorFilter, VectorIndex,
};
use memd_server::store::codec::StoredRecord;
use memd_server::store::{Store, StoreOptions};
use serde_json::json;
use std::collections::HashMap;
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
    /// How to rank.
    #[arg(long, value_enum, default_value_t = crate::longterm::ModeArg::Hybrid)]
    mode: crate::longterm::ModeArg,
    /// Keep each server's data directory under this directory (as `records-N`), e.g. for
    /// `memctl bench ann --stored`, and reuse it when a later run names the same directory:
    /// the records are not written again and embedding resumes where it stopped (a million
    /// records take over an hour to embed on two cores). By default it is deleted.
    #[arg(long)]
    keep_data: Option<std::path::PathBuf>,
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

pub(crate) fn query(n: usize) -> String {
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

pub(crate) fn rss_mb() -> f64 {
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

fn search_request(
    memory_id: &str,
    n: usize,
    mode: pb::SearchMode,
) -> pb::RetrieveMemoryRecordsRequest {
    pb::RetrieveMemoryRecordsRequest {
        memory_id: memory_id.into(),
        search_criteria: Some(pb::SearchCriteria {
            search_query: query(n),
            top_k: 10,
            mode: mode as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `search(n)` on `concurrency` threads for `measure`, after a 300 ms warm-up.
pub(crate) fn threaded(
    concurrency: usize,
    measure: Duration,
    search: impl Fn(usize) -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<Stats> {
    let search = Arc::new(search);
    let counter = Arc::new(AtomicUsize::new(0));
    let measure_from = Instant::now() + Duration::from_millis(300);
    let end = measure_from + measure;
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (search, counter) = (search.clone(), counter.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
                let mut latencies = Vec::new();
                loop {
                    let started = Instant::now();
                    if started >= end {
                        return Ok(latencies);
                    }
                    search(counter.fetch_add(1, Ordering::Relaxed))?;
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

/// The BM25 floor: the same queries on a bare records index of the same records.
fn bm25_index(count: usize) -> anyhow::Result<(tempfile::TempDir, Arc<RecordIndex>)> {
    let dir = tempfile::tempdir()?;
    let (index, _) = RecordIndex::open(dir.path(), memd_server::budget::MIN_INDEX_WRITER_BYTES)?;
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
    Ok((dir, Arc::new(index)))
}

fn bm25_floor(
    index: Arc<RecordIndex>,
    concurrency: usize,
    measure: Duration,
) -> anyhow::Result<Stats> {
    threaded(concurrency, measure, move |n| {
        index.search(&RecordSearch::whole_memory("bench", &query(n), 10, 1))?;
        Ok(())
    })
}

/// The record vectors a stopped server stored in its data directory, per memory.
pub(crate) fn stored_record_vectors(
    data_dir: &std::path::Path,
) -> anyhow::Result<HashMap<String, Vec<VectorEntry>>> {
    let store = Store::open(
        data_dir,
        &StoreOptions {
            sync_writes: false,
            block_cache_bytes: 64 << 20,
            memtable_bytes: 32 << 20,
        },
    )?;
    let mut memories: HashMap<String, Vec<VectorEntry>> = HashMap::new();
    store.for_each_vector(|kind, memory_id, key, vector| {
        if kind == RECORD_VECTORS {
            let entry = VectorEntry::from_stored(key, &vector);
            memories
                .entry(memory_id.to_string())
                .or_default()
                .push(entry);
        }
        Ok(())
    })?;
    Ok(memories)
}

/// The vector index the server built, loaded from its stopped data directory.
fn stored_vectors(data_dir: &std::path::Path, dims: usize) -> anyhow::Result<Arc<VectorIndex>> {
    let index = VectorIndex::new(dims);
    for (memory_id, entries) in stored_record_vectors(data_dir)? {
        for entry in &entries {
            index.upsert(&memory_id, entry);
        }
    }
    Ok(Arc::new(index))
}

/// The ANN floor: the same query vectors on a bare vector index of the same vectors.
fn ann_floor(
    index: Arc<VectorIndex>,
    memory_id: String,
    queries: Arc<Vec<Vec<f32>>>,
    concurrency: usize,
    measure: Duration,
) -> anyhow::Result<Stats> {
    threaded(concurrency, measure, move |n| {
        let hits = index.search(
            &memory_id,
            &queries[n % queries.len()],
            &VectorFilter::default(),
            10,
        );
        anyhow::ensure!(!hits.is_empty(), "the vector floor found nothing");
        Ok(())
    })
}

/// Written into a kept data directory once every record is in: names the memory.
const LOADED_MARKER: &str = "bench-retrieve-memory";

/// How often the wait for the indexes reports what is left.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The memory a finished load of an earlier run left in `dir`.
fn loaded_memory(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join(LOADED_MARKER))
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// Distinct queries embedded ahead for the ANN floor (the generator has 2048).
const QUERY_VECTORS: usize = 512;

/// One query at a time through the model: what embedding adds to a search.
fn embedding_cost(model: &mut Model, measure: Duration) -> anyhow::Result<Stats> {
    let mut latencies = Vec::new();
    let end = Instant::now() + measure;
    let mut n = 0;
    while Instant::now() < end {
        let started = Instant::now();
        model.embed(&[query(n)])?;
        latencies.push(started.elapsed().as_micros() as u32);
        n += 1;
    }
    Ok(Stats::from(latencies, measure))
}

struct Row {
    count: usize,
    concurrency: usize,
    api: Stats,
    ann: Option<Stats>,
    ann_recall: Option<crate::bench_ann::Recall>,
    bm25: Stats,
    embed: Option<Stats>,
    index_bytes: u64,
    data_bytes: u64,
    rss_mb: f64,
}

fn cell(stats: Option<&Stats>) -> String {
    stats.map_or("-".into(), |s| format!("{:.0} / {:.0}", s.p50_us, s.p99_us))
}

pub async fn run(ctx: &Globals, args: RetrieveArgs) -> anyhow::Result<()> {
    let measure = Duration::from_secs_f64(args.seconds);
    let mode = args.mode.proto();
    let mut rows = Vec::new();
    for &count in &args.records {
        let kept = args
            .keep_data
            .as_ref()
            .map(|parent| parent.join(format!("records-{count}")));
        let loaded = kept.as_deref().and_then(loaded_memory);
        let dir = match &kept {
            Some(path) => {
                if loaded.is_none() && path.exists() {
                    // An interrupted load: start again rather than measure a partial one.
                    std::fs::remove_dir_all(path)?;
                }
                std::fs::create_dir_all(path)?;
                DataDir::Kept(path.clone())
            }
            None => DataDir::Temp(tempfile::tempdir()?),
        };
        let server = LocalServer::start_in(dir, |config| {
            config.sync_writes = false;
            if mode == pb::SearchMode::Keyword {
                // Keyword numbers without an embedder busy in the background.
                config.embedding_model = "off".into();
                config.embedding_model_dir = None;
            }
        })
        .await?;
        let settings = server.config.embedding_settings()?;
        anyhow::ensure!(
            settings.is_some() || mode == pb::SearchMode::Keyword,
            "{} needs the embedding model: run ./dev.sh fetch-model, or pass --mode keyword",
            mode.as_str_name()
        );
        let client = MemdClient::connect(server.endpoint.clone(), None).await?;
        let loading = Instant::now();
        let memory_id = match loaded {
            Some(memory_id) => {
                eprintln!(
                    "reusing the {count} records in {}",
                    server.data_dir().display()
                );
                memory_id
            }
            None => {
                let memory_id = client
                    .create_memory(pb::CreateMemoryRequest {
                        name: "bench_retrieve".into(),
                        ..Default::default()
                    })
                    .await?
                    .memory_id;
                load(&client, &memory_id, count).await?;
                if let Some(path) = &kept {
                    std::fs::write(path.join(LOADED_MARKER), &memory_id)?;
                }
                eprintln!(
                    "{count} records written in {:.1} s",
                    loading.elapsed().as_secs_f64()
                );
                memory_id
            }
        };
        let mut keyword_done = None;
        let mut reported = Instant::now();
        loop {
            let status = client.index_status().await?;
            if status.keyword_pending == 0 && keyword_done.is_none() {
                keyword_done = Some(loading.elapsed());
            }
            // A restarted server searches a large memory flat until its partitions are
            // rebuilt (in the background, a minute or so per million vectors): not what
            // is measured.
            let partitioning = settings.is_some()
                && count >= memd_server::retrieval::PARTITION_AT
                && status.vectors_partitioned == 0;
            if status.keyword_pending == 0
                && status.vectors_pending == 0
                && !status.vectors_rebuilding
                && !partitioning
            {
                break;
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                eprintln!(
                    "after {:.0} s: {} changes to keyword-index, {} to embed (counted up to 100,000){}",
                    loading.elapsed().as_secs_f64(),
                    status.keyword_pending,
                    status.vectors_pending,
                    if partitioning {
                        "; vectors being partitioned"
                    } else {
                        ""
                    }
                );
            }
            // Not too often: each status call counts the backlog (up to 100,000 entries).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "{count} records keyword-indexed after {:.1} s, embedded (and partitioned, past 100k) after {:.1} s",
            keyword_done.unwrap_or_default().as_secs_f64(),
            loading.elapsed().as_secs_f64()
        );
        let index_bytes = dir_size(&server.data_dir().join("index/records"));
        let data_bytes = dir_size(server.data_dir());
        let mut measured = Vec::new();
        for concurrency in [1usize, 16] {
            let clients = connections(&server.endpoint, None, concurrency).await?;
            let counter = Arc::new(AtomicUsize::new(0));
            let memory = memory_id.clone();
            let api = drive(concurrency, measure, move |worker| {
                let client = clients[worker % clients.len()].clone();
                let request =
                    search_request(&memory, counter.fetch_add(1, Ordering::Relaxed), mode);
                async move {
                    client.retrieve_memory_records(request).await?;
                    Ok(())
                }
            })
            .await?;
            measured.push((concurrency, api, rss_mb()));
        }
        let data = server.stop_keeping_data().await;
        // Floors, with the server stopped: the same queries on bare indexes of the same data.
        let (ann, embed, ann_recall) = match &settings {
            Some(settings) => {
                let settings = settings.clone();
                let data_dir = data.path().to_path_buf();
                let memory = memory_id.clone();
                let (index, queries, embed) = tokio::task::spawn_blocking(move || {
                    let mut model = Model::load(&settings, 1)?;
                    let texts: Vec<String> = (0..QUERY_VECTORS).map(query).collect();
                    let queries = Arc::new(model.embed(&texts)?);
                    let embed = embedding_cost(&mut model, measure)?;
                    let index = stored_vectors(&data_dir, model.dims())?;
                    anyhow::Ok((index, queries, embed))
                })
                .await??;
                anyhow::ensure!(
                    index.len(&memory) == count,
                    "{} of {count} records were embedded",
                    index.len(&memory)
                );
                let recall = {
                    let (index, queries, memory) = (index.clone(), queries.clone(), memory.clone());
                    tokio::task::spawn_blocking(move || {
                        crate::bench_ann::recall(&index, &index, &memory, &queries)
                    })
                    .await?
                };
                let mut floors = Vec::new();
                for concurrency in [1usize, 16] {
                    let (index, queries, memory) = (index.clone(), queries.clone(), memory.clone());
                    floors.push(
                        tokio::task::spawn_blocking(move || {
                            ann_floor(index, memory, queries, concurrency, measure)
                        })
                        .await??,
                    );
                }
                (Some(floors), Some(embed), Some(recall))
            }
            None => (None, None, None),
        };
        if let DataDir::Kept(path) = &data {
            eprintln!("data directory kept in {}", path.display());
        }
        drop(data);
        let (_bm25_dir, bm25) = tokio::task::spawn_blocking(move || bm25_index(count)).await??;
        for (i, (concurrency, api, rss)) in measured.into_iter().enumerate() {
            let index = bm25.clone();
            let bm25 = tokio::task::spawn_blocking(move || bm25_floor(index, concurrency, measure))
                .await??;
            rows.push(Row {
                count,
                concurrency,
                api,
                ann: ann.as_ref().map(|floors| floors[i]),
                ann_recall,
                bm25,
                embed: if i == 0 { embed } else { None },
                index_bytes,
                data_bytes,
                rss_mb: rss,
            });
        }
    }
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "records": r.count,
                    "concurrency": r.concurrency,
                    "mode": mode.as_str_name(),
                    "retrieve": r.api.json(),
                    "bare_ann_search": r.ann.as_ref().map(Stats::json),
                    "ann_recall_at_10_vs_exact": r.ann_recall.map(|r| r.ids),
                    "ann_score_recall_at_10_vs_exact": r.ann_recall.map(|r| r.scores),
                    "bare_bm25_search": r.bm25.json(),
                    "query_embedding": r.embed.as_ref().map(Stats::json),
                    "bm25_index_bytes": r.index_bytes,
                    "data_dir_bytes": r.data_bytes,
                    "rss_mb": r.rss_mb,
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
            "EMBED P50/P99 µs",
            "ANN P50/P99 µs",
            "ANN RECALL IDS / SCORES",
            "BM25 P50/P99 µs",
            "BM25 MB",
            "DATA MB",
            "RSS MB",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.count.to_string(),
                    r.concurrency.to_string(),
                    format!("{:.0}", r.api.per_second),
                    format!("{:.0} / {:.0}", r.api.p50_us, r.api.p99_us),
                    cell(r.embed.as_ref()),
                    cell(r.ann.as_ref()),
                    r.ann_recall.map_or("-".into(), |r| r.to_string()),
                    format!("{:.0} / {:.0}", r.bm25.p50_us, r.bm25.p99_us),
                    format!("{:.1}", r.index_bytes as f64 / 1e6),
                    format!("{:.1}", r.data_bytes as f64 / 1e6),
                    format!("{:.0}", r.rss_mb),
                ]
            })
            .collect(),
    );
    println!(
        "{} top-10 through gRPC (P50/P99 includes the query embedding); floors on bare indexes of the same data: EMBED = one query through the model, ANN = the vector search (flat below {} vectors, partitioned above; ANN RECALL = its top 10 against an exact scan, same queries: the exact top 10's records found / results as good as the exact 10th, ties included), BM25 = tantivy; RSS = server and client in one process",
        mode.as_str_name(),
        memd_server::retrieval::PARTITION_AT
    );
    Ok(())
}
