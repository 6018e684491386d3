//! `memctl bench ingest [DIR]`: how long LoCoMo-format conversations take to become
//! searchable in a fresh in-process memd, and what embedding them costs beside the model's
//! own floor measured in the same run.
//!
//! Milestones from the first turn sent: every turn stored (one CreateEvent at a time, as
//! `memctl eval locomo` sends them), every turn keyword-searchable, every turn embedded,
//! extraction done (sessions end two seconds after their last turn, so this includes that
//! wait), and everything embedded and indexed. CPU comes from /proc for the whole process
//! and for each group of named threads. The floor embeds a sample of the same texts straight
//! through the model, for several batch sizes and thread counts, with the server stopped.

use crate::Globals;
use crate::bench::LocalServer;
use crate::embed_floor::{self, FloorRun, Tokens};
use crate::ingest_cycles::{self, Cycle};
use crate::{locomo, proc_stats};
use anyhow::Context;
use clap::Args;
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the conversations are when no directory is given (skipped when absent).
const DEFAULT_DIR: &str = "../shared/data/locomo";
/// Longest wait for the milestones.
const GIVE_UP: Duration = Duration::from_secs(1800);

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// A directory of LoCoMo JSON conversations (default: ../shared/data/locomo, skipped
    /// when absent).
    dir: Option<PathBuf>,
    /// Only the first N conversations (by file name).
    #[arg(long)]
    conversations: Option<usize>,
    /// Texts embedded per floor setting: a sample spread over everything memd embedded.
    #[arg(long, default_value_t = 600)]
    floor_sample: usize,
    /// Batch sizes the floor tries.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,128")]
    floor_batches: Vec<usize>,
    /// Ingest the conversations this many times, deleting each memory before the next (the
    /// last stays), with RSS after each: the leak check.
    #[arg(long, default_value_t = 1)]
    cycles: usize,
    /// Then stay idle this long and report RSS again.
    #[arg(long, default_value_t = 0)]
    idle_seconds: u64,
}

/// Seconds from the first turn sent to each milestone.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    stored: f64,
    keyword: Option<f64>,
    turns_embedded: Option<f64>,
    extracted: Option<f64>,
    pub everything: Option<f64>,
}

/// What memd did from the first turn to the last embedding.
pub(crate) struct Ingest {
    memory_id: String,
    conversations: usize,
    pub turns: usize,
    pub timeline: Timeline,
    status: pb::IndexStatus,
    cpu_seconds: f64,
    by_thread: Vec<(String, f64)>,
    rss_mib: f64,
    peak_rss_mib: f64,
    /// Turn texts (as memd embeds them), then record texts.
    texts: Vec<String>,
}

impl Ingest {
    fn documents(&self) -> i64 {
        self.status.embedded_events + self.status.embedded_records + self.status.reembedded_records
    }

    /// CPU seconds of the embedding thread and the model's threads (named after the thread
    /// that loaded the model, `memd-embed-model`).
    fn embedding_cpu(&self) -> f64 {
        self.by_thread
            .iter()
            .filter(|(name, _)| name.starts_with("memd-embed"))
            .map(|(_, seconds)| seconds)
            .sum()
    }
}

