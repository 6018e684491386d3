//! Sentence embeddings for semantic search: fastembed on ONNX Runtime.
//!
//! The model is either one of fastembed's catalogue, downloaded from the Hugging Face hub into
//! a cache directory on first use, or a local directory (`model.onnx` with its tokenizer
//! files) for offline and air-gapped installs. ONNX Runtime is loaded at run time from a
//! shared library (`onnxruntime_path`, `ORT_DYLIB_PATH`, or the library path): it is checked
//! up front, so a missing runtime is a clear start-up error instead of a panic in a search.

mod lookup_first;
mod pool;
mod settings;
mod shared;

pub use pool::QueryEmbedder;
pub use shared::SharedModel;

use crate::error::{Result, ServiceError};
use fastembed::{
    EmbeddingModel, InitOptionsUserDefined, Pooling, TextEmbedding, TextInitOptions,
    TokenizerFiles, UserDefinedEmbeddingModel,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A fastembed catalogue model (e.g. `Qdrant/all-MiniLM-L6-v2-onnx`), fetched
    /// from the hub into `cache_dir` on first use.
    Hub {
        model: EmbeddingModel,
        cache_dir: PathBuf,
    },
    /// `model.onnx`, `tokenizer.json`, `config.json`, `special_tokens_map.json` and
    /// `tokenizer_config.json` in a directory.
    Local { dir: PathBuf, pooling: Pooling },
}

/// How to load the embedding model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSettings {
    pub source: ModelSource,
    /// The ONNX Runtime shared library (`None`: `ORT_DYLIB_PATH`, then the library path).
    pub onnxruntime: Option<PathBuf>,
    /// Tokens per text; longer texts are truncated.
    pub max_length: usize,
    /// Threads answering query embeddings, each with its own copy of the model; 0: queries
    /// share the documents' copy.
    pub query_threads: usize,
    /// Embed raw events too (semantic SearchEvents), not only records.
    pub events: bool,
    /// Events waiting longer than this are skipped (`embedding_max_lag_seconds`).
    pub max_lag: Option<std::time::Duration>,
    /// Vectors per memory from which searches are partitioned.
    pub partition_at: usize,
}

impl EmbeddingSettings {
    /// Looks a catalogue model up by its hub repository (`Qdrant/all-MiniLM-L6-v2-onnx`)
    /// or its fastembed name (`AllMiniLML6V2`), case-insensitively.
    pub fn catalogue_model(name: &str) -> Option<EmbeddingModel> {
        if let Ok(model) = name.parse::<EmbeddingModel>() {
            return Some(model);
        }
        TextEmbedding::list_supported_models()
            .into_iter()
            .find(|info| info.model_code.eq_ignore_ascii_case(name))
            .map(|info| info.model)
    }
}

/// The local model directory and ONNX Runtime library for offline use: the paths in
/// `MEMD_EMBEDDING_MODEL_DIR` and `MEMD_ONNXRUNTIME_PATH` where set, else where
/// `./dev.sh fetch-model` installs them (`~/.cache/memd`). `None` when either is missing.
pub fn local_files() -> Option<(PathBuf, PathBuf)> {
    let (model_dir, runtime) = local_file_paths();
    (model_dir.join("model.onnx").is_file() && runtime.is_file()).then_some((model_dir, runtime))
}

/// The paths [`local_files`] looks at, whether or not they exist.
pub fn local_file_paths() -> (PathBuf, PathBuf) {
    let cache = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/memd"))
        .unwrap_or_default();
    let pick = |env: &str, fallback: PathBuf| {
        std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map_or(fallback, PathBuf::from)
    };
    (
        pick(
            "MEMD_EMBEDDING_MODEL_DIR",
            cache.join("models/all-minilm-l6-v2-int8"),
        ),
        pick(
            "MEMD_ONNXRUNTIME_PATH",
            cache.join("onnxruntime/libonnxruntime.so.1.31.1"),
        ),
    )
}

/// The ONNX Runtime environment, loaded once per process.
static RUNTIME: OnceLock<std::result::Result<ort::environment::Environment, String>> =
    OnceLock::new();

