//! Server configuration: built-in defaults, then a TOML file, then `MEMD_*` environment
//! variables, then command-line flags. Unknown keys and invalid values are start-up errors.

use crate::budget::MemoryBudget;
use crate::extraction::endpoints::{
    DEFAULT_ENDPOINT, EndpointDefaults, EndpointSettings, LlmEndpoints,
};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every setting of the `memd` server. See `deploy/memd.example.toml` for a commented copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Where RocksDB keeps its files.
    pub data_dir: PathBuf,
    /// Prometheus `/metrics` listen address; "off" disables the endpoint.
    pub metrics_listen: String,
    /// AgentCore-compatible REST API (boto3, the bedrock-agentcore SDK) listen address;
    /// "off" disables it.
    pub http_listen: String,
    /// fsync the write-ahead log before acknowledging writes.
    pub sync_writes: bool,
    /// Bootstrap admin secret. When unset, memd runs in development mode (no auth).
    pub admin_key: Option<String>,
    /// Allow development mode (no auth) on a non-loopback address.
    pub allow_unauthenticated_remote: bool,
    /// PEM certificate chain and private key for TLS; both or neither.
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
    /// How often due session transitions are announced.
    pub session_sweep_interval_ms: u64,
    /// How long the change log keeps session transitions and record changes for watchers
    /// (WatchSessions, WatchMemoryRecords) to resume from.
    pub change_retention_hours: u64,
    /// Memory for caches and write buffers: RocksDB's block cache and memtables and the
    /// search indexes' writer heaps (see `budget.rs`; not the model or the vectors).
    pub memory_budget_mb: usize,
    /// RocksDB's block cache, memtables included (default: its share of `memory_budget_mb`).
    pub block_cache_mb: Option<usize>,
    /// The only directory `CreateBackup` may write under (unset: online backups are off, so
    /// no API key can make memd write anywhere the operator did not choose).
    pub backup_dir: Option<PathBuf>,
    /// Requests per second each API key may make, as a token bucket (0: unlimited). The
    /// bootstrap admin key and development mode are not limited.
    pub key_requests_per_second: u32,
    /// How many requests a key may make at once above its rate (0: one second's worth).
    pub key_request_burst: u32,
    /// Searches and context assemblies (RetrieveMemoryRecords, SearchEvents, GetContext)
    /// each API key may have running at once (0: unlimited).
    pub key_concurrent_searches: u32,
    /// Request bytes (protobuf size, on every transport) each API key may send per second,
    /// as a token bucket holding one second's worth (0: unlimited).
    pub key_bytes_per_second: u32,
    /// Requests per second into one memory, whichever keys make them (0: unlimited).
    pub memory_requests_per_second: u32,
    /// Request bytes per second into one memory, whichever keys send them (0: unlimited).
    pub memory_bytes_per_second: u32,
    /// The longest a unary request may run before its work stops and it is answered
    /// DEADLINE_EXCEEDED (0: only clients' own deadlines). Clients' shorter `grpc-timeout`s
    /// apply as well; CreateBackup is bound by the client's deadline only.
    pub request_timeout_seconds: u64,
    /// On SIGTERM, how long in-flight requests may finish before they are abandoned and
    /// memd flushes and exits (queued extraction jobs are durable and resume at the next
    /// start).
    pub shutdown_grace_seconds: u64,
    /// Actors whose extraction jobs run at the same time (0: one per CPU core).
    pub extraction_workers: usize,
    /// Run the in-process extraction workers (off: jobs queue up until they are turned on).
    pub extraction_enabled: bool,
    /// Nice value of the extraction threads (0-19; higher yields more CPU to requests).
    pub extraction_nice: i32,
    /// Nice value of the search indexing thread (0-19).
    pub indexing_nice: i32,
    /// Attempts before an extraction job is FAILED.
    pub extraction_max_attempts: u32,
    /// First retry delay of a failed extraction job; doubles per attempt up to the maximum.
    pub extraction_initial_backoff_ms: u64,
    pub extraction_max_backoff_ms: u64,
    /// The LLM extractor's default endpoint (OpenAI-compatible, up to the version: `.../v1`),
    /// model and key: the endpoint named `default`. Strategies choose an endpoint by name and
    /// never carry a URL or a key of their own.
    pub llm_base_url: Option<String>,
    pub llm_model: Option<String>,
    pub llm_api_key: Option<String>,
    pub llm_timeout_seconds: u64,
    pub llm_max_concurrent_requests: usize,
    /// Token budget per minute per endpoint (0: unlimited).
    pub llm_tokens_per_minute: u32,
    pub llm_max_output_tokens: u32,
    /// A directory whose semantic.md, preference.md, summary.md or episodic.md replace the
    /// built-in prompts.
    pub llm_prompts_dir: Option<PathBuf>,
    /// Further named LLM endpoints (`[llm_endpoints.<name>]` tables of the file), which
    /// strategies choose with `llm.endpoint`.
    pub llm_endpoints: BTreeMap<String, EndpointSettings>,
    /// The embedding model of semantic and hybrid search: a fastembed catalogue model (its
    /// hub repository, e.g. `Qdrant/all-MiniLM-L6-v2-onnx`, or its fastembed name, e.g.
    /// `AllMiniLML6V2`; downloaded into `embedding_cache_dir` on first use), or `off`
    /// (keyword search only).
    pub embedding_model: String,
    /// A local model instead (offline installs): a directory with `model.onnx`,
    /// `tokenizer.json`, `config.json`, `special_tokens_map.json`, `tokenizer_config.json`.
    pub embedding_model_dir: Option<PathBuf>,
    /// Pooling of the local model's token vectors: `mean` (sentence-transformers models such
    /// as MiniLM) or `cls` (BGE-style models).
    pub embedding_pooling: String,
    /// Tokens embedded per text; longer texts are truncated (for semantic search only: keyword
    /// search sees all of it). MiniLM was trained on 128; the cost of a text grows faster
    /// than its length.
    pub embedding_max_length: usize,
    /// Where downloaded models are kept (default: `<data_dir>/models`).
    pub embedding_cache_dir: Option<PathBuf>,
    /// Threads embedding search queries, each with its own copy of the model (~60 MiB
    /// resident); 0 (the default): queries go through the indexer's copy, ahead of it.
    pub embedding_query_threads: usize,
    /// Embed raw events as well as records. Off, SearchEvents is keyword-only (SEMANTIC:
    /// FAILED_PRECONDITION) and write-heavy servers spend no CPU embedding every turn.
    pub embedding_events: bool,
    /// How long a conversation turn may wait in the embedding backlog before it is skipped
    /// (it stays keyword-searchable, and `Reindex` embeds it) so that semantic search over
    /// events lags by at most this much under writes faster than the model; records are never
    /// skipped. 0: never skip.
    pub embedding_max_lag_seconds: u64,
    /// Vectors per memory from which its vector search is partitioned (searches visit the
    /// nearest lists instead of every vector; see docs/architecture.md).
    pub vector_partition_at: usize,
    /// The ONNX Runtime shared library (default: `ORT_DYLIB_PATH`, then `libonnxruntime.so`
    /// on the library path).
    pub onnxruntime_path: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: String,
    /// A tracing filter, e.g. `info` or `memd_server=debug,info`.
    pub log_level: String,
}

