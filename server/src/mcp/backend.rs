//! The memd calls the MCP tools make, behind one interface: in-process for memd's own
//! `/mcp` endpoint, over gRPC for `memctl mcp`. Either way the caller's credentials are
//! already attached, so memd's usual validation and key policies decide every call.

use crate::auth::Principal;
use crate::grpc::memory::MemoryApi;
use futures::future::BoxFuture;
use memd_proto::v1 as pb;
use memd_proto::v1::memory_service_server::MemoryService;
use std::sync::Arc;
use tonic::Status;

/// One memd RPC: the request in, the reply (or the gRPC status) out.
pub type Call<'a, T> = BoxFuture<'a, Result<T, Status>>;

/// The RPCs behind the MCP tools and resources, bound to one caller.
pub trait Backend: Send + Sync {
    fn create_event(&self, request: pb::CreateEventRequest) -> Call<'_, pb::CreateEventResponse>;
    fn retrieve_memory_records(
        &self,
        request: pb::RetrieveMemoryRecordsRequest,
    ) -> Call<'_, pb::RetrieveMemoryRecordsResponse>;
    fn search_events(&self, request: pb::SearchEventsRequest)
    -> Call<'_, pb::SearchEventsResponse>;
    fn get_context(&self, request: pb::GetContextRequest) -> Call<'_, pb::GetContextResponse>;
    fn list_sessions(&self, request: pb::ListSessionsRequest)
    -> Call<'_, pb::ListSessionsResponse>;
    fn list_memory_records(
        &self,
        request: pb::ListMemoryRecordsRequest,
    ) -> Call<'_, pb::ListMemoryRecordsResponse>;
    fn get_memory_record(&self, request: pb::GetMemoryRecordRequest) -> Call<'_, pb::MemoryRecord>;
    fn delete_memory_record(&self, request: pb::DeleteMemoryRecordRequest) -> Call<'_, ()>;
}

/// memd's own handlers, called with an authenticated principal (the `/mcp` endpoint).
pub struct InProcess {
    pub api: Arc<MemoryApi>,
    pub principal: Principal,
}

impl InProcess {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.principal.clone());
        request
    }
}

/// Forwards each listed RPC to `MemoryService` with the principal attached.
macro_rules! in_process {
    ($($method:ident($request:ty) -> $reply:ty;)*) => {
        impl Backend for InProcess {
            $(fn $method(&self, request: $request) -> Call<'_, $reply> {
                Box::pin(async move {
                    let reply = MemoryService::$method(&*self.api, self.request(request)).await?;
                    Ok(reply.into_inner().into())
                })
            })*
        }
    };
}

in_process! {
    create_event(pb::CreateEventRequest) -> pb::CreateEventResponse;
    retrieve_memory_records(pb::RetrieveMemoryRecordsRequest) -> pb::RetrieveMemoryRecordsResponse;
    search_events(pb::SearchEventsRequest) -> pb::SearchEventsResponse;
    get_context(pb::GetContextRequest) -> pb::GetContextResponse;
    list_sessions(pb::ListSessionsRequest) -> pb::ListSessionsResponse;
    list_memory_records(pb::ListMemoryRecordsRequest) -> pb::ListMemoryRecordsResponse;
    get_memory_record(pb::GetMemoryRecordRequest) -> pb::MemoryRecord;
    delete_memory_record(pb::DeleteMemoryRecordRequest) -> ();
}
