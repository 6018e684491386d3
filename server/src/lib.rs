//! memd: a self-hosted memory service for AI agents.
//!
//! [`Server::open`] opens the store and the authenticator from a [`Config`];
//! [`Server::serve`] runs the gRPC services (control, memory, health, reflection), the
//! Prometheus endpoint and the session sweeper until the shutdown future resolves, then
//! drains in-flight calls and flushes RocksDB. Tests bind `127.0.0.1:0`, hand the listener
//! in and connect a real client.

pub mod allocator;
pub mod auth;
pub mod backup;
pub mod budget;
pub mod config;
pub mod deadline;
pub mod embedding;
pub mod error;
pub mod extraction;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod mcp;
pub mod metrics;
mod priority;
pub mod rest;
pub mod retrieval;
pub mod starting;
pub mod store;
pub mod time;

pub use config::{Config, ConfigError, Overrides};

use auth::{AuthInterceptor, AuthMode, Authenticator};
use extraction::ExtractionWorkers;
use futures::StreamExt;
use grpc::{control::ControlApi, memory::MemoryApi, workers::WorkerApi};
use memd_proto::v1::control_service_server::ControlServiceServer;
use memd_proto::v1::extraction_worker_service_server::ExtractionWorkerServiceServer;
use memd_proto::v1::memory_service_server::MemoryServiceServer;
use retrieval::Retrieval;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use store::{SessionTransition, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tonic::service::interceptor::InterceptedService;

/// Largest gRPC message accepted: an event may be 10 MiB, plus framing.
pub const MAX_MESSAGE_BYTES: usize = 12 * 1024 * 1024;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] error::ServiceError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// An opened memd instance, ready to serve.
#[derive(Debug)]
pub struct Server {
    config: Config,
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    retrieval: Arc<Retrieval>,
    indexer: retrieval::Indexer,
    vector_indexer: Option<retrieval::VectorIndexer>,
}