pub async fn run(ctx: &Globals, args: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !ctx.endpoint_explicit,
        "memctl bench ingest measures an in-process server's CPU: leave out --endpoint"
    );
    anyhow::ensure!(
        args.floor_sample > 0 && args.floor_batches.iter().all(|&b| (1..=1024).contains(&b)),
        "--floor-sample must be positive and --floor-batches 1-1024"
    );
    anyhow::ensure!((1..=100).contains(&args.cycles), "--cycles must be 1-100");
    let dir = match args.dir {
        Some(dir) => dir,
        None if std::path::Path::new(DEFAULT_DIR).is_dir() => PathBuf::from(DEFAULT_DIR),
        None => {
            eprintln!(
                "memctl: no conversations at {DEFAULT_DIR}; give a directory of LoCoMo JSON files"
            );
            return Ok(());
        }
    };
    let mut files = locomo::conversation_files(&dir)?;
    files.truncate(args.conversations.unwrap_or(usize::MAX).max(1));
    anyhow::ensure!(
        memd_server::embedding::local_files().is_some(),
        "memctl bench ingest needs the local embedding model and ONNX Runtime: run ./dev.sh fetch-model"
    );
    // The metrics endpoint on a free port: the leak check reads RocksDB's block cache there.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let server = LocalServer::start_with(|config| {
        config.sync_writes = false;
        config.metrics_listen = metrics.clone();
    })
    .await?;
    let settings = server
        .config
        .embedding_settings()?
        .context("the in-process server has no embedding model")?;
    let ingest = ingest(&server, &files).await?;
    let mut cycles = vec![cycle(&ingest, &metrics).await?];
    let mut last_memory = ingest.memory_id.clone();
    let client = MemdClient::connect(server.endpoint.clone(), None).await?;
    for _ in 1..args.cycles {
        let deleted = ingest_cycles::delete_and_settle(&client, &last_memory, &metrics).await?;
        if let Some(previous) = cycles.last_mut() {
            previous.deleted = Some(deleted);
        }
        let next = self::ingest(&server, &files).await?;
        last_memory = next.memory_id.clone();
        cycles.push(cycle(&next, &metrics).await?);
    }
    let idle = if args.idle_seconds > 0 {
        tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
        Some((
            args.idle_seconds,
            ingest_cycles::Reading::take(&metrics).await?,
        ))
    } else {
        None
    };
    server.stop().await;

    let texts = ingest.texts.clone();
    let (tokens, floor) = tokio::task::spawn_blocking(move || {
        let tokens = embed_floor::tokens(&settings, &texts)?;
        let sample = embed_floor::sample(&texts, args.floor_sample);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = vec![1, cores];
        threads.dedup();
        let floor = embed_floor::measure(&settings, &sample, &threads, &args.floor_batches)?;
        anyhow::Ok((tokens, floor))
    })
    .await??;
    report(ctx, &ingest, &tokens, &floor, &cycles, idle);
    Ok(())
}

async fn cycle(ingest: &Ingest, metrics: &str) -> anyhow::Result<Cycle> {
    Ok(Cycle {
        searchable: ingest.timeline.everything.unwrap_or(f64::NAN),
        loaded: ingest_cycles::Reading::take(metrics).await?,
        deleted: None,
    })
}

