//! Backups: taken online while clients write, restored into a new data directory (by the
//! library call memctl and `memd --restore-from` share), holding every write acknowledged
//! before the backup started and none sent after it returned, answering searches as the
//! original did; and refused, with nothing written, when the backup is damaged.

use crate::assert_status;
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use memd_server::backup::{self, BackupError, Restored};
use memd_tests::{
    ADMIN_KEY, TestServer, create_memory, memctl_binary, memd_binary, settled, text_event,
    with_embeddings,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

const WRITERS: usize = 3;
const FACTS: [&str; 4] = [
    "Ann prefers aisle seats on long flights.",
    "Ann's manager approved the Lisbon offsite budget.",
    "The warehouse in Porto ships orders every Tuesday.",
    "Ann is allergic to peanuts.",
];

/// What a few searches answer, compared before and after a restore: records in rank order
/// (the load writes no records, so the records index's statistics are the same in both),
/// events as sets (BM25 counts every event in the index, and the original holds more).
async fn answers(client: &MemdClient, memory_id: &str) -> Vec<Vec<String>> {
    let mut answers = Vec::new();
    for (query, mode) in [
        ("which seat does Ann like", pb::SearchMode::Hybrid),
        ("peanut allergy", pb::SearchMode::Keyword),
        ("who signed off on the trip money", pb::SearchMode::Semantic),
    ] {
        let reply = client
            .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                memory_id: memory_id.into(),
                namespace: "/acme/facts".into(),
                search_criteria: Some(pb::SearchCriteria {
                    search_query: query.into(),
                    mode: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        answers.push(
            reply
                .memory_records
                .into_iter()
                .map(|r| r.memory_record.unwrap().memory_record_id)
                .collect(),
        );
        let events = client
            .search_events(pb::SearchEventsRequest {
                memory_id: memory_id.into(),
                actor_id: "acme/ann".into(),
                query: query.into(),
                mode: mode as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut ids: Vec<String> = events
            .events
            .into_iter()
            .map(|e| e.event.unwrap().event_id)
            .collect();
        ids.sort();
        answers.push(ids);
    }
    assert!(
        answers.iter().all(|ids| !ids.is_empty()),
        "every search finds something: {answers:?}"
    );
    answers
}

async fn seed(client: &MemdClient, memory_id: &str) {
    let records = FACTS
        .iter()
        .map(|text| pb::MemoryRecordInput {
            namespace: "/acme/facts".into(),
            text: (*text).into(),
            ..Default::default()
        })
        .collect();
    let results = client
        .batch_create_memory_records(memory_id, records)
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    for (i, text) in FACTS.iter().enumerate() {
        client
            .create_event(text_event(memory_id, "acme/ann", &format!("s{i}"), text))
            .await
            .unwrap();
    }
}

/// Every event id of the load writers' actors.
async fn load_event_ids(client: &MemdClient, memory_id: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for writer in 0..WRITERS {
        let listing = pb::ListEventsRequest {
            memory_id: memory_id.into(),
            actor_id: format!("load-{writer}"),
            session_id: "s".into(),
            page_size: 100,
            ..Default::default()
        };
        let events: Vec<pb::Event> = client.all_events(listing).try_collect().await.unwrap();
        let count = events.len();
        ids.extend(events.into_iter().map(|e| e.event_id));
        assert!(count > 0, "writer {writer} left no events");
    }
    ids
}

/// Acknowledged event ids by when: before the backup was asked for, while it ran, and sent
/// after it returned.
#[derive(Default)]
struct Acked {
    before: Vec<String>,
    during: Vec<String>,
    after: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_write_load_restores_what_was_acknowledged_before_it() {
    let backups = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|config| {
        with_embeddings(config);
        config.backup_dir = Some(backups.path().to_path_buf());
    })
    .await;
    let admin = server.admin().await;
    let memory_id = create_memory(&admin, "backed-up", None).await.memory_id;
    seed(&admin, &memory_id).await;
    settled(&admin).await;
    let before_answers = answers(&admin, &memory_id).await;

    // 0: before the backup is asked for, 1: while it runs, 2: after it returned.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (client, memory_id) = (admin.clone(), memory_id.clone());
        let (phase, stop, acked) = (phase.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let sent = phase.load(Ordering::SeqCst);
                let text = format!("load {writer} event {i}");
                let event = client
                    .create_event(text_event(
                        &memory_id,
                        &format!("load-{writer}"),
                        "s",
                        &text,
                    ))
                    .await
                    .expect("writes succeed while a backup runs");
                let mut acked = acked.lock().unwrap();
                match (sent, phase.load(Ordering::SeqCst)) {
                    (_, 0) => acked.before.push(event.event_id),
                    (2, _) => acked.after.push(event.event_id),
                    _ => acked.during.push(event.event_id),
                }
                i += 1;
            }
        }));
    }
    while acked.lock().unwrap().before.len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backup_dir = backups.path().join("b1");
    phase.store(1, Ordering::SeqCst);
    let backup = admin
        .create_backup(backup_dir.to_str().unwrap())
        .await
        .unwrap();
    phase.store(2, Ordering::SeqCst);
    while acked.lock().unwrap().after.len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    // The manifest on disk is what the call answered, and it verifies.
    let manifest = backup::verify(&backup_dir).unwrap();
    assert_eq!(manifest.backup_id, backup.backup_id);
    assert_eq!(manifest.sequence, backup.sequence);
    assert_eq!(manifest.files.len() as i64, backup.file_count);
    assert_eq!(manifest.total_bytes() as i64, backup.total_bytes);
    assert!(backup.sequence > 0 && backup.file_count > 0);
    assert_eq!(backup.memd_version, env!("CARGO_PKG_VERSION"));

    let target = tempfile::tempdir().unwrap();
    let restored = backup::restore(&backup_dir, target.path()).unwrap();
    assert!(matches!(restored, Restored::Restored(ref m) if m.backup_id == backup.backup_id));
    let copy = TestServer::start_on(target, with_embeddings).await;
    let client = copy.admin().await;
    let ids = load_event_ids(&client, &memory_id).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    for id in &acked.before {
        assert!(
            ids.contains(id),
            "event {id}, acknowledged before the backup, is missing"
        );
    }
    for id in &acked.after {
        assert!(
            !ids.contains(id),
            "event {id}, sent after the backup returned, is in it"
        );
    }
    let during = acked.during.iter().filter(|id| ids.contains(*id)).count();
    assert_eq!(
        ids.len(),
        acked.before.len() + during,
        "the restored memory holds only acknowledged events"
    );
    // The restored server rebuilds the keyword index, reuses the stored embeddings and
    // answers as the original did.
    settled(&client).await;
    assert_eq!(answers(&client, &memory_id).await, before_answers);
    assert_eq!(client.index_status().await.unwrap().embedded_records, 0);
}

/// Takes a small backup of a server with a few events and returns its directory.
async fn small_backup(server: &TestServer, into: &Path) -> String {
    let admin = server.admin().await;
    let memory_id = create_memory(&admin, "small", None).await.memory_id;
    seed(&admin, &memory_id).await;
    admin.create_backup(into.to_str().unwrap()).await.unwrap();
    memory_id
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The largest table file of a backup.
fn largest_sst(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join(backup::ROCKSDB_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("the backup holds table files")
}

#[tokio::test]
async fn a_damaged_backup_is_refused_and_nothing_is_written() {
    let backups = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| c.backup_dir = Some(backups.path().into())).await;
    let good = backups.path().join("good");
    small_backup(&server, &good).await;
    let restore_into = |name: &str| backups.path().join(name);

    // One flipped byte in a table file.
    let flipped = backups.path().join("flipped");
    copy_dir(&good, &flipped);
    let sst = largest_sst(&flipped);
    let mut bytes = std::fs::read(&sst).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&sst, bytes).unwrap();
    let err = backup::restore(&flipped, &restore_into("from-flipped")).unwrap_err();
    assert!(matches!(err, BackupError::Corrupt(_)), "{err}");
    let name = sst.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.to_string().contains(&name), "{err} names the file");
    assert!(
        !restore_into("from-flipped").exists(),
        "nothing was written"
    );

    // A missing file, an extra file, no manifest, a newer storage format.
    let missing = backups.path().join("missing");
    copy_dir(&good, &missing);
    std::fs::remove_file(largest_sst(&missing)).unwrap();
    let err = backup::verify(&missing).unwrap_err();
    assert!(err.to_string().contains("is missing"), "{err}");

    let extra = backups.path().join("extra");
    copy_dir(&good, &extra);
    std::fs::write(extra.join("rocksdb/999999.sst"), b"not a table").unwrap();
    let err = backup::verify(&extra).unwrap_err();
    assert!(err.to_string().contains("not in the manifest"), "{err}");

    let headless = backups.path().join("headless");
    copy_dir(&good, &headless);
    std::fs::remove_file(headless.join(backup::MANIFEST)).unwrap();
    let err = backup::restore(&headless, &restore_into("from-headless")).unwrap_err();
    assert!(matches!(err, BackupError::NotABackup(_)), "{err}");

    let newer = backups.path().join("newer");
    copy_dir(&good, &newer);
    let manifest_path = newer.join(backup::MANIFEST);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["storage_format_version"] = 99.into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let err = backup::restore(&newer, &restore_into("from-newer")).unwrap_err();
    assert!(matches!(err, BackupError::Incompatible(_)), "{err}");
    assert!(err.to_string().contains("version 99"), "{err}");

    // The binary refuses to start from the damaged backup, saying why.
    let output = tokio::process::Command::new(memd_binary())
        .arg("--restore-from")
        .arg(&flipped)
        .arg("--data-dir")
        .arg(restore_into("memd-from-flipped"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(["--http-listen", "off"])
        .env("MEMD_ADMIN_KEY", ADMIN_KEY)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "memd started from a damaged backup"
    );
    assert!(
        stderr.contains("corrupt") && stderr.contains(&name),
        "{stderr}"
    );
    assert!(!restore_into("memd-from-flipped").exists());
}

#[tokio::test]
async fn backups_and_restores_check_their_directories() {
    let backups = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| c.backup_dir = Some(backups.path().into())).await;
    let admin = server.admin().await;
    let dir = backups.path().join("b");
    let memory_id = small_backup(&server, &dir).await;

    assert_status(admin.create_backup("").await, Code::InvalidArgument, "dir");
    assert_status(
        admin.create_backup("relative/backup").await,
        Code::InvalidArgument,
        "absolute",
    );
    // Only inside the operator's backup_dir: not elsewhere, not out of it through '..', and
    // nowhere when it is unset.
    let outside = tempfile::tempdir().unwrap();
    assert_status(
        admin
            .create_backup(outside.path().join("b").to_str().unwrap())
            .await,
        Code::InvalidArgument,
        "inside backup_dir",
    );
    assert!(!outside.path().join("b").exists());
    let escape = format!("{}/../escaped", backups.path().display());
    assert_status(
        admin.create_backup(escape).await,
        Code::InvalidArgument,
        "'..'",
    );
    assert_status(
        admin.create_backup(backups.path().to_str().unwrap()).await,
        Code::InvalidArgument,
        "inside backup_dir",
    );
    let unconfigured = TestServer::start().await;
    assert_status(
        unconfigured
            .admin()
            .await
            .create_backup(backups.path().join("x").to_str().unwrap())
            .await,
        Code::FailedPrecondition,
        "backup_dir",
    );
    // Into a directory that holds something: refused, and what is there is kept.
    assert_status(
        admin.create_backup(dir.to_str().unwrap()).await,
        Code::FailedPrecondition,
        "not empty",
    );
    assert!(backup::verify(&dir).is_ok());
    let reader = admin
        .create_api_key(
            "reader",
            pb::ApiKeyPolicy {
                memory_ids: vec![memory_id.clone()],
                actor_patterns: vec!["*".into()],
                actions: vec![pb::api_key_policy::Action::Read as i32],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .secret;
    let reader = server.client(Some(&reader)).await;
    assert_status(
        reader
            .create_backup(backups.path().join("r").to_str().unwrap())
            .await,
        Code::PermissionDenied,
        "",
    );

    // A restore needs a new or empty directory; restoring the same backup again is a no-op.
    let occupied = backups.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    assert!(matches!(
        backup::restore(&dir, &occupied),
        Err(BackupError::NotEmpty(_))
    ));
    assert_eq!(
        std::fs::read_to_string(occupied.join("keep.txt")).unwrap(),
        "mine"
    );
    let target = backups.path().join("restored");
    assert!(matches!(
        backup::restore(&dir, &target),
        Ok(Restored::Restored(_))
    ));
    assert!(matches!(
        backup::restore(&dir, &target),
        Ok(Restored::AlreadyRestored(_))
    ));

    // memctl: create through the server, verify and restore here.
    let endpoint = server.endpoint();
    let memctl = async |args: &[&str]| {
        // Not std::process: the server runs on this test's thread.
        let output = tokio::process::Command::new(memctl_binary())
            .args(["--endpoint", &endpoint, "--api-key", ADMIN_KEY, "--json"])
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "memctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let cli_dir = backups.path().join("cli");
    let created = memctl(&["backup", "create", cli_dir.to_str().unwrap()]).await;
    let verified = memctl(&["backup", "verify", cli_dir.to_str().unwrap()]).await;
    assert_eq!(verified["manifest"]["backup_id"], created["backupId"]);
    let cli_target = backups.path().join("cli-restored");
    let restored = memctl(&[
        "backup",
        "restore",
        cli_dir.to_str().unwrap(),
        "--data-dir",
        cli_target.to_str().unwrap(),
    ])
    .await;
    assert_eq!(restored["outcome"], "restored");
    assert!(cli_target.join(backup::RESTORED_MARKER).is_file());
}
