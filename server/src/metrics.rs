//! Prometheus metrics: a tower layer that counts every gRPC call by method and status code
//! and times it, RocksDB properties read at scrape time, and the `/metrics` HTTP endpoint.

use crate::retrieval::Retrieval;
use crate::store::Store;
use futures::future::BoxFuture;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;

/// RocksDB integer properties exported per column family.
const ROCKSDB_PROPERTIES: [&str; 8] = [
    "rocksdb.estimate-num-keys",
    "rocksdb.total-sst-files-size",
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.estimate-pending-compaction-bytes",
    "rocksdb.num-running-compactions",
    "rocksdb.block-cache-usage",
    // Table readers' memory outside the block cache (grows with the number of SST files).
    "rocksdb.estimate-table-readers-mem",
    // What `memory_budget_mb` gave the block cache (memtables are charged to it).
    "rocksdb.block-cache-capacity",
];

/// Extraction counters, shared with the worker pool.
#[derive(Clone)]
pub struct ExtractionMetrics {
    jobs: IntCounterVec,
    lag: prometheus::Histogram,
    tokens: prometheus::IntCounter,
}

impl ExtractionMetrics {
    /// A job committed its records `lag_us` after it was queued.
    pub fn succeeded(&self, lag_us: u64) {
        self.outcome("succeeded");
        self.lag.observe(lag_us as f64 / 1e6);
    }

    /// Brings the model-token counter up to `total` (a running total from the extractors).
    pub fn llm_tokens(&self, total: u64) {
        let seen = self.tokens.get();
        if total > seen {
            self.tokens.inc_by(total - seen);
        }
    }

    /// A job ended another way ("retried", "failed", "dropped").
    pub fn outcome(&self, outcome: &str) {
        self.jobs.with_label_values(&[outcome]).inc();
    }
}