/// Sends every turn of `files` into a new memory of `server` and waits until everything is
/// extracted and searchable.
pub(crate) async fn ingest(server: &LocalServer, files: &[PathBuf]) -> anyhow::Result<Ingest> {
    let client = MemdClient::connect(server.endpoint.clone(), None).await?;
    let memory_id = locomo::create_memory(&client).await?;
    let kept_id = memory_id.clone();
    let cpu_before = proc_stats::process_cpu_seconds()?;
    let threads_before = proc_stats::threads()?;
    let started = Instant::now();
    let mut conversations = Vec::new();
    for file in files {
        conversations.push(locomo::ingest(&client, &memory_id, file).await?);
    }
    let turns: usize = conversations.iter().map(|c| c.events.len()).sum();
    let sessions = locomo::session_count(&conversations);
    let mut timeline = Timeline {
        stored: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let mut drain_checked = Instant::now();
    let status = loop {
        let status = client.index_status().await?;
        let now = started.elapsed().as_secs_f64();
        if timeline.keyword.is_none() && status.keyword_pending == 0 {
            timeline.keyword = Some(now);
        }
        if timeline.turns_embedded.is_none() && status.embedded_events >= turns as i64 {
            timeline.turns_embedded = Some(now);
        }
        // Listing jobs and records is heavier than the status: a few times a second.
        if timeline.extracted.is_none() && drain_checked.elapsed() >= Duration::from_millis(200) {
            drain_checked = Instant::now();
            if locomo::drained(&client, &memory_id, sessions).await? {
                timeline.extracted = Some(now);
            }
        }
        if timeline.extracted.is_some()
            && status.keyword_pending == 0
            && status.vectors_pending == 0
            && !status.vectors_rebuilding
        {
            timeline.everything = Some(now);
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < GIVE_UP,
            "not everything was searchable after {GIVE_UP:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let cpu_seconds = proc_stats::process_cpu_seconds()? - cpu_before;
    let by_thread = proc_stats::cpu_by_group(&threads_before, &proc_stats::threads()?);
    let (rss_mib, peak_rss_mib) = proc_stats::rss_mib()?;
    let mut texts: Vec<String> = conversations
        .iter()
        .flat_map(|c| c.turns.values().map(|(_, shown)| format!("{shown}\n")))
        .collect();
    let records: Vec<pb::MemoryRecord> = client
        .all_memory_records(pb::ListMemoryRecordsRequest {
            memory_id,
            page_size: 100,
            ..Default::default()
        })
        .try_collect()
        .await?;
    texts.extend(records.into_iter().map(|r| r.text));
    Ok(Ingest {
        memory_id: kept_id,
        conversations: conversations.len(),
        turns,
        timeline,
        status,
        cpu_seconds,
        by_thread,
        rss_mib,
        peak_rss_mib,
        texts,
    })
}

/// The floor runs with the least CPU and the least wall time per text.
fn best(floor: &[FloorRun]) -> (&FloorRun, &FloorRun) {
    let cpu = floor
        .iter()
        .min_by(|a, b| a.cpu_ms_per_text().total_cmp(&b.cpu_ms_per_text()))
        .expect("the floor has runs");
    let wall = floor
        .iter()
        .min_by(|a, b| a.wall_ms_per_text().total_cmp(&b.wall_ms_per_text()))
        .expect("the floor has runs");
    (cpu, wall)
}

fn report(
    ctx: &Globals,
    ingest: &Ingest,
    tokens: &Tokens,
    floor: &[FloorRun],
    cycles: &[Cycle],
    idle: Option<(u64, ingest_cycles::Reading)>,
) {
    let (cheapest, fastest) = best(floor);
    let documents = ingest.documents().max(1) as f64;
    let embed_cpu_ms = 1000.0 * ingest.embedding_cpu() / documents;
    let total_cpu_ms = 1000.0 * ingest.cpu_seconds / documents;
    let floor_wall = documents * fastest.wall_ms_per_text() / 1000.0;
    let everything = ingest.timeline.everything.unwrap_or(f64::NAN);
    let status = &ingest.status;
    if ctx.json {
        let t = &ingest.timeline;
        crate::output::print_json(&json!({
            "conversations": ingest.conversations,
            "turns": ingest.turns,
            "texts": ingest.texts.len(),
            "distinct_texts": ingest.texts.iter().collect::<std::collections::HashSet<_>>().len(),
            "seconds": {
                "stored": t.stored, "keyword_searchable": t.keyword,
                "turns_embedded": t.turns_embedded, "extracted": t.extracted,
                "everything_searchable": t.everything,
            },
            "embedded": {
                "events": status.embedded_events, "records": status.embedded_records,
                "records_again": status.reembedded_records,
                "model_seconds": status.embedding_seconds,
            },
            "tokens": tokens.json(),
            "cpu_seconds": ingest.cpu_seconds,
            "cpu_by_thread": ingest.by_thread.iter().map(|(n, s)| json!({"threads": n, "seconds": s})).collect::<Vec<Value>>(),
            "cpu_ms_per_document": { "embedding_threads": embed_cpu_ms, "whole_process": total_cpu_ms },
            "rss_mib": ingest.rss_mib, "peak_rss_mib": ingest.peak_rss_mib,
            "floor": floor.iter().map(FloorRun::json).collect::<Vec<Value>>(),
            "floor_best_cpu_ms_per_text": cheapest.cpu_ms_per_text(),
            "floor_best_wall_ms_per_text": fastest.wall_ms_per_text(),
            "ratio_embedding_cpu_to_floor": embed_cpu_ms / cheapest.cpu_ms_per_text(),
            "ratio_searchable_wall_to_floor": everything / floor_wall,
            "cycles": cycles.iter().map(Cycle::json).collect::<Vec<Value>>(),
            "rss_growth_cycle_2_to_last_mib": ingest_cycles::growth(cycles),
            "idle": idle.map(|(seconds, reading)| json!({ "seconds": seconds, "memory": reading.json() })),
        }));
        return;
    }
    let t = &ingest.timeline;
    let at = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.1} s"));
    println!(
        "{} conversations, {} turns. From the first turn sent: stored {:.1} s, keyword-searchable {}, every turn embedded {}, extraction done {} (sessions end 2 s after their last turn), everything searchable {}",
        ingest.conversations,
        ingest.turns,
        t.stored,
        at(t.keyword),
        at(t.turns_embedded),
        at(t.extracted),
        at(t.everything),
    );
    println!(
        "embedded: {} events, {} records, {} records again after an update; {:.1} s inside the model; tokens per text {:.1} (max {}), padding at batch {}: {:.2}x in arrival order, {:.2}x sorted by length",
        status.embedded_events,
        status.embedded_records,
        status.reembedded_records,
        status.embedding_seconds,
        tokens.mean,
        tokens.max,
        memd_server::embedding::BATCH,
        tokens.padding_in_order,
        tokens.padding_sorted,
    );
    let distinct: std::collections::HashSet<&String> = ingest.texts.iter().collect();
    println!(
        "texts: {} turns and records now, {} distinct",
        ingest.texts.len(),
        distinct.len()
    );
    println!(
        "CPU: {:.1} s in all (RSS {:.0} MiB, peak {:.0} MiB); by thread:",
        ingest.cpu_seconds, ingest.rss_mib, ingest.peak_rss_mib
    );
    let rows = ingest
        .by_thread
        .iter()
        .take(10)
        .map(|(name, seconds)| {
            vec![
                name.clone(),
                format!("{seconds:.2}"),
                format!("{:.0}%", 100.0 * seconds / ingest.cpu_seconds),
            ]
        })
        .collect();
    crate::output::table(&["THREADS", "CPU S", "SHARE"], rows);
    println!(
        "floor: the same texts straight through the model ({} sampled):",
        cheapest.texts
    );
    let rows = floor
        .iter()
        .map(|run| {
            vec![
                run.threads.to_string(),
                if run.threads == 1 {
                    "-"
                } else if run.spin {
                    "on"
                } else {
                    "off"
                }
                .to_string(),
                run.batch.to_string(),
                if run.by_length {
                    "by length"
                } else {
                    "as stored"
                }
                .to_string(),
                format!("{:.2}", run.cpu_ms_per_text()),
                format!("{:.2}", run.wall_ms_per_text()),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "THREADS",
            "SPIN",
            "BATCH",
            "ORDER",
            "CPU MS/TEXT",
            "WALL MS/TEXT",
        ],
        rows,
    );
    println!(
        "CPU per embedded document: embedding threads {embed_cpu_ms:.2} ms, whole process {total_cpu_ms:.2} ms; floor {:.2} ms: {:.2}x and {:.2}x (target <= 1.5x)",
        cheapest.cpu_ms_per_text(),
        embed_cpu_ms / cheapest.cpu_ms_per_text(),
        total_cpu_ms / cheapest.cpu_ms_per_text(),
    );
    println!(
        "everything searchable after {everything:.1} s; embedding the {documents:.0} documents at the floor's best rate takes {floor_wall:.1} s: {:.2}x",
        everything / floor_wall
    );
    ingest_cycles::print(cycles, idle);
}
