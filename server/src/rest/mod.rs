//! AgentCore Memory's REST-JSON API (data plane `bedrock-agentcore`, control plane
//! `bedrock-agentcore-control`) on memd, so that boto3, the bedrock-agentcore SDK and the
//! frameworks built on them work by pointing their endpoint at memd.
//!
//! One code path: each operation converts its JSON into memd's request message and calls the
//! same MemoryService / ControlService handler the gRPC server runs (validation,
//! authorisation, storage), then converts the reply. Requests are authenticated with AWS
//! Signature Version 4 (see [`sigv4`]): the access key id is a memd API key's id, the secret
//! access key the whole key. Shapes follow botocore's service models (see docs/agentcore.md).

mod errors;
mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
mod jobs;
mod memories;
mod record_batches;
mod records;
mod router;
mod shapes;
pub mod sigv4;
mod strategies;

pub use errors::AwsError;

use crate::auth::{Authenticator, Principal};
use crate::grpc::{control::ControlApi, memory::MemoryApi};
use axum::body::{Body, Bytes};
use http::{HeaderValue, Request, Response};
use router::Route;
use serde_json::Value;
use std::sync::Arc;

/// Largest request body: an event may carry 10 MiB of payload, plus JSON overhead.
pub const MAX_BODY_BYTES: usize = crate::MAX_MESSAGE_BYTES;
/// The region ARNs name when a request is not signed (a signed one names its own).
const DEFAULT_REGION: &str = "us-east-1";

/// The handlers the REST operations call, shared with the gRPC server.
#[derive(Debug, Clone)]
pub struct RestApi {
    pub memory: Arc<MemoryApi>,
    pub control: Arc<ControlApi>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `request_timeout_seconds` (REST clients send no deadline of their own).
    pub request_timeout: Option<std::time::Duration>,
}

/// One authenticated request on its way through an operation.
pub(crate) struct Ctx<'a> {
    api: &'a RestApi,
    principal: Principal,
    region: String,
    body: Bytes,
    query: Vec<(String, String)>,
}

/// An operation's result: HTTP status and JSON body.
pub(crate) type Reply = Result<(u16, Value), AwsError>;

