//! memd as a Model Context Protocol server: tools a model can call (remember, recall,
//! search_history, get_context, list_sessions, forget) and resources for a memory's
//! namespaces and records.
//!
//! One handler, two transports: memd serves Streamable HTTP at `/mcp` on its HTTP listener
//! (see [`http`]), and `memctl mcp` serves stdio for desktop hosts, calling memd over gRPC.
//! Both go through [`Backend`], so every call is validated and authorised exactly as the
//! same gRPC request would be.
//!
//! Where a host may write and read (memory, actor, optionally one session and a namespace
//! prefix) is its [`Scope`]: fixed by the host's configuration (memctl flags, or the `/mcp`
//! URL's query or headers) or, failing that, by the key's policy when it names exactly one
//! memory or actor. Tool arguments never name a memory or an actor, so a model cannot step
//! outside its scope, and the key's policy bounds the scope itself.

mod backend;
pub mod http;
mod render;
mod resources;
mod schema;
mod sessions;
mod tools;

pub use backend::{Backend, Call, InProcess};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use sessions::DefaultSessions;
use std::sync::Arc;

/// Where a host's model may work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub memory_id: String,
    pub actor_id: String,
    /// The one session turns go to; `None`: the model may name a session of the actor, and
    /// one is chosen for it when it does not.
    pub session_id: Option<String>,
    /// Records are read only under this namespace prefix ("" = all the key may read).
    pub namespace: String,
}

impl Scope {
    /// Whether a long-term record is this scope's to read or delete: drawn from the scope's
    /// actor (or from no actor in particular) and under its namespace prefix. The key may
    /// reach further; the host's scope does not.
    pub fn holds(&self, record: &memd_proto::v1::MemoryRecord) -> bool {
        (record.actor_id.is_empty() || record.actor_id == self.actor_id)
            && record.namespace.starts_with(&self.namespace)
    }
}

/// Fails (PERMISSION_DENIED) unless the caller may read the scope's actor, so that reads not
/// keyed by actor (record searches and listings) are refused as the actor's other reads are.
async fn check_actor(scope: &Scope, backend: &dyn Backend) -> Result<(), tonic::Status> {
    backend
        .list_sessions(memd_proto::v1::ListSessionsRequest {
            memory_id: scope.memory_id.clone(),
            actor_id: scope.actor_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await?;
    Ok(())
}

/// How a request finds its scope and backend.
#[derive(Clone)]
enum Binding {
    /// One scope and caller for the whole connection (`memctl mcp`).
    Fixed(Scope, Arc<dyn Backend>),
    /// Per HTTP request: [`http`] authenticates it and resolves its scope, then leaves both
    /// in the request's extensions.
    Http(Arc<crate::grpc::memory::MemoryApi>),
}

/// The MCP server handler.
#[derive(Clone)]
pub struct McpServer {
    binding: Binding,
    sessions: Arc<DefaultSessions>,
    /// memd's own metrics (`/mcp`); `memctl mcp` has none.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl McpServer {
    /// A server with one scope, calling memd through `backend` (stdio).
    pub fn fixed(scope: Scope, backend: Arc<dyn Backend>) -> Self {
        Self {
            binding: Binding::Fixed(scope, backend),
            sessions: Arc::default(),
            metrics: None,
        }
    }

    fn http(
        api: Arc<crate::grpc::memory::MemoryApi>,
        sessions: Arc<DefaultSessions>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            binding: Binding::Http(api),
            sessions,
            metrics: Some(metrics),
        }
    }

    /// The scope and backend of one request.
    fn bind(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<(Scope, Arc<dyn Backend>), ErrorData> {
        match &self.binding {
            Binding::Fixed(scope, backend) => Ok((scope.clone(), backend.clone())),
            Binding::Http(api) => {
                let caller = context
                    .extensions
                    .get::<::http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<http::Caller>())
                    .ok_or_else(|| {
                        ErrorData::internal_error("request reached MCP without a caller", None)
                    })?;
                let backend = InProcess {
                    api: api.clone(),
                    principal: caller.principal.clone(),
                };
                Ok((caller.scope.clone(), Arc::new(backend)))
            }
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("memd", env!("CARGO_PKG_VERSION"))
                .with_title("memd memory")
                .with_description("Long-term and short-term memory for agents"),
        )
        .with_instructions(schema::INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(schema::definitions()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (scope, backend) = self.bind(&context)?;
        let call = tools::ToolCall {
            scope: &scope,
            backend: &*backend,
            sessions: &self.sessions,
        };
        let (result, code) = call.run(&request.name, request.arguments).await;
        if let Some(metrics) = &self.metrics {
            // Only the six tool names become labels, so labels stay bounded.
            let tool = schema::NAMES
                .iter()
                .find(|name| **name == request.name)
                .unwrap_or(&"unknown");
            metrics.observe_mcp_tool(tool, code);
        }
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let (scope, backend) = self.bind(&context)?;
        resources::list(&scope, &*backend).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let (scope, _) = self.bind(&context)?;
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(&scope),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let (scope, backend) = self.bind(&context)?;
        Ok(resources::read(&scope, &*backend, &request.uri)
            .await?
            .into())
    }
}
