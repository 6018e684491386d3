//! Online backups and restores. A backup is a RocksDB checkpoint of every column family at
//! one sequence number, taken while writes continue (SST files are hard-linked when the
//! backup is on the same filesystem, copied otherwise), plus a manifest with every file's
//! size and SHA-256. The search indexes are not in it: the embeddings are stored in RocksDB
//! and reused, and the keyword index is rebuilt from RocksDB when the restored memd starts.
//!
//! A restore checks every file against the manifest before it writes anything, copies the
//! checkpoint into a staging directory beside the new data directory and renames it into
//! place, so a failed restore leaves no half-written data directory behind.

pub mod manifest;

pub use manifest::{BackupFile, MANIFEST, Manifest, ROCKSDB_DIR};

use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Written into a restored data directory: which backup it came from, so that starting
/// again with the same `--restore-from` does not refuse the directory it filled.
pub const RESTORED_MARKER: &str = "memd-restored-from.json";

/// One backup at a time: a second waits (checkpoints are cheap, hashing is not).
static RUNNING: Mutex<()> = Mutex::new(());

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target directory is not usable as given (relative, empty).
    #[error("{0}")]
    InvalidDir(String),
    #[error(
        "{} exists and is not empty: a backup or a restore goes into a new or empty directory",
        .0.display()
    )]
    NotEmpty(PathBuf),
    #[error("{} holds no memd backup ({MANIFEST} is missing)", .0.display())]
    NotABackup(PathBuf),
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    #[error("the backup cannot be restored by this memd: {0}")]
    Incompatible(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("RocksDB: {0}")]
    Storage(#[from] rocksdb::Error),
}

impl BackupError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Takes a backup of `store` into `dir` (created if missing; it must be absolute, and empty
/// if it exists) while writes continue, and returns its manifest.
pub fn create(store: &Store, dir: &Path) -> Result<Manifest, BackupError> {
    if !dir.is_absolute() {
        return Err(BackupError::InvalidDir(format!(
            "{} is not an absolute path",
            dir.display()
        )));
    }
    let _one_at_a_time = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if !is_empty_or_missing(dir)? {
        return Err(BackupError::NotEmpty(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| BackupError::io(format!("creating {}", dir.display()), e))?;
    let sequence = store.checkpoint(&dir.join(ROCKSDB_DIR))?;
    let files = manifest::list_files(dir, ROCKSDB_DIR)?;
    let manifest = Manifest::new(backup_id(), sequence, files);
    write_json(&dir.join(MANIFEST), &manifest)?;
    tracing::info!(
        dir = %dir.display(),
        sequence,
        files = manifest.files.len(),
        bytes = manifest.total_bytes(),
        "backup created"
    );
    Ok(manifest)
}

/// Checks a backup: its manifest, and every file's size and checksum.
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = Manifest::read(dir)?;
    manifest.verify_files(dir)?;
    Ok(manifest)
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The data directory was filled from the backup.
    Restored(Manifest),
    /// The data directory already held a restore of this backup: nothing was done.
    AlreadyRestored(Manifest),
}

/// Fills the data directory `to` from the backup in `from` after verifying it. `to` must be
/// missing or empty, or hold an earlier restore of the same backup (then nothing is done).
pub fn restore(from: &Path, to: &Path) -> Result<Restored, BackupError> {
    let manifest = Manifest::read(from)?;
    if !is_empty_or_missing(to)? {
        return match restored_from(to) {
            Some(id) if id == manifest.backup_id => Ok(Restored::AlreadyRestored(manifest)),
            _ => Err(BackupError::NotEmpty(to.to_path_buf())),
        };
    }
    manifest.verify_files(from)?;
    let name = to
        .file_name()
        .ok_or_else(|| BackupError::InvalidDir(format!("{} has no name", to.display())))?;
    let staging = to.with_file_name(format!(
        ".{}.restoring-{}",
        name.to_string_lossy(),
        manifest.backup_id
    ));
    let result = fill(from, &staging, &manifest).and_then(|()| {
        if to.exists() {
            std::fs::remove_dir(to)
                .map_err(|e| BackupError::io(format!("replacing {}", to.display()), e))?;
        }
        std::fs::rename(&staging, to).map_err(|e| {
            BackupError::io(
                format!("moving {} to {}", staging.display(), to.display()),
                e,
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    tracing::info!(
        from = %from.display(),
        data_dir = %to.display(),
        backup_id = %manifest.backup_id,
        sequence = manifest.sequence,
        "restored from backup"
    );
    Ok(Restored::Restored(manifest))
}

/// Copies the checkpoint's files into `staging` (the data directory is the RocksDB
/// directory) and marks it with the backup's id.
fn fill(from: &Path, staging: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    if staging.exists() {
        std::fs::remove_dir_all(staging)
            .map_err(|e| BackupError::io(format!("clearing {}", staging.display()), e))?;
    }
    for file in &manifest.files {
        let inside = file
            .path
            .strip_prefix(&format!("{ROCKSDB_DIR}/"))
            .ok_or_else(|| {
                BackupError::Corrupt(format!("{} is outside {ROCKSDB_DIR}/", file.path))
            })?;
        let target = staging.join(inside);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| BackupError::io(format!("creating {}", parent.display()), e))?;
        }
        let source = from.join(&file.path);
        std::fs::copy(&source, &target).map_err(|e| {
            BackupError::io(
                format!("copying {} to {}", source.display(), target.display()),
                e,
            )
        })?;
    }
    write_json(
        &staging.join(RESTORED_MARKER),
        &serde_json::json!({
            "backup_id": manifest.backup_id,
            "sequence": manifest.sequence,
            "from": from.display().to_string(),
            "restored_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    )
}

/// The backup id a restored data directory remembers, if any.
fn restored_from(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(RESTORED_MARKER)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["backup_id"].as_str().map(String::from)
}

fn is_empty_or_missing(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(BackupError::io(format!("reading {}", dir.display()), e)),
    }
}

/// Writes `value` as JSON to `path` durably: a temporary file, synced, renamed over it.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BackupError> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|e| {
        BackupError::io(
            format!("encoding {}", path.display()),
            std::io::Error::other(e),
        )
    })?;
    let mut file = std::fs::File::create(&temporary)
        .map_err(|e| BackupError::io(format!("creating {}", temporary.display()), e))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| BackupError::io(format!("writing {}", temporary.display()), e))?;
    std::fs::rename(&temporary, path)
        .map_err(|e| BackupError::io(format!("renaming {}", temporary.display()), e))
}

/// Time-ordered and unique: microseconds since the epoch and a random suffix.
fn backup_id() -> String {
    format!(
        "{:x}-{}",
        crate::time::now_us(),
        crate::ids::random_suffix(8)
    )
}
