//! The real `memd` binary as a child process on a free loopback port: started and waited
//! for until SERVING (timed as a client sees it), stopped with SIGTERM or killed with SIGKILL.
//! Shared by `memctl bench startup` and `memctl chaos`.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Longest wait for SERVING.
const GIVE_UP: Duration = Duration::from_secs(600);
/// Between health polls.
const POLL: Duration = Duration::from_millis(5);

/// `given`, or the `memd` binary beside this memctl; an error saying how to build it when
/// there is none.
pub fn memd_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let memd = match given {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("memctl's own path has no directory")?
            .join("memd"),
    };
    anyhow::ensure!(
        memd.is_file(),
        "no memd binary at {} (build it with cargo build --release -p memd-server, or give --memd)",
        memd.display()
    );
    Ok(memd)
}

/// A running memd.
pub struct Memd {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub endpoint: String,
    /// Seconds from spawning to the first health answer (any status).
    pub first_answer: f64,
    /// Seconds from spawning to health SERVING.
    pub serving: f64,
    log: tempfile::NamedTempFile,
}

impl Memd {
    /// Starts `memd` on `data_dir` with the embedding model `model` (or none: keyword only)
    /// and the extra environment `env`, and waits for SERVING.
    pub async fn start(
        memd: &Path,
        data_dir: &Path,
        model: Option<&(PathBuf, PathBuf)>,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = tempfile::NamedTempFile::new()?;
        let mut command = tokio::process::Command::new(memd);
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "off", "--http-listen", "off"])
            .args(["--log-format", "json", "--data-dir"])
            .arg(data_dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen()?)
            .kill_on_drop(true);
        match model {
            Some((model_dir, runtime)) => command
                .env("MEMD_EMBEDDING_MODEL_DIR", model_dir)
                .env("MEMD_ONNXRUNTIME_PATH", runtime),
            None => command.env("MEMD_EMBEDDING_MODEL", "off"),
        };
        let started = Instant::now();
        let child = command.spawn().context("starting memd")?;
        let pid = child.id().context("memd exited at once")?;
        let mut memd = Self {
            child,
            pid,
            endpoint: format!("http://127.0.0.1:{port}"),
            first_answer: f64::NAN,
            serving: f64::NAN,
            log,
        };
        let mut first_answer = None;
        memd.serving = loop {
            if let Some(status) = memd.child.try_wait()? {
                return Err(memd.failed(format!("memd exited ({status}) before serving")));
            }
            let answer = health(&memd.endpoint).await;
            let now = started.elapsed().as_secs_f64();
            if answer.is_some() {
                first_answer.get_or_insert(now);
            }
            if answer == Some(ServingStatus::Serving) {
                break now;
            }
            if started.elapsed() > GIVE_UP {
                return Err(memd.failed(format!("memd was not SERVING after {GIVE_UP:?}")));
            }
            tokio::time::sleep(POLL).await;
        };
        memd.first_answer = first_answer.unwrap_or(memd.serving);
        Ok(memd)
    }

    /// An error carrying the end of memd's log.
    pub fn failed(&self, what: String) -> anyhow::Error {
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::anyhow!("{what}; memd's log ends:\n{}", tail.join("\n"))
    }

    /// SIGTERM, then waits for memd to exit (SIGKILL after a minute).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("memd's process id")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("memctl: memd did not stop within a minute of SIGTERM; killing it");
            self.child.kill().await?;
        }
        Ok(())
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// The server's overall health status, or `None` when nothing answers yet.
async fn health(endpoint: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(50))
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}
