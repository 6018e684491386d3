//! Query embeddings off the async runtime: threads take requests from one bounded queue and
//! embed whatever has queued up as one batch, either each with its own copy of the model
//! (`embedding_query_threads` > 0) or, by default, one thread through the documents' copy.

use super::{BATCH, EmbeddingSettings, Model, SharedModel};
use crate::error::{Result, ServiceError};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Requests waiting at most; beyond that callers get RESOURCE_EXHAUSTED instead of a queue
/// that grows without bound.
const QUEUE: usize = 256;

/// What a query thread embeds with: its own model, or the shared one.
type EmbedFn = Box<dyn FnMut(&[&str]) -> Result<Vec<Vec<f32>>> + Send>;

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
    /// query is short, and several threads serve several queries at once), or with none
    /// starts one thread that embeds through `shared`, ahead of its documents.
    pub fn start(settings: Arc<EmbeddingSettings>, shared: &Arc<SharedModel>) -> Result<Self> {
        let (queue, requests) = std::sync::mpsc::sync_channel::<Request>(QUEUE);
        let requests = Arc::new(Mutex::new(requests));
        let spawn = |i: usize, embed: EmbedFn| {
            let requests = requests.clone();
            std::thread::Builder::new()
                .name(format!("memd-query-{i}"))
                .spawn(move || serve(embed, &requests))
                .map(|_| ())
                .map_err(|err| ServiceError::Internal(format!("starting an embedder: {err}")))
        };
        if settings.query_threads == 0 {
            let shared = shared.clone();
            spawn(0, Box::new(move |texts| shared.embed_queries(texts)))?;
        }
        for i in 0..settings.query_threads {
            let mut model = Model::load(&settings, 1)?;
            spawn(i, Box::new(move |texts| model.embed(texts)))?;
        }
        Ok(Self {
            queue,
            dims: shared.dims(),
        })
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
fn serve(mut embed: EmbedFn, requests: &Mutex<Receiver<Request>>) {
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
            // A caller that stopped waiting (its deadline passed, its client went away) gets
            // no embedding: the model's time goes to those still waiting.
            batch.retain(|request| !request.reply.is_closed());
            batch
        };
        if batch.is_empty() {
            continue;
        }
        let texts: Vec<&str> = batch.iter().map(|r| r.text.as_str()).collect();
        match embed(&texts) {
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