impl Server {
    /// Opens the store in `config.data_dir` and loads API keys.
    pub fn open(config: Config) -> Result<Self, ServeError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::Io {
            context: format!("creating data dir {}", config.data_dir.display()),
            source,
        })?;
        let budget = config.memory_budget()?;
        let options = StoreOptions {
            sync_writes: config.sync_writes,
            block_cache_bytes: budget.rocksdb_bytes,
            memtable_bytes: budget.memtable_bytes,
        };
        let store = Arc::new(Store::open(&config.data_dir, &options)?);
        let auth = Arc::new(
            Authenticator::load(&store, config.admin_key.as_deref())?
                .with_limits(auth::Limits::new(config.limit_settings())),
        );
        warn_of_retired_llm_settings(&store)?;
        // Embeddings first: where they stand holds the index log back from being trimmed.
        // A model that cannot be loaded (no ONNX Runtime, no network for a hub model) leaves
        // memd serving keyword search, loudly, rather than not serving at all.
        let mut semantic_unavailable = None;
        let embeddings = match config.embedding_settings()? {
            Some(settings) => match embedding::Embeddings::start(settings, config.indexing_nice) {
                Ok(embeddings) => Some(embeddings),
                Err(err) => {
                    tracing::error!(
                        %err,
                        "semantic search is OFF: the embedding model could not be loaded; serving keyword search only (GetIndexStatus says why; fix the model settings and restart)"
                    );
                    semantic_unavailable = Some(err.to_string());
                    None
                }
            },
            None => None,
        };
        let (semantic, cursors, vector_indexer) = match embeddings {
            Some(embeddings) => {
                let started = retrieval::VectorIndexer::start(
                    store.clone(),
                    &embeddings,
                    config.indexing_nice,
                )?;
                let semantic = retrieval::Semantic {
                    events: embeddings.settings.events,
                    queries: embeddings.queries,
                    vectors: started.vectors,
                    status: started.status,
                };
                (Some(semantic), started.cursors, Some(started.indexer))
            }
            None => {
                // The log will be trimmed without the embeddings following it: whatever they
                // stored is stale by the time a model is back, so that start rebuilds them.
                if store.vector_state()?.is_some() {
                    store.forget_vector_state()?;
                    tracing::warn!(
                        "semantic search is off: stored embeddings will be rebuilt when it is back on"
                    );
                }
                (None, Arc::new(retrieval::LogCursors::new(None)), None)
            }
        };
        // The keyword index is derived: bring it in line with RocksDB before serving, so
        // whatever was committed before a crash is searchable right away.
        let (indexes, indexer) = retrieval::Indexer::start(
            store.clone(),
            &config.data_dir.join("index"),
            budget.index_writer_bytes,
            config.indexing_nice,
            cursors.clone(),
        )?;
        Ok(Self {
            config,
            store,
            auth,
            retrieval: Arc::new(Retrieval {
                indexes,
                semantic,
                semantic_unavailable,
                cursors,
            }),
            indexer,
            vector_indexer,
        })
    }

    /// Session state transitions, for in-process subscribers (extraction triggers).
    pub fn subscribe_transitions(&self) -> broadcast::Receiver<SessionTransition> {
        self.store.subscribe_transitions()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains and flushes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            config,
            store,
            auth,
            retrieval,
            indexer,
            vector_indexer,
        } = self;
        let local = listener.local_addr().map_err(|source| ServeError::Io {
            context: "listener address".into(),
            source,
        })?;
        if auth.mode() == AuthMode::Development {
            tracing::warn!(
                listen = %local,
                "no admin key configured (admin_key / MEMD_ADMIN_KEY): development mode, requests without a key have full access"
            );
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let metrics = metrics::Metrics::new();
        for refusals in auth.limits().refusals() {
            metrics.register(Box::new(refusals));
        }
        let deadlines = deadline::DeadlineLayer::new(config.request_timeout());
        metrics.register(Box::new(deadlines.exceeded.clone()));
        let mut background = Vec::new();
        if let Some(addr) = config.metrics_addr()? {
            let metrics_listener =
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Io {
                        context: format!("binding metrics address {addr}"),
                        source,
                    })?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            let task = metrics::serve_http(
                metrics_listener,
                metrics.clone(),
                store.clone(),
                retrieval.clone(),
                stopped(),
            );
            background.push(tokio::spawn(async move {
                if let Err(err) = task.await {
                    tracing::error!(%err, "metrics endpoint failed");
                }
            }));
        }
        let llm = Arc::new(config.llm_endpoints()?);
        let workers = ExtractionWorkers::new(config.worker_options(llm.clone()));
        if config.extraction_enabled {
            background.push(tokio::spawn(workers.clone().run(
                store.clone(),
                metrics.extraction(),
                stopped(),
            )));
        } else {
            tracing::warn!("extraction_enabled = false: extraction jobs queue up unprocessed");
        }
        let sweep = Duration::from_millis(config.session_sweep_interval_ms);
        background.push(tokio::spawn(lifecycle::run_sweeper(
            store.clone(),
            sweep,
            Duration::from_secs(config.change_retention_hours * 3600),
            stopped(),
        )));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ControlServiceServer<ControlApi>>()
            .await;
        health.set_serving::<MemoryServiceServer<MemoryApi>>().await;
        health
            .set_serving::<ExtractionWorkerServiceServer<WorkerApi>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(memd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(memd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let interceptor = AuthInterceptor(auth.clone());
        // One instance of each service behind both APIs: the REST layer calls these handlers.
        let control_api = Arc::new(ControlApi::new(
            store.clone(),
            auth.clone(),
            indexer.reindex_handle(),
            retrieval.clone(),
            llm,
            config.backup_dir.clone(),
        ));
        let (draining_tx, draining) = watch::channel(false);
        let memory_api = Arc::new(MemoryApi::new(
            store.clone(),
            workers.clone(),
            retrieval.clone(),
            draining,
            auth.clone(),
        ));
        let mut http_local = None;
        if let Some(addr) = config.http_addr()? {
            let http_listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Io {
                    context: format!("binding AgentCore REST address {addr}"),
                    source,
                })?;
            http_local = http_listener.local_addr().ok();
            let api = rest::RestApi {
                memory: memory_api.clone(),
                control: control_api.clone(),
                auth: auth.clone(),
                metrics: metrics.clone(),
                request_timeout: config.request_timeout(),
            };
            // MCP requests in flight end with the listener.
            let mcp_shutdown = tokio_util::sync::CancellationToken::new();
            let mcp = mcp::http::Endpoint::new(
                memory_api.clone(),
                auth.clone(),
                metrics.clone(),
                mcp_shutdown.clone(),
            );
            let stop = stopped();
            let task = http::serve(http_listener, api, mcp, async move {
                stop.await;
                mcp_shutdown.cancel();
            });
            background.push(tokio::spawn(async move {
                if let Err(err) = task.await {
                    tracing::error!(%err, "HTTP listener (AgentCore REST, MCP) failed");
                }
            }));
        }
        let control = InterceptedService::new(
            ControlServiceServer::from_arc(control_api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            interceptor.clone(),
        );
        let memory = InterceptedService::new(
            MemoryServiceServer::from_arc(memory_api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            interceptor.clone(),
        );
        let extraction_workers = InterceptedService::new(
            ExtractionWorkerServiceServer::new(WorkerApi::new(store.clone(), workers.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            interceptor,
        );

        let mut builder = tonic::transport::Server::builder()
            .http2_max_header_list_size(grpc::metadata_limit::TRANSPORT_HEADER_LIMIT);
        if let Some(tls) = grpc_tls(&config)? {
            builder = builder.tls_config(tls)?;
        }
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(
            |conn| async move {
                match conn {
                    Ok(stream) => {
                        // Small unary calls: Nagle's algorithm would add tens of milliseconds.
                        let _ = stream.set_nodelay(true);
                        Some(Ok::<_, std::io::Error>(stream))
                    }
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        None
                    }
                }
            },
        );
        let http = http_local.map_or_else(|| "off".to_string(), |a| a.to_string());
        tracing::info!(listen = %local, http_listen = %http, tls = config.tls_cert_path.is_some(), data_dir = %config.data_dir.display(), "memd serving");
        let drain_health = health.clone();
        // When the shutdown signal came: in-flight work gets `shutdown_grace_seconds` from then.
        let (signalled_tx, signalled) = watch::channel(None::<tokio::time::Instant>);
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        let serving = builder
            .layer(metrics::MetricsLayer(metrics))
            .layer(grpc::metadata_limit::MetadataLimitLayer)
            .layer(deadlines)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(control)
            .add_service(memory)
            .add_service(extraction_workers)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                let _ = signalled_tx.send(Some(tokio::time::Instant::now()));
                tracing::info!(
                    grace_seconds = grace.as_secs(),
                    "shutting down: draining in-flight requests"
                );
                // Watch streams never finish on their own: tell them to end.
                let _ = draining_tx.send(true);
                drain_health
                    .set_not_serving::<ControlServiceServer<ControlApi>>()
                    .await;
                drain_health
                    .set_not_serving::<MemoryServiceServer<MemoryApi>>()
                    .await;
                drain_health
                    .set_not_serving::<ExtractionWorkerServiceServer<WorkerApi>>()
                    .await;
            });
        let grace_over = {
            let mut signalled = signalled.clone();
            async move {
                let Ok(at) = signalled.wait_for(Option::is_some).await.map(|at| *at) else {
                    return std::future::pending().await;
                };
                tokio::time::sleep_until(at.unwrap_or_else(tokio::time::Instant::now) + grace).await
            }
        };
        let result = tokio::select! {
            result = serving => result,
            () = grace_over => {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    "gRPC requests still running after shutdown_grace_seconds: abandoning them"
                );
                Ok(())
            }
        };

        // Background work (the REST listener's requests, an extraction job's LLM call) gets
        // what is left of the grace period; what outlasts it is abandoned (jobs are durable).
        let _ = stop_tx.send(true);
        let abandon_at = signalled.borrow().unwrap_or_else(tokio::time::Instant::now) + grace;
        for mut task in background {
            if tokio::time::timeout_at(abandon_at, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    "background work still running after shutdown_grace_seconds: abandoning it"
                );
                task.abort();
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            indexer.stop();
            if let Some(vector_indexer) = vector_indexer {
                vector_indexer.stop();
            }
        })
        .await;
        let flush_store = store.clone();
        match tokio::task::spawn_blocking(move || flush_store.flush()).await {
            Ok(Ok(())) => tracing::info!("store flushed; bye"),
            Ok(Err(err)) => {
                tracing::error!(%err, "flush at shutdown failed (the WAL still has every write)")
            }
            Err(err) => tracing::error!(%err, "flush task failed"),
        }
        result.map_err(ServeError::from)
    }
}

