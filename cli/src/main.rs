//! `memctl`: administer a memd server and benchmark it.

mod answer_rank;
mod backup;
mod bench;
mod bench_ann;
mod bench_extract;
mod bench_ingest;
mod bench_rest;
mod bench_retrieve;
mod bench_soak;
mod bench_startup;
mod bench_tenants;
mod chaos;
mod control;
mod embed_floor;
mod eval;
mod ingest_cycles;
mod locomo;
mod longterm;
mod mcp;
mod memd_process;
mod memory;
mod output;
mod proc_stats;
mod strategies;
mod transfer;
mod watch;
mod worker;

use anyhow::Context;
use clap::{Parser, Subcommand};
use memd_client::MemdClient;

/// memctl: manage memories, events, sessions and API keys of a memd server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "MEMD_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,
    /// API key (sent as `authorization: Bearer <key>`).
    #[arg(long, global = true, env = "MEMD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, inspect, update and delete memories.
    #[command(subcommand)]
    Memories(control::MemoriesCommand),
    /// Manage API keys (needs an admin key).
    #[command(subcommand)]
    Keys(control::KeysCommand),
    /// List or erase actors.
    #[command(subcommand)]
    Actors(memory::ActorsCommand),
    /// Inspect sessions.
    #[command(subcommand)]
    Sessions(memory::SessionsCommand),
    /// Append, list, read and delete events.
    #[command(subcommand)]
    Events(memory::EventsCommand),
    /// Long-term memory records: list, get, delete, export, import (JSON Lines).
    #[command(subcommand)]
    Records(longterm::RecordsCommand),
    /// Long-term records ranked by relevance to a query (BM25).
    Search(longterm::SearchArgs),
    /// The context an agent would load to resume a session, within a token budget.
    Context(longterm::ContextArgs),
    /// The namespaces that hold records, with counts.
    #[command(subcommand)]
    Namespaces(longterm::NamespacesCommand),
    /// Extraction jobs: list, re-drive failed ones.
    #[command(subcommand)]
    Jobs(longterm::JobsCommand),
    /// Serve memd's MCP tools over stdio for a desktop MCP host (Claude Desktop, Cursor, ...).
    Mcp(mcp::McpArgs),
    /// Run an extraction worker against a server (leases jobs, extracts, completes them).
    Worker(worker::WorkerArgs),
    /// Rebuild the search indexes from RocksDB (needs a global admin key).
    Reindex,
    /// How far the search indexes lag behind the store (needs a global admin key).
    Indexes,
    /// Check that the server is up and serving (gRPC health); exit 1 if not.
    Health,
    /// Kill memd with SIGKILL again and again under a mixed workload, checking every
    /// invariant after each restart.
    Chaos(chaos::ChaosArgs),
    /// Online backups, their checks and restores.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Write one memory (configuration, sessions, events, records with history) to a JSON
    /// Lines file.
    Export(transfer::ExportArgs),
    /// Create a memory from a file `memctl export` wrote (on this or another server).
    Import(transfer::ImportArgs),
    /// Retrieval quality evaluations.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Global options every command gets.
pub struct Globals {
    pub endpoint: String,
    /// Whether --endpoint / MEMD_ENDPOINT was given (the benchmark starts its own server if not).
    pub endpoint_explicit: bool,
    pub api_key: Option<String>,
    pub json: bool,
}

impl Globals {
    pub async fn client(&self) -> anyhow::Result<MemdClient> {
        MemdClient::connect(self.endpoint.clone(), self.api_key.clone())
            .await
            .with_context(|| {
                format!(
                    "is memd running at {}? (set --endpoint or MEMD_ENDPOINT)",
                    self.endpoint
                )
            })
    }
}

async fn health(ctx: &Globals) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let client = ctx.client().await?;
    let response = HealthClient::new(client.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    let status =
        ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{} is not serving",
        ctx.endpoint
    );
    Ok(())
}

