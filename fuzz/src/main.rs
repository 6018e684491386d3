//! `memd-fuzz [TARGET...] [--runs N] [--seconds S] [--seed N]`: a fuzzing campaign over
//! memd's parsers of untrusted bytes (all of them by default). Prints executions, speed and
//! crashes per target; saves each crash's input under `fuzz/crashes/TARGET/` and exits 1 if
//! there was one.

use clap::Parser;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(about = "Fuzz memd's parsers of untrusted bytes (stable Rust, offline)")]
struct Args {
    /// Targets to run (default: all); `--list` names them.
    targets: Vec<String>,
    /// Executions per target.
    #[arg(long, default_value_t = 1_000_000)]
    runs: u64,
    /// Stop each target after this many seconds even if --runs is not reached.
    #[arg(long)]
    seconds: Option<u64>,
    /// Seed of the mutations (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        for (name, _) in memd_fuzz::TARGETS {
            println!("{name}");
        }
        return Ok(());
    }
    for target in &args.targets {
        anyhow::ensure!(
            memd_fuzz::TARGETS.iter().any(|(name, _)| name == target),
            "no target {target:?} (memd-fuzz --list names them)"
        );
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    memd_fuzz::quiet_panics();
    let mut results = Vec::new();
    let mut crashed = 0;
    for &(name, entry) in memd_fuzz::TARGETS {
        if !args.targets.is_empty() && !args.targets.iter().any(|t| t == name) {
            continue;
        }
        let campaign = memd_fuzz::campaign(
            name,
            entry,
            args.runs,
            seed,
            args.seconds.map(Duration::from_secs),
        );
        let per_second = campaign.executions as f64 / campaign.elapsed.as_secs_f64().max(1e-9);
        if !args.json {
            println!(
                "{name:<20} {:>12} executions {:>10.0}/s {:>3} crashes",
                campaign.executions,
                per_second,
                campaign.crashes.len()
            );
        }
        for (i, crash) in campaign.crashes.iter().enumerate() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crashes")
                .join(name);
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("seed{seed}-{i}"));
            std::fs::write(&path, &crash.input)?;
            eprintln!(
                "CRASH {name}: {} (input saved to {})",
                crash.message,
                path.display()
            );
        }
        crashed += campaign.crashes.len();
        results.push(serde_json::json!({
            "target": name,
            "executions": campaign.executions,
            "seconds": campaign.elapsed.as_secs_f64(),
            "crashes": campaign.crashes.iter().map(|c| c.message.clone()).collect::<Vec<_>>(),
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "seed": seed, "targets": results })
        );
    } else {
        println!("seed {seed}: {crashed} crashes");
    }
    anyhow::ensure!(
        crashed == 0,
        "{crashed} crashes (inputs under fuzz/crashes/)"
    );
    Ok(())
}