/// The gRPC port's TLS settings, when `tls_cert_path` and `tls_key_path` are set.
pub fn grpc_tls(config: &Config) -> Result<Option<tonic::transport::ServerTlsConfig>, ServeError> {
    let (Some(cert), Some(key)) = (&config.tls_cert_path, &config.tls_key_path) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::Io {
            context: format!("reading {}", path.display()),
            source,
        })
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(Some(
        tonic::transport::ServerTlsConfig::new().identity(identity),
    ))
}

/// Names at start every stored strategy that carries LLM settings memd no longer honours (a
/// URL or a variable name chosen by a memory admin); its jobs fail until it is updated.
fn warn_of_retired_llm_settings(store: &Store) -> Result<(), ServeError> {
    let (memories, _) = store.list_memories(usize::MAX, "", |_| true)?;
    for memory in memories {
        for strategy in &memory.strategies {
            if let Some(field) = extraction::extractors::retired_settings(strategy) {
                tracing::warn!(
                    memory_id = %memory.memory_id,
                    strategy_id = %strategy.strategy_id,
                    field = %format!("llm.{field}"),
                    "a strategy carries an LLM setting memd no longer honours; its extraction jobs fail until UpdateMemory names an operator endpoint (llm.endpoint)"
                );
            }
        }
    }
    Ok(())
}

/// Opens and serves in one call (see [`Server`]).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::open(config)?.serve(listener, shutdown).await
}
