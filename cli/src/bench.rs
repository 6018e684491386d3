//! `memctl bench write`: CreateEvent throughput and latency against floors measured in the
//! same run: a no-op gRPC call (the health check) at the same concurrency, and raw RocksDB
//! WriteBatch puts of the same bytes with the same sync setting. Prints numbers and ratios;
//! judging them is left to the reader (targets are printed alongside).

use crate::Globals;
use clap::{Args, Subcommand};
use memd_client::{MemdClient, pb, turn};
use memd_server::store::{Store, StoreOptions};
use memd_server::{Config, Server};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// CreateEvent throughput and latency vs. no-op gRPC and raw RocksDB floors.
    Write(WriteArgs),
    /// Extraction lag and rate under full CreateEvent load, and CreateEvent throughput with
    /// extraction on vs. off.
    Extract(crate::bench_extract::ExtractArgs),
    /// RetrieveMemoryRecords latency over synthetic records vs. the bare index search.
    Retrieve(crate::bench_retrieve::RetrieveArgs),
    /// The vector search alone at a scale the model cannot embed in a benchmark (synthetic
    /// clustered and random unit vectors), against the flat scan and exact search.
    Ann(crate::bench_ann::AnnArgs),
    /// The AgentCore REST facade vs. gRPC: CreateEvent and RetrieveMemoryRecords, same run.
    Rest(crate::bench_rest::RestArgs),
    /// LoCoMo conversations to fully searchable: milestones, documents embedded, tokens,
    /// CPU by thread, against the model's own floor measured in the same run.
    Ingest(crate::bench_ingest::IngestArgs),
    /// The real memd binary from process start to health answering and to SERVING (empty
    /// directory with and without the model, LoCoMo loaded), with its memory and threads.
    Startup(crate::bench_startup::StartupArgs),
    /// The real memd binary under a realistic mix at half its capacity for a long time:
    /// throughput, p50/p99, RSS, open files, data size and index lag per minute.
    Soak(crate::bench_soak::SoakArgs),
    /// Noisy tenants: a quiet tenant's latency alone and while another key floods, with
    /// per-key quotas and without.
    Tenants(crate::bench_tenants::TenantsArgs),
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Seconds measured per cell (after a short warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrency levels (in-flight requests).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "200,2048")]
    payload_bytes: Vec<usize>,
    /// Sync settings to run (in-process server only; an external server has its own).
    #[arg(long, value_delimiter = ',', default_value = "false,true")]
    sync_writes: Vec<bool>,
    /// Start the in-process server without an embedding model: what embedding every turn
    /// costs the write path.
    #[arg(long)]
    keyword_only: bool,
}

/// Throughput and latency percentiles of one measured cell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub per_second: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
}

impl Stats {
    pub(crate) fn from(mut latencies_us: Vec<u32>, measured: Duration) -> Self {
        latencies_us.sort_unstable();
        let pct = |p: f64| {
            if latencies_us.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * latencies_us.len() as f64).ceil() as usize;
            f64::from(latencies_us[rank.clamp(1, latencies_us.len()) - 1])
        };
        Self {
            per_second: latencies_us.len() as f64 / measured.as_secs_f64(),
            p50_us: pct(50.0),
            p95_us: pct(95.0),
            p99_us: pct(99.0),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        json!({ "per_second": self.per_second.round(), "p50_us": self.p50_us, "p95_us": self.p95_us, "p99_us": self.p99_us })
    }
}

const WARMUP: Duration = Duration::from_millis(300);

/// Runs `call(worker)` in `concurrency` tasks for warm-up + `measure`; records the latencies
/// of calls started after the warm-up.
pub(crate) async fn drive<F, Fut>(
    concurrency: usize,
    measure: Duration,
    call: F,
) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let measure_from = Instant::now() + WARMUP;
    let end = measure_from + measure;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let started = Instant::now();
                    if started >= end {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    call(worker).await?;
                    if started >= measure_from {
                        latencies.push(started.elapsed().as_micros() as u32);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    Ok(Stats::from(all, measure))
}

/// Raw RocksDB floor: `concurrency` threads each committing one-put WriteBatches.
fn rocksdb_floor(
    sync: bool,
    payload_bytes: usize,
    concurrency: usize,
    measure: Duration,
) -> anyhow::Result<Stats> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            sync_writes: sync,
            ..Default::default()
        },
    )?;
    let value = vec![b'x'; payload_bytes];
    let measure_from = Instant::now() + WARMUP;
    let end = measure_from + measure;
    let mut all = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..concurrency)
            .map(|worker| {
                let (store, value) = (&store, &value);
                scope.spawn(move || -> anyhow::Result<Vec<u32>> {
                    let mut latencies = Vec::new();
                    for i in 0u64.. {
                        let started = Instant::now();
                        if started >= end {
                            break;
                        }
                        let key = format!("bench/{worker:04}/{i:016}").into_bytes();
                        store.raw_put_batch(&[(key, value.clone())])?;
                        if started >= measure_from {
                            latencies.push(started.elapsed().as_micros() as u32);
                        }
                    }
                    Ok(latencies)
                })
            })
            .collect();
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("bench thread panicked"))??,
            );
        }
        Ok(())
    })?;
    Ok(Stats::from(all, measure))
}

