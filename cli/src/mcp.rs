//! `memctl mcp`: memd's MCP tools and resources over stdio, for desktop MCP hosts (Claude
//! Desktop, Cursor, ...). The host starts `memctl mcp --memory M --actor A`; the tools call
//! memd over gRPC with memctl's API key, so the key's policy applies as for any client.

use crate::Globals;
use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use memd_client::{MemdClient, pb};
use memd_server::mcp::{Backend, Call, McpServer, Scope};
use rmcp::ServiceExt;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The memory the host works in (default: the only memory the key can see).
    #[arg(long, env = "MEMD_MCP_MEMORY")]
    memory: Option<String>,
    /// The actor (user or agent) whose memory the host reads and writes.
    #[arg(long, env = "MEMD_MCP_ACTOR")]
    actor: String,
    /// Pin every turn to this session (default: the model may name one; otherwise memctl
    /// starts one and moves to a new one when it terminates).
    #[arg(long, env = "MEMD_MCP_SESSION")]
    session: Option<String>,
    /// Only read long-term records in namespaces starting with this prefix.
    #[arg(long, env = "MEMD_MCP_NAMESPACE", default_value = "")]
    namespace: String,
}

/// memd over gRPC, with memctl's key.
struct Remote(MemdClient);

/// Forwards each listed RPC to the raw MemoryService stub.
macro_rules! remote {
    ($($method:ident($request:ty) -> $reply:ty;)*) => {
        impl Backend for Remote {
            $(fn $method(&self, request: $request) -> Call<'_, $reply> {
                Box::pin(async move {
                    Ok(self.0.memory().$method(request).await?.into_inner())
                })
            })*
        }
    };
}

remote! {
    create_event(pb::CreateEventRequest) -> pb::CreateEventResponse;
    retrieve_memory_records(pb::RetrieveMemoryRecordsRequest) -> pb::RetrieveMemoryRecordsResponse;
    search_events(pb::SearchEventsRequest) -> pb::SearchEventsResponse;
    get_context(pb::GetContextRequest) -> pb::GetContextResponse;
    list_sessions(pb::ListSessionsRequest) -> pb::ListSessionsResponse;
    list_memory_records(pb::ListMemoryRecordsRequest) -> pb::ListMemoryRecordsResponse;
    get_memory_record(pb::GetMemoryRecordRequest) -> pb::MemoryRecord;
    delete_memory_record(pb::DeleteMemoryRecordRequest) -> ();
}

/// The memory to use when none was given: the only one the key can see.
async fn sole_memory(client: &MemdClient) -> anyhow::Result<String> {
    let mut memories = client.all_memories();
    let first = memories
        .next()
        .await
        .transpose()?
        .context("the API key sees no memory: create one, or pass --memory")?;
    anyhow::ensure!(
        memories.next().await.is_none(),
        "the API key sees several memories: pass --memory (or MEMD_MCP_MEMORY)"
    );
    Ok(first.memory_id)
}

/// Serves MCP on stdin/stdout until the host closes them. Logs go to stderr: stdout is
/// the protocol's.
pub async fn run(ctx: &Globals, args: McpArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let memory_id = match args.memory {
        Some(memory) => memory,
        None => sole_memory(&client).await?,
    };
    let scope = Scope {
        memory_id,
        actor_id: args.actor,
        session_id: args.session.filter(|s| !s.is_empty()),
        namespace: args.namespace,
    };
    eprintln!(
        "memctl mcp: serving memory {} as actor {} for {} over stdio",
        scope.memory_id, scope.actor_id, ctx.endpoint
    );
    let server = McpServer::fixed(scope, Arc::new(Remote(client)));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("starting MCP over stdio")?;
    running.waiting().await.context("serving MCP over stdio")?;
    Ok(())
}
