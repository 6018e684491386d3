//! `memctl backup create|verify|restore`: online backups through the server, and checks and
//! restores of a backup directory on this machine (memd must not be running on the target).

use crate::Globals;
use clap::Subcommand;
use memd_server::backup::{self, Manifest, Restored};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take an online backup into DIR, an absolute path on the server's filesystem (needs a
    /// global admin key); writes continue meanwhile.
    Create { dir: String },
    /// Check a backup directory here: its manifest, every file's size and SHA-256.
    Verify { dir: PathBuf },
    /// Fill a new data directory from a backup here, after verifying it; then start memd
    /// with `--data-dir DATA_DIR` (or use `memd --restore-from DIR --data-dir DATA_DIR`).
    Restore {
        dir: PathBuf,
        /// The data directory to create (missing or empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

pub async fn run(ctx: &Globals, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create { dir } => {
            let backup = ctx.client().await?.create_backup(dir).await?;
            if ctx.json {
                crate::output::print_json(&serde_json::json!({
                    "backupId": backup.backup_id,
                    "dir": backup.dir,
                    "sequence": backup.sequence,
                    "memdVersion": backup.memd_version,
                    "storageFormatVersion": backup.storage_format_version,
                    "createdAt": backup.created_at,
                    "fileCount": backup.file_count,
                    "totalBytes": backup.total_bytes,
                }));
            } else {
                println!(
                    "backup {} in {} (on the server): sequence {}, {} files, {} bytes",
                    backup.backup_id,
                    backup.dir,
                    backup.sequence,
                    backup.file_count,
                    backup.total_bytes
                );
            }
        }
        BackupCommand::Verify { dir } => {
            let manifest = tokio::task::spawn_blocking(move || backup::verify(&dir)).await??;
            print(ctx, "verified", &manifest);
        }
        BackupCommand::Restore { dir, data_dir } => {
            let restored =
                tokio::task::spawn_blocking(move || backup::restore(&dir, &data_dir)).await??;
            match restored {
                Restored::Restored(manifest) => print(ctx, "restored", &manifest),
                Restored::AlreadyRestored(manifest) => {
                    print(ctx, "already restored (nothing done)", &manifest)
                }
            }
        }
    }
    Ok(())
}

fn print(ctx: &Globals, what: &str, manifest: &Manifest) {
    if ctx.json {
        crate::output::print_json(&serde_json::json!({
            "outcome": what,
            "manifest": manifest,
        }));
    } else {
        println!(
            "{what}: backup {} of memd {} (storage format {}), sequence {}, taken {}, {} files, {} bytes",
            manifest.backup_id,
            manifest.memd_version,
            manifest.storage_format_version,
            manifest.sequence,
            manifest.created_at,
            manifest.files.len(),
            manifest.total_bytes()
        );
    }
}