/// The server's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// The AgentCore REST API, by operation and AWS error code ("OK" on success).
    rest_requests: IntCounterVec,
    rest_latency: HistogramVec,
    /// MCP tool calls on `/mcp`, by tool and outcome (OK or the gRPC code's name).
    mcp_tool_calls: IntCounterVec,
    rocksdb: IntGaugeVec,
    /// The allocator's bytes (`state` = in_use | free_held), see [`crate::allocator::Heap`].
    heap: IntGaugeVec,
    /// Index-log entries each index has yet to apply (`index` = keyword | vectors).
    index_pending: IntGaugeVec,
    /// How long the oldest change each index has not applied has waited
    /// (`index` = keyword | vectors | record_vectors).
    index_lag: prometheus::GaugeVec,
    /// Events left unembedded after waiting longer than `embedding_max_lag_seconds`.
    skipped_events: prometheus::IntCounter,
    vectors_rebuilding: prometheus::IntGauge,
    /// 1 while writes are refused because the data directory's disk is full.
    storage_full: prometheus::IntGauge,
    /// Documents embedded since start (`kind` = event | record | record_again), copied from
    /// the embedding thread's own counters at each scrape.
    embedded: IntCounterVec,
    embedding_seconds: prometheus::Counter,
    extraction: ExtractionMetrics,
    /// Known gRPC paths; anything else is labelled "other" so labels stay bounded.
    known_methods: HashSet<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn known_methods() -> HashSet<String> {
    use prost::Message;
    let mut methods: HashSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let descriptors = prost_types::FileDescriptorSet::decode(memd_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set is generated at build time");
    for file in descriptors.file {
        for service in &file.service {
            for method in &service.method {
                methods.insert(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    methods
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "memd_grpc_requests_total",
                "gRPC requests by method and status code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "memd_grpc_request_duration_seconds",
                "gRPC request latency by method",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
            &["method"],
        )
        .expect("valid metric");
        let rest_requests = IntCounterVec::new(
            Opts::new(
                "memd_rest_requests_total",
                "AgentCore REST API requests by operation and outcome (OK or the AWS error code)",
            ),
            &["operation", "code"],
        )
        .expect("valid metric");
        let rest_latency = HistogramVec::new(
            HistogramOpts::new(
                "memd_rest_request_duration_seconds",
                "AgentCore REST API latency by operation",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
            &["operation"],
        )
        .expect("valid metric");
        let mcp_tool_calls = IntCounterVec::new(
            Opts::new(
                "memd_mcp_tool_calls_total",
                "MCP tool calls on /mcp by tool and outcome (OK or the gRPC code's name)",
            ),
            &["tool", "code"],
        )
        .expect("valid metric");
        let rocksdb = IntGaugeVec::new(
            Opts::new(
                "memd_rocksdb_property",
                "RocksDB integer properties by column family",
            ),
            &["cf", "property"],
        )
        .expect("valid metric");
        let heap = IntGaugeVec::new(
            Opts::new(
                "memd_heap_bytes",
                "Allocator memory: in_use (allocated, live) and free_held (freed, kept in its arenas)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let index_pending = IntGaugeVec::new(
            Opts::new(
                "memd_index_pending_changes",
                "Changes a search index has not applied yet (keyword: BM25, vectors: embeddings)",
            ),
            &["index"],
        )
        .expect("valid metric");
        let index_lag = prometheus::GaugeVec::new(
            Opts::new(
                "memd_index_lag_seconds",
                "How long the oldest change a search index has not applied has waited (record_vectors: at most, for changed records)",
            ),
            &["index"],
        )
        .expect("valid metric");
        let skipped_events = prometheus::IntCounter::new(
            "memd_embedding_skipped_events_total",
            "Events not embedded because they waited longer than embedding_max_lag_seconds",
        )
        .expect("valid metric");
        let vectors_rebuilding = prometheus::IntGauge::new(
            "memd_index_vectors_rebuilding",
            "1 while every record and event is being embedded anew",
        )
        .expect("valid metric");
        let storage_full = prometheus::IntGauge::new(
            "memd_storage_full",
            "1 while writes are refused because the data directory's filesystem is full (the last write failed for lack of space)",
        )
        .expect("valid metric");
        let embedded = IntCounterVec::new(
            Opts::new(
                "memd_embedded_documents_total",
                "Documents embedded: events, records (first time) and records embedded again after an update",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let embedding_seconds = prometheus::Counter::new(
            "memd_embedding_model_seconds_total",
            "Wall time the embedding thread spent inside the model (tokenising and ONNX Runtime)",
        )
        .expect("valid metric");
        let extraction = ExtractionMetrics {
            jobs: IntCounterVec::new(
                Opts::new(
                    "memd_extraction_jobs_total",
                    "Extraction job attempts by outcome (succeeded, retried, failed, dropped)",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            lag: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "memd_extraction_lag_seconds",
                    "From a job's trigger (event append or session transition) to its records being committed",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ]),
            )
            .expect("valid metric"),
            tokens: prometheus::IntCounter::new(
                "memd_extraction_llm_tokens_total",
                "Model tokens (prompt and completion) spent by LLM extractors",
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(rest_requests.clone()),
            Box::new(rest_latency.clone()),
            Box::new(mcp_tool_calls.clone()),
            Box::new(rocksdb.clone()),
            Box::new(heap.clone()),
            Box::new(index_pending.clone()),
            Box::new(index_lag.clone()),
            Box::new(skipped_events.clone()),
            Box::new(vectors_rebuilding.clone()),
            Box::new(storage_full.clone()),
            Box::new(embedded.clone()),
            Box::new(embedding_seconds.clone()),
            Box::new(extraction.jobs.clone()),
            Box::new(extraction.lag.clone()),
            Box::new(extraction.tokens.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Arc::new(Self {
            registry,
            requests,
            latency,
            rest_requests,
            rest_latency,
            mcp_tool_calls,
            rocksdb,
            heap,
            index_pending,
            index_lag,
            skipped_events,
            vectors_rebuilding,
            storage_full,
            embedded,
            embedding_seconds,
            extraction,
            known_methods: known_methods(),
        })
    }

    /// Adds a collector owned elsewhere (the per-key quotas' refusals).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(err) = self.registry.register(collector) {
            tracing::warn!(%err, "registering a metric failed");
        }
    }

    /// The extraction counters (for the worker pool).
    pub fn extraction(&self) -> ExtractionMetrics {
        self.extraction.clone()
    }

    fn observe(&self, path: &str, code: &str, seconds: f64) {
        let method = if self.known_methods.contains(path) {
            path
        } else {
            "other"
        };
        self.requests.with_label_values(&[method, code]).inc();
        self.latency.with_label_values(&[method]).observe(seconds);
    }

    /// Records one MCP tool call (`tool` from a bounded set, `code` "OK" or a gRPC code).
    pub fn observe_mcp_tool(&self, tool: &str, code: &str) {
        self.mcp_tool_calls.with_label_values(&[tool, code]).inc();
    }

    /// Records one REST request (`operation` from a bounded set, `code` "OK" or an AWS error).
    pub fn observe_rest(&self, operation: &str, code: &str, seconds: f64) {
        self.rest_requests
            .with_label_values(&[operation, code])
            .inc();
        self.rest_latency
            .with_label_values(&[operation])
            .observe(seconds);
    }

    /// Renders the text exposition format, refreshing RocksDB and index gauges first.
    pub fn render(&self, store: &Store, retrieval: &Retrieval) -> String {
        for (cf, property, value) in store.int_properties(&ROCKSDB_PROPERTIES) {
            self.rocksdb
                .with_label_values(&[cf, &property])
                .set(value as i64);
        }
        self.storage_full.set(i64::from(store.storage_full()));
        if let Some(heap) = crate::allocator::heap() {
            for (state, bytes) in [("in_use", heap.in_use), ("free_held", heap.free)] {
                self.heap.with_label_values(&[state]).set(bytes as i64);
            }
        }
        match retrieval.backlog(store) {
            Ok(backlog) => {
                self.index_pending
                    .with_label_values(&["keyword"])
                    .set(backlog.keyword as i64);
                self.index_pending
                    .with_label_values(&["vectors"])
                    .set(backlog.vectors as i64);
                for (index, seconds) in [
                    ("keyword", backlog.keyword_lag_seconds),
                    ("vectors", backlog.vectors_lag_seconds),
                    ("record_vectors", backlog.record_vectors_lag_seconds),
                ] {
                    self.index_lag.with_label_values(&[index]).set(seconds);
                }
                self.vectors_rebuilding.set(i64::from(backlog.rebuilding));
                let counts = backlog.embedded;
                self.skipped_events.inc_by(
                    counts
                        .skipped_events
                        .saturating_sub(self.skipped_events.get()),
                );
                for (kind, total) in [
                    ("event", counts.events),
                    ("record", counts.records),
                    ("record_again", counts.records_again),
                ] {
                    let counter = self.embedded.with_label_values(&[kind]);
                    counter.inc_by(total.saturating_sub(counter.get()));
                }
                let seconds = counts.model_seconds - self.embedding_seconds.get();
                if seconds > 0.0 {
                    self.embedding_seconds.inc_by(seconds);
                }
            }
            Err(err) => tracing::warn!(%err, "reading the index backlog for metrics"),
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Tower layer recording [`Metrics`] for every request.
#[derive(Debug, Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // Errors travel in headers (trailers-only responses); OK arrives in trailers.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or_else(
                        || "Ok".to_string(),
                        |code| format!("{:?}", tonic::Code::from_i32(code)),
                    ),
                Err(_) => "TransportError".to_string(),
            };
            metrics.observe(&path, &code, started.elapsed().as_secs_f64());
            response
        })
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    retrieval: Arc<Retrieval>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, store, retrieval) = (metrics.clone(), store.clone(), retrieval.clone());
            async move {
                let body = tokio::task::spawn_blocking(move || metrics.render(&store, &retrieval))
                    .await
                    .unwrap_or_default();
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
