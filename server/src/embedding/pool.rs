//! Query embeddings off the async runtime: a few threads, each with its own copy of the
//! model, take requests from one bounded queue and embed whatever has queued up as one batch.

use super::{BATCH, EmbeddingSettings, Model};
use crate::error::{Result, ServiceError};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Requests waiting at most; beyond that callers get RESOURCE_EXHAUSTED instead of a queue
/// that grows without bound.
const QUEUE: usize = 256;

struct Request {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// Handle to the query embedding threads.
#[derive(Clone)]
pub struct QueryEmbedder {
    queue: SyncSender<Request>,
    dims: usize,
}

impl std::fmt::Debug for QueryEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEmbedder")
            .field("dims", &self.dims)
            .finish()
    }
}

impl QueryEmbedder {
    /// Loads `settings.query_threads` copies of the model (one ONNX Runtime thread each: a
    /// query is short, and several threads serve several queries at once).
    pub fn start(settings: Arc<EmbeddingSettings>) -> Result<Self> {
        let (queue, requests) = std::sync::mpsc::sync_channel::<Request>(QUEUE);
        let requests = Arc::new(Mutex::new(requests));
        let mut dims = 0;
        for i in 0..settings.query_threads.max(1) {
            let model = Model::load(&settings, 1)?;
            dims = model.dims();
            let requests = requests.clone();
            std::thread::Builder::new()
                .name(format!("memd-embed-{i}"))
                .spawn(move || serve(model, &requests))
                .map_err(|err| ServiceError::Internal(format!("starting an embedder: {err}")))?;
        }
        Ok(Self { queue, dims })
    }

    /// Vector length.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The unit-length embedding of one query.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            text: text.to_string(),
            reply,
        };
        match self.queue.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ServiceError::ResourceExhausted(
                    "too many queries are waiting for their embedding; retry shortly".into(),
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServiceError::Internal("the query embedders stopped".into()));
            }
        }
        answer
            .await
            .map_err(|_| ServiceError::Internal("a query embedder stopped".into()))?
    }
}

/// Runs until every sender is gone: takes one request, then whatever else is already
/// waiting (up to a batch), and answers them all from one model call.
fn serve(mut model: Model, requests: &Mutex<Receiver<Request>>) {
    loop {
        let batch = {
            let queue = requests.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = queue.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let texts: Vec<&str> = batch.iter().map(|r| r.text.as_str()).collect();
        match model.embed(&texts) {
            Ok(vectors) => {
                for (request, vector) in batch.into_iter().zip(vectors) {
                    let _ = request.reply.send(Ok(vector));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(ServiceError::Internal(message.clone())));
                }
            }
        }
    }
}
