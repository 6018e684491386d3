//! `memctl bench ann`: the vector search alone, at sizes the model cannot embed within a
//! benchmark, on synthetic unit vectors: clustered (sentence embeddings cluster by topic) and
//! uniformly random (no structure: the worst case for partitions). Each search is compared in
//! the same run with the flat scan (partitions off) and with an exact scan of every int8 code,
//! which also gives the recall of both.

use crate::Globals;
use crate::bench::Stats;
use crate::bench_retrieve::{rss_mb, threaded};
use clap::{Args, ValueEnum};
use memd_server::retrieval::{Quantized, VectorEntry, VectorFilter, VectorIndex};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct AnnArgs {
    /// Vector counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    vectors: Vec<usize>,
    /// Dimensions (all-MiniLM-L6-v2: 384).
    #[arg(long, default_value_t = 384)]
    dims: usize,
    /// Synthetic data sets.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "clustered,random"
    )]
    data: Vec<Data>,
    /// Seconds measured per concurrency level.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Instead of synthetic vectors: the record vectors a stopped server stored in this data
    /// directory (its largest memory), e.g. one kept by `memctl bench retrieve --keep-data`.
    #[arg(long, conflicts_with_all = ["vectors", "data"])]
    stored: Option<std::path::PathBuf>,
    /// Candidates rescored with the int8 codes per search (the server's: 4000): the
    /// trade-off between recall and time.
    #[arg(long, default_value_t = memd_server::retrieval::CANDIDATES)]
    candidates: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Data {
    /// One topic centre per 500 vectors, each vector a centre plus as much noise (cosine to
    /// its centre ~0.7).
    Clustered,
    /// Uniform on the sphere.
    Random,
    /// Stored by a server (`--stored`).
    Stored,
}

/// A reproducible pseudo-random unit vector.
fn random_unit(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    memd_server::embedding::normalize(&mut v);
    v
}

/// `a + weight * b`, normalised.
fn mix(a: &[f32], b: &[f32], weight: f32) -> Vec<f32> {
    let mut v: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + weight * y).collect();
    memd_server::embedding::normalize(&mut v);
    v
}

fn vector(data: Data, n: usize, count: usize, dims: usize) -> Vec<f32> {
    match data {
        Data::Random | Data::Stored => random_unit(n as u64, dims),
        Data::Clustered => {
            let topics = (count / 500).max(1);
            let centre = random_unit(u64::MAX / 2 + (n % topics) as u64, dims);
            mix(&centre, &random_unit(n as u64, dims), 1.0)
        }
    }
}

/// The same vectors in a partitioned index (what the server runs) and a flat one, and one
/// vector in a thousand kept to make queries from.
type Built = (Arc<VectorIndex>, Arc<VectorIndex>, Vec<Vec<f32>>);

fn build(
    entries: impl Iterator<Item = VectorEntry>,
    count: usize,
    dims: usize,
    candidates: usize,
) -> Built {
    let entries: Vec<VectorEntry> = entries.collect();
    let timed = |index: VectorIndex| {
        let started = std::time::Instant::now();
        for entry in &entries {
            index.upsert("bench", entry);
        }
        (Arc::new(index), started.elapsed().as_secs_f64())
    };
    let (searched, searched_s) = timed(VectorIndex::new(dims).rescoring(candidates));
    let (flat, flat_s) = timed(
        VectorIndex::new(dims)
            .partitioned_from(usize::MAX)
            .rescoring(candidates),
    );
    eprintln!(
        "{count} vectors inserted one by one in {searched_s:.1} s (partitions included), {flat_s:.1} s flat"
    );
    let kept = entries
        .iter()
        .step_by((count / 1000).max(1))
        .map(|entry| {
            let code = &entry.code;
            let mut v: Vec<f32> = code
                .codes
                .iter()
                .map(|c| f32::from(*c) * code.scale)
                .collect();
            memd_server::embedding::normalize(&mut v);
            v
        })
        .collect();
    (searched, flat, kept)
}

fn synthetic(data: Data, count: usize, dims: usize, candidates: usize) -> Built {
    let entries = (0..count).map(|n| VectorEntry {
        key: n.to_le_bytes().to_vec(),
        tags: Default::default(),
        time: 0,
        code: Quantized::new(&vector(data, n, count, dims)),
    });
    build(entries, count, dims, candidates)
}

