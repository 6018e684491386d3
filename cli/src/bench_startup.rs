//! `memctl bench startup [DIR]`: how long the real `memd` binary takes from process start to
//! answering gRPC health and to SERVING, and its memory and threads once serving.
//!
//! Three cases: an empty data directory with keyword search only (`MEMD_EMBEDDING_MODEL=off`,
//! the floor: no model to load), an empty directory with the embedding model, and a
//! directory holding the LoCoMo conversations (default: ../shared/data/locomo, skipped when
//! absent), ingested and fully indexed beforehand by an in-process server. Each run starts a
//! fresh child process on a free loopback port and polls health every few milliseconds over a
//! new connection, so that the stand-in that answers NOT_SERVING while memd opens is measured
//! as a client sees it.

use crate::Globals;
use crate::bench::{DataDir, LocalServer};
use crate::memd_process::{Memd, memd_path};
use crate::proc_stats::{self, ProcessMemory};
use crate::{bench_ingest, locomo};
use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the conversations are when no directory is given (the loaded case is skipped when
/// absent).
const DEFAULT_DIR: &str = "../shared/data/locomo";
/// How long after SERVING memory and threads are read a second time (background work that
/// starts once serving has settled by then).
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// A directory of LoCoMo JSON conversations for the loaded case (default:
    /// ../shared/data/locomo; the case is skipped when absent).
    dir: Option<PathBuf>,
    /// The memd binary (default: `memd` beside this memctl).
    #[arg(long)]
    memd: Option<PathBuf>,
    /// Starts measured per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// One start of memd.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Seconds from spawning the process to the first health answer (any status).
    first_answer: f64,
    /// Seconds from spawning to health SERVING.
    serving: f64,
    at_serving: ProcessMemory,
    settled: ProcessMemory,
}

/// The runs of one case.
struct Case {
    name: &'static str,
    runs: Vec<Run>,
}

impl Case {
    fn median(&self, value: impl Fn(&Run) -> f64) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn json(&self) -> Value {
        let memory = |m: &ProcessMemory| {
            json!({ "rss_mib": m.rss_mib, "anon_mib": m.anon_mib, "file_mib": m.file_mib,
                    "threads": m.threads })
        };
        json!({
            "case": self.name,
            "median_first_answer_ms": 1000.0 * self.median(|r| r.first_answer),
            "median_serving_ms": 1000.0 * self.median(|r| r.serving),
            "runs": self.runs.iter().map(|r| json!({
                "first_answer_ms": 1000.0 * r.first_answer,
                "serving_ms": 1000.0 * r.serving,
                "at_serving": memory(&r.at_serving),
                "settled": memory(&r.settled),
            })).collect::<Vec<Value>>(),
        })
    }
}

pub async fn run(ctx: &Globals, args: StartupArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !ctx.endpoint_explicit,
        "memctl bench startup starts memd itself: leave out --endpoint"
    );
    anyhow::ensure!((1..=50).contains(&args.runs), "--runs must be 1-50");
    let memd = memd_path(args.memd)?;
    let model = memd_server::embedding::local_files().context(
        "memctl bench startup needs the local embedding model and ONNX Runtime: run ./dev.sh fetch-model",
    )?;
    let conversations = match args.dir {
        Some(dir) => Some(dir),
        None => Some(PathBuf::from(DEFAULT_DIR)).filter(|dir| dir.is_dir()),
    };

    let mut cases = Vec::new();
    for (name, with_model) in [("empty, keyword only", false), ("empty, with model", true)] {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            let dir = tempfile::tempdir()?;
            runs.push(start(&memd, dir.path(), with_model.then_some(&model)).await?);
        }
        cases.push(Case { name, runs });
    }
    match conversations {
        Some(dir) => {
            let loaded = load(&dir).await?;
            let mut runs = Vec::new();
            for _ in 0..args.runs {
                runs.push(start(&memd, loaded.path(), Some(&model)).await?);
            }
            cases.push(Case {
                name: "LoCoMo loaded, with model",
                runs,
            });
        }
        None => eprintln!(
            "memctl: no conversations at {DEFAULT_DIR}: the loaded case is skipped (give a directory of LoCoMo JSON files)"
        ),
    }
    report(ctx, &cases);
    Ok(())
}

/// A data directory holding every conversation in `dir`, stored, extracted and fully
/// indexed (keyword and vectors), written by an in-process server that has stopped.
async fn load(dir: &Path) -> anyhow::Result<DataDir> {
    let files = locomo::conversation_files(dir)?;
    eprintln!(
        "memctl: loading {} conversations into a fresh data directory",
        files.len()
    );
    let server = LocalServer::start(false).await?;
    let ingest = bench_ingest::ingest(&server, &files).await?;
    eprintln!(
        "memctl: {} turns searchable after {:.1} s; measuring",
        ingest.turns,
        ingest.timeline.everything.unwrap_or(f64::NAN)
    );
    Ok(server.stop_keeping_data().await)
}

/// Starts memd on `data_dir`, waits for SERVING, reads its memory then and [`SETTLE`] later,
/// and stops it with SIGTERM (so that the next start finds a cleanly closed store).
async fn start(
    memd: &Path,
    data_dir: &Path,
    model: Option<&(PathBuf, PathBuf)>,
) -> anyhow::Result<Run> {
    let running = Memd::start(memd, data_dir, model, &[]).await?;
    let at_serving = proc_stats::process_memory(running.pid)?;
    tokio::time::sleep(SETTLE).await;
    let settled = proc_stats::process_memory(running.pid)?;
    let (first_answer, serving) = (running.first_answer, running.serving);
    running.stop().await?;
    Ok(Run {
        first_answer,
        serving,
        at_serving,
        settled,
    })
}

fn report(ctx: &Globals, cases: &[Case]) {
    if ctx.json {
        crate::output::print_json(&json!({
            "settle_seconds": SETTLE.as_secs(),
            "cases": cases.iter().map(Case::json).collect::<Vec<Value>>(),
        }));
        return;
    }
    let floor = cases.first().map(|c| c.median(|r| r.serving));
    let rows = cases
        .iter()
        .map(|case| {
            let serving = case.median(|r| r.serving);
            let last = case.runs.last();
            let mem = |f: fn(&ProcessMemory) -> f64| {
                last.map_or("-".into(), |r| format!("{:.0}", f(&r.settled)))
            };
            vec![
                case.name.to_string(),
                case.runs.len().to_string(),
                format!("{:.0}", 1000.0 * case.median(|r| r.first_answer)),
                format!("{:.0}", 1000.0 * serving),
                floor.map_or("-".into(), |f| format!("{:.1}x", serving / f)),
                last.map_or("-".into(), |r| format!("{:.0}", r.at_serving.rss_mib)),
                mem(|m| m.rss_mib),
                mem(|m| m.anon_mib),
                mem(|m| m.file_mib),
                last.map_or("-".into(), |r| r.settled.threads.to_string()),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "case",
            "runs",
            "first answer ms",
            "SERVING ms",
            "vs keyword only",
            "RSS at SERVING MiB",
            &format!("RSS +{}s MiB", SETTLE.as_secs()),
            "anon MiB",
            "file MiB",
            "threads",
        ],
        rows,
    );
    println!(
        "medians over the runs; memory and threads from the last run. The first answer is gRPC health from the stand-in that says NOT_SERVING while memd opens its store, model and indexes."
    );
}