impl Config {
    /// `memory_budget_mb`, shared out.
    pub fn memory_budget(&self) -> Result<MemoryBudget, ConfigError> {
        MemoryBudget::split(self.memory_budget_mb, self.block_cache_mb)
    }

    /// The LLM endpoints strategies may use: `default` from the `llm_*` settings, and the
    /// `llm_endpoints` tables.
    pub fn llm_endpoints(&self) -> Result<LlmEndpoints, ConfigError> {
        let mut settings = self.llm_endpoints.clone();
        if let Some(base_url) = &self.llm_base_url {
            if settings.contains_key(DEFAULT_ENDPOINT) {
                return Err(ConfigError(format!(
                    "llm_base_url and [llm_endpoints.{DEFAULT_ENDPOINT}] both define the default LLM endpoint; keep one"
                )));
            }
            settings.insert(
                DEFAULT_ENDPOINT.to_string(),
                EndpointSettings {
                    base_url: base_url.clone(),
                    model: self.llm_model.clone(),
                    models: Vec::new(),
                    api_key: self.llm_api_key.clone(),
                    api_key_env: None,
                    timeout_seconds: None,
                    max_concurrent_requests: None,
                    tokens_per_minute: None,
                },
            );
        }
        let defaults = EndpointDefaults {
            timeout: std::time::Duration::from_secs(self.llm_timeout_seconds.max(1)),
            max_concurrent: self.llm_max_concurrent_requests.max(1),
            tokens_per_minute: self.llm_tokens_per_minute,
            max_output_tokens: self.llm_max_output_tokens.max(16),
        };
        LlmEndpoints::resolve(&settings, defaults).map_err(ConfigError)
    }