/// `memctl bench retrieve`'s queries embedded with the local model (the queries asked of the
/// records a kept data directory holds), or `None` without a local model.
fn bench_queries() -> anyhow::Result<Option<Vec<Vec<f32>>>> {
    let mut config = memd_server::config::Config::default();
    crate::bench::local_embeddings(&mut config);
    if config.embedding_model_dir.is_none() {
        eprintln!("no local model: queries are stored vectors plus noise");
        return Ok(None);
    }
    let settings = config
        .embedding_settings()?
        .ok_or_else(|| anyhow::anyhow!("embedding is off"))?;
    let mut model = memd_server::embedding::Model::load(&settings, 1)?;
    let texts: Vec<String> = (0..200).map(crate::bench_retrieve::query).collect();
    eprintln!("queries: memctl bench retrieve's, embedded with the local model");
    Ok(Some(model.embed(&texts)?))
}

/// The record vectors of the largest memory in a stopped server's data directory.
fn stored(dir: &std::path::Path, candidates: usize) -> anyhow::Result<(Built, usize)> {
    let entries = crate::bench_retrieve::stored_record_vectors(dir)?
        .into_values()
        .max_by_key(Vec::len)
        .ok_or_else(|| anyhow::anyhow!("no record vectors in {}", dir.display()))?;
    let (count, dims) = (entries.len(), entries[0].code.codes.len());
    Ok((build(entries.into_iter(), count, dims, candidates), count))
}

/// How much of the exact top 10 a search finds, two ways.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recall {
    /// Share of the exact top 10's vectors found.
    pub ids: f64,
    /// Share of the top 10 found that score at least as well as the exact 10th: vectors tied
    /// with the exact top 10 count (templated records embed to near-identical vectors, and
    /// which of the tied ones the exact scan lists is arbitrary).
    pub scores: f64,
}

impl std::fmt::Display for Recall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} / {:.3}", self.ids, self.scores)
    }
}

/// The recall of `index` against an exact scan of `exact` over the first 50 queries.
pub(crate) fn recall(
    index: &VectorIndex,
    exact: &VectorIndex,
    memory_id: &str,
    queries: &[Vec<f32>],
) -> Recall {
    // Scores of the same int8 codes through different loops may differ in the last bits.
    const TIE: f32 = 1e-5;
    let (mut by_id, mut by_score, mut wanted) = (0usize, 0usize, 0usize);
    for query in queries.iter().take(50) {
        let truth = exact.exact_search(memory_id, query, 10);
        let hits = index.search(memory_id, query, &VectorFilter::default(), 10);
        let tenth = truth.last().map_or(f32::INFINITY, |h| h.score);
        by_id += hits
            .iter()
            .filter(|h| truth.iter().any(|e| e.key == h.key))
            .count();
        by_score += hits
            .iter()
            .take(truth.len())
            .filter(|h| h.score >= tenth - TIE)
            .count();
        wanted += truth.len();
    }
    let share = |n: usize| n as f64 / wanted.max(1) as f64;
    Recall {
        ids: share(by_id),
        scores: share(by_score),
    }
}

fn measure(
    index: Arc<VectorIndex>,
    queries: Arc<Vec<Vec<f32>>>,
    concurrency: usize,
    seconds: Duration,
    exact: bool,
) -> anyhow::Result<Stats> {
    threaded(concurrency, seconds, move |n| {
        let query = &queries[n % queries.len()];
        let hits = if exact {
            index.exact_search("bench", query, 10)
        } else {
            index.search("bench", query, &VectorFilter::default(), 10)
        };
        anyhow::ensure!(hits.len() == 10, "short result");
        Ok(())
    })
}

struct Row {
    count: usize,
    data: Data,
    concurrency: usize,
    search: Stats,
    flat: Stats,
    exact: Stats,
    recall: Recall,
    flat_recall: Recall,
    rss: f64,
}

