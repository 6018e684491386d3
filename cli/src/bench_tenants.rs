//! `memctl bench tenants`: does one tenant's flood hurt another? The real `memd` binary with
//! two memories and an API key for each. A *quiet* tenant runs a steady, open-loop mix
//! (appends and hybrid record searches at `--quiet-rate`, each timed from when it was due, so
//! a stalled server shows as latency instead of fewer requests) first alone and then while a
//! *noisy* tenant floods its own memory from `--flood-clients` connections flat out, ignoring
//! every retry delay. It runs twice: with per-key quotas (`key_requests_per_second`,
//! `key_concurrent_searches`) and without, so the numbers show what the quotas buy. Reported:
//! the quiet tenant's p50/p99 alone and flooded and their ratio (target: p99 at most 2x), and
//! what the flood got (served, RESOURCE_EXHAUSTED, any other error: the target is none).

use crate::Globals;
use crate::bench::Stats;
use crate::memd_process::{Memd, memd_path};
use anyhow::Context;
use clap::Args;
use memd_client::{MemdClient, pb};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct TenantsArgs {
    /// Seconds measured per phase (quiet tenant alone, then flooded).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The quiet tenant's operations per second.
    #[arg(long, default_value_t = 20.0)]
    quiet_rate: f64,
    /// The noisy tenant's connections, each sending as fast as it is answered.
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    /// `key_requests_per_second` in the run with quotas (the burst is the same).
    #[arg(long, default_value_t = 200)]
    key_rate: u32,
    /// `key_concurrent_searches` in the run with quotas.
    #[arg(long, default_value_t = 1)]
    key_searches: u32,
    /// Run memd without the embedding model (keyword search only).
    #[arg(long)]
    keyword_only: bool,
    /// Only the run with quotas (skip the comparison run without).
    #[arg(long)]
    quotas_only: bool,
    /// The memd binary (default: `memd` beside this memctl).
    #[arg(long)]
    memd: Option<PathBuf>,
}

/// Turns each memory holds before measuring, so searches rank something.
const SEED_TURNS: usize = 300;

/// One tenant's view: a client with its own key, on its own memory.
#[derive(Clone)]
struct Tenant {
    client: MemdClient,
    memory_id: String,
}

/// What a tenant connects with.
#[derive(Clone)]
struct Credentials {
    endpoint: String,
    secret: String,
    memory_id: String,
}

impl Credentials {
    async fn connect(&self) -> anyhow::Result<Tenant> {
        Ok(Tenant {
            client: MemdClient::connect(self.endpoint.clone(), Some(self.secret.clone())).await?,
            memory_id: self.memory_id.clone(),
        })
    }
}

/// Whether operation `n` of [`Tenant::step`] is an append (else a search).
fn is_append(n: u64) -> bool {
    n % 5 < 3
}

