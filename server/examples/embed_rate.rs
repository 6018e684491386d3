//! Embedding throughput of the configured model on this machine, by batch size and threads:
//! the floor under how fast the embedder can follow writes.
//!
//! `cargo run --release -p memd-server --example embed_rate [MODEL_DIR] [ONNXRUNTIME_LIB]`
//! (defaults: `MEMD_EMBEDDING_MODEL_DIR` / `MEMD_ONNXRUNTIME_PATH`, else where
//! `./dev.sh fetch-model` puts them).

use memd_server::embedding::{EmbeddingSettings, Model, ModelSource};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (default_dir, default_runtime) = memd_server::embedding::local_file_paths();
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or(default_dir, PathBuf::from);
    let runtime = args.next().map_or(default_runtime, PathBuf::from);
    let texts: Vec<String> = (0..256)
        .map(|n| {
            format!(
                "Ana booked the kayak tour in Lisbon for order {n} on day {}.",
                n % 365
            )
        })
        .collect();
    let long = "Caroline talked about the support group, her plans to adopt, the painting she made for the charity show, and how her friends helped her move to the new apartment. ".repeat(6);
    for max_length in [128usize, 256] {
        let settings = EmbeddingSettings {
            source: ModelSource::Local {
                dir: dir.clone(),
                pooling: fastembed::Pooling::Mean,
            },
            onnxruntime: Some(runtime.clone()),
            max_length,
            query_threads: 1,
            events: true,
            max_lag: None,
            partition_at: memd_server::retrieval::PARTITION_AT,
        };
        for threads in [1usize, 2] {
            let mut model = Model::load(&settings, threads)?;
            model.embed(&texts[..32])?;
            let started = Instant::now();
            model.embed(&texts)?;
            let short = texts.len() as f64 / started.elapsed().as_secs_f64();
            let longs = vec![long.as_str(); 32];
            let started = Instant::now();
            model.embed(&longs)?;
            let long_rate = longs.len() as f64 / started.elapsed().as_secs_f64();
            println!(
                "max_length {max_length}, {threads} thread(s): {short:.0} short texts/s, {long_rate:.0} long texts/s"
            );
        }
    }
    Ok(())
}
