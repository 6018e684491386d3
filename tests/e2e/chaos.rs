//! `memctl chaos` in CI: the real memd binary killed with SIGKILL under a mixed workload,
//! restarted, and every invariant checked after each restart (a short run; docs/reliability.md
//! records a long one).

use memd_tests::{embedding_files, memctl_binary, memd_binary};

async fn chaos(args: &[&str]) -> serde_json::Value {
    let (model_dir, runtime) = embedding_files();
    let output = tokio::process::Command::new(memctl_binary())
        .args(["--json", "chaos", "--memd"])
        .arg(memd_binary())
        .args(args)
        .env("MEMD_EMBEDDING_MODEL_DIR", model_dir)
        .env("MEMD_ONNXRUNTIME_PATH", runtime)
        .env_remove("MEMD_ENDPOINT")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "memctl chaos {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kill_cycles_keep_every_invariant() {
    let report = chaos(&["--cycles", "5", "--seed", "42"]).await;
    assert_eq!(report["cycles_survived"], 5, "{report:#}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report:#}");
    assert!(report["acknowledged"]["events"].as_u64().unwrap() > 0);
    assert!(report["acknowledged"]["deletes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cycles_without_fsync_lose_nothing_a_process_crash_could() {
    let report = chaos(&["--cycles", "3", "--seed", "7", "--sync-writes", "false"]).await;
    assert_eq!(report["cycles_survived"], 3, "{report:#}");
    assert_eq!(report["sync_writes"], false);
}