fn load_runtime(path: Option<&Path>) -> Result<ort::environment::Environment> {
    let loaded = RUNTIME.get_or_init(|| {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => match std::env::var_os("ORT_DYLIB_PATH") {
                Some(path) if !path.is_empty() => PathBuf::from(path),
                // Where `./dev.sh fetch-model` installs it, so a hand-started memd finds it.
                _ => Some(local_file_paths().1)
                    .filter(|fetched| fetched.is_file())
                    .unwrap_or_else(|| PathBuf::from("libonnxruntime.so")),
            },
        };
        let builder = ort::init_from(&path).map_err(|err| {
            format!(
                "ONNX Runtime could not be loaded from {} ({err}). Set onnxruntime_path (MEMD_ONNXRUNTIME_PATH) to libonnxruntime.so: `./dev.sh fetch-model` installs one from PyPI into ~/.cache/memd/onnxruntime; or set embedding_model = \"off\" to run without semantic search",
                path.display()
            )
        })?;
        builder
            .with_name("memd")
            .build()
            .map_err(|err| format!("starting ONNX Runtime: {err}"))
    });
    loaded
        .as_ref()
        .cloned()
        .map_err(|err| ServiceError::Unavailable(err.clone()))
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|err| {
        ServiceError::Unavailable(format!(
            "embedding model file {}: {err} (embedding_model_dir must hold model.onnx, tokenizer.json, config.json, special_tokens_map.json and tokenizer_config.json; `./dev.sh fetch-model` installs all-MiniLM-L6-v2)",
            path.display()
        ))
    })
}

/// The model with its quantized embedding tables kept int8 in memory (`lookup_first`).
fn compact(model: Vec<u8>) -> Vec<u8> {
    match lookup_first::rewrite(&model) {
        Some(rewritten) => {
            tracing::debug!(
                "embedding model: quantized token tables looked up before dequantizing"
            );
            rewritten
        }
        None => model,
    }
}

fn model_error(err: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("embedding model: {err}"))
}

/// One loaded copy of the model. Embedding needs `&mut`: each thread owns its own.
pub struct Model {
    inner: TextEmbedding,
    dims: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("dims", &self.dims).finish()
    }
}

/// Texts per model call. With texts sorted by length, 8 cost the least CPU per text on
/// conversation turns and records, with one thread or two (`memctl bench ingest`: 7.0 ms
/// against 7.8 ms at 32 and 12.4 ms at 128); larger batches only pad more.
pub const BATCH: usize = 8;

/// ONNX Runtime's session setting for busy-waiting intra-op threads.
const ALLOW_SPINNING: &str = "session.intra_op.allow_spinning";

impl Model {
    /// Loads the model with `threads` ONNX Runtime threads, which sleep between calls.
    pub fn load(settings: &EmbeddingSettings, threads: usize) -> Result<Self> {
        Self::load_with(settings, threads, false)
    }

    /// Loads the model with `threads` ONNX Runtime threads; with `spin` they busy-wait for
    /// work between the steps of a call (ONNX Runtime's default, which `memctl bench
    /// ingest` compares).
    pub fn load_with(settings: &EmbeddingSettings, threads: usize, spin: bool) -> Result<Self> {
        Self::load_inner(settings, threads, spin, true)
    }

    /// The local model exactly as its file has it (to compare with [`compact`]'s rewrite).
    #[cfg(test)]
    fn load_unmodified(settings: &EmbeddingSettings) -> Result<Self> {
        Self::load_inner(settings, 1, false, false)
    }

    fn load_inner(
        settings: &EmbeddingSettings,
        threads: usize,
        spin: bool,
        compacted: bool,
    ) -> Result<Self> {
        let environment = load_runtime(settings.onnxruntime.as_deref())?;
        let threads = threads.max(1);
        let spinning = if spin { "1" } else { "0" };
        let inner = match &settings.source {
            ModelSource::Hub { model, cache_dir } => TextEmbedding::try_new(
                TextInitOptions::new(model.clone())
                    .with_environment(environment)
                    .with_cache_dir(cache_dir.clone())
                    .with_max_length(settings.max_length)
                    .with_intra_threads(threads)
                    .with_session_config(ALLOW_SPINNING, spinning)
                    .with_show_download_progress(false),
            )
            .map_err(|err| {
                ServiceError::Unavailable(format!(
                    "embedding model {model:?} could not be fetched or loaded ({err}); offline, point embedding_model_dir at local files (`./dev.sh fetch-model`)"
                ))
            })?,
            ModelSource::Local { dir, pooling } => {
                let onnx = read(dir, "model.onnx")?;
                let model = UserDefinedEmbeddingModel::new(
                    if compacted { compact(onnx) } else { onnx },
                    TokenizerFiles {
                        tokenizer_file: read(dir, "tokenizer.json")?,
                        config_file: read(dir, "config.json")?,
                        special_tokens_map_file: read(dir, "special_tokens_map.json")?,
                        tokenizer_config_file: read(dir, "tokenizer_config.json")?,
                    },
                )
                .with_pooling(pooling.clone());
                TextEmbedding::try_new_from_user_defined(
                    model,
                    InitOptionsUserDefined::new()
                        .with_environment(environment)
                        .with_max_length(settings.max_length)
                        .with_intra_threads(threads)
                        .with_session_config(ALLOW_SPINNING, spinning),
                )
                .map_err(|err| {
                    ServiceError::Unavailable(format!(
                        "embedding model in {}: {err}",
                        dir.display()
                    ))
                })?
            }
        };
        let mut model = Self { inner, dims: 0 };
        model.dims = model
            .embed(&["dimension probe"])?
            .first()
            .map_or(0, Vec::len);
        if model.dims == 0 {
            return Err(model_error("the model returned empty vectors"));
        }
        Ok(model)
    }

