//! Test harness: a real memd server on an ephemeral loopback port with a temp data dir.
//! The listener is bound before the server task starts, so clients can connect at once.

use memd_client::{MemdClient, pb};
use memd_server::store::SessionTransition;
use memd_server::{Config, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// The admin secret every [`TestServer`] is configured with.
pub const ADMIN_KEY: &str = "test-admin-secret";

/// An in-process memd server.
pub struct TestServer {
    pub addr: SocketAddr,
    dir: Arc<tempfile::TempDir>,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    transitions: broadcast::Receiver<SessionTransition>,
}

impl TestServer {
    /// A server with auth enforced (admin key [`ADMIN_KEY`]) and non-synced writes.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start) with configuration changes.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(tempfile::tempdir().expect("temp dir"), change).await
    }

    /// Like [`start_with`](Self::start_with) on `dir`, which may hold data (a restored
    /// backup).
    pub async fn start_on(dir: tempfile::TempDir, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_test(dir.path());
        config.admin_key = Some(ADMIN_KEY.into());
        config.sync_writes = false;
        change(&mut config);
        Self::launch(Arc::new(dir), config).await
    }

    async fn launch(dir: Arc<tempfile::TempDir>, config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = Server::open(config.clone()).expect("server opens");
        let transitions = server.subscribe_transitions();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            dir,
            config,
            shutdown: Some(tx),
            task: Some(task),
            transitions,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client with the admin key.
    pub async fn admin(&self) -> MemdClient {
        self.client(Some(ADMIN_KEY)).await
    }

    /// A client with `key` (or none).
    pub async fn client(&self, key: Option<&str>) -> MemdClient {
        MemdClient::connect(self.endpoint(), key.map(String::from))
            .await
            .expect("client connects")
    }

    /// Session transitions announced since start.
    pub fn transitions(&mut self) -> &mut broadcast::Receiver<SessionTransition> {
        &mut self.transitions
    }

    /// Graceful stop (drain + flush), keeping the data directory.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }

    /// Stops and starts again on the same data directory (new port).
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let (dir, config) = (self.dir.clone(), self.config.clone());
        Self::launch(dir, config).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A memory with the given session policy (defaults where zero).
pub async fn create_memory(
    client: &MemdClient,
    name: &str,
    policy: Option<pb::SessionPolicy>,
) -> pb::Memory {
    client
        .create_memory(pb::CreateMemoryRequest {
            name: name.into(),
            session_policy: policy,
            ..Default::default()
        })
        .await
        .expect("create memory")
}

/// A memory whose "facts" strategy (built-in, `SEMANTIC`) extracts after every turn; its id.
pub async fn facts_memory(client: &MemdClient, name: &str) -> String {
    client
        .create_memory(pb::CreateMemoryRequest {
            name: name.into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "facts".into(),
                r#type: pb::StrategyType::Semantic as i32,
                triggers: Some(pb::ExtractionTriggers {
                    message_count: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("create memory")
        .memory_id
}

/// A memory whose "mine" strategy is SELF_MANAGED (its jobs wait for external workers); its id.
pub async fn self_managed_memory(client: &MemdClient, name: &str) -> String {
    client
        .create_memory(pb::CreateMemoryRequest {
            name: name.into(),
            strategies: vec![pb::MemoryStrategy {
                strategy_id: "mine".into(),
                r#type: pb::StrategyType::SelfManaged as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("create memory")
        .memory_id
}

/// A CreateEvent request with one user turn.
pub fn text_event(
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    text: &str,
) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        memory_id: memory_id.into(),
        actor_id: actor_id.into(),
        session_id: session_id.into(),
        payload: vec![memd_client::turn(pb::Role::User, text)],
        ..Default::default()
    }
}

/// A CreateEvent request with one user turn said by `speaker` (records name the speaker).
pub fn named_event(
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    speaker: &str,
    text: &str,
) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        payload: vec![memd_client::named_turn(pb::Role::User, speaker, text)],
        ..text_event(memory_id, actor_id, session_id, text)
    }
}

/// The text of an event's first conversational item.
pub fn text_of(event: &pb::Event) -> &str {
    match event.payload.first().and_then(|item| item.content.as_ref()) {
        Some(pb::payload_item::Content::Conversational(turn)) => &turn.text,
        _ => "",
    }
}

/// The `memd` binary next to the test executable (built by `cargo build --bins`), or `MEMD_BIN`.
pub fn memd_binary() -> PathBuf {
    workspace_binary("memd", "MEMD_BIN")
}

/// The `memctl` binary next to the test executable, or `MEMCTL_BIN`.
pub fn memctl_binary() -> PathBuf {
    workspace_binary("memctl", "MEMCTL_BIN")
}

fn workspace_binary(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --bins` first (or set {env})",
        binary.display()
    );
    binary
}

/// Every live record of a memory under a namespace prefix ("" = all).
pub async fn memory_records(
    client: &MemdClient,
    memory_id: &str,
    namespace: &str,
) -> Vec<pb::MemoryRecord> {
    use futures::TryStreamExt;
    client
        .all_memory_records(pb::ListMemoryRecordsRequest {
            memory_id: memory_id.into(),
            namespace: namespace.into(),
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("list records")
}

/// Every unfinished extraction job of a memory.
pub async fn extraction_jobs(client: &MemdClient, memory_id: &str) -> Vec<pb::ExtractionJob> {
    use futures::TryStreamExt;
    client
        .all_extraction_jobs(pb::ListMemoryExtractionJobsRequest {
            memory_id: memory_id.into(),
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("list jobs")
}

/// Turns on semantic search with the real ONNX model from local files: the directory in
/// `MEMD_EMBEDDING_MODEL_DIR` and the runtime in `MEMD_ONNXRUNTIME_PATH` (both set by
/// `./dev.sh test`), else where `./dev.sh fetch-model` puts them. Panics with what to run
/// when they are missing: these tests must not pass by skipping.
pub fn with_embeddings(config: &mut Config) {
    let (model_dir, runtime) = embedding_files();
    config.embedding_model = "Qdrant/all-MiniLM-L6-v2-onnx".into();
    config.embedding_model_dir = Some(model_dir);
    config.onnxruntime_path = Some(runtime);
}

/// The local model directory and ONNX Runtime library the tests use (see [`with_embeddings`]).
pub fn embedding_files() -> (PathBuf, PathBuf) {
    memd_server::embedding::local_files().unwrap_or_else(|| {
        let (model_dir, runtime) = memd_server::embedding::local_file_paths();
        panic!(
            "the embedding model ({}) or ONNX Runtime ({}) is missing: run ./dev.sh fetch-model (./dev.sh test does it for you)",
            model_dir.display(),
            runtime.display()
        )
    })
}

/// Starts the real `memd` binary on an ephemeral port with the admin key [`ADMIN_KEY`], JSON
/// logs and the extra environment `env`; returns the child (killed on drop) and its endpoint
/// once it logs that it is serving.
pub async fn spawn_memd(
    data_dir: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> (tokio::process::Child, String) {
    spawn_memd_until(data_dir, env, "memd serving").await
}

/// [`spawn_memd`], returning as soon as memd logs `message` (with a `listen` field):
/// `"memd starting"` is logged once the gRPC port answers health, before the store, the
/// model and the indexes are open.
pub async fn spawn_memd_until(
    data_dir: &Path,
    env: &[(&str, &std::ffi::OsStr)],
    message: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::new(memd_binary());
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--http-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("MEMD_ADMIN_KEY", ADMIN_KEY)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("memd starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let endpoint = loop {
        let line = lines
            .next_line()
            .await
            .expect("read memd log")
            .expect("memd exited before serving");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == message {
            break format!(
                "http://{}",
                entry["fields"]["listen"].as_str().expect("listen field")
            );
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, endpoint)
}

/// Waits until both search indexes have applied every change and no re-embedding runs.
pub async fn settled(client: &MemdClient) {
    for _ in 0..2400 {
        let status = client.index_status().await.expect("index status");
        if status.keyword_pending == 0 && status.vectors_pending == 0 && !status.vectors_rebuilding
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the indexes never caught up");
}
