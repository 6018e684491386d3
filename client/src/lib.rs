//! A typed async client for memd.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use memd_client::{MemdClient, pb, turn};
//! let client = MemdClient::connect("http://127.0.0.1:50051", None).await?;
//! let memory = client.create_memory(pb::CreateMemoryRequest { name: "support".into(), ..Default::default() }).await?;
//! let event = client
//!     .create_event(pb::CreateEventRequest {
//!         memory_id: memory.memory_id.clone(),
//!         actor_id: "acme/alice".into(),
//!         payload: vec![turn(pb::Role::User, "I prefer window seats")],
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("stored {} in session {}", event.event_id, event.session_id);
//! # Ok(()) }
//! ```

use futures::{Stream, StreamExt, TryStreamExt};
use std::future::Future;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub use memd_proto::v1 as pb;

/// The largest message the client sends or accepts (matches the server).
pub const MAX_MESSAGE_BYTES: usize = 12 * 1024 * 1024;

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("the API key is not a valid header value")]
    InvalidKey,
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone, Debug)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Transport = InterceptedService<Channel, BearerAuth>;
/// The generated ControlService stub, authenticated.
pub type ControlClient = pb::control_service_client::ControlServiceClient<Transport>;
/// The generated MemoryService stub, authenticated.
pub type MemoryClient = pb::memory_service_client::MemoryServiceClient<Transport>;
/// The generated ExtractionWorkerService client with the bearer interceptor.
pub type WorkerClient =
    pb::extraction_worker_service_client::ExtractionWorkerServiceClient<Transport>;

/// A connection to one memd server. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct MemdClient {
    control: ControlClient,
    memory: MemoryClient,
    workers: WorkerClient,
    channel: Channel,
}

/// A conversational payload item.
pub fn turn(role: pb::Role, text: impl Into<String>) -> pb::PayloadItem {
    named_turn(role, "", text)
}

/// A conversational payload item with the speaker's name (records say "Caroline", not "I").
pub fn named_turn(
    role: pb::Role,
    name: impl Into<String>,
    text: impl Into<String>,
) -> pb::PayloadItem {
    pb::PayloadItem {
        content: Some(pb::payload_item::Content::Conversational(
            pb::Conversational {
                role: role as i32,
                text: text.into(),
                name: name.into(),
            },
        )),
    }
}

