//! `memctl bench soak [--minutes N]`: the real `memd` binary under a realistic mix for a long
//! time, at half of the capacity measured at the start, printing per minute what would show
//! a slow leak or a degradation: throughput, p50/p99 per operation, resident memory, open
//! files, the data directory's size and the indexes' lag. The verdict compares the last
//! third of the run with the first (flat: p99 and RSS do not trend upward).
//!
//! The mix, per client: appends to sessions of 20 turns (new session after each, so
//! sessions keep ending and being extracted), record searches (hybrid), event searches,
//! GetContext, listings, deletes of its own earlier events, record writes. Each client keeps
//! at most [`WINDOW`] events and [`RECORD_WINDOW`] records, deleting its oldest beyond that,
//! so the data reaches a steady size early and an upward trend in latency or memory is
//! memd's, not the data's growth (the vectors of every event are held in memory).

use crate::Globals;
use crate::bench::Stats;
use crate::memd_process::{Memd, memd_path};
use crate::proc_stats;
use anyhow::Context;
use clap::Args;
use memd_client::{MemdClient, pb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long to run at the soak rate.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Operations per second (default: half of the capacity measured first).
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrent clients (enough that half the capacity is reachable while some of them
    /// wait on searches).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds the capacity is measured for.
    #[arg(long, default_value_t = 20)]
    capacity_seconds: u64,
    /// Seconds per reported interval (default a minute).
    #[arg(long, default_value_t = 60)]
    interval_seconds: u64,
    /// The memd binary (default: `memd` beside this memctl).
    #[arg(long)]
    memd: Option<PathBuf>,
}

/// Events each client keeps (older ones are deleted).
const WINDOW: usize = 1000;
/// Records each client writes and keeps.
const RECORD_WINDOW: usize = 100;

const OPS: [&str; 7] = [
    "append",
    "search_records",
    "search_events",
    "context",
    "list",
    "delete",
    "write_record",
];

/// Latencies (µs) per operation since the last report, and errors.
#[derive(Default)]
struct Window {
    latencies: BTreeMap<&'static str, Vec<u32>>,
    errors: u64,
    /// "operation: code" of each error, counted.
    kinds: BTreeMap<String, u64>,
}

struct Client {
    client: MemdClient,
    memory_id: String,
    actor: String,
    rng: StdRng,
    turn: usize,
    session: usize,
    events: std::collections::VecDeque<(String, String)>,
    records: std::collections::VecDeque<String>,
    /// The session of the last append (listing a session before its first event is
    /// NOT_FOUND).
    last_session: Option<String>,
}

impl Client {
    /// One operation of the mix; its name.
    async fn step(&mut self) -> (&'static str, Result<(), tonic::Status>) {
        if self.events.len() > WINDOW {
            return self.delete_oldest().await;
        }
        if self.records.len() > RECORD_WINDOW {
            let record_id = self.records.pop_front().unwrap_or_default();
            let result = self
                .client
                .delete_memory_record(&self.memory_id, record_id)
                .await;
            return ("delete", result);
        }
        let roll = self.rng.random_range(0..100);
        let session = format!("s{}", self.session);
        let query = [
            "window seat",
            "Lisbon trip",
            "invoice paid",
            "allergic to peanuts",
        ][self.rng.random_range(0..4)];
        match roll {
            0..60 => {
                let text = format!(
                    "Turn {} of session {}: I booked the {query} and my manager approved it.",
                    self.turn, self.session
                );
                self.turn += 1;
                if self.turn.is_multiple_of(20) {
                    self.session += 1;
                }
                let request = pb::CreateEventRequest {
                    memory_id: self.memory_id.clone(),
                    actor_id: self.actor.clone(),
                    session_id: session.clone(),
                    payload: vec![memd_client::turn(pb::Role::User, &text)],
                    ..Default::default()
                };
                let result = self.client.create_event(request).await.map(|e| {
                    self.last_session = Some(session.clone());
                    self.events.push_back((session, e.event_id));
                });
                ("append", result)
            }
            60..75 => {
                let request = pb::RetrieveMemoryRecordsRequest {
                    memory_id: self.memory_id.clone(),
                    search_criteria: Some(pb::SearchCriteria {
                        search_query: query.into(),
                        mode: pb::SearchMode::Hybrid as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (
                    "search_records",
                    self.client.retrieve_memory_records(request).await.map(drop),
                )
            }
            75..85 => {
                let request = pb::SearchEventsRequest {
                    memory_id: self.memory_id.clone(),
                    actor_id: self.actor.clone(),
                    query: query.into(),
                    ..Default::default()
                };
                (
                    "search_events",
                    self.client.search_events(request).await.map(drop),
                )
            }
            85..90 => {
                let request = pb::GetContextRequest {
                    memory_id: self.memory_id.clone(),
                    actor_id: self.actor.clone(),
                    session_id: session,
                    query: query.into(),
                    ..Default::default()
                };
                ("context", self.client.get_context(request).await.map(drop))
            }
            90..95 if self.last_session.is_some() => {
                let request = pb::ListEventsRequest {
                    memory_id: self.memory_id.clone(),
                    actor_id: self.actor.clone(),
                    session_id: self.last_session.clone().unwrap_or_default(),
                    include_payloads: true,
                    ..Default::default()
                };
                ("list", self.client.list_events(request).await.map(drop))
            }
            95..98 if !self.events.is_empty() => self.delete_oldest().await,
            _ => {
                let record = pb::MemoryRecordInput {
                    namespace: format!("/soak/{}", self.actor),
                    text: format!("Invoice {} was paid from {query}.", self.turn),
                    ..Default::default()
                };
                let result = self
                    .client
                    .batch_create_memory_records(&self.memory_id, vec![record])
                    .await
                    .map(|results| {
                        if let Some(item) = results.into_iter().find(|r| r.code == 0) {
                            self.records.push_back(item.memory_record_id);
                        }
                    });
                ("write_record", result)
            }
        }
    }
}

impl Client {
    /// Deletes the client's oldest event.
    async fn delete_oldest(&mut self) -> (&'static str, Result<(), tonic::Status>) {
        let Some((session_id, event_id)) = self.events.pop_front() else {
            return ("delete", Ok(()));
        };
        let request = pb::DeleteEventRequest {
            memory_id: self.memory_id.clone(),
            actor_id: self.actor.clone(),
            session_id,
            event_id,
        };
        ("delete", self.client.delete_event(request).await)
    }
}

/// Runs the clients at `rate` operations per second in all (flat out when `None`) until
/// `stop`, recording into `window`.
fn spawn_clients(
    clients: Vec<Client>,
    rate: Option<f64>,
    window: Arc<Mutex<Window>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Client>> {
    let count = clients.len() as f64;
    clients
        .into_iter()
        .map(|mut client| {
            let (window, stop) = (window.clone(), stop.clone());
            tokio::spawn(async move {
                let mut ticks = rate.map(|rate| {
                    let mut interval = tokio::time::interval(Duration::from_secs_f64(count / rate));
                    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    interval
                });
                while !stop.load(Ordering::Relaxed) {
                    if let Some(ticks) = ticks.as_mut() {
                        ticks.tick().await;
                    }
                    let started = Instant::now();
                    let (op, result) = client.step().await;
                    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(()) => window.latencies.entry(op).or_default().push(micros),
                        Err(status) => {
                            window.errors += 1;
                            *window
                                .kinds
                                .entry(format!("{op}: {:?}", status.code()))
                                .or_default() += 1;
                        }
                    }
                }
                client
            })
        })
        .collect()
}

/// What one interval measured.
struct Minute {
    at_minute: f64,
    per_second: f64,
    errors: u64,
    ops: BTreeMap<&'static str, Stats>,
    rss_mib: f64,
    open_files: usize,
    data_mib: f64,
    keyword_lag: f64,
    vectors_lag: f64,
}

impl Minute {
    fn json(&self) -> Value {
        json!({
            "minute": self.at_minute, "ops_per_second": self.per_second, "errors": self.errors,
            "ops": self.ops.iter().map(|(op, s)| (op.to_string(), s.json())).collect::<serde_json::Map<_, _>>(),
            "rss_mib": self.rss_mib, "open_files": self.open_files, "data_dir_mib": self.data_mib,
            "keyword_lag_seconds": self.keyword_lag, "vectors_lag_seconds": self.vectors_lag,
        })
    }

    /// The worst p99 across operations (ms).
    fn p99_ms(&self) -> f64 {
        self.ops
            .values()
            .map(|s| s.p99_us / 1000.0)
            .fold(0.0, f64::max)
    }
}

fn dir_mib(dir: &Path) -> f64 {
    let mut bytes = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => bytes += m.len(),
                Err(_) => {}
            }
        }
    }
    bytes as f64 / 1048576.0
}

pub async fn run(ctx: &Globals, args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !ctx.endpoint_explicit,
        "memctl bench soak starts memd itself: leave out --endpoint"
    );
    anyhow::ensure!((1..=64).contains(&args.clients), "--clients must be 1-64");
    anyhow::ensure!(
        args.minutes > 0 && args.interval_seconds > 0,
        "--minutes and --interval-seconds must be positive"
    );
    let memd = memd_path(args.memd.clone())?;
    let model = memd_server::embedding::local_files().context(
        "memctl bench soak runs memd with the local embedding model: run ./dev.sh fetch-model",
    )?;
    let dir = tempfile::tempdir()?;
    let admin_key = format!("soak-{}", memd_server::ids::random_suffix(24));
    let server = Memd::start(
        &memd,
        dir.path(),
        Some(&model),
        &[("MEMD_ADMIN_KEY", admin_key.clone())],
    )
    .await?;
    let admin = MemdClient::connect(server.endpoint.clone(), Some(admin_key.clone())).await?;
    let memory_id = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "soak".into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "facts".into(),
                r#type: pb::StrategyType::Semantic as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?
        .memory_id;
    let mut clients = Vec::new();
    for i in 0..args.clients {
        clients.push(Client {
            client: MemdClient::connect(server.endpoint.clone(), Some(admin_key.clone())).await?,
            memory_id: memory_id.clone(),
            actor: format!("soak/agent-{i}"),
            rng: StdRng::seed_from_u64(i as u64),
            turn: 0,
            session: 0,
            events: Default::default(),
            records: Default::default(),
            last_session: None,
        });
    }

    // Capacity: the same mix, flat out.
    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles = spawn_clients(clients, None, window.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(args.capacity_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for handle in handles {
        clients.push(handle.await?);
    }
    let capacity = {
        let window = std::mem::take(&mut *window.lock().unwrap_or_else(|e| e.into_inner()));
        window.latencies.values().map(Vec::len).sum::<usize>() as f64
            / started.elapsed().as_secs_f64()
    };
    let rate = args.rate.unwrap_or(capacity / 2.0);
    if !ctx.json {
        println!(
            "capacity {capacity:.0} ops/s ({} clients, the mix flat out for {} s); soaking at {rate:.0} ops/s for {} min",
            args.clients, args.capacity_seconds, args.minutes
        );
    }

    stop.store(false, Ordering::Relaxed);
    let started = Instant::now();
    let handles = spawn_clients(clients, Some(rate), window.clone(), stop.clone());
    let mut minutes: Vec<Minute> = Vec::new();
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let interval = Duration::from_secs(args.interval_seconds);
    let total = Duration::from_secs(args.minutes * 60);
    let mut last = Instant::now();
    while started.elapsed() < total {
        tokio::time::sleep(interval.min(total.saturating_sub(started.elapsed()))).await;
        let measured = last.elapsed();
        last = Instant::now();
        let window = std::mem::take(&mut *window.lock().unwrap_or_else(|e| e.into_inner()));
        let count: usize = window.latencies.values().map(Vec::len).sum();
        for (kind, n) in &window.kinds {
            *error_kinds.entry(kind.clone()).or_default() += n;
        }
        let memory = proc_stats::process_memory(server.pid)?;
        let status = admin.index_status().await?;
        let minute = Minute {
            at_minute: started.elapsed().as_secs_f64() / 60.0,
            per_second: count as f64 / measured.as_secs_f64(),
            errors: window.errors,
            ops: window
                .latencies
                .into_iter()
                .map(|(op, l)| (op, Stats::from(l, measured)))
                .collect(),
            rss_mib: memory.rss_mib,
            open_files: std::fs::read_dir(format!("/proc/{}/fd", server.pid))
                .map_or(0, |d| d.count()),
            data_mib: dir_mib(dir.path()),
            keyword_lag: status.keyword_lag_seconds,
            vectors_lag: status.vectors_lag_seconds,
        };
        if !ctx.json {
            let op = |name: &str| {
                minute.ops.get(name).map_or("-".to_string(), |s| {
                    format!("{:.1}/{:.1}", s.p50_us / 1000.0, s.p99_us / 1000.0)
                })
            };
            println!(
                "min {:>5.1}: {:>6.0} ops/s, {} errors | p50/p99 ms: append {}, search {}, events {}, context {} | RSS {:.0} MiB, {} fds, data {:.0} MiB, lag keyword {:.1} s vectors {:.1} s",
                minute.at_minute,
                minute.per_second,
                minute.errors,
                op("append"),
                op("search_records"),
                op("search_events"),
                op("context"),
                minute.rss_mib,
                minute.open_files,
                minute.data_mib,
                minute.keyword_lag,
                minute.vectors_lag
            );
        }
        minutes.push(minute);
    }
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await?;
    }
    server.stop().await?;
    report(ctx, capacity, rate, &minutes, &error_kinds);
    Ok(())
}

/// Median of `values` (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(
    ctx: &Globals,
    capacity: f64,
    rate: f64,
    minutes: &[Minute],
    error_kinds: &BTreeMap<String, u64>,
) {
    let third = (minutes.len() / 3).max(1);
    let first = &minutes[..third.min(minutes.len())];
    let last = &minutes[minutes.len().saturating_sub(third)..];
    let trend = |f: &dyn Fn(&Minute) -> f64| {
        let a = median(first.iter().map(f).collect());
        let b = median(last.iter().map(f).collect());
        (a, b)
    };
    let (p99_first, p99_last) = trend(&|m| m.p99_ms());
    let (rss_first, rss_last) = trend(&|m| m.rss_mib);
    let (fds_first, fds_last) = trend(&|m| m.open_files as f64);
    let errors: u64 = minutes.iter().map(|m| m.errors).sum();
    if ctx.json {
        crate::output::print_json(&json!({
            "capacity_ops_per_second": capacity,
            "rate_ops_per_second": rate,
            "operations": OPS,
            "minutes": minutes.iter().map(Minute::json).collect::<Vec<_>>(),
            "errors": errors,
            "error_kinds": error_kinds,
            "worst_p99_ms": { "first_third": p99_first, "last_third": p99_last },
            "rss_mib": { "first_third": rss_first, "last_third": rss_last },
            "open_files": { "first_third": fds_first, "last_third": fds_last },
        }));
        return;
    }
    println!(
        "first third vs last third (medians): worst p99 {p99_first:.1} -> {p99_last:.1} ms, RSS {rss_first:.0} -> {rss_last:.0} MiB, open files {fds_first:.0} -> {fds_last:.0}; {errors} errors {error_kinds:?}"
    );
}
