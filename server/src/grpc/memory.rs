//! `memd.v1.MemoryService`: short-term memory (events, actors, sessions).

use super::{
    blocking, context, convert, record_batches, records, request_hash, search, validate, watch,
};
use crate::auth::{Authenticator, Principal, principal};
use crate::error::ServiceError;
use crate::extraction::ExtractionWorkers;
use crate::ids;
use crate::retrieval::Retrieval;
use crate::store::{EventListing, NewEvent, Store, page};
use crate::time::now_us;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The MemoryService implementation.
#[derive(Debug, Clone)]
pub struct MemoryApi {
    store: Arc<Store>,
    workers: ExtractionWorkers,
    retrieval: Arc<Retrieval>,
    /// Becomes true when the server starts draining: watch streams then end (resumably),
    /// since they would otherwise hold the shutdown open forever.
    draining: tokio::sync::watch::Receiver<bool>,
    /// Caps each key's concurrent searches.
    auth: Arc<Authenticator>,
}

impl MemoryApi {
    pub fn new(
        store: Arc<Store>,
        workers: ExtractionWorkers,
        retrieval: Arc<Retrieval>,
        draining: tokio::sync::watch::Receiver<bool>,
        auth: Arc<Authenticator>,
    ) -> Self {
        Self {
            store,
            workers,
            retrieval,
            draining,
            auth,
        }
    }
}

