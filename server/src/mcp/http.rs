//! `/mcp` on memd's HTTP listener: MCP's Streamable HTTP transport, stateless (each POST
//! carries a JSON-RPC message and gets its answer back as JSON), so any memd node can answer
//! any request.
//!
//! Before a request reaches the MCP handler it is authenticated with the same API keys as
//! gRPC (`Authorization: Bearer <key>`; none needed in development mode) and its [`Scope`]
//! is resolved: `memory`, `actor`, `session` and `namespace` from the URL's query
//! (`/mcp?memory=m&actor=alice`) or `memd-memory`-style headers, falling back to the key's
//! policy when it names exactly one memory or actor.

use super::sessions::DefaultSessions;
use super::{McpServer, Scope};
use crate::auth::{AuthMode, Authenticator, Principal};
use crate::grpc::memory::MemoryApi;
use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

/// Who sent one `/mcp` request and where it may work; left in the request's extensions
/// for [`McpServer`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub scope: Scope,
}

/// The `/mcp` endpoint.
#[derive(Clone)]
pub struct Endpoint {
    service: StreamableHttpService<McpServer, LocalSessionManager>,
    auth: Arc<Authenticator>,
}

impl Endpoint {
    /// An endpoint calling `api` in-process; in-flight requests end when `shutdown` fires.
    pub fn new(
        api: Arc<MemoryApi>,
        auth: Arc<Authenticator>,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let sessions = Arc::new(DefaultSessions::default());
        let mut config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .with_cancellation_token(shutdown)
            .with_max_request_body_bytes(crate::MAX_MESSAGE_BYTES);
        // rmcp guards against DNS rebinding by accepting only loopback Host headers. That is
        // the right default for development mode (no keys, loopback only); with keys
        // enforced every request is authenticated, and memd may be reached by any name.
        if auth.mode() == AuthMode::Enforced {
            config = config.disable_allowed_hosts();
        }
        let service = StreamableHttpService::new(
            move || {
                Ok(McpServer::http(
                    api.clone(),
                    sessions.clone(),
                    metrics.clone(),
                ))
            },
            Arc::new(LocalSessionManager::default()),
            config,
        );
        Self { service, auth }
    }

    /// Handles one HTTP request to `/mcp`.
    pub async fn handle(&self, mut request: Request<Body>) -> Response<Body> {
        let caller = match self.caller(&request) {
            Ok(caller) => caller,
            Err(refusal) => {
                // A quota refusal waits out its delay, as on gRPC and REST (auth::hold).
                let delay = crate::auth::retry_after(
                    refusal.headers().get(crate::auth::RETRY_AFTER_HEADER),
                );
                if let Some(delay) = delay {
                    crate::auth::hold(delay, None).await;
                }
                return *refusal;
            }
        };
        request.extensions_mut().insert(caller);
        match self.service.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        }
    }

    /// The authenticated caller and its scope, or the response that refuses the request
    /// (boxed: a response is large and the refusal is the rare path).
    fn caller(&self, request: &Request<Body>) -> Result<Caller, Box<Response<Body>>> {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or("not ASCII"));
        let principal = self.auth.authenticate(header).map_err(|err| {
            let mut response = refusal(StatusCode::UNAUTHORIZED, &err.to_string());
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"memd\""),
            );
            Box::new(response)
        })?;
        self.auth.limits().admit(&principal).map_err(|err| {
            let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, &err.to_string());
            if let crate::error::ServiceError::Throttled { retry_after, .. } = err {
                crate::auth::insert_retry_headers(response.headers_mut(), retry_after);
            }
            Box::new(response)
        })?;
        self.auth.limits().admit(&principal).map_err(|err| {
            let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, &err.to_string());
            if let crate::error::ServiceError::Throttled { retry_after, .. } = err {
                let headers = response.headers_mut();
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(
                        retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
                    ),
                );
                headers.insert(
                    crate::auth::RETRY_AFTER_HEADER,
                    HeaderValue::from(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)),
                );
            }
            Box::new(response)
        })?;
        let scope = scope(request, &principal)
            .map_err(|message| Box::new(refusal(StatusCode::BAD_REQUEST, &message)))?;
        Ok(Caller { principal, scope })
    }
}

/// A refusal before MCP: the HTTP status, and a JSON-RPC error saying why.
fn refusal(status: StatusCode, message: &str) -> Response<Body> {
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32600, "message": message },
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// One scope setting: the `memd-{name}` header or the `name` query parameter (which must
/// agree when both are given).
fn setting(request: &Request<Body>, name: &str) -> Result<Option<String>, String> {
    let header = match request.headers().get(format!("memd-{name}")) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| format!("header memd-{name} is not ASCII"))?
                .to_string(),
        ),
    };
    let query = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| {
                percent_encoding::percent_decode_str(&value.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        });
    match (header, query) {
        (Some(h), Some(q)) if h != q => Err(format!(
            "header memd-{name} ({h:?}) and query parameter {name} ({q:?}) disagree"
        )),
        (h, q) => Ok(h.or(q).filter(|v| !v.is_empty())),
    }
}

fn scope(request: &Request<Body>, principal: &Principal) -> Result<Scope, String> {
    let memory_id = setting(request, "memory")?
        .or_else(|| principal.sole_memory())
        .ok_or("no memory for MCP: give one in the URL (/mcp?memory=ID&actor=ID) or the memd-memory header, or use a key whose policy names exactly one memory")?;
    let actor_id = setting(request, "actor")?
        .or_else(|| principal.sole_actor())
        .ok_or("no actor for MCP: give one in the URL (/mcp?memory=ID&actor=ID) or the memd-actor header, or use a key whose policy names exactly one actor")?;
    Ok(Scope {
        memory_id,
        actor_id,
        session_id: setting(request, "session")?,
        namespace: setting(request, "namespace")?.unwrap_or_default(),
    })
}
