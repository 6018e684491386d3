//! `memd`: the memory service binary. `memd` with no arguments serves on 127.0.0.1:50051
//! with data in ./memd-data.

use anyhow::Context;
use clap::Parser;
use memd_server::starting::Starting;
use memd_server::{Config, Overrides, Server, grpc_tls};
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// memd: self-hosted short- and long-term memory for AI agents.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (also MEMD_CONFIG).
    #[arg(long, env = "MEMD_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./memd-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Prometheus endpoint address, or "off" [default: 127.0.0.1:9464].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// AgentCore REST API address (boto3, bedrock-agentcore SDK), or "off"
    /// [default: 127.0.0.1:50052].
    #[arg(long)]
    http_listen: Option<String>,
    /// fsync before acknowledging writes [default: true].
    #[arg(long)]
    sync_writes: Option<bool>,
    /// Serve without authentication on a non-loopback address (development mode only).
    #[arg(long)]
    allow_unauthenticated_remote: bool,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. info or memd_server=debug.
    #[arg(long)]
    log_level: Option<String>,
    /// Fill the data directory (which must be missing or empty) from this backup, after
    /// verifying it, then start on it. Starting again with the same flag on the directory it
    /// filled does nothing more.
    #[arg(long, value_name = "BACKUP_DIR")]
    restore_from: Option<PathBuf>,
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log_level {:?}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads.
    memd_server::allocator::tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        metrics_listen: args.metrics_listen,
        http_listen: args.http_listen,
        sync_writes: args.sync_writes,
        allow_unauthenticated_remote: args.allow_unauthenticated_remote.then_some(true),
        log_format: args.log_format,
        log_level: args.log_level,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    init_tracing(&config)?;
    if let Some(backup) = &args.restore_from {
        // Before the port opens: a backup that does not verify stops memd here.
        use memd_server::backup::{Restored, restore};
        match restore(backup, &config.data_dir).with_context(|| {
            format!(
                "restoring {} into {}",
                backup.display(),
                config.data_dir.display()
            )
        })? {
            Restored::Restored(_) => {}
            Restored::AlreadyRestored(manifest) => tracing::info!(
                backup_id = %manifest.backup_id,
                data_dir = %config.data_dir.display(),
                "the data directory already holds this backup; starting on it"
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Health answers NOT_SERVING while the store, the model and the indexes open.
    let listen = listener.local_addr()?;
    let starting = Starting::answer(listener, grpc_tls(&config)?).await?;
    tracing::info!(%listen, "memd starting");
    let started = std::time::Instant::now();
    let server = tokio::task::spawn_blocking(move || Server::open(config))
        .await
        .context("opening the server panicked")??;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "store, model and indexes open"
    );
    let listener = starting.finish().await;
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}
