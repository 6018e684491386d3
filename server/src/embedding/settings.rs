//! How the `embedding_*` configuration keys (and `vector_partition_at`, `onnxruntime_path`)
//! become [`EmbeddingSettings`], checked.

use super::{EmbeddingSettings, ModelSource};
use crate::config::{Config, ConfigError};

impl Config {
    /// How to load the embedding model; `None` when semantic search is off.
    pub fn embedding_settings(&self) -> Result<Option<EmbeddingSettings>, ConfigError> {
        if self.embedding_model.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        // The default model, installed by `./dev.sh fetch-model`, is used from there rather
        // than downloaded: a hand-started memd works offline like `./dev.sh serve`.
        let fetched = (self.embedding_model == Config::default().embedding_model)
            .then(|| super::local_file_paths().0)
            .filter(|dir| dir.join("model.onnx").is_file());
        let source = match self.embedding_model_dir.as_ref().or(fetched.as_ref()) {
            Some(dir) => ModelSource::Local {
                dir: dir.clone(),
                pooling: match self.embedding_pooling.as_str() {
                    "mean" => fastembed::Pooling::Mean,
                    "cls" => fastembed::Pooling::Cls,
                    other => {
                        return Err(ConfigError(format!(
                            "embedding_pooling must be mean or cls, not {other:?}"
                        )));
                    }
                },
            },
            None => ModelSource::Hub {
                model: EmbeddingSettings::catalogue_model(&self.embedding_model).ok_or_else(
                    || {
                        ConfigError(format!(
                            "embedding_model {:?} is not in fastembed's catalogue; use a catalogue repository such as Qdrant/all-MiniLM-L6-v2-onnx (or its fastembed name, AllMiniLML6V2), set embedding_model_dir to a local model, or \"off\"",
                            self.embedding_model
                        ))
                    },
                )?,
                cache_dir: self
                    .embedding_cache_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("models")),
            },
        };
        if !(16..=8192).contains(&self.embedding_max_length) {
            return Err(ConfigError("embedding_max_length must be 16-8192".into()));
        }
        if self.embedding_query_threads > 64 {
            return Err(ConfigError("embedding_query_threads must be 0-64".into()));
        }
        if self.vector_partition_at < 100 {
            return Err(ConfigError(
                "vector_partition_at must be at least 100".into(),
            ));
        }
        Ok(Some(EmbeddingSettings {
            source,
            onnxruntime: self.onnxruntime_path.clone(),
            max_length: self.embedding_max_length,
            query_threads: self.embedding_query_threads,
            events: self.embedding_events,
            max_lag: (self.embedding_max_lag_seconds > 0)
                .then(|| std::time::Duration::from_secs(self.embedding_max_lag_seconds)),
            partition_at: self.vector_partition_at,
        }))
    }
}
