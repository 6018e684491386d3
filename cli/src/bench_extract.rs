//! `memctl bench extract`: long-term extraction under load. Two in-process servers (same
//! settings) take CreateEvent at full speed for the same time: one whose memory has no
//! strategies (the floor) and one with SEMANTIC, USER_PREFERENCE and SUMMARY strategies. It
//! prints both throughputs and their ratio, then waits for the extraction queue to drain and
//! prints the lag from each event's append to its fact record (p50/p99) and the rate at which
//! events were extracted.

use crate::Globals;
use crate::bench::{LocalServer, Stats, connections, drive};
use clap::Args;
use futures::TryStreamExt;
use memd_client::{MemdClient, named_turn, pb};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Seconds of CreateEvent load per phase.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// In-flight CreateEvent requests (one actor per worker).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// fsync before acknowledging (both phases).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sync_writes: bool,
    /// Nice value of the extraction threads (the server's `extraction_nice`).
    #[arg(long, default_value_t = 10)]
    nice: i32,
}

const CITIES: [&str; 8] = [
    "Lisbon", "Denver", "Osaka", "Nairobi", "Oslo", "Lima", "Hanoi", "Quebec",
];
const THINGS: [&str; 8] = [
    "jazz concert",
    "pottery class",
    "marathon",
    "cooking course",
    "chess tournament",
    "film festival",
    "climbing trip",
    "book fair",
];
const PEOPLE: [&str; 8] = ["Ana", "Ben", "Chloe", "Dev", "Ema", "Femi", "Gus", "Hana"];