async fn reindex(ctx: &Globals) -> anyhow::Result<()> {
    let done = ctx.client().await?.reindex().await?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "recordsIndexed": done.records_indexed,
            "eventsIndexed": done.events_indexed,
            "vectorsRebuilding": done.vectors_rebuilding,
        }));
    } else {
        println!(
            "reindexed {} records and {} events{}",
            done.records_indexed,
            done.events_indexed,
            if done.vectors_rebuilding {
                "; re-embedding them in the background (memctl indexes shows progress)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

async fn indexes(ctx: &Globals) -> anyhow::Result<()> {
    let status = ctx.client().await?.index_status().await?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "keywordPending": status.keyword_pending,
            "vectorsPending": status.vectors_pending,
            "vectorsRebuilding": status.vectors_rebuilding,
            "embeddingModel": status.embedding_model,
            "vectorsPartitioned": status.vectors_partitioned,
            "embeddedEvents": status.embedded_events,
            "embeddedRecords": status.embedded_records,
            "reembeddedRecords": status.reembedded_records,
            "embeddingSeconds": status.embedding_seconds,
            "keywordLagSeconds": status.keyword_lag_seconds,
            "vectorsLagSeconds": status.vectors_lag_seconds,
            "recordVectorsLagSeconds": status.record_vectors_lag_seconds,
            "skippedEvents": status.skipped_events,
        }));
    } else {
        println!(
            "keyword index: {} changes pending ({:.1} s behind)\nembeddings ({}): {} changes pending ({:.1} s behind, records {:.1} s){}; {} partitioned vector spaces",
            status.keyword_pending,
            status.keyword_lag_seconds,
            status.embedding_model,
            status.vectors_pending,
            status.vectors_lag_seconds,
            status.record_vectors_lag_seconds,
            if status.vectors_rebuilding {
                ", re-embedding everything"
            } else {
                ""
            },
            status.vectors_partitioned
        );
        println!(
            "embedded since start: {} events, {} records, {} records again after an update; {:.1} s in the model; {} events skipped (waited longer than embedding_max_lag_seconds)",
            status.embedded_events,
            status.embedded_records,
            status.reembedded_records,
            status.embedding_seconds,
            status.skipped_events
        );
    }
    Ok(())
}

fn main() {
    // memctl's benchmarks run memd in-process: the same allocator settings as the memd
    // binary, before the runtime starts its threads.
    memd_server::allocator::tune();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| {
            eprintln!("memctl: starting the async runtime: {err}");
            std::process::exit(1)
        });
    runtime.block_on(run());
}

async fn run() {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let matches = Cli::command().get_matches();
    let endpoint_explicit = matches
        .value_source("endpoint")
        .is_some_and(|source| source != ValueSource::DefaultValue);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let ctx = Globals {
        endpoint: cli.endpoint,
        endpoint_explicit,
        api_key: cli.api_key,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Memories(cmd) => control::memories(&ctx, cmd).await,
        Command::Keys(cmd) => control::keys(&ctx, cmd).await,
        Command::Actors(cmd) => memory::actors(&ctx, cmd).await,
        Command::Sessions(cmd) => memory::sessions(&ctx, cmd).await,
        Command::Events(cmd) => memory::events(&ctx, cmd).await,
        Command::Records(cmd) => longterm::records(&ctx, cmd).await,
        Command::Search(args) => longterm::search(&ctx, args).await,
        Command::Context(args) => longterm::context(&ctx, args).await,
        Command::Namespaces(cmd) => longterm::namespaces(&ctx, cmd).await,
        Command::Jobs(cmd) => longterm::jobs(&ctx, cmd).await,
        Command::Worker(args) => worker::run(&ctx, args).await,
        Command::Mcp(args) => mcp::run(&ctx, args).await,
        Command::Reindex => reindex(&ctx).await,
        Command::Indexes => indexes(&ctx).await,
        Command::Health => health(&ctx).await,
        Command::Backup(command) => backup::run(&ctx, command).await,
        Command::Export(args) => transfer::export(&ctx, args).await,
        Command::Import(args) => transfer::import(&ctx, args).await,
        Command::Chaos(args) => chaos::run(&ctx, args).await,
        Command::Bench(cmd) => bench::run(&ctx, cmd).await,
        Command::Eval(cmd) => eval::run(&ctx, cmd).await,
    };
    if let Err(err) = result {
        match err.downcast_ref::<tonic::Status>() {
            Some(status) => eprintln!("error: {:?}: {}", status.code(), status.message()),
            None => eprintln!("error: {err:#}"),
        }
        std::process::exit(1);
    }
}