    /// The extraction worker pool's settings.
    pub fn worker_options(
        &self,
        llm: std::sync::Arc<LlmEndpoints>,
    ) -> crate::extraction::WorkerOptions {
        crate::extraction::WorkerOptions {
            concurrency: match self.extraction_workers {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            },
            nice: self.extraction_nice,
            max_attempts: self.extraction_max_attempts,
            initial_backoff: std::time::Duration::from_millis(self.extraction_initial_backoff_ms),
            max_backoff: std::time::Duration::from_millis(self.extraction_max_backoff_ms),
            llm,
            prompts_dir: self.llm_prompts_dir.clone(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("memd-data"),
            metrics_listen: "127.0.0.1:9464".into(),
            http_listen: "127.0.0.1:50052".into(),
            sync_writes: true,
            admin_key: None,
            allow_unauthenticated_remote: false,
            tls_cert_path: None,
            tls_key_path: None,
            session_sweep_interval_ms: 1000,
            change_retention_hours: 24,
            memory_budget_mb: 128,
            block_cache_mb: None,
            backup_dir: None,
            key_requests_per_second: 0,
            key_request_burst: 0,
            key_concurrent_searches: 0,
            key_bytes_per_second: 0,
            memory_requests_per_second: 0,
            memory_bytes_per_second: 0,
            request_timeout_seconds: 60,
            shutdown_grace_seconds: 10,
            extraction_workers: 0,
            extraction_enabled: true,
            extraction_nice: 10,
            indexing_nice: 10,
            extraction_max_attempts: 5,
            extraction_initial_backoff_ms: 1000,
            extraction_max_backoff_ms: 300_000,
            llm_base_url: None,
            llm_model: None,
            llm_api_key: None,
            llm_timeout_seconds: 60,
            llm_max_concurrent_requests: 4,
            llm_tokens_per_minute: 0,
            llm_max_output_tokens: 1024,
            llm_prompts_dir: None,
            llm_endpoints: BTreeMap::new(),
            embedding_model: "Qdrant/all-MiniLM-L6-v2-onnx".into(),
            embedding_model_dir: None,
            embedding_pooling: "mean".into(),
            embedding_max_length: 128,
            embedding_cache_dir: None,
            embedding_query_threads: 0,
            embedding_events: true,
            embedding_max_lag_seconds: 900,
            vector_partition_at: 100_000,
            onnxruntime_path: None,
            log_format: "text".into(),
            log_level: "info".into(),
        }
    }
}

/// Settings given on the command line; `None` leaves lower layers in charge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_writes: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated_remote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

const ENV_KEYS: [&str; 49] = [
    "listen",
    "data_dir",
    "metrics_listen",
    "http_listen",
    "sync_writes",
    "admin_key",
    "allow_unauthenticated_remote",
    "tls_cert_path",
    "tls_key_path",
    "session_sweep_interval_ms",
    "backup_dir",
    "key_requests_per_second",
    "key_request_burst",
    "key_concurrent_searches",
    "key_bytes_per_second",
    "memory_requests_per_second",
    "memory_bytes_per_second",
    "request_timeout_seconds",
    "shutdown_grace_seconds",
    "change_retention_hours",
    "memory_budget_mb",
    "block_cache_mb",
    "extraction_workers",
    "extraction_enabled",
    "extraction_nice",
    "indexing_nice",
    "extraction_max_attempts",
    "extraction_initial_backoff_ms",
    "extraction_max_backoff_ms",
    "llm_base_url",
    "llm_model",
    "llm_api_key",
    "llm_timeout_seconds",
    "llm_max_concurrent_requests",
    "llm_tokens_per_minute",
    "llm_max_output_tokens",
    "llm_prompts_dir",
    "embedding_model",
    "embedding_model_dir",
    "embedding_pooling",
    "embedding_max_length",
    "embedding_cache_dir",
    "embedding_query_threads",
    "embedding_events",
    "embedding_max_lag_seconds",
    "vector_partition_at",
    "onnxruntime_path",
    "log_format",
    "log_level",
];

/// `MEMD_*` variables that belong to memd's clients and tools (memctl, the test harnesses,
/// dev.sh), not to the server, which ignores them. Any other `MEMD_*` variable that names no
/// setting is a start-up error: a misspelt `MEMD_SYNC_WRITE=true` must not leave writes
/// unsynced without a word.
const CLIENT_VARIABLES: [&str; 11] = [
    "MEMD_ENDPOINT",
    "MEMD_API_KEY",
    "MEMD_CONFIG",
    "MEMD_MCP_MEMORY",
    "MEMD_MCP_ACTOR",
    "MEMD_MCP_SESSION",
    "MEMD_MCP_NAMESPACE",
    "MEMD_BIN",
    "MEMD_CACHE",
    "MEMD_LOCOMO_DIR",
    "MEMD_FUZZ_RUNS",
];

/// Prefixes of client and tool variables (the LLM tests' endpoint and key).
const CLIENT_PREFIXES: [&str; 1] = ["MEMD_TEST_"];

/// Refuses a `MEMD_*` variable among `names` that is neither a setting nor a client's,
/// suggesting the setting it most likely misspells.
pub fn check_variables<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
) -> Result<(), ConfigError> {
    let mut unknown = Vec::new();
    for name in names {
        let name = name.as_ref();
        let Some(key) = name.strip_prefix("MEMD_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if ENV_KEYS.contains(&key.as_str())
            || CLIENT_VARIABLES.contains(&name)
            || CLIENT_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            continue;
        }
        let closest = ENV_KEYS
            .iter()
            .map(|k| (strsim::levenshtein(k, &key), k))
            .min()
            .filter(|(distance, _)| *distance <= 3)
            .map(|(_, k)| format!(" (did you mean MEMD_{}?)", k.to_ascii_uppercase()))
            .unwrap_or_default();
        unknown.push(format!("{name}{closest}"));
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ConfigError(format!(
        "unknown environment variable{} {}: memd has no such setting (the settings are in docs/operations.md); unset it or correct the name",
        if unknown.len() > 1 { "s" } else { "" },
        unknown.join(", ")
    )))
}

