//! Authentication and authorisation. A request's `authorization: Bearer <secret>` header is
//! resolved once, by the interceptor on every service, into a [`Principal`] stored in the
//! request's extensions; each handler then checks the principal against the resource it
//! resolved (see [`policy`]). Missing principal means denied: the path fails closed.

mod keys;
mod limits;
mod policy;

pub use keys::{AuthInterceptor, AuthMode, Authenticator};
pub use limits::{
    LimitSettings, Limits, RETRY_AFTER_HEADER, hold, insert_retry_headers, retry_after,
};
pub use policy::Principal;

use crate::error::{Result, ServiceError};

/// The principal the interceptor attached to a request, once the decoded request has been
/// charged to its byte and per-memory quotas (see [`Limits`]).
pub fn principal<T: MemoryScoped>(request: &tonic::Request<T>) -> Result<Principal> {
    let caller = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ServiceError::Unauthenticated("request was not authenticated".into()))?;
    caller.charge(request.get_ref())?;
    Ok(caller)
}

/// A request message and the memory it is about, for the per-memory quotas.
pub trait MemoryScoped: prost::Message {
    /// The memory the request names ("" for none: key management, listing memories).
    fn memory_id(&self) -> &str;
}

/// Implements [`MemoryScoped`] for request messages: those with a `memory_id` field, then
/// (after `;`) those without.
macro_rules! memory_scoped {
    ($($scoped:ident),* ; $($global:ident),*) => {
        $(impl MemoryScoped for memd_proto::v1::$scoped {
            fn memory_id(&self) -> &str {
                &self.memory_id
            }
        })*
        $(impl MemoryScoped for memd_proto::v1::$global {
            fn memory_id(&self) -> &str {
                ""
            }
        })*
    };
}

memory_scoped!(
    BatchCreateMemoryRecordsRequest, BatchDeleteMemoryRecordsRequest,
    BatchUpdateMemoryRecordsRequest, CompleteExtractionJobRequest, CreateEventRequest,
    DeleteActorRequest, DeleteEventRequest, DeleteMemoryRecordRequest, DeleteMemoryRequest,
    GetContextRequest, GetEventRequest, GetMemoryRecordHistoryRequest, GetMemoryRecordRequest,
    GetMemoryRequest, GetSessionRequest, HeartbeatExtractionJobsRequest,
    LeaseExtractionJobsRequest, ListActorsRequest, ListEventsRequest,
    ListMemoryExtractionJobsRequest, ListMemoryRecordsRequest, ListSessionsRequest,
    PingSessionRequest, RetrieveMemoryRecordsRequest, SearchEventsRequest,
    StartMemoryExtractionJobRequest, UpdateMemoryRequest, WatchMemoryRecordsRequest,
    WatchSessionsRequest;
    CreateApiKeyRequest, CreateBackupRequest, CreateMemoryRequest, GetIndexStatusRequest,
    ListApiKeysRequest, ListMemoriesRequest, ReindexRequest, RevokeApiKeyRequest
);