impl MemdClient {
    /// Connects to `endpoint` (`http://host:port`, or `https://` for TLS with the webpki
    /// roots) with an optional API key.
    pub async fn connect(
        endpoint: impl Into<String>,
        api_key: Option<String>,
    ) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let invalid = |reason: String| ClientError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        let mut target = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| invalid(e.to_string()))?
            .tcp_nodelay(true);
        if endpoint.starts_with("https://") {
            target = target
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| invalid(e.to_string()))?;
        }
        let channel = target
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        Self::from_channel(channel, api_key)
    }

    /// Wraps an existing channel (custom TLS, timeouts, load balancing).
    pub fn from_channel(channel: Channel, api_key: Option<String>) -> Result<Self, ClientError> {
        let header = api_key
            .filter(|key| !key.is_empty())
            .map(|key| {
                format!("Bearer {key}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::InvalidKey)
            })
            .transpose()?;
        let auth = BearerAuth(header);
        let control = pb::control_service_client::ControlServiceClient::with_interceptor(
            channel.clone(),
            auth.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let memory = pb::memory_service_client::MemoryServiceClient::with_interceptor(
            channel.clone(),
            auth.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let workers =
            pb::extraction_worker_service_client::ExtractionWorkerServiceClient::with_interceptor(
                channel.clone(),
                auth,
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            control,
            memory,
            workers,
            channel,
        })
    }

    /// The same connection with another API key.
    pub fn with_key(&self, api_key: Option<String>) -> Result<Self, ClientError> {
        Self::from_channel(self.channel.clone(), api_key)
    }

    /// The raw ControlService stub.
    pub fn control(&self) -> ControlClient {
        self.control.clone()
    }

    /// The raw ExtractionWorkerService client (lease, heartbeat, complete).
    pub fn workers(&self) -> WorkerClient {
        self.workers.clone()
    }

    /// The raw MemoryService stub.
    pub fn memory(&self) -> MemoryClient {
        self.memory.clone()
    }

    /// The underlying channel (e.g. for the health service).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    // ---- control plane ----

    pub async fn create_memory(
        &self,
        request: pb::CreateMemoryRequest,
    ) -> Result<pb::Memory, Status> {
        Ok(self.control().create_memory(request).await?.into_inner())
    }

    pub async fn get_memory(&self, memory_id: impl Into<String>) -> Result<pb::Memory, Status> {
        Ok(self
            .control()
            .get_memory(pb::GetMemoryRequest {
                memory_id: memory_id.into(),
            })
            .await?
            .into_inner())
    }

    pub async fn update_memory(
        &self,
        request: pb::UpdateMemoryRequest,
    ) -> Result<pb::Memory, Status> {
        Ok(self.control().update_memory(request).await?.into_inner())
    }

    pub async fn delete_memory(&self, memory_id: impl Into<String>) -> Result<(), Status> {
        self.control()
            .delete_memory(pb::DeleteMemoryRequest {
                memory_id: memory_id.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn list_memories(
        &self,
        request: pb::ListMemoriesRequest,
    ) -> Result<pb::ListMemoriesResponse, Status> {
        Ok(self.control().list_memories(request).await?.into_inner())
    }

    /// Every memory the key can see, across all pages.
    pub fn all_memories(&self) -> impl Stream<Item = Result<pb::Memory, Status>> + Send + 'static {
        let client = self.clone();
        paginate(
            pb::ListMemoriesRequest {
                page_size: 100,
                page_token: String::new(),
            },
            move |req| {
                let mut control = client.control();
                async move { Ok(control.list_memories(req).await?.into_inner()) }
            },
            |resp: pb::ListMemoriesResponse| (resp.memories, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    /// Rebuilds the search indexes from RocksDB (global admin).
    pub async fn reindex(&self) -> Result<pb::ReindexResponse, Status> {
        Ok(self
            .control()
            .reindex(pb::ReindexRequest {})
            .await?
            .into_inner())
    }

    /// How far the search indexes lag behind the store (global admin).
    pub async fn index_status(&self) -> Result<pb::IndexStatus, Status> {
        Ok(self
            .control()
            .get_index_status(pb::GetIndexStatusRequest {})
            .await?
            .into_inner())
    }

    /// Takes an online backup into `dir`, an absolute path on the server (global admin).
    pub async fn create_backup(&self, dir: impl Into<String>) -> Result<pb::Backup, Status> {
        Ok(self
            .control()
            .create_backup(pb::CreateBackupRequest { dir: dir.into() })
            .await?
            .into_inner())
    }

    pub async fn create_api_key(
        &self,
        name: impl Into<String>,
        policy: pb::ApiKeyPolicy,
    ) -> Result<pb::CreateApiKeyResponse, Status> {
        let request = pb::CreateApiKeyRequest {
            name: name.into(),
            policy: Some(policy),
        };
        Ok(self.control().create_api_key(request).await?.into_inner())
    }

    /// Every API key, across all pages.
    pub fn all_api_keys(&self) -> impl Stream<Item = Result<pb::ApiKey, Status>> + Send + 'static {
        let client = self.clone();
        paginate(
            pb::ListApiKeysRequest {
                page_size: 100,
                page_token: String::new(),
            },
            move |req| {
                let mut control = client.control();
                async move { Ok(control.list_api_keys(req).await?.into_inner()) }
            },
            |resp: pb::ListApiKeysResponse| (resp.keys, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    pub async fn revoke_api_key(&self, key_id: impl Into<String>) -> Result<(), Status> {
        self.control()
            .revoke_api_key(pb::RevokeApiKeyRequest {
                key_id: key_id.into(),
            })
            .await?;
        Ok(())
    }

    // ---- short-term memory ----

    /// Appends an event and returns it (with the server-generated ids).
    pub async fn create_event(&self, request: pb::CreateEventRequest) -> Result<pb::Event, Status> {
        let response = self.memory().create_event(request).await?.into_inner();
        response
            .event
            .ok_or_else(|| Status::internal("server returned no event"))
    }

    pub async fn get_event(&self, request: pb::GetEventRequest) -> Result<pb::Event, Status> {
        Ok(self.memory().get_event(request).await?.into_inner())
    }

    pub async fn list_events(
        &self,
        request: pb::ListEventsRequest,
    ) -> Result<pb::ListEventsResponse, Status> {
        Ok(self.memory().list_events(request).await?.into_inner())
    }

    /// Every event the request selects, across all pages (its page_token is the start).
    pub fn all_events(
        &self,
        request: pb::ListEventsRequest,
    ) -> impl Stream<Item = Result<pb::Event, Status>> + Send + 'static {
        let client = self.clone();
        paginate(
            request,
            move |req| {
                let mut memory = client.memory();
                async move { Ok(memory.list_events(req).await?.into_inner()) }
            },
            |resp: pb::ListEventsResponse| (resp.events, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    pub async fn delete_event(&self, request: pb::DeleteEventRequest) -> Result<(), Status> {
        self.memory().delete_event(request).await?;
        Ok(())
    }

    pub async fn list_actors(
        &self,
        request: pb::ListActorsRequest,
    ) -> Result<pb::ListActorsResponse, Status> {
        Ok(self.memory().list_actors(request).await?.into_inner())
    }

    /// Every actor of a memory the key can see, across all pages.
    pub fn all_actors(
        &self,
        memory_id: impl Into<String>,
    ) -> impl Stream<Item = Result<pb::Actor, Status>> + Send + 'static {
        let client = self.clone();
        paginate(
            pb::ListActorsRequest {
                memory_id: memory_id.into(),
                page_size: 100,
                page_token: String::new(),
            },
            move |req| {
                let mut memory = client.memory();
                async move { Ok(memory.list_actors(req).await?.into_inner()) }
            },
            |resp: pb::ListActorsResponse| (resp.actors, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    pub async fn delete_actor(
        &self,
        memory_id: impl Into<String>,
        actor_id: impl Into<String>,
    ) -> Result<(), Status> {
        self.memory()
            .delete_actor(pb::DeleteActorRequest {
                memory_id: memory_id.into(),
                actor_id: actor_id.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn list_sessions(
        &self,
        request: pb::ListSessionsRequest,
    ) -> Result<pb::ListSessionsResponse, Status> {
        Ok(self.memory().list_sessions(request).await?.into_inner())
    }

    /// Every session of an actor, across all pages.
    pub fn all_sessions(
        &self,
        memory_id: impl Into<String>,
        actor_id: impl Into<String>,
    ) -> impl Stream<Item = Result<pb::Session, Status>> + Send + 'static {
        let client = self.clone();
        let first = pb::ListSessionsRequest {
            memory_id: memory_id.into(),
            actor_id: actor_id.into(),
            page_size: 100,
            page_token: String::new(),
        };
        paginate(
            first,
            move |req| {
                let mut memory = client.memory();
                async move { Ok(memory.list_sessions(req).await?.into_inner()) }
            },
            |resp: pb::ListSessionsResponse| (resp.sessions, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    pub async fn get_session(
        &self,
        memory_id: impl Into<String>,
        actor_id: impl Into<String>,
        session_id: impl Into<String>,
    ) -> Result<pb::Session, Status> {
        let request = pb::GetSessionRequest {
            memory_id: memory_id.into(),
            actor_id: actor_id.into(),
            session_id: session_id.into(),
        };
        Ok(self.memory().get_session(request).await?.into_inner())
    }

    /// Keeps a session ACTIVE without appending an event.
    pub async fn ping_session(
        &self,
        memory_id: impl Into<String>,
        actor_id: impl Into<String>,
        session_id: impl Into<String>,
    ) -> Result<pb::Session, Status> {
        let request = pb::PingSessionRequest {
            memory_id: memory_id.into(),
            actor_id: actor_id.into(),
            session_id: session_id.into(),
        };
        Ok(self.memory().ping_session(request).await?.into_inner())
    }

    /// Session transitions as they are committed, after `request.cursor` (empty: from now).
    /// The stream ends with an error when the connection drops or the server gives up on a
    /// slow reader; call again with the cursor of the last change received to resume.
    pub async fn watch_sessions(
        &self,
        request: pb::WatchSessionsRequest,
    ) -> Result<tonic::Streaming<pb::SessionChange>, Status> {
        Ok(self.memory().watch_sessions(request).await?.into_inner())
    }

    /// Long-term record changes as they are committed; resumable like [`Self::watch_sessions`].
    pub async fn watch_memory_records(
        &self,
        request: pb::WatchMemoryRecordsRequest,
    ) -> Result<tonic::Streaming<pb::MemoryRecordChange>, Status> {
        Ok(self
            .memory()
            .watch_memory_records(request)
            .await?
            .into_inner())
    }

    // Long-term memory.

    pub async fn get_memory_record(
        &self,
        memory_id: impl Into<String>,
        memory_record_id: impl Into<String>,
    ) -> Result<pb::MemoryRecord, Status> {
        let request = pb::GetMemoryRecordRequest {
            memory_id: memory_id.into(),
            memory_record_id: memory_record_id.into(),
        };
        Ok(self.memory().get_memory_record(request).await?.into_inner())
    }

    pub async fn list_memory_records(
        &self,
        request: pb::ListMemoryRecordsRequest,
    ) -> Result<pb::ListMemoryRecordsResponse, Status> {
        Ok(self
            .memory()
            .list_memory_records(request)
            .await?
            .into_inner())
    }

    /// Records ranked by relevance (one page; see the request's page_token).
    pub async fn retrieve_memory_records(
        &self,
        request: pb::RetrieveMemoryRecordsRequest,
    ) -> Result<pb::RetrieveMemoryRecordsResponse, Status> {
        Ok(self
            .memory()
            .retrieve_memory_records(request)
            .await?
            .into_inner())
    }

    /// The context to resume a session with, packed into a token budget.
    pub async fn get_context(
        &self,
        request: pb::GetContextRequest,
    ) -> Result<pb::GetContextResponse, Status> {
        Ok(self.memory().get_context(request).await?.into_inner())
    }

    /// An actor's events ranked by relevance to a query.
    pub async fn search_events(
        &self,
        request: pb::SearchEventsRequest,
    ) -> Result<pb::SearchEventsResponse, Status> {
        Ok(self.memory().search_events(request).await?.into_inner())
    }

    /// Every live record the request selects, across all pages.
    pub fn all_memory_records(
        &self,
        request: pb::ListMemoryRecordsRequest,
    ) -> impl Stream<Item = Result<pb::MemoryRecord, Status>> + Send + 'static {
        let client = self.clone();
        paginate(
            request,
            move |req| {
                let mut memory = client.memory();
                async move { Ok(memory.list_memory_records(req).await?.into_inner()) }
            },
            |resp: pb::ListMemoryRecordsResponse| (resp.memory_records, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    pub async fn delete_memory_record(
        &self,
        memory_id: impl Into<String>,
        memory_record_id: impl Into<String>,
    ) -> Result<(), Status> {
        let request = pb::DeleteMemoryRecordRequest {
            memory_id: memory_id.into(),
            memory_record_id: memory_record_id.into(),
        };
        self.memory().delete_memory_record(request).await?;
        Ok(())
    }

    /// The record now, its earlier versions and the records it superseded, newest first.
    pub async fn get_memory_record_history(
        &self,
        memory_id: impl Into<String>,
        memory_record_id: impl Into<String>,
    ) -> Result<Vec<pb::MemoryRecord>, Status> {
        let request = pb::GetMemoryRecordHistoryRequest {
            memory_id: memory_id.into(),
            memory_record_id: memory_record_id.into(),
        };
        Ok(self
            .memory()
            .get_memory_record_history(request)
            .await?
            .into_inner()
            .memory_records)
    }

    /// Creates records directly; one result per item, in order.
    pub async fn batch_create_memory_records(
        &self,
        memory_id: impl Into<String>,
        records: Vec<pb::MemoryRecordInput>,
    ) -> Result<Vec<pb::BatchItemResult>, Status> {
        let request = pb::BatchCreateMemoryRecordsRequest {
            memory_id: memory_id.into(),
            records,
        };
        Ok(self
            .memory()
            .batch_create_memory_records(request)
            .await?
            .into_inner()
            .results)
    }

    /// Rewrites live records; one result per item, in order.
    pub async fn batch_update_memory_records(
        &self,
        memory_id: impl Into<String>,
        records: Vec<pb::MemoryRecordUpdate>,
    ) -> Result<Vec<pb::BatchItemResult>, Status> {
        let request = pb::BatchUpdateMemoryRecordsRequest {
            memory_id: memory_id.into(),
            records,
        };
        Ok(self
            .memory()
            .batch_update_memory_records(request)
            .await?
            .into_inner()
            .results)
    }

    /// Deletes records; one result per id, in order.
    pub async fn batch_delete_memory_records(
        &self,
        memory_id: impl Into<String>,
        memory_record_ids: Vec<String>,
    ) -> Result<Vec<pb::BatchItemResult>, Status> {
        let request = pb::BatchDeleteMemoryRecordsRequest {
            memory_id: memory_id.into(),
            memory_record_ids,
        };
        Ok(self
            .memory()
            .batch_delete_memory_records(request)
            .await?
            .into_inner()
            .results)
    }

    /// Every unfinished extraction job the request selects, across all pages.
    pub fn all_extraction_jobs(
        &self,
        request: pb::ListMemoryExtractionJobsRequest,
    ) -> impl Stream<Item = Result<pb::ExtractionJob, Status>> + Send + 'static {
        let client = self.clone();
        paginate(
            request,
            move |req| {
                let mut memory = client.memory();
                async move { Ok(memory.list_memory_extraction_jobs(req).await?.into_inner()) }
            },
            |resp: pb::ListMemoryExtractionJobsResponse| (resp.jobs, resp.next_page_token),
            |req, token| req.page_token = token,
        )
    }

    /// Re-drives a FAILED extraction job.
    pub async fn start_extraction_job(
        &self,
        memory_id: impl Into<String>,
        job_id: impl Into<String>,
    ) -> Result<pb::ExtractionJob, Status> {
        let request = pb::StartMemoryExtractionJobRequest {
            memory_id: memory_id.into(),
            job_id: job_id.into(),
        };
        Ok(self
            .memory()
            .start_memory_extraction_job(request)
            .await?
            .into_inner())
    }
}

/// Streams the items of every page of a listing, fetching the next page lazily.
fn paginate<Req, Resp, Item, Fut>(
    first: Req,
    fetch: impl Fn(Req) -> Fut + Send + 'static,
    split: fn(Resp) -> (Vec<Item>, String),
    with_token: fn(&mut Req, String),
) -> impl Stream<Item = Result<Item, Status>> + Send + 'static
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
    Item: Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    futures::stream::try_unfold(Some(first), move |next| {
        let pending = next.map(|req| (fetch(req.clone()), req));
        async move {
            let Some((response, mut req)) = pending else {
                return Ok::<_, Status>(None);
            };
            let (items, token) = split(response.await?);
            let next = (!token.is_empty()).then(|| {
                with_token(&mut req, token);
                req
            });
            Ok(Some((
                futures::stream::iter(items.into_iter().map(Ok)),
                next,
            )))
        }
    })
    .try_flatten()
    .boxed()
}