/// An in-process server on a temp dir (development mode, loopback).
/// Semantic search for local servers: the model in `MEMD_EMBEDDING_MODEL_DIR` and ONNX
/// Runtime in `MEMD_ONNXRUNTIME_PATH`, else where `./dev.sh fetch-model` puts them; without
/// them, keyword search only (said on stderr).
pub(crate) fn local_embeddings(config: &mut Config) {
    match memd_server::embedding::local_files() {
        Some((model_dir, runtime)) => {
            config.embedding_model = Config::default().embedding_model;
            config.embedding_model_dir = Some(model_dir);
            config.onnxruntime_path = Some(runtime);
        }
        None => eprintln!(
            "memctl: no local embedding model (run ./dev.sh fetch-model): keyword search only"
        ),
    }
}

/// Where a local server keeps its data.
pub(crate) enum DataDir {
    /// A fresh temporary directory, deleted when dropped.
    Temp(tempfile::TempDir),
    /// A directory the caller keeps (and may reopen in a later run).
    Kept(std::path::PathBuf),
}

impl DataDir {
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }
}

pub(crate) struct LocalServer {
    pub endpoint: String,
    /// The configuration it runs with.
    pub config: Config,
    dir: DataDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    pub async fn start(sync_writes: bool) -> anyhow::Result<Self> {
        Self::start_with(|config| config.sync_writes = sync_writes).await
    }

    pub async fn start_with(change: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_in(DataDir::Temp(tempfile::tempdir()?), change).await
    }

    /// Starts on `dir`, which may hold the data of an earlier run.
    pub async fn start_in(dir: DataDir, change: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let mut config = Config::for_test(dir.path());
        local_embeddings(&mut config);
        change(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = Server::open(config.clone())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            if let Err(err) = server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
            {
                eprintln!("bench server failed: {err}");
            }
        });
        Ok(Self {
            endpoint,
            config,
            dir,
            stop: Some(tx),
            task,
        })
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops the server and hands over its data directory (a temporary one is deleted when
    /// dropped).
    pub async fn stop_keeping_data(mut self) -> DataDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.dir
    }
}

/// One connection per worker up to 16, then shared round-robin (as many agents would).
pub(crate) async fn connections(
    endpoint: &str,
    key: Option<String>,
    concurrency: usize,
) -> anyhow::Result<Arc<Vec<MemdClient>>> {
    let mut clients = Vec::new();
    for _ in 0..concurrency.min(16) {
        clients.push(MemdClient::connect(endpoint.to_string(), key.clone()).await?);
    }
    Ok(Arc::new(clients))
}

fn sentence_bytes(bytes: usize) -> String {
    const TEXT: &str =
        "The customer asked to move the delivery to Tuesday and mentioned a prior refund. ";
    TEXT.repeat(bytes / TEXT.len() + 1)[..bytes].to_string()
}

struct Cell {
    sync: Option<bool>,
    payload: usize,
    concurrency: usize,
    create: Stats,
    noop: Stats,
    rocksdb: Stats,
}

async fn measure_server(
    endpoint: &str,
    key: Option<String>,
    sync: Option<bool>,
    args: &WriteArgs,
    cells: &mut Vec<Cell>,
) -> anyhow::Result<()> {
    let measure = Duration::from_secs_f64(args.seconds);
    let admin = MemdClient::connect(endpoint.to_string(), key.clone()).await?;
    let memory = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "bench".into(),
            description: "memctl bench write".into(),
            ..Default::default()
        })
        .await?;
    // Every floor first, while the server is quiet: each create cell leaves a backlog that
    // the indexes (the embedder above all) work through in the background for minutes, and
    // a floor measured during it would be a floor of a busy machine.
    let mut floors = Vec::new();
    for &concurrency in &args.concurrency {
        let clients = connections(endpoint, key.clone(), concurrency).await?;
        let noop = drive(concurrency, measure, move |worker| {
            let mut health = HealthClient::new(clients[worker % clients.len()].channel());
            async move {
                health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                Ok(())
            }
        })
        .await?;
        for &payload in &args.payload_bytes {
            let sync_for_floor = sync.unwrap_or(true);
            let rocksdb = tokio::task::spawn_blocking(move || {
                rocksdb_floor(sync_for_floor, payload, concurrency, measure)
            })
            .await??;
            floors.push((concurrency, payload, noop, rocksdb));
        }
    }
    for (concurrency, payload, noop, rocksdb) in floors {
        let clients = connections(endpoint, key.clone(), concurrency).await?;
        let text = Arc::new(sentence_bytes(payload));
        let memory_id = memory.memory_id.clone();
        let run = format!("c{concurrency}-p{payload}");
        let create = drive(concurrency, measure, move |worker| {
            let client = clients[worker % clients.len()].clone();
            let request = pb::CreateEventRequest {
                memory_id: memory_id.clone(),
                actor_id: format!("bench-{worker}"),
                session_id: run.clone(),
                payload: vec![turn(pb::Role::User, text.as_str())],
                ..Default::default()
            };
            async move {
                client.create_event(request).await?;
                Ok(())
            }
        })
        .await?;
        eprintln!(
            "sync={:<5} payload={payload:>5}B c={concurrency:>2}: {:>7.0} ev/s p50 {:>6.0}µs | noop {:>7.0}/s | rocksdb {:>8.0}/s",
            sync.map_or("server".to_string(), |s| s.to_string()),
            create.per_second,
            create.p50_us,
            noop.per_second,
            rocksdb.per_second
        );
        cells.push(Cell {
            sync,
            payload,
            concurrency,
            create,
            noop,
            rocksdb,
        });
    }
    Ok(())
}

