//! The manifest a backup carries (`memd-backup.json`): what wrote it, the RocksDB sequence
//! number it stops at, and every file with its size and SHA-256, so that a restore can
//! refuse a backup that was truncated, altered or written by a newer memd.

use super::BackupError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "memd-backup.json";
/// The subdirectory holding the RocksDB checkpoint.
pub const ROCKSDB_DIR: &str = "rocksdb";
/// What `format` says in every memd backup manifest.
const FORMAT: &str = "memd-backup/1";

/// One file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path relative to the backup directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the contents.
    pub sha256: String,
}

/// A backup's description, written last: a directory without it is not a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `memd-backup/1`.
    pub format: String,
    /// Unique per backup; a restored data directory remembers it.
    pub backup_id: String,
    /// The memd version that wrote it.
    pub memd_version: String,
    /// [`crate::store::FORMAT_VERSION`] of the store it was taken from.
    pub storage_format_version: u32,
    /// The RocksDB sequence number of the last write it holds: every write acknowledged
    /// before the backup started is at or below it, none after it.
    pub sequence: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub files: Vec<BackupFile>,
}

impl Manifest {
    pub(super) fn new(backup_id: String, sequence: u64, files: Vec<BackupFile>) -> Self {
        Self {
            format: FORMAT.into(),
            backup_id,
            memd_version: env!("CARGO_PKG_VERSION").into(),
            storage_format_version: crate::store::FORMAT_VERSION,
            sequence,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            files,
        }
    }

    /// Sum of the files' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Reads `dir`'s manifest and checks that this memd can restore it (files not checked:
    /// see [`Manifest::verify_files`]).
    pub fn read(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BackupError::NotABackup(dir.to_path_buf()),
            _ => BackupError::io(format!("reading {}", path.display()), source),
        })?;
        let manifest: Self = serde_json::from_str(&text)
            .map_err(|err| BackupError::Corrupt(format!("{}: {err}", path.display())))?;
        if manifest.format != FORMAT {
            return Err(BackupError::Incompatible(format!(
                "{} has format {:?}; this memd reads {FORMAT:?}",
                path.display(),
                manifest.format
            )));
        }
        if manifest.storage_format_version > crate::store::FORMAT_VERSION {
            return Err(BackupError::Incompatible(format!(
                "the backup's storage format is version {} (memd {}); this memd {} reads up to version {}",
                manifest.storage_format_version,
                manifest.memd_version,
                env!("CARGO_PKG_VERSION"),
                crate::store::FORMAT_VERSION
            )));
        }
        for file in &manifest.files {
            if relative(&file.path).is_none() {
                return Err(BackupError::Corrupt(format!(
                    "{} names a file outside the backup: {:?}",
                    path.display(),
                    file.path
                )));
            }
        }
        Ok(manifest)
    }

    /// Checks that every listed file is in `dir` with its size and checksum, and that the
    /// checkpoint holds no file the manifest does not list.
    pub fn verify_files(&self, dir: &Path) -> Result<(), BackupError> {
        for file in &self.files {
            let path = dir.join(relative(&file.path).unwrap_or_default());
            let (bytes, sha256) = hash_file(&path)?;
            if bytes != file.bytes || sha256 != file.sha256 {
                return Err(BackupError::Corrupt(format!(
                    "{} does not match the manifest ({bytes} bytes, sha256 {sha256}; expected {} bytes, sha256 {})",
                    path.display(),
                    file.bytes,
                    file.sha256
                )));
            }
        }
        let listed: std::collections::HashSet<&str> =
            self.files.iter().map(|f| f.path.as_str()).collect();
        for found in list_files(dir, ROCKSDB_DIR)? {
            if !listed.contains(found.path.as_str()) {
                return Err(BackupError::Corrupt(format!(
                    "{} is not in the manifest",
                    dir.join(&found.path).display()
                )));
            }
        }
        Ok(())
    }
}

/// `path` as a relative path that stays inside the backup (no `..`, not absolute).
fn relative(path: &str) -> Option<PathBuf> {
    let relative = PathBuf::from(path);
    relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then_some(relative)
}

/// The regular files under `dir/sub`, sizes and checksums included, sorted by path.
pub(super) fn list_files(dir: &Path, sub: &str) -> Result<Vec<BackupFile>, BackupError> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::from(sub)];
    while let Some(relative) = pending.pop() {
        let full = dir.join(&relative);
        let entries = std::fs::read_dir(&full)
            .map_err(|e| BackupError::io(format!("listing {}", full.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| BackupError::io(format!("listing {}", full.display()), e))?;
            let kind = entry
                .file_type()
                .map_err(|e| BackupError::io(format!("reading {}", entry.path().display()), e))?;
            let name = relative.join(entry.file_name());
            if kind.is_dir() {
                pending.push(name);
            } else {
                let (bytes, sha256) = hash_file(&dir.join(&name))?;
                let path = name
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(BackupFile {
                    path,
                    bytes,
                    sha256,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Size and SHA-256 of a file.
fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = std::fs::File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => {
            BackupError::Corrupt(format!("{} is missing", path.display()))
        }
        _ => BackupError::io(format!("opening {}", path.display()), source),
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| BackupError::io(format!("reading {}", path.display()), e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_backup_are_refused() {
        assert!(relative("rocksdb/000012.sst").is_some());
        assert!(relative("../etc/passwd").is_none());
        assert!(relative("/etc/passwd").is_none());
        assert!(relative("rocksdb/../../x").is_none());
    }
}