impl Ctx<'_> {
    /// A gRPC request carrying the caller, as the auth interceptor would have built it.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.principal.clone());
        request
    }

    fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RestApi {
    /// Handles one HTTP request; every failure becomes an AWS-shaped error response.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let started = std::time::Instant::now();
        // Unknown paths share one label, so labels stay bounded.
        let operation =
            router::route(&parts.method, parts.uri.path()).map_or("unknown", |route| route.name());
        let outcome = crate::deadline::run(self.request_timeout, self.respond(&parts, body))
            .await
            .unwrap_or_else(|exceeded| Err(exceeded.into()));
        if let Err(AwsError {
            retry_after: Some(delay),
            ..
        }) = &outcome
        {
            let left = self
                .request_timeout
                .map(|limit| limit.saturating_sub(started.elapsed()));
            crate::auth::hold(*delay, left).await;
        }
        let code = outcome.as_ref().map_or_else(|err| err.code, |_| "OK");
        self.metrics
            .observe_rest(operation, code, started.elapsed().as_secs_f64());
        let mut response = match outcome {
            Ok((status, body)) => {
                let mut response = Response::new(Body::from(body.to_string()));
                *response.status_mut() =
                    http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                response
            }
            Err(err) => {
                if err.status >= 500 {
                    tracing::warn!(code = err.code, message = %err.message, "REST request failed");
                }
                err.into_response()
            }
        };
        if let Ok(id) = HeaderValue::from_str(&crate::ids::random_suffix(20)) {
            response.headers_mut().insert("x-amzn-requestid", id);
        }
        response
    }

    async fn respond(&self, parts: &http::request::Parts, body: Body) -> Reply {
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                AwsError::validation(
                    "body",
                    format!("must be at most {} MiB", MAX_BODY_BYTES >> 20),
                )
            })?;
        let (principal, region) = self.authenticate(parts, &body)?;
        self.auth.limits().admit(&principal)?;
        let route = router::route(&parts.method, parts.uri.path())?;
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (router::decode(k), router::decode(v))
            })
            .collect();
        let ctx = Ctx {
            api: self,
            principal,
            region,
            body,
            query,
        };
        dispatch(&ctx, route).await
    }

    /// The caller: a SigV4 signature by a memd key, a `Bearer` key like gRPC's, or (in
    /// development mode only) nobody in particular.
    fn authenticate(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<(Principal, String), AwsError> {
        let header = match parts.headers.get("authorization") {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                AwsError::new(
                    "IncompleteSignatureException",
                    400,
                    "Authorization is not ASCII",
                )
            })?),
        };
        let Some(header) = header.filter(|h| !h.starts_with("Bearer ")) else {
            let principal = self.auth.authenticate(header).map_err(|_| {
                AwsError::new(
                    "UnrecognizedClientException",
                    403,
                    "requests must be signed (SigV4 with a memd API key) or carry `Bearer <api key>`",
                )
            })?;
            return Ok((principal, DEFAULT_REGION.to_string()));
        };
        let auth = sigv4::parse_authorization(header)?;
        let Some((secret, principal)) = self.auth.signing_key(&auth.access_key_id)? else {
            // An unknown access key: in development mode, as if unsigned (boto3 signs with
            // whatever credentials it finds); otherwise refused.
            let principal = self.auth.authenticate(None).map_err(|_| {
                AwsError::new(
                    "UnrecognizedClientException",
                    403,
                    "The security token included in the request is invalid: no memd API key has this access key id",
                )
            })?;
            return Ok((principal, auth.region));
        };
        let request = sigv4::SignedRequest {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query(),
            headers: &parts.headers,
            body,
        };
        sigv4::verify(
            &request,
            &auth,
            &secret,
            crate::time::now_us() as i64 / 1_000_000,
        )?;
        Ok((principal, auth.region))
    }
}

async fn dispatch(ctx: &Ctx<'_>, route: Route) -> Reply {
    use Route::*;
    match route {
        CreateMemory => memories::create(ctx).await,
        ListMemories => memories::list(ctx).await,
        GetMemory { memory_id } => memories::get(ctx, memory_id).await,
        UpdateMemory { memory_id } => memories::update(ctx, memory_id).await,
        DeleteMemory { memory_id } => memories::delete(ctx, memory_id).await,
        CreateEvent { memory_id } => events::create_event(ctx, memory_id).await,
        GetEvent(path) => events::get_event(ctx, path).await,
        DeleteEvent(path) => events::delete_event(ctx, path).await,
        ListEvents {
            memory_id,
            actor_id,
            session_id,
        } => events::list_events(ctx, memory_id, actor_id, session_id).await,
        ListActors { memory_id } => events::list_actors(ctx, memory_id).await,
        ListSessions {
            memory_id,
            actor_id,
        } => events::list_sessions(ctx, memory_id, actor_id).await,
        RetrieveMemoryRecords { memory_id } => records::retrieve(ctx, memory_id).await,
        ListMemoryRecords { memory_id } => records::list(ctx, memory_id).await,
        GetMemoryRecord {
            memory_id,
            record_id,
        } => records::get(ctx, memory_id, record_id).await,
        DeleteMemoryRecord {
            memory_id,
            record_id,
        } => records::delete(ctx, memory_id, record_id).await,
        BatchCreateMemoryRecords { memory_id } => {
            record_batches::batch_create(ctx, memory_id).await
        }
        BatchUpdateMemoryRecords { memory_id } => {
            record_batches::batch_update(ctx, memory_id).await
        }
        BatchDeleteMemoryRecords { memory_id } => {
            record_batches::batch_delete(ctx, memory_id).await
        }
        ListMemoryExtractionJobs { memory_id } => jobs::list_jobs(ctx, memory_id).await,
        StartMemoryExtractionJob { memory_id } => jobs::start_job(ctx, memory_id).await,
    }
}