/// A varied, informative conversational turn (so every event yields a fact).
fn utterance(n: u64) -> String {
    let pick = |list: &[&'static str], salt: u64| list[((n / salt) % list.len() as u64) as usize];
    match n % 3 {
        0 => format!(
            "I visited {} last week with my friend {} and we booked {} tickets for the {}.",
            pick(&CITIES, 1),
            pick(&PEOPLE, 3),
            n % 97 + 2,
            pick(&THINGS, 7)
        ),
        1 => format!(
            "I really love the {} in {} and I go there every month with {}, order number {n}.",
            pick(&THINGS, 1),
            pick(&CITIES, 5),
            pick(&PEOPLE, 11)
        ),
        _ => format!(
            "My sister {} moved to {} two years ago and works at the {} there since {}.",
            pick(&PEOPLE, 1),
            pick(&CITIES, 3),
            pick(&THINGS, 13),
            1990 + n % 35
        ),
    }
}

fn strategy(id: &str, kind: pb::StrategyType) -> pb::MemoryStrategy {
    pb::MemoryStrategy {
        strategy_id: id.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

fn strategies() -> Vec<pb::MemoryStrategy> {
    vec![
        strategy("facts", pb::StrategyType::Semantic),
        strategy("prefs", pb::StrategyType::UserPreference),
        strategy("summaries", pb::StrategyType::Summary),
    ]
}

/// Drives CreateEvent for `seconds` against a fresh memory with `strategies`.
async fn load(
    endpoint: &str,
    strategies: Vec<pb::MemoryStrategy>,
    args: &ExtractArgs,
) -> anyhow::Result<(MemdClient, String, Stats)> {
    let admin = MemdClient::connect(endpoint.to_string(), None).await?;
    let memory = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "bench_extract".into(),
            strategies,
            ..Default::default()
        })
        .await?;
    let clients = connections(endpoint, None, args.concurrency).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let memory_id = memory.memory_id.clone();
    let stats = drive(
        args.concurrency,
        Duration::from_secs_f64(args.seconds),
        move |worker| {
            let client = clients[worker % clients.len()].clone();
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let request = pb::CreateEventRequest {
                memory_id: memory_id.clone(),
                actor_id: format!("agent-{worker}"),
                session_id: "s".into(),
                payload: vec![named_turn(
                    pb::Role::User,
                    format!("User{worker}"),
                    utterance(n),
                )],
                ..Default::default()
            };
            async move {
                client.create_event(request).await?;
                Ok(())
            }
        },
    )
    .await?;
    Ok((admin, memory.memory_id, stats))
}

async fn queue_empty(client: &MemdClient, memory_id: &str) -> anyhow::Result<bool> {
    let page = client
        .memory()
        .list_memory_extraction_jobs(pb::ListMemoryExtractionJobsRequest {
            memory_id: memory_id.into(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(page.jobs.is_empty())
}

fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

/// The append time an event id carries (its first 8 bytes are the event timestamp in µs,
/// which is the server's clock when the request set none, as here).
fn event_us(event_id: &str) -> Option<i64> {
    i64::from_str_radix(event_id.get(..16)?, 16).ok()
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

pub async fn run(ctx: &Globals, args: ExtractArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be positive");
    let floor_server = LocalServer::start(args.sync_writes).await?;
    let (_, _, off) = load(&floor_server.endpoint, Vec::new(), &args).await?;
    floor_server.stop().await;
    eprintln!("no strategies: {:.0} ev/s", off.per_second);
    // The outbox's share: strategies set, jobs queued, workers not running.
    let sync = args.sync_writes;
    let queue_server = LocalServer::start_with(|config| {
        config.sync_writes = sync;
        config.extraction_enabled = false;
    })
    .await?;
    let (_, _, queued) = load(&queue_server.endpoint, strategies(), &args).await?;
    queue_server.stop().await;
    eprintln!("strategies, workers off: {:.0} ev/s", queued.per_second);

    let nice = args.nice;
    let server = LocalServer::start_with(|config| {
        config.sync_writes = sync;
        config.extraction_nice = nice;
    })
    .await?;
    let started = Instant::now();
    let (client, memory_id, on) = load(&server.endpoint, strategies(), &args).await?;
    eprintln!(
        "extraction on: {:.0} ev/s; draining the queue",
        on.per_second
    );
    let load_done = started.elapsed();
    while !queue_empty(&client, &memory_id).await? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    let facts: Vec<pb::MemoryRecord> = client
        .all_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: memory_id.clone(),
            strategy_id: "facts".into(),
            page_size: 100,
            ..Default::default()
        })
        .try_collect()
        .await?;
    let mut lags: Vec<i64> = facts
        .iter()
        .filter_map(|r| {
            let appended = event_us(r.source_event_ids.first()?)?;
            Some(micros(&r.create_time) - appended)
        })
        .collect();
    lags.sort_unstable();
    let events: usize = {
        let mut total = 0;
        for worker in 0..args.concurrency {
            let session = client
                .get_session(&memory_id, format!("agent-{worker}"), "s")
                .await?;
            total += session.event_count as usize;
        }
        total
    };
    server.stop().await;
    let ratio = on.per_second / off.per_second;
    let extract_rate = events as f64 / drained.as_secs_f64();
    let (p50, p99) = (percentile(&lags, 50.0) / 1e3, percentile(&lags, 99.0) / 1e3);
    if ctx.json {
        crate::output::print_json(&json!({
            "sync_writes": args.sync_writes,
            "concurrency": args.concurrency,
            "extraction_nice": args.nice,
            "create_event_extraction_off": off.json(),
            "create_event_workers_off": queued.json(),
            "create_event_extraction_on": on.json(),
            "throughput_on_vs_off": ratio,
            "events": events,
            "fact_records": facts.len(),
            "load_seconds": load_done.as_secs_f64(),
            "drain_seconds": drained.as_secs_f64(),
            "events_extracted_per_second": extract_rate,
            "lag_ms": { "p50": p50, "p99": p99 },
        }));
        return Ok(());
    }
    crate::output::table(
        &["MEASURE", "VALUE"],
        vec![
            vec![
                "sync_writes / concurrency / nice".into(),
                format!(
                    "{} / {} / {}",
                    args.sync_writes, args.concurrency, args.nice
                ),
            ],
            vec![
                "CreateEvent, extraction off (floor)".into(),
                format!("{:.0} ev/s, p50 {:.0} µs", off.per_second, off.p50_us),
            ],
            vec![
                "CreateEvent, strategies, workers off".into(),
                format!("{:.0} ev/s, p50 {:.0} µs", queued.per_second, queued.p50_us),
            ],
            vec![
                "CreateEvent, extraction on".into(),
                format!("{:.0} ev/s, p50 {:.0} µs", on.per_second, on.p50_us),
            ],
            vec!["on / off".into(), format!("{ratio:.2}")],
            vec![
                "events appended / fact records".into(),
                format!("{events} / {}", facts.len()),
            ],
            vec![
                "queue drained after".into(),
                format!(
                    "{:.2} s (load {:.2} s)",
                    drained.as_secs_f64(),
                    load_done.as_secs_f64()
                ),
            ],
            vec![
                "events extracted per second (3 strategies)".into(),
                format!("{extract_rate:.0}"),
            ],
            vec![
                "lag append → fact record p50 / p99".into(),
                format!("{p50:.1} ms / {p99:.1} ms"),
            ],
        ],
    );
    println!("targets: on/off >= 0.90; lag p50 < 1000 ms");
    Ok(())
}