impl Tenant {
    /// One operation: 60% appends, 40% hybrid (or keyword) record searches.
    async fn step(&self, n: u64, mode: pb::SearchMode) -> Result<(), tonic::Status> {
        const TOPICS: [&str; 4] = [
            "window seat",
            "Lisbon trip",
            "invoice paid",
            "allergic to peanuts",
        ];
        let topic = TOPICS[(n % 4) as usize];
        if is_append(n) {
            let text = format!("Turn {n}: I sorted out the {topic} with my manager today.");
            self.client
                .create_event(pb::CreateEventRequest {
                    memory_id: self.memory_id.clone(),
                    actor_id: "user".into(),
                    session_id: format!("s{}", n / 20),
                    payload: vec![memd_client::turn(pb::Role::User, &text)],
                    ..Default::default()
                })
                .await
                .map(drop)
        } else {
            self.client
                .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                    memory_id: self.memory_id.clone(),
                    search_criteria: Some(pb::SearchCriteria {
                        search_query: topic.into(),
                        mode: mode as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
    }
}

/// What the flood got.
#[derive(Debug, Default)]
struct FloodOutcome {
    served: u64,
    refused: u64,
    /// "code: message" of anything that was neither served nor RESOURCE_EXHAUSTED.
    other: BTreeMap<String, u64>,
}

/// One quiet phase: latencies over all operations and by kind, and failures by
/// "code: message".
struct Phase {
    all: Stats,
    appends: Stats,
    searches: Stats,
    errors: BTreeMap<String, u64>,
}

impl Phase {
    fn json(&self) -> Value {
        let mut all = self.all.json();
        all["appends"] = self.appends.json();
        all["searches"] = self.searches.json();
        all
    }
}

/// The quiet tenant at `rate` for `seconds`, each operation timed from when it was due.
async fn quiet_phase(tenant: &Tenant, rate: f64, seconds: u64, mode: pb::SearchMode) -> Phase {
    // (operation number, microseconds) of each success.
    let latencies = Arc::new(Mutex::new(Vec::<(u64, u32)>::new()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let total = (rate * seconds as f64) as u64;
    let mut tasks = Vec::new();
    for n in 0..total {
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (tenant, latencies, errors) = (tenant.clone(), latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let result = tenant.step(n, mode).await;
            let took = due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            match result {
                Ok(()) => latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((n, took)),
                Err(s) => {
                    *errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(format!("{:?}: {}", s.code(), s.message()))
                        .or_default() += 1;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let measured = start.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let of = |appends: Option<bool>| {
        let picked = latencies
            .iter()
            .filter(|(n, _)| appends.is_none_or(|a| is_append(*n) == a))
            .map(|&(_, took)| took)
            .collect();
        Stats::from(picked, measured)
    };
    Phase {
        all: of(None),
        appends: of(Some(true)),
        searches: of(Some(false)),
        errors: std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner())),
    }
}

/// The noisy tenant's clients, flat out until `stop`, ignoring retry delays.
fn flood(
    tenant: &Tenant,
    clients: usize,
    stop: Arc<AtomicBool>,
    mode: pb::SearchMode,
) -> Vec<tokio::task::JoinHandle<FloodOutcome>> {
    (0..clients)
        .map(|i| {
            let (tenant, stop) = (tenant.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcome = FloodOutcome::default();
                let mut n = i as u64 * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    match tenant.step(n, mode).await {
                        Ok(()) => outcome.served += 1,
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            outcome.refused += 1
                        }
                        Err(s) => {
                            *outcome
                                .other
                                .entry(format!("{:?}: {}", s.code(), s.message()))
                                .or_default() += 1
                        }
                    }
                    n += 1;
                }
                outcome
            })
        })
        .collect()
}

/// A memory with a key that may use only it, seeded with turns.
async fn tenant(admin: &MemdClient, endpoint: &str, name: &str) -> anyhow::Result<Credentials> {
    let memory_id = admin
        .create_memory(pb::CreateMemoryRequest {
            name: name.into(),
            ..Default::default()
        })
        .await?
        .memory_id;
    let key = admin
        .create_api_key(
            name,
            pb::ApiKeyPolicy {
                memory_ids: vec![memory_id.clone()],
                actor_patterns: vec!["*".into()],
                namespace_prefixes: vec!["/".into()],
                actions: vec![
                    pb::api_key_policy::Action::Read as i32,
                    pb::api_key_policy::Action::Write as i32,
                ],
            },
        )
        .await?;
    // Seeded through the admin: the quiet key's quota is for the measurement.
    let seeding = Tenant {
        client: admin.clone(),
        memory_id: memory_id.clone(),
    };
    for n in 0..SEED_TURNS as u64 {
        // Appends only (n % 5 < 3 picks an append): multiples of 5 are appends.
        seeding.step(n * 5, pb::SearchMode::Keyword).await?;
    }
    Ok(Credentials {
        endpoint: endpoint.to_owned(),
        secret: key.secret,
        memory_id,
    })
}

/// The quiet tenant's phases (warm-up, alone, then flooded from `flood_started` on) on a
/// runtime and a connection of its own, on its own thread: the flood's clients run in this
/// process too, and sharing their runtime would time the load generator's queue, not memd.
fn quiet_thread(
    credentials: Credentials,
    args: (f64, u64, pb::SearchMode),
    flood_started: tokio::sync::oneshot::Receiver<()>,
    alone_done: tokio::sync::oneshot::Sender<()>,
) -> std::thread::JoinHandle<anyhow::Result<[Phase; 2]>> {
    let (rate, seconds, mode) = args;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let quiet = credentials.connect().await?;
            let _ = quiet_phase(&quiet, rate, 2, mode).await;
            let alone = quiet_phase(&quiet, rate, seconds, mode).await;
            let _ = alone_done.send(());
            flood_started.await?;
            let flooded = quiet_phase(&quiet, rate, seconds, mode).await;
            Ok([alone, flooded])
        })
    })
}

