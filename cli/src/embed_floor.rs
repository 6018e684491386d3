//! The floor for `memctl bench ingest`: the same texts memd embedded, embedded directly
//! through the model (fastembed on ONNX Runtime, no server), for several batch sizes, thread
//! counts and orders, so that memd's cost can be put beside the best the model allows on
//! this machine. Also what the texts cost in tokens, and what padding adds.

use crate::proc_stats;
use memd_server::embedding::{BATCH, EmbeddingSettings, Model};
use serde_json::{Value, json};
use std::time::Instant;

/// One floor setting and what it took.
#[derive(Debug, Clone)]
pub struct FloorRun {
    pub threads: usize,
    /// ONNX Runtime's threads busy-wait between steps (only with more than one).
    pub spin: bool,
    pub batch: usize,
    /// Texts sorted by length first (less padding per batch).
    pub by_length: bool,
    pub texts: usize,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
}

impl FloorRun {
    pub fn cpu_ms_per_text(&self) -> f64 {
        1000.0 * self.cpu_seconds / self.texts as f64
    }

    pub fn wall_ms_per_text(&self) -> f64 {
        1000.0 * self.wall_seconds / self.texts as f64
    }

    pub fn json(&self) -> Value {
        json!({
            "threads": self.threads,
            "spin": self.spin,
            "batch": self.batch,
            "by_length": self.by_length,
            "texts": self.texts,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "cpu_ms_per_text": self.cpu_ms_per_text(),
            "wall_ms_per_text": self.wall_ms_per_text(),
        })
    }
}

/// Token counts of the texts and the padding a batch adds.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub mean: f64,
    pub max: usize,
    /// Tokens fed to the model per real token at memd's batch size, texts in the order given.
    pub padding_in_order: f64,
    /// The same, texts sorted by length.
    pub padding_sorted: f64,
}

impl Tokens {
    pub fn json(&self) -> Value {
        json!({
            "mean": self.mean,
            "max": self.max,
            "padded_per_real_in_order": self.padding_in_order,
            "padded_per_real_sorted": self.padding_sorted,
        })
    }
}

/// Padded tokens per real token when `lengths` go to the model `batch` at a time.
fn padding(lengths: &[usize], batch: usize) -> f64 {
    let real: usize = lengths.iter().sum();
    let padded: usize = lengths
        .chunks(batch)
        .map(|chunk| chunk.len() * chunk.iter().max().copied().unwrap_or(0))
        .sum();
    padded as f64 / real.max(1) as f64
}

/// Token statistics of `texts` (in the order memd met them).
pub fn tokens(settings: &EmbeddingSettings, texts: &[String]) -> anyhow::Result<Tokens> {
    let model = Model::load(settings, 1)?;
    let lengths = texts
        .iter()
        .map(|t| model.tokens(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    Ok(Tokens {
        mean: lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64,
        max: lengths.iter().copied().max().unwrap_or(0),
        padding_in_order: padding(&lengths, BATCH),
        padding_sorted: padding(&sorted, BATCH),
    })
}

/// Every `len / n`-th text, so the sample spans all conversations and both kinds.
pub fn sample(texts: &[String], n: usize) -> Vec<String> {
    if texts.len() <= n {
        return texts.to_vec();
    }
    let step = texts.len() as f64 / n as f64;
    (0..n)
        .map(|i| texts[(i as f64 * step) as usize].clone())
        .collect()
}

/// Embeds `texts` with each thread count (more than one: with and without spinning), batch
/// size and order, through [`Model::embed_batched`] (which keeps the order given); blocking, and alone in the
/// process for the CPU readings to mean anything.
pub fn measure(
    settings: &EmbeddingSettings,
    texts: &[String],
    thread_counts: &[usize],
    batches: &[usize],
) -> anyhow::Result<Vec<FloorRun>> {
    let mut by_length = texts.to_vec();
    by_length.sort_by_key(|t| t.len());
    let mut runs = Vec::new();
    let settings_to_try = thread_counts.iter().flat_map(|&threads| {
        let spins: &[bool] = if threads > 1 {
            &[false, true]
        } else {
            &[false]
        };
        spins.iter().map(move |&spin| (threads, spin))
    });
    for (threads, spin) in settings_to_try {
        let mut model = Model::load_with(settings, threads, spin)?;
        // Warm-up: ONNX Runtime plans and allocates on the first calls.
        model.embed(&texts[..texts.len().min(64)])?;
        for &batch in batches {
            for (sorted, order) in [(false, texts), (true, by_length.as_slice())] {
                let cpu = proc_stats::process_cpu_seconds()?;
                let started = Instant::now();
                model.embed_batched(order, batch)?;
                runs.push(FloorRun {
                    threads,
                    spin,
                    batch,
                    by_length: sorted,
                    texts: texts.len(),
                    wall_seconds: started.elapsed().as_secs_f64(),
                    cpu_seconds: proc_stats::process_cpu_seconds()? - cpu,
                });
            }
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_counts_each_batch_at_its_longest_text() {
        assert_eq!(padding(&[2, 2, 2, 2], 2), 1.0);
        // [1, 3] pads to 6 of 4 real, [3] to 3 of 3: 9 / 7.
        assert!((padding(&[1, 3, 3], 2) - 9.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn samples_spread_over_the_whole_list() {
        let texts: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(sample(&texts, 5), ["0", "2", "4", "6", "8"]);
        assert_eq!(sample(&texts, 50).len(), 10);
    }
}
