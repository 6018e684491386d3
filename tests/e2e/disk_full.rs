//! Disk full, on a real full filesystem: a small tmpfs holds the data directory and a filler
//! file takes what is left. Writes are then refused with RESOURCE_EXHAUSTED (not a bare
//! internal error), everything acknowledged stays readable, memd keeps answering reads,
//! and once the filler is deleted writes resume without a restart. After a restart every
//! acknowledged event is there exactly once and no refused one is. Extraction and the keyword
//! index, whose own writes failed meanwhile, catch up by themselves.
//!
//! Mounting needs root (CAP_SYS_ADMIN); where `mount` is refused the test says so on stderr
//! and passes without running.

use crate::ops::{free_port, scrape};
use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, extraction_jobs, facts_memory, text_event, text_of};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted on a temp dir for as long as this lives.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size` of tmpfs, or says why it cannot.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "memd-test"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server task that has not quite let go of its files must not leave the
        // mount behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the filesystem has no room left.
fn fill(path: &Path) -> PathBuf {
    let mut file = std::fs::File::create(path).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    while !chunk.is_empty() {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::StorageFull => {
                chunk.truncate(chunk.len() / 2)
            }
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    let _ = file.sync_all();
    path.to_path_buf()
}

/// Every event of actor "ann", session "s", by text.
async fn stored(client: &MemdClient, memory_id: &str) -> HashMap<String, usize> {
    use futures::TryStreamExt;
    let events: Vec<pb::Event> = client
        .all_events(pb::ListEventsRequest {
            memory_id: memory_id.into(),
            actor_id: "ann".into(),
            session_id: "s".into(),
            include_payloads: true,
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    let mut counts = HashMap::new();
    for event in &events {
        *counts.entry(text_of(event).to_owned()).or_default() += 1;
    }
    counts
}

async fn append(client: &MemdClient, memory_id: &str, text: &str) -> Result<(), tonic::Status> {
    client
        .memory()
        .create_event(text_event(memory_id, "ann", "s", text))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    fills_up_and_recovers(false).await;
}

#[tokio::test]
async fn the_same_with_synced_writes() {
    fills_up_and_recovers(true).await;
}

async fn fills_up_and_recovers(sync_writes: bool) {
    // RocksDB resumes once the free space would hold its largest memtable (64 MiB here).
    let tmpfs = match Tmpfs::mount("160m") {
        Ok(mounted) => mounted,
        Err(why) => {
            eprintln!("SKIPPED disk-full test: cannot mount a tmpfs here ({why}); run as root");
            return;
        }
    };
    let port = free_port();
    let data = tempfile::tempdir_in(tmpfs.path()).unwrap();
    let server = TestServer::start_on(data, |config| {
        config.metrics_listen = format!("127.0.0.1:{port}");
        config.sync_writes = sync_writes;
    })
    .await;
    let client = server.admin().await;
    // Extraction after every turn: its jobs and records are writes too.
    let memory = facts_memory(&client, "full").await;
    let padding = "x".repeat(4000);
    let mut acknowledged = vec![];
    for i in 0..20 {
        let text = format!("before {i} {padding}");
        append(&client, &memory, &text).await.unwrap();
        acknowledged.push(text);
    }

    let filler = fill(&tmpfs.path().join("filler"));
    // Whatever RocksDB still had room for (its WAL's preallocated tail) fills first.
    let mut refused = vec![];
    for i in 0..20_000 {
        let text = format!("during {i} {padding}");
        match append(&client, &memory, &text).await {
            Ok(()) => acknowledged.push(text),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("storage is full"),
                    "{:?}",
                    status.message()
                );
                refused.push(text);
                if refused.len() == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused.len(), 3, "the full disk never refused a write");
    eprintln!(
        "sync_writes={sync_writes}: {} appends acknowledged after the disk filled, then refused",
        acknowledged.len() - 20
    );
    assert!(scrape(port).await.contains("memd_storage_full 1"));

    // Reads go on while writes are refused.
    let seen = stored(&client, &memory).await;
    for text in &acknowledged {
        assert_eq!(
            seen.get(text),
            Some(&1),
            "acknowledged and lost: {}",
            &text[..12]
        );
    }
    client
        .search_events(pb::SearchEventsRequest {
            memory_id: memory.clone(),
            actor_id: "ann".into(),
            query: "before".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Space returns: writes resume by themselves (RocksDB checks every five seconds).
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    let recovered = loop {
        let text = format!("after {} {padding}", refused.len());
        match append(&client, &memory, &text).await {
            Ok(()) => {
                acknowledged.push(text);
                break started.elapsed();
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused.push(text);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "writes did not resume within 60 s of space returning"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("writes resumed {recovered:?} after space returned");
    for i in 0..20 {
        let text = format!("later {i} {padding}");
        append(&client, &memory, &text).await.unwrap();
        acknowledged.push(text);
    }
    assert!(scrape(port).await.contains("memd_storage_full 0"));
    // Extraction, whose writes failed meanwhile, finishes every job.
    let started = Instant::now();
    loop {
        let jobs = extraction_jobs(&client, &memory).await;
        if jobs.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} extraction jobs unfinished after space returned, e.g. {:?}",
            jobs.len(),
            jobs[0]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = scrape(port).await;
    let failed = metrics
        .lines()
        .find(|line| line.starts_with(r#"memd_extraction_jobs_total{outcome="failed"}"#));
    assert!(failed.is_none_or(|line| line.ends_with(" 0")), "{failed:?}");
    // The keyword index, whose commits failed meanwhile, catches up by itself.
    let started = Instant::now();
    loop {
        let found = client
            .search_events(pb::SearchEventsRequest {
                memory_id: memory.clone(),
                actor_id: "ann".into(),
                query: "later".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        if !found.events.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the keyword index did not catch up after space returned"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // And all of it survives a restart: acknowledged once, refused never.
    let server = server.restart().await;
    let client = server.admin().await;
    let seen = stored(&client, &memory).await;
    for text in &acknowledged {
        assert_eq!(
            seen.get(text),
            Some(&1),
            "acknowledged and lost: {}",
            &text[..12]
        );
    }
    for text in &refused {
        assert_eq!(seen.get(text), None, "refused but stored: {}", &text[..12]);
    }
    assert_eq!(seen.len(), acknowledged.len());
    drop(server);
}