pub async fn run(ctx: &Globals, args: AnnArgs) -> anyhow::Result<()> {
    let seconds = Duration::from_secs_f64(args.seconds);
    let mut rows = Vec::new();
    let sets: Vec<(usize, Data)> = match &args.stored {
        Some(_) => vec![(0, Data::Stored)],
        None => args
            .vectors
            .iter()
            .flat_map(|count| args.data.iter().map(move |data| (*count, *data)))
            .collect(),
    };
    for (count, data) in sets {
        {
            let (dims, candidates) = (args.dims, args.candidates);
            let dir = args.stored.clone();
            let rows_here = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Row>> {
                let ((index, flat, kept), count) = match &dir {
                    Some(dir) => stored(dir, candidates)?,
                    None => (synthetic(data, count, dims, candidates), count),
                };
                let dims = kept[0].len();
                // Queries near stored vectors, as real queries are near their answers.
                let embedded = match &dir {
                    Some(_) => bench_queries()?,
                    None => None,
                };
                let queries: Arc<Vec<Vec<f32>>> = Arc::new(embedded.unwrap_or_else(|| {
                    (0..200u64)
                        .map(|q| {
                            let base = &kept[(q as usize * 97) % kept.len()];
                            mix(base, &random_unit(1_000_000_007 + q, dims), 0.8)
                        })
                        .collect()
                }));
                let recall_searched = recall(&index, &flat, "bench", &queries);
                let flat_recall = recall(&flat, &flat, "bench", &queries);
                let mut rows = Vec::new();
                for concurrency in [1usize, 16] {
                    let search =
                        measure(index.clone(), queries.clone(), concurrency, seconds, false)?;
                    let flat_stats =
                        measure(flat.clone(), queries.clone(), concurrency, seconds, false)?;
                    let exact = measure(flat.clone(), queries.clone(), concurrency, seconds, true)?;
                    rows.push(Row {
                        count,
                        data,
                        concurrency,
                        search,
                        flat: flat_stats,
                        exact,
                        recall: recall_searched,
                        flat_recall,
                        rss: rss_mb(),
                    });
                }
                Ok(rows)
            })
            .await??;
            rows.extend(rows_here);
        }
    }
    let data_name = |d: Data| {
        d.to_possible_value()
            .map_or(String::new(), |v| v.get_name().to_string())
    };
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "vectors": r.count,
                    "data": data_name(r.data),
                    "concurrency": r.concurrency,
                    "search": r.search.json(),
                    "flat_scan": r.flat.json(),
                    "exact_int8_scan": r.exact.json(),
                    "recall_at_10_vs_exact": r.recall.ids,
                    "score_recall_at_10_vs_exact": r.recall.scores,
                    "flat_recall_at_10_vs_exact": r.flat_recall.ids,
                    "flat_score_recall_at_10_vs_exact": r.flat_recall.scores,
                    "rss_mb": r.rss,
                })
            })
            .collect();
        crate::output::print_json(&serde_json::Value::Array(out));
        return Ok(());
    }
    crate::output::table(
        &[
            "VECTORS",
            "DATA",
            "CONC",
            "QPS",
            "P50/P99 µs",
            "FLAT P50/P99 µs",
            "EXACT P50/P99 µs",
            "RECALL@10 IDS / SCORES",
            "FLAT RECALL",
            "RSS MB",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.count.to_string(),
                    data_name(r.data),
                    r.concurrency.to_string(),
                    format!("{:.0}", r.search.per_second),
                    format!("{:.0} / {:.0}", r.search.p50_us, r.search.p99_us),
                    format!("{:.0} / {:.0}", r.flat.p50_us, r.flat.p99_us),
                    format!("{:.0} / {:.0}", r.exact.p50_us, r.exact.p99_us),
                    r.recall.to_string(),
                    r.flat_recall.to_string(),
                    format!("{:.0}", r.rss),
                ]
            })
            .collect(),
    );
    println!(
        "top-10 in one memory: the search the server runs (flat below {} vectors, partitioned lists above), the flat sign-bit scan, both with {} candidates rescored, and an exact scan of every int8 code; recall of the first two against the third (ids: its vectors found; scores: as good as its 10th, ties included)",
        memd_server::retrieval::PARTITION_AT,
        args.candidates
    );
    Ok(())
}