/// Waits until both indexes have caught up with the seeded turns.
async fn settled(admin: &MemdClient) -> anyhow::Result<()> {
    for _ in 0..6000 {
        let status = admin.index_status().await?;
        if status.keyword_pending == 0 && status.vectors_pending == 0 && !status.vectors_rebuilding
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the indexes never caught up with the seeded turns")
}

/// One run: memd started with `env`, the quiet tenant alone, then flooded.
async fn run_once(args: &TenantsArgs, quotas: bool) -> anyhow::Result<Value> {
    let memd = memd_path(args.memd.clone())?;
    let model = if args.keyword_only {
        None
    } else {
        Some(memd_server::embedding::local_files().context(
            "memctl bench tenants runs memd with the local embedding model: run ./dev.sh fetch-model, or pass --keyword-only",
        )?)
    };
    let mode = if args.keyword_only {
        pb::SearchMode::Keyword
    } else {
        pb::SearchMode::Hybrid
    };
    let dir = tempfile::tempdir()?;
    let admin_key = format!("tenants-{}", memd_server::ids::random_suffix(24));
    let mut env = vec![("MEMD_ADMIN_KEY", admin_key.clone())];
    if quotas {
        env.push(("MEMD_KEY_REQUESTS_PER_SECOND", args.key_rate.to_string()));
        env.push(("MEMD_KEY_REQUEST_BURST", args.key_rate.to_string()));
        env.push((
            "MEMD_KEY_CONCURRENT_SEARCHES",
            args.key_searches.to_string(),
        ));
    }
    let server = Memd::start(&memd, dir.path(), model.as_ref(), &env).await?;
    let admin = MemdClient::connect(server.endpoint.clone(), Some(admin_key)).await?;
    let quiet = tenant(&admin, &server.endpoint, "quiet").await?;
    let noisy = tenant(&admin, &server.endpoint, "noisy")
        .await?
        .connect()
        .await?;
    settled(&admin).await?;

    // Warm-up and the quiet tenant alone, then flooded: on a thread of its own.
    let (flooding, flood_started) = tokio::sync::oneshot::channel();
    let (alone_done, alone_finished) = tokio::sync::oneshot::channel();
    let quiet = quiet_thread(
        quiet,
        (args.quiet_rate, args.seconds, mode),
        flood_started,
        alone_done,
    );
    if alone_finished.await.is_err() {
        // The thread ended before its first phase did: its error says why.
        quiet
            .join()
            .map_err(|_| anyhow::anyhow!("the quiet tenant's thread panicked"))??;
        anyhow::bail!("the quiet tenant's thread ended early");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(&noisy, args.flood_clients, stop.clone(), mode);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flood_started = Instant::now();
    let _ = flooding.send(());
    let [alone, flooded] = tokio::task::spawn_blocking(move || quiet.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the quiet tenant's thread panicked"))??;
    let flood_seconds = flood_started.elapsed().as_secs_f64() + 1.0;
    stop.store(true, Ordering::Relaxed);
    let mut outcome = FloodOutcome::default();
    for flooder in flooders {
        let got = flooder.await?;
        outcome.served += got.served;
        outcome.refused += got.refused;
        for (kind, n) in got.other {
            *outcome.other.entry(kind).or_default() += n;
        }
    }
    server.stop().await?;

    let ratio = flooded.all.p99_us / alone.all.p99_us;
    Ok(json!({
        "quotas": quotas,
        "settings": if quotas {
            json!({"key_requests_per_second": args.key_rate, "key_request_burst": args.key_rate, "key_concurrent_searches": args.key_searches})
        } else {
            json!("none")
        },
        "quiet_alone": alone.json(),
        "quiet_alone_errors": alone.errors,
        "quiet_flooded": flooded.json(),
        "quiet_flooded_errors": flooded.errors,
        "quiet_p99_ratio": (ratio * 100.0).round() / 100.0,
        "flood_served_per_second": (outcome.served as f64 / flood_seconds).round(),
        "flood_refused_per_second": (outcome.refused as f64 / flood_seconds).round(),
        "flood_other_errors": outcome.other,
    }))
}

pub async fn run(ctx: &Globals, args: TenantsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !ctx.endpoint_explicit,
        "memctl bench tenants starts memd itself: leave out --endpoint"
    );
    anyhow::ensure!(
        args.seconds > 0 && args.quiet_rate > 0.0 && args.flood_clients > 0,
        "--seconds, --quiet-rate and --flood-clients must be positive"
    );
    anyhow::ensure!(
        args.quiet_rate < f64::from(args.key_rate),
        "--quiet-rate must stay under --key-rate, or the quiet tenant is throttled too"
    );
    let mut runs = Vec::new();
    let modes: &[bool] = if args.quotas_only {
        &[true]
    } else {
        &[true, false]
    };
    for &quotas in modes {
        runs.push(run_once(&args, quotas).await?);
    }
    let report = json!({
        "seconds": args.seconds,
        "quiet_rate": args.quiet_rate,
        "flood_clients": args.flood_clients,
        "search_mode": if args.keyword_only { "keyword" } else { "hybrid" },
        "target": "quiet tenant's p99 flooded <= 2x alone, with quotas; the flood gets RESOURCE_EXHAUSTED, no other errors",
        "runs": runs,
    });
    if ctx.json {
        crate::output::print_json(&report);
        return Ok(());
    }
    println!(
        "quiet tenant at {} ops/s (60% appends, 40% {} searches), noisy tenant on {} connections flat out, {} s per phase",
        args.quiet_rate,
        report["search_mode"].as_str().unwrap_or_default(),
        args.flood_clients,
        args.seconds
    );
    let mut table = comfy_table::Table::new();
    table.set_header([
        "quotas",
        "quiet p50 alone ms",
        "quiet p99 alone ms",
        "quiet p50 flooded ms",
        "quiet p99 flooded ms",
        "p99 ratio (<= 2)",
        "p99 appends alone / flooded ms",
        "p99 searches alone / flooded ms",
        "flood served/s",
        "flood refused/s",
        "flood other errors",
        "quiet errors",
    ]);
    let ms = |v: &Value| format!("{:.2}", v.as_f64().unwrap_or(f64::NAN) / 1000.0);
    let count = |v: &Value| -> u64 {
        v.as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
    };
    for run in &runs {
        let other = count(&run["flood_other_errors"]);
        table.add_row([
            if run["quotas"] == true {
                format!("{}/s, {} searches", args.key_rate, args.key_searches)
            } else {
                "none".into()
            },
            ms(&run["quiet_alone"]["p50_us"]),
            ms(&run["quiet_alone"]["p99_us"]),
            ms(&run["quiet_flooded"]["p50_us"]),
            ms(&run["quiet_flooded"]["p99_us"]),
            run["quiet_p99_ratio"].to_string(),
            format!(
                "{} / {}",
                ms(&run["quiet_alone"]["appends"]["p99_us"]),
                ms(&run["quiet_flooded"]["appends"]["p99_us"])
            ),
            format!(
                "{} / {}",
                ms(&run["quiet_alone"]["searches"]["p99_us"]),
                ms(&run["quiet_flooded"]["searches"]["p99_us"])
            ),
            run["flood_served_per_second"].to_string(),
            run["flood_refused_per_second"].to_string(),
            other.to_string(),
            format!(
                "{} / {}",
                count(&run["quiet_alone_errors"]),
                count(&run["quiet_flooded_errors"])
            ),
        ]);
    }
    println!("{table}");
    for run in &runs {
        for (field, what) in [
            (
                "flood_other_errors",
                "flood errors other than RESOURCE_EXHAUSTED",
            ),
            ("quiet_alone_errors", "quiet tenant's errors alone"),
            (
                "quiet_flooded_errors",
                "quiet tenant's errors while flooded",
            ),
        ] {
            if let Some(errors) = run[field].as_object().filter(|m| !m.is_empty()) {
                println!("{what} (quotas {}): {errors:?}", run["quotas"]);
            }
        }
    }
    Ok(())
}
