//! `memctl chaos`: repeated, randomised crashes of the real `memd` binary, with every
//! invariant checked after each restart (RocksDB's db_stress crash cycles, for memd).
//!
//! Each cycle several clients drive a mixed, seeded workload ([`workload`]); after a random
//! moment memd is killed with SIGKILL (wherever it is: a group commit, a memtable flush or
//! compaction, an index commit, an extraction job, an embedding batch), restarted on the same
//! directory, and checked ([`checks`]). Timing makes a run statistical, not replayable: the
//! seed fixes the workload's choices and the kill moments, not where memd was when killed.

mod checks;
mod ledger;
mod workload;

use crate::Globals;
use crate::memd_process::{Memd, memd_path};
use anyhow::Context;
use clap::Args;
use ledger::Ledger;
use memd_client::{MemdClient, pb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Seed for the workload and the kill moments (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// memd's sync_writes: true fsyncs each acknowledged write; false leaves it in the page
    /// cache, which a process crash does not lose (only the machine's crash would).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sync_writes: bool,
    /// Shortest and longest time the workload runs before the kill, in milliseconds.
    #[arg(long, default_value_t = 200)]
    min_run_ms: u64,
    #[arg(long, default_value_t = 1500)]
    max_run_ms: u64,
    /// Run memd without the embedding model (keyword search only).
    #[arg(long)]
    keyword_only: bool,
    /// The memd binary (default: `memd` beside this memctl).
    #[arg(long)]
    memd: Option<PathBuf>,
    /// Keep memd's data here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// What one cycle did and found.
struct Cycle {
    run_ms: u64,
    acked: workload::Counts,
    /// Seconds from spawning memd again to SERVING.
    serving: f64,
    violations: Vec<String>,
}

pub async fn run(ctx: &Globals, args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !ctx.endpoint_explicit,
        "memctl chaos starts and kills memd itself: leave out --endpoint"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.cycles),
        "--cycles must be 1-10000"
    );
    anyhow::ensure!((1..=64).contains(&args.clients), "--clients must be 1-64");
    anyhow::ensure!(
        args.min_run_ms <= args.max_run_ms,
        "--min-run-ms must not exceed --max-run-ms"
    );
    let memd = memd_path(args.memd.clone())?;
    let model = match args.keyword_only {
        true => None,
        false => Some(memd_server::embedding::local_files().context(
            "memctl chaos runs memd with the local embedding model: run ./dev.sh fetch-model, or pass --keyword-only",
        )?),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let temporary = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let admin_key = format!("chaos-{}", memd_server::ids::random_suffix(24));
    let env = [
        ("MEMD_ADMIN_KEY", admin_key.clone()),
        ("MEMD_SYNC_WRITES", args.sync_writes.to_string()),
    ];
    if !ctx.json {
        println!(
            "memctl chaos: {} cycles, {} clients, seed {seed}, sync_writes {}, {}",
            args.cycles,
            args.clients,
            args.sync_writes,
            if model.is_some() {
                "with the embedding model"
            } else {
                "keyword only"
            }
        );
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Memd::start(&memd, &data_dir, model.as_ref(), &env).await?;
    let admin = MemdClient::connect(server.endpoint.clone(), Some(admin_key.clone())).await?;
    let memory_id = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "chaos".into(),
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
        .await?
        .memory_id;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut cycles = Vec::new();
    let mut restart_failed = None;
    for cycle in 0..args.cycles {
        let client = MemdClient::connect(server.endpoint.clone(), Some(admin_key.clone())).await?;
        let killed = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..args.clients)
            .map(|worker| {
                tokio::spawn(
                    workload::Client {
                        client: client.clone(),
                        memory_id: memory_id.clone(),
                        ledger: ledger.clone(),
                        killed: killed.clone(),
                        cycle,
                        worker,
                        seed: seed
                            ^ ((cycle as u64) << 16 | worker as u64)
                                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    }
                    .run(),
                )
            })
            .collect();
        let run_ms = rng.random_range(args.min_run_ms..=args.max_run_ms);
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill().await?;
        let mut acked = workload::Counts::default();
        for worker in workers {
            let counts = worker.await?;
            acked.events += counts.events;
            acked.records += counts.records;
            acked.deletes += counts.deletes;
            acked.searches += counts.searches;
        }
        server = match Memd::start(&memd, &data_dir, model.as_ref(), &env).await {
            Ok(server) => server,
            Err(err) => {
                restart_failed = Some(format!("cycle {cycle}: memd did not restart: {err:#}"));
                break;
            }
        };
        let client = MemdClient::connect(server.endpoint.clone(), Some(admin_key.clone())).await?;
        let mut check =
            checks::Check::new(&client, &memory_id, &ledger, args.clients, model.is_some());
        check.violations = std::mem::take(&mut workload::lock(&ledger).unexpected);
        check.retry().await;
        check.events_of(cycle).await;
        check.records_of(cycle).await;
        check.earlier(cycle, &mut rng).await;
        check.extraction(cycle).await;
        check.indexes(cycle, &mut rng).await;
        let violations = check.violations;
        if !ctx.json {
            println!(
                "cycle {cycle}: killed after {run_ms} ms ({} events, {} records, {} deletes acknowledged); SERVING again in {:.0} ms; {}",
                acked.events,
                acked.records,
                acked.deletes,
                1000.0 * server.serving,
                if violations.is_empty() {
                    "all invariants hold".to_string()
                } else {
                    format!("{} VIOLATIONS", violations.len())
                }
            );
            for violation in &violations {
                println!("  cycle {cycle}: {violation}");
            }
        }
        cycles.push(Cycle {
            run_ms,
            acked,
            serving: server.serving,
            violations,
        });
    }
    // Everything once more, every cycle's entries after all the restarts.
    let mut last = Vec::new();
    if restart_failed.is_none() {
        let client = MemdClient::connect(server.endpoint.clone(), Some(admin_key)).await?;
        let mut check =
            checks::Check::new(&client, &memory_id, &ledger, args.clients, model.is_some());
        for cycle in 0..cycles.len() {
            check.events_of(cycle).await;
            check.records_of(cycle).await;
        }
        last = check.violations;
        server.stop().await?;
    }
    report(ctx, seed, &args, &cycles, &last, restart_failed.as_deref())
}

fn report(
    ctx: &Globals,
    seed: u64,
    args: &ChaosArgs,
    cycles: &[Cycle],
    last: &[String],
    restart_failed: Option<&str>,
) -> anyhow::Result<()> {
    let violations: Vec<String> = cycles
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.violations.iter().map(move |v| format!("cycle {i}: {v}")))
        .chain(last.iter().map(|v| format!("final check: {v}")))
        .chain(restart_failed.map(String::from))
        .collect();
    let survived = cycles.iter().filter(|c| c.violations.is_empty()).count();
    let mut serving: Vec<f64> = cycles.iter().map(|c| c.serving * 1000.0).collect();
    serving.sort_by(f64::total_cmp);
    let at = |q: f64| {
        serving
            .get(((serving.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let totals = cycles.iter().fold((0, 0, 0), |t, c| {
        (
            t.0 + c.acked.events,
            t.1 + c.acked.records,
            t.2 + c.acked.deletes,
        )
    });
    if ctx.json {
        crate::output::print_json(&json!({
            "seed": seed,
            "cycles": cycles.len(),
            "cycles_requested": args.cycles,
            "cycles_survived": survived,
            "clients": args.clients,
            "sync_writes": args.sync_writes,
            "semantic": !args.keyword_only,
            "acknowledged": { "events": totals.0, "records": totals.1, "deletes": totals.2 },
            "serving_ms": { "median": at(0.5), "p90": at(0.9), "max": serving.last() },
            "run_ms": cycles.iter().map(|c| c.run_ms).collect::<Vec<_>>(),
            "violations": violations,
        }));
    } else {
        println!(
            "{survived} of {} cycles survived with every invariant (seed {seed}); {} events, {} records and {} deletes acknowledged; SERVING after a kill in {:.0} ms median, {:.0} ms max",
            args.cycles,
            totals.0,
            totals.1,
            totals.2,
            at(0.5).unwrap_or(f64::NAN),
            serving.last().copied().unwrap_or(f64::NAN)
        );
        for violation in &violations {
            println!("VIOLATION {violation}");
        }
    }
    anyhow::ensure!(
        violations.is_empty(),
        "{} invariant violations (seed {seed} reproduces the workload)",
        violations.len()
    );
    Ok(())
}