impl Config {
    /// Layers defaults, `file`, `MEMD_*` variables and `overrides`, then validates. A
    /// `MEMD_*` variable that is no setting (see [`check_variables`]) is an error.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        check_variables(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))?;
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only server keys: MEMD_ENDPOINT / MEMD_API_KEY belong to the clients.
        figment = figment
            .merge(Env::prefixed("MEMD_").only(&ENV_KEYS))
            .merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|err| ConfigError(err.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks combinations the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.metrics_addr()?;
        self.memory_budget()?;
        let http = self.http_addr()?;
        for addr in std::iter::once(self.listen).chain(http) {
            if self.dev_mode() && !addr.ip().is_loopback() && !self.allow_unauthenticated_remote {
                return Err(ConfigError(format!(
                    "no admin_key (MEMD_ADMIN_KEY) is set, so memd would serve {addr} without authentication; \
                     set an admin key, listen on 127.0.0.1, or pass --allow-unauthenticated-remote",
                )));
            }
        }
        if let Some(addr) = http
            && self.tls_cert_path.is_some()
            && !addr.ip().is_loopback()
        {
            return Err(ConfigError(format!(
                "http_listen {addr}: the AgentCore REST API serves plain HTTP; with TLS configured \
                 it may only listen on loopback (put a TLS proxy in front) or be \"off\""
            )));
        }
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(cert), Some(key)) => {
                for path in [cert, key] {
                    if !path.is_file() {
                        return Err(ConfigError(format!(
                            "TLS file {} does not exist",
                            path.display()
                        )));
                    }
                }
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError(
                    "tls_cert_path and tls_key_path must be set together".into(),
                ));
            }
        }
        if !(0..=19).contains(&self.extraction_nice) || !(0..=19).contains(&self.indexing_nice) {
            return Err(ConfigError(
                "extraction_nice and indexing_nice must be 0-19".into(),
            ));
        }
        if self.extraction_max_attempts == 0 {
            return Err(ConfigError(
                "extraction_max_attempts must be at least 1".into(),
            ));
        }
        if self.session_sweep_interval_ms == 0 {
            return Err(ConfigError(
                "session_sweep_interval_ms must be positive".into(),
            ));
        }
        self.embedding_settings()?;
        self.llm_endpoints()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError(format!(
                "log_format must be text or json, not {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    /// Whether no admin key is configured (anonymous callers act as admin).
    pub fn dev_mode(&self) -> bool {
        self.admin_key.as_deref().is_none_or(str::is_empty)
    }

    /// The per-key quotas.
    pub fn limit_settings(&self) -> crate::auth::LimitSettings {
        crate::auth::LimitSettings {
            requests_per_second: self.key_requests_per_second,
            burst: self.key_request_burst,
            concurrent_searches: self.key_concurrent_searches,
            bytes_per_second: self.key_bytes_per_second,
            memory_requests_per_second: self.memory_requests_per_second,
            memory_bytes_per_second: self.memory_bytes_per_second,
        }
    }

    /// The server's own limit on a unary request (`None`: clients' deadlines only).
    pub fn request_timeout(&self) -> Option<std::time::Duration> {
        (self.request_timeout_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.request_timeout_seconds))
    }

    /// The metrics address, `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.metrics_listen.as_str() {
            "" | "off" => Ok(None),
            addr => addr.parse().map(Some).map_err(|_| {
                ConfigError(format!(
                    "metrics_listen {addr:?} is not HOST:PORT or \"off\""
                ))
            }),
        }
    }

    /// The AgentCore REST API's address, `None` when disabled.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.http_listen.as_str() {
            "" | "off" => Ok(None),
            addr => addr.parse().map(Some).map_err(|_| {
                ConfigError(format!("http_listen {addr:?} is not HOST:PORT or \"off\""))
            }),
        }
    }

    /// A configuration for tests: data in `dir`, no metrics endpoint, no REST API, fast sweeps, keyword
    /// search only (tests that need embeddings turn them on).
    pub fn for_test(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            metrics_listen: "off".into(),
            http_listen: "off".into(),
            session_sweep_interval_ms: 100,
            embedding_model: "off".into(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own error type
mod tests {
    use super::*;

    #[test]
    fn an_unknown_memd_variable_is_refused_with_the_setting_it_misspells() {
        check_variables([
            "PATH",
            "MEMD_SYNC_WRITES",
            "MEMD_ENDPOINT",
            "MEMD_TEST_LLM_URL",
        ])
        .unwrap();
        let err = check_variables(["HOME", "MEMD_SYNC_WRITE", "MEMD_LISTEN"]).unwrap_err();
        assert!(
            err.0
                .contains("MEMD_SYNC_WRITE (did you mean MEMD_SYNC_WRITES?)"),
            "{err}"
        );
        let err = check_variables(["MEMD_WHATEVER_THIS_IS", "MEMD_DATADIR"]).unwrap_err();
        assert!(
            err.0.contains(
                "variables MEMD_WHATEVER_THIS_IS, MEMD_DATADIR (did you mean MEMD_DATA_DIR?)"
            ),
            "{err}"
        );
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "memd.toml",
                "listen = \"127.0.0.1:6000\"\nsync_writes = false\nblock_cache_mb = 64",
            )?;
            jail.set_env("MEMD_LISTEN", "127.0.0.1:7000");
            jail.set_env("MEMD_API_KEY", "client-side-only");
            let overrides = Overrides {
                data_dir: Some("/tmp/x".into()),
                ..Default::default()
            };
            let config = Config::load(Some(Path::new("memd.toml")), &overrides).expect("valid");
            assert_eq!(config.listen.port(), 7000);
            assert!(!config.sync_writes);
            assert_eq!(config.block_cache_mb, Some(64));
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_open_dev_mode_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listne = \"127.0.0.1:6000\"")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("listne"), "{err}");
            let open = Overrides {
                listen: Some("0.0.0.0:50051".parse().unwrap()),
                ..Default::default()
            };
            let err = Config::load(None, &open).unwrap_err();
            assert!(err.to_string().contains("without authentication"), "{err}");
            jail.set_env("MEMD_ADMIN_KEY", "s3cret");
            assert!(Config::load(None, &open).is_ok());
            Ok(())
        });
    }

    #[test]
    fn embedding_settings_name_the_model_or_say_what_is_wrong() {
        let mut config = Config::default();
        let settings = config.embedding_settings().unwrap().expect("on by default");
        // The default model comes from where `./dev.sh fetch-model` put it, else the hub.
        let fetched = crate::embedding::local_file_paths().0;
        match settings.source {
            crate::embedding::ModelSource::Hub { ref cache_dir, .. } => {
                assert!(cache_dir.ends_with("models"));
                assert!(!fetched.join("model.onnx").is_file());
            }
            crate::embedding::ModelSource::Local { ref dir, .. } => assert_eq!(dir, &fetched),
        }
        config.embedding_model = "AllMiniLML6V2".into();
        assert!(config.embedding_settings().unwrap().is_some());
        config.embedding_model = "no-such/model".into();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("embedding_model"), "{err}");
        config.embedding_model_dir = Some("/models/minilm".into());
        config.embedding_pooling = "max".into();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("embedding_pooling"), "{err}");
        config.embedding_pooling = "cls".into();
        assert!(matches!(
            config.embedding_settings().unwrap().unwrap().source,
            crate::embedding::ModelSource::Local { .. }
        ));
        config.embedding_model = "off".into();
        assert_eq!(config.embedding_settings().unwrap(), None);
    }

    #[test]
    fn the_example_file_loads_with_its_llm_endpoint_table() {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/memd.example.toml"),
        )
        .unwrap();
        // Uncomment the example endpoint table (and only it: it comes last).
        let table = example
            .find("# [llm_endpoints.openai]")
            .expect("the example table");
        let uncommented = format!(
            "{}{}",
            &example[..table],
            example[table..].replace("# ", "")
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("memd.toml", &uncommented)?;
            jail.set_env("OPENAI_API_KEY", "sk-example");
            let config = Config::load(Some(Path::new("memd.toml")), &Overrides::default())
                .expect("the example loads");
            let endpoints = config.llm_endpoints().unwrap();
            assert_eq!(endpoints.names().collect::<Vec<_>>(), ["openai"]);
            let (chosen, _) = endpoints.choose("openai", "gpt-4o").unwrap();
            assert_eq!(chosen.api_key.as_deref(), Some("sk-example"));
            assert_eq!(chosen.tokens_per_minute, 200_000);
            Ok(())
        });
    }

    #[test]
    fn the_default_endpoint_comes_from_one_place() {
        let mut config = Config {
            llm_base_url: Some("http://127.0.0.1:11434/v1".into()),
            llm_model: Some("llama3.1".into()),
            ..Config::default()
        };
        let endpoints = config.llm_endpoints().unwrap();
        assert_eq!(endpoints.choose("", "").unwrap().0.model, "llama3.1");
        config.llm_endpoints.insert(
            DEFAULT_ENDPOINT.into(),
            EndpointSettings {
                base_url: "http://127.0.0.1:8000/v1".into(),
                model: None,
                models: Vec::new(),
                api_key: None,
                api_key_env: None,
                timeout_seconds: None,
                max_concurrent_requests: None,
                tokens_per_minute: None,
            },
        );
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("llm_base_url"), "{err}");
    }
}