pub async fn run(ctx: &Globals, command: BenchCommand) -> anyhow::Result<()> {
    let args = match command {
        BenchCommand::Write(args) => args,
        BenchCommand::Extract(args) => return crate::bench_extract::run(ctx, args).await,
        BenchCommand::Retrieve(args) => return crate::bench_retrieve::run(ctx, args).await,
        BenchCommand::Ann(args) => return crate::bench_ann::run(ctx, args).await,
        BenchCommand::Rest(args) => return crate::bench_rest::run(ctx, args).await,
        BenchCommand::Ingest(args) => return crate::bench_ingest::run(ctx, args).await,
        BenchCommand::Startup(args) => return crate::bench_startup::run(ctx, args).await,
        BenchCommand::Soak(args) => return crate::bench_soak::run(ctx, args).await,
        BenchCommand::Tenants(args) => return crate::bench_tenants::run(ctx, args).await,
    };
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| c > 0),
        "--concurrency values must be positive"
    );
    let mut cells = Vec::new();
    if ctx.endpoint_explicit {
        eprintln!(
            "benchmarking {} (its own sync_writes setting; the RocksDB floor uses sync=true)",
            ctx.endpoint
        );
        measure_server(&ctx.endpoint, ctx.api_key.clone(), None, &args, &mut cells).await?;
    } else {
        for &sync in &args.sync_writes {
            let server = LocalServer::start_with(|config| {
                config.sync_writes = sync;
                if args.keyword_only {
                    config.embedding_model = "off".into();
                }
            })
            .await?;
            eprintln!(
                "in-process server at {} (sync_writes={sync})",
                server.endpoint
            );
            measure_server(&server.endpoint, None, Some(sync), &args, &mut cells).await?;
            server.stop().await;
        }
    }
    report(ctx, &cells);
    Ok(())
}

fn report(ctx: &Globals, cells: &[Cell]) {
    if ctx.json {
        let rows: Vec<_> = cells
            .iter()
            .map(|c| {
                json!({
                    "sync_writes": c.sync,
                    "payload_bytes": c.payload,
                    "concurrency": c.concurrency,
                    "create_event": c.create.json(),
                    "noop_grpc": c.noop.json(),
                    "rocksdb_batch": c.rocksdb.json(),
                    "throughput_vs_noop": c.create.per_second / c.noop.per_second,
                    "throughput_vs_rocksdb": c.create.per_second / c.rocksdb.per_second,
                    "p50_vs_noop": c.create.p50_us / c.noop.p50_us,
                })
            })
            .collect();
        crate::output::print_json(&serde_json::Value::Array(rows));
        return;
    }
    let rows = cells
        .iter()
        .map(|c| {
            vec![
                c.sync.map_or(
                    "server".into(),
                    |s| if s { "on".into() } else { "off".into() },
                ),
                c.payload.to_string(),
                c.concurrency.to_string(),
                format!("{:.0}", c.create.per_second),
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    c.create.p50_us, c.create.p95_us, c.create.p99_us
                ),
                format!("{:.0}", c.noop.per_second),
                format!("{:.0}", c.noop.p50_us),
                format!("{:.0}", c.rocksdb.per_second),
                format!("{:.0}", c.rocksdb.p50_us),
                format!("{:.2}", c.create.per_second / c.noop.per_second),
                format!("{:.2}", c.create.per_second / c.rocksdb.per_second),
                format!("{:.2}", c.create.p50_us / c.noop.p50_us),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "SYNC",
            "PAYLOAD B",
            "CONC",
            "CREATE EV/S",
            "P50/P95/P99 µs",
            "NOOP /S",
            "NOOP P50 µs",
            "ROCKSDB /S",
            "ROCKSDB P50 µs",
            "VS NOOP",
            "VS ROCKSDB",
            "P50 VS NOOP",
        ],
        rows,
    );
    println!(
        "targets (issue 21): c=64 sync off throughput >= 0.6x noop; c=64 sync on >= 20000 ev/s; c=1 p50 <= 1.2x noop p50"
    );
}