    /// Vector length.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The tokens the model sees of `text` (special tokens included, truncated at
    /// `max_length`), before a batch pads it to its longest text.
    pub fn tokens(&self, text: &str) -> Result<usize> {
        self.inner
            .tokenizer
            .encode(text, true)
            .map(|encoding| encoding.len())
            .map_err(model_error)
    }

    /// Unit-length vectors for `texts`, in order.
    pub fn embed<S: AsRef<str> + Send + Sync>(&mut self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        by_length(&texts, |batch| self.embed_batched(batch, BATCH))
    }

    /// Unit-length vectors for `texts`, in order, `batch` texts per model call in the order
    /// given (benchmarks compare sizes and orders).
    pub fn embed_batched<S: AsRef<str> + Send + Sync>(
        &mut self,
        texts: &[S],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            // ONNX Runtime rejects an empty batch.
            return Ok(Vec::new());
        }
        let mut vectors = self
            .inner
            .embed(texts, Some(batch.max(1)))
            .map_err(model_error)?;
        for vector in &mut vectors {
            normalize(vector);
        }
        Ok(vectors)
    }
}

/// Embeds `texts` through `embed_batch`, [`BATCH`] at a time, shortest first, and returns the
/// vectors in the order of `texts`. A batch is padded to its longest text: embedding texts of
/// like length together spares most of that work (on LoCoMo turns padding went from 1.9x the
/// real tokens to 1.01x; docs/benchmarks.md).
fn by_length(
    texts: &[&str],
    mut embed_batch: impl FnMut(&[&str]) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut vectors = vec![Vec::new(); texts.len()];
    for chunk in order.chunks(BATCH) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let embedded = embed_batch(&batch)?;
        if embedded.len() != chunk.len() {
            return Err(model_error("the model skipped a text"));
        }
        for (&i, vector) in chunk.iter().zip(embedded) {
            vectors[i] = vector;
        }
    }
    Ok(vectors)
}

/// Scales `vector` to unit length (cosine similarity becomes a dot product).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// What identifies the stored vectors: another model, truncation length or choice of what is
/// embedded means they are recomputed.
pub fn fingerprint(settings: &EmbeddingSettings) -> Result<String> {
    let scope = if settings.events { "" } else { ":records-only" };
    Ok(match &settings.source {
        ModelSource::Hub { model, .. } => {
            format!("hub:{model:?}:{}{scope}", settings.max_length)
        }
        ModelSource::Local { dir, pooling } => {
            let digest = Sha256::digest(read(dir, "model.onnx")?);
            format!(
                "local:{}:{pooling:?}:{}{scope}",
                hex::encode(&digest[..8]),
                settings.max_length
            )
        }
    })
}

/// The loaded embedding setup shared by the server: settings, vector length, the model's
/// fingerprint, the copy that embeds documents and the query pool.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub settings: Arc<EmbeddingSettings>,
    pub dims: usize,
    pub fingerprint: String,
    /// Embeds records and events (and queries, without query threads of their own).
    pub documents: Arc<SharedModel>,
    pub queries: QueryEmbedder,
}

impl Embeddings {
    /// Loads the model (failing with what to do when it cannot be) with one ONNX Runtime
    /// thread per core at `nice` for documents, and starts the query pool.
    pub fn start(settings: EmbeddingSettings, nice: i32) -> Result<Self> {
        let fingerprint = fingerprint(&settings)?;
        let settings = Arc::new(settings);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let documents = SharedModel::load(&settings, cores, nice)?;
        let queries = QueryEmbedder::start(settings.clone(), &documents)?;
        Ok(Self {
            dims: documents.dims(),
            settings,
            fingerprint,
            documents,
            queries,
        })
    }
}
