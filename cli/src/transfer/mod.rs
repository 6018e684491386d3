//! `memctl export` and `memctl import`: one memory (its configuration and strategies,
//! sessions, events with branches and metadata, records with their history) as a JSON Lines
//! file, for moving a tenant between servers or out of memd. See docs/operations.md.

mod export;
mod file;
mod import;

use crate::Globals;
use anyhow::Context;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// `memctl export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The memory to export (read it with a key that sees all of it: a restricted key
    /// exports only what it may read).
    memory_id: String,
    /// The file to write ("-": standard output).
    #[arg(long, short)]
    output: PathBuf,
}

/// `memctl import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// An export file.
    file: PathBuf,
    /// Name of the memory to create (default: the exported memory's name).
    #[arg(long)]
    name: Option<String>,
}

pub async fn export(ctx: &Globals, args: ExportArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let to_stdout = args.output.as_os_str() == "-";
    let counts = if to_stdout {
        export::export(
            &client,
            &args.memory_id,
            &mut BufWriter::new(std::io::stdout()),
        )
        .await?
    } else {
        // Written beside the target and renamed at the end, so a failed export leaves no
        // file that looks finished.
        let dir = args
            .output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut partial = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let counts = {
            let mut out = BufWriter::new(partial.as_file_mut());
            let counts = export::export(&client, &args.memory_id, &mut out).await?;
            out.flush()?;
            counts
        };
        partial.as_file().sync_all()?;
        partial
            .persist(&args.output)
            .with_context(|| format!("writing {}", args.output.display()))?;
        counts
    };
    let report = serde_json::json!({
        "memoryId": args.memory_id,
        "output": args.output,
        "sessions": counts.sessions,
        "events": counts.events,
        "records": counts.records,
    });
    if ctx.json {
        crate::output::print_json(&report);
    } else if !to_stdout {
        println!(
            "exported memory {} to {}: {} sessions, {} events, {} records",
            args.memory_id,
            args.output.display(),
            counts.sessions,
            counts.events,
            counts.records
        );
    }
    Ok(())
}

pub async fn import(ctx: &Globals, args: ImportArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let imported = import::import(&client, &args.file, args.name).await?;
    if ctx.json {
        crate::output::print_json(&serde_json::to_value(&imported)?);
    } else {
        println!(
            "imported {} into memory {}: {} events, {} records ({} later versions replayed)",
            args.file.display(),
            imported.memory_id,
            imported.events,
            imported.records,
            imported.record_versions
        );
        if imported.superseded_not_recreated > 0 {
            println!(
                "  {} superseded records stay in the file only (the API recreates live records)",
                imported.superseded_not_recreated
            );
        }
        if imported.source_events_dropped > 0 {
            println!(
                "  {} source-event links pointed at events the file does not hold",
                imported.source_events_dropped
            );
        }
    }
    if !imported.events_skipped.is_empty() {
        anyhow::bail!(
            "{} branch events were not imported because their root event is not in the file: {}",
            imported.events_skipped.len(),
            imported.events_skipped.join(", ")
        );
    }
    Ok(())
}