/// Validates the ids of an actor-scoped request and checks the caller may act on the actor.
fn actor_scope(
    caller: &Principal,
    action: Action,
    memory_id: &str,
    actor_id: &str,
) -> Result<(), ServiceError> {
    ids::memory_id("memory_id", memory_id)?;
    ids::actor_id("actor_id", actor_id)?;
    caller.require_actor(action, memory_id, actor_id)
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::memory_service_server::MemoryService for MemoryApi {
    async fn create_event(
        &self,
        request: Request<pb::CreateEventRequest>,
    ) -> Reply<pb::CreateEventResponse> {
        let caller = principal(&request)?;
        let mut req = request.into_inner();
        let hash = request_hash(&mut req, |r| &mut r.client_token);
        let encoded_len = prost::Message::encoded_len(&req);
        let pb::CreateEventRequest {
            memory_id,
            actor_id,
            session_id,
            event_timestamp,
            payload,
            branch,
            metadata,
            client_token,
            extraction_mode,
        } = req;
        actor_scope(&caller, Action::Write, &memory_id, &actor_id)?;
        ids::client_token("client_token", &client_token)?;
        let session_id = if session_id.is_empty() {
            ids::new_session_id(&client_token)
        } else {
            session_id
        };
        ids::session_id("session_id", &session_id)?;
        if encoded_len > validate::MAX_EVENT_BYTES {
            return Err(ServiceError::invalid(
                "payload",
                format!(
                    "event is {encoded_len} bytes; the limit is {}",
                    validate::MAX_EVENT_BYTES
                ),
            )
            .into());
        }
        let event_ts_us = validate::event_timestamp(event_timestamp.as_ref())?;
        let (branch, branch_root) = validate::branch(branch.as_ref())?;
        validate::metadata(&metadata)?;
        let new = NewEvent {
            memory_id,
            actor_id,
            session_id,
            event_ts_us,
            payload: validate::payload(payload)?,
            branch,
            branch_root,
            metadata,
            client_token,
            request_hash: hash,
            extract: validate::extraction_mode(extraction_mode)?,
        };
        crate::deadline::check("the event was written")?;
        let store = self.store.clone();
        // Its own task: once queued for commit, an append must finish (and release its
        // locks) even if the client goes away.
        let event = tokio::spawn(async move { store.append_event(new, now_us()).await })
            .await
            .map_err(ServiceError::from)??;
        Ok(Response::new(pb::CreateEventResponse {
            event: Some(convert::event(event)),
        }))
    }

    async fn get_event(&self, request: Request<pb::GetEventRequest>) -> Reply<pb::Event> {
        let caller = principal(&request)?;
        let pb::GetEventRequest {
            memory_id,
            actor_id,
            session_id,
            event_id,
        } = request.into_inner();
        actor_scope(&caller, Action::Read, &memory_id, &actor_id)?;
        ids::session_id("session_id", &session_id)?;
        let seq = validate::event_id("event_id", &event_id)?;
        let store = self.store.clone();
        let event =
            blocking(move || store.event(&memory_id, &actor_id, &session_id, seq, now_us()))
                .await?;
        Ok(Response::new(convert::event(event)))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let caller = principal(&request)?;
        let pb::ListEventsRequest {
            memory_id,
            actor_id,
            session_id,
            include_payloads,
            filter,
            page_size,
            page_token,
            newest_first,
        } = request.into_inner();
        actor_scope(&caller, Action::Read, &memory_id, &actor_id)?;
        ids::session_id("session_id", &session_id)?;
        let listing = EventListing {
            memory_id,
            actor_id,
            session_id,
            include_payloads,
            filter: validate::event_filter(filter)?,
            page_size: page::page_size("page_size", page_size)?,
            page_token,
            newest_first,
        };
        let store = self.store.clone();
        let (events, next_page_token) =
            blocking(move || store.list_events(&listing, now_us())).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(convert::event).collect(),
            next_page_token,
        }))
    }

    async fn delete_event(&self, request: Request<pb::DeleteEventRequest>) -> Reply<()> {
        let caller = principal(&request)?;
        let pb::DeleteEventRequest {
            memory_id,
            actor_id,
            session_id,
            event_id,
        } = request.into_inner();
        actor_scope(&caller, Action::Write, &memory_id, &actor_id)?;
        ids::session_id("session_id", &session_id)?;
        let seq = validate::event_id("event_id", &event_id)?;
        let store = self.store.clone();
        blocking(move || store.delete_event(&memory_id, &actor_id, &session_id, seq)).await?;
        Ok(Response::new(()))
    }

    async fn list_actors(
        &self,
        request: Request<pb::ListActorsRequest>,
    ) -> Reply<pb::ListActorsResponse> {
        let caller = principal(&request)?;
        let pb::ListActorsRequest {
            memory_id,
            page_size,
            page_token,
        } = request.into_inner();
        ids::memory_id("memory_id", &memory_id)?;
        caller.require_memory(Action::Read, &memory_id)?;
        let page_size = page::page_size("page_size", page_size)?;
        let store = self.store.clone();
        let (actors, next_page_token) = blocking(move || {
            let id_prefix = caller.actor_id_prefix();
            store.list_actors(&memory_id, page_size, &page_token, &id_prefix, |actor| {
                caller.sees_actor(actor)
            })
        })
        .await?;
        let actors = actors
            .into_iter()
            .map(|a| pb::Actor {
                actor_id: a.actor_id,
                create_time: Some(crate::time::to_timestamp(a.create_us)),
            })
            .collect();
        Ok(Response::new(pb::ListActorsResponse {
            actors,
            next_page_token,
        }))
    }

    async fn delete_actor(&self, request: Request<pb::DeleteActorRequest>) -> Reply<()> {
        let caller = principal(&request)?;
        let pb::DeleteActorRequest {
            memory_id,
            actor_id,
        } = request.into_inner();
        actor_scope(&caller, Action::Write, &memory_id, &actor_id)?;
        let store = self.store.clone();
        blocking(move || store.delete_actor(&memory_id, &actor_id)).await?;
        Ok(Response::new(()))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Reply<pb::ListSessionsResponse> {
        let caller = principal(&request)?;
        let pb::ListSessionsRequest {
            memory_id,
            actor_id,
            page_size,
            page_token,
        } = request.into_inner();
        actor_scope(&caller, Action::Read, &memory_id, &actor_id)?;
        let page_size = page::page_size("page_size", page_size)?;
        let store = self.store.clone();
        let (sessions, next_page_token) = blocking(move || {
            store.list_sessions(&memory_id, &actor_id, page_size, &page_token, now_us())
        })
        .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(convert::session).collect(),
            next_page_token,
        }))
    }

    async fn get_session(&self, request: Request<pb::GetSessionRequest>) -> Reply<pb::Session> {
        let caller = principal(&request)?;
        let pb::GetSessionRequest {
            memory_id,
            actor_id,
            session_id,
        } = request.into_inner();
        actor_scope(&caller, Action::Read, &memory_id, &actor_id)?;
        ids::session_id("session_id", &session_id)?;
        let store = self.store.clone();
        let session =
            blocking(move || store.session(&memory_id, &actor_id, &session_id, now_us())).await?;
        Ok(Response::new(convert::session(session)))
    }

    async fn ping_session(&self, request: Request<pb::PingSessionRequest>) -> Reply<pb::Session> {
        let caller = principal(&request)?;
        let pb::PingSessionRequest {
            memory_id,
            actor_id,
            session_id,
        } = request.into_inner();
        actor_scope(&caller, Action::Write, &memory_id, &actor_id)?;
        ids::session_id("session_id", &session_id)?;
        let store = self.store.clone();
        let session =
            blocking(move || store.ping_session(&memory_id, &actor_id, &session_id, now_us()))
                .await?;
        Ok(Response::new(convert::session(session)))
    }

    type WatchSessionsStream = watch::ChangeStream<pb::SessionChange>;

    async fn watch_sessions(
        &self,
        request: Request<pb::WatchSessionsRequest>,
    ) -> Reply<Self::WatchSessionsStream> {
        let caller = principal(&request)?;
        let stream = watch::sessions(
            self.store.clone(),
            self.draining.clone(),
            caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    type WatchMemoryRecordsStream = watch::ChangeStream<pb::MemoryRecordChange>;

    async fn watch_memory_records(
        &self,
        request: Request<pb::WatchMemoryRecordsRequest>,
    ) -> Reply<Self::WatchMemoryRecordsStream> {
        let caller = principal(&request)?;
        let stream = watch::records(
            self.store.clone(),
            self.draining.clone(),
            caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn get_memory_record(
        &self,
        request: Request<pb::GetMemoryRecordRequest>,
    ) -> Reply<pb::MemoryRecord> {
        let caller = principal(&request)?;
        let record = records::get(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(record))
    }

    async fn list_memory_records(
        &self,
        request: Request<pb::ListMemoryRecordsRequest>,
    ) -> Reply<pb::ListMemoryRecordsResponse> {
        let caller = principal(&request)?;
        let page = records::list(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(page))
    }

    async fn delete_memory_record(
        &self,
        request: Request<pb::DeleteMemoryRecordRequest>,
    ) -> Reply<()> {
        let caller = principal(&request)?;
        records::delete(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn get_memory_record_history(
        &self,
        request: Request<pb::GetMemoryRecordHistoryRequest>,
    ) -> Reply<pb::GetMemoryRecordHistoryResponse> {
        let caller = principal(&request)?;
        let history = records::history(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(history))
    }

    async fn list_memory_extraction_jobs(
        &self,
        request: Request<pb::ListMemoryExtractionJobsRequest>,
    ) -> Reply<pb::ListMemoryExtractionJobsResponse> {
        let caller = principal(&request)?;
        let jobs = records::list_jobs(
            self.store.clone(),
            self.workers.clone(),
            caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(jobs))
    }

    async fn start_memory_extraction_job(
        &self,
        request: Request<pb::StartMemoryExtractionJobRequest>,
    ) -> Reply<pb::ExtractionJob> {
        let caller = principal(&request)?;
        let job = records::redrive(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(job))
    }

    async fn batch_create_memory_records(
        &self,
        request: Request<pb::BatchCreateMemoryRecordsRequest>,
    ) -> Reply<pb::BatchMemoryRecordsResponse> {
        let caller = principal(&request)?;
        let results =
            record_batches::create(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(results))
    }

    async fn batch_update_memory_records(
        &self,
        request: Request<pb::BatchUpdateMemoryRecordsRequest>,
    ) -> Reply<pb::BatchMemoryRecordsResponse> {
        let caller = principal(&request)?;
        let results =
            record_batches::update(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(results))
    }

    async fn batch_delete_memory_records(
        &self,
        request: Request<pb::BatchDeleteMemoryRecordsRequest>,
    ) -> Reply<pb::BatchMemoryRecordsResponse> {
        let caller = principal(&request)?;
        let results =
            record_batches::delete(self.store.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(results))
    }

    async fn retrieve_memory_records(
        &self,
        request: Request<pb::RetrieveMemoryRecordsRequest>,
    ) -> Reply<pb::RetrieveMemoryRecordsResponse> {
        let caller = principal(&request)?;
        let _slot = self.auth.limits().search(&caller)?;
        let found = search::retrieve(
            self.store.clone(),
            self.retrieval.clone(),
            caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(found))
    }

    async fn search_events(
        &self,
        request: Request<pb::SearchEventsRequest>,
    ) -> Reply<pb::SearchEventsResponse> {
        let caller = principal(&request)?;
        let _slot = self.auth.limits().search(&caller)?;
        let found = search::search_events(
            self.store.clone(),
            self.retrieval.clone(),
            caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(found))
    }

    async fn get_context(
        &self,
        request: Request<pb::GetContextRequest>,
    ) -> Reply<pb::GetContextResponse> {
        let caller = principal(&request)?;
        let _slot = self.auth.limits().search(&caller)?;
        let found = context::get_context(
            self.store.clone(),
            self.retrieval.clone(),
            caller,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(found))
    }
}
