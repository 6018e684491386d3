//! How each MCP tool call becomes memd calls, in the caller's scope (the schemas the model
//! sees are in `schema.rs`).
//!
//! A failed call is a tool result with `isError: true` whose text starts with the gRPC code
//! (`PERMISSION_DENIED: api key … may not read actor bob`), so the model and the host both
//! see why; arguments outside the schema are refused the same way, naming the argument.

use super::schema::{Forget, GetContext, ListSessions, Recall, Remember, Role, SearchHistory};
use super::sessions::DefaultSessions;
use super::{Backend, Scope, render};
use memd_proto::v1 as pb;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tonic::{Code, Status};

/// One tool call, in its caller's scope.
pub struct ToolCall<'a> {
    pub scope: &'a Scope,
    pub backend: &'a dyn Backend,
    pub sessions: &'a DefaultSessions,
}

/// A tool's failure, shown to the model.
struct Failure {
    code: &'static str,
    message: String,
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self {
            code: code_name(status.code()),
            message: status.message().to_string(),
        }
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        code: "INVALID_ARGUMENT",
        message: message.into(),
    }
}

/// The gRPC code's canonical name.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Text for the model, and the same as JSON for programs.
type Success = (String, Value);

fn parse<T: DeserializeOwned>(arguments: Option<JsonObject>) -> Result<T, Failure> {
    let value = Value::Object(arguments.unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            invalid(format!("arguments: {}", err.into_inner()))
        } else {
            invalid(format!("argument {path}: {}", err.into_inner()))
        }
    })
}

fn count(field: &str, value: Option<u32>, default: u32, max: u32) -> Result<i32, Failure> {
    match value.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n as i32),
        _ => Err(invalid(format!("argument {field}: must be 1-{max}"))),
    }
}

impl ToolCall<'_> {
    /// Runs tool `name`; every failure is an error result, never a protocol error. Also
    /// returns the outcome for metrics: "OK" or the failure's gRPC code.
    pub async fn run(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> (CallToolResult, &'static str) {
        let outcome = match name {
            "remember" => self.remember(arguments).await,
            "recall" => self.recall(arguments).await,
            "search_history" => self.search_history(arguments).await,
            "get_context" => self.get_context(arguments).await,
            "list_sessions" => self.list_sessions(arguments).await,
            "forget" => self.forget(arguments).await,
            other => Err(Failure {
                code: "NOT_FOUND",
                message: format!(
                    "no tool named {other:?}; the tools are remember, recall, search_history, get_context, list_sessions and forget"
                ),
            }),
        };
        match outcome {
            Ok((text, structured)) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content = Some(structured);
                (result, "OK")
            }
            Err(failure) => {
                let code = failure.code;
                (failure.into_result(), code)
            }
        }
    }

    /// The session a call works in: the host's, else the model's, else the default one.
    fn session(&self, requested: Option<String>) -> Result<(String, bool), Failure> {
        let requested = requested.filter(|s| !s.is_empty());
        match (&self.scope.session_id, requested) {
            (Some(fixed), Some(asked)) if *fixed != asked => Err(Failure {
                code: "PERMISSION_DENIED",
                message: format!("this host may only use session {fixed}, not {asked}"),
            }),
            (Some(fixed), _) => Ok((fixed.clone(), false)),
            (None, Some(asked)) => Ok((asked, false)),
            (None, None) => Ok((
                self.sessions
                    .current(&self.scope.memory_id, &self.scope.actor_id),
                true,
            )),
        }
    }

    async fn remember(&self, arguments: Option<JsonObject>) -> Result<Success, Failure> {
        let args: Remember = parse(arguments)?;
        let role = match args.role {
            Role::User => pb::Role::User,
            Role::Assistant => pb::Role::Assistant,
            Role::Tool => pb::Role::Tool,
            Role::Other => pb::Role::Other,
        };
        let (mut session_id, is_default) = self.session(args.session_id)?;
        let mut request = pb::CreateEventRequest {
            memory_id: self.scope.memory_id.clone(),
            actor_id: self.scope.actor_id.clone(),
            session_id: session_id.clone(),
            payload: vec![pb::PayloadItem {
                content: Some(pb::payload_item::Content::Conversational(
                    pb::Conversational {
                        role: role as i32,
                        text: args.text,
                        name: args.speaker.unwrap_or_default(),
                    },
                )),
            }],
            metadata: args.metadata.unwrap_or_default(),
            extraction_mode: if args.extract == Some(false) {
                pb::ExtractionMode::Skip
            } else {
                pb::ExtractionMode::Extract
            } as i32,
            ..Default::default()
        };
        let created = match self.backend.create_event(request.clone()).await {
            // The default session idled out and terminated: carry on in a new one.
            Err(status) if is_default && status.code() == Code::FailedPrecondition => {
                session_id =
                    self.sessions
                        .replace(&self.scope.memory_id, &self.scope.actor_id, &session_id);
                request.session_id = session_id.clone();
                self.backend.create_event(request).await?
            }
            other => other?,
        };
        let event = created.event.unwrap_or_default();
        Ok((
            format!(
                "Remembered as event {} in session {session_id}.",
                event.event_id
            ),
            json!({ "event_id": event.event_id, "session_id": session_id }),
        ))
    }

    async fn recall(&self, arguments: Option<JsonObject>) -> Result<Success, Failure> {
        let args: Recall = parse(arguments)?;
        let top_k = count("top_k", args.top_k, 5, 50)?;
        let namespace = match args.namespace {
            Some(ns) if !ns.starts_with(&self.scope.namespace) => {
                return Err(Failure {
                    code: "PERMISSION_DENIED",
                    message: format!(
                        "this host may only read namespaces under {:?}",
                        self.scope.namespace
                    ),
                });
            }
            Some(ns) => ns,
            None => self.scope.namespace.clone(),
        };
        // Fails as the actor's other reads do when the key does not cover the actor.
        super::check_actor(self.scope, self.backend).await?;
        // Records of other actors the key can read are left out, so ask for more.
        let reply = self
            .backend
            .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                memory_id: self.scope.memory_id.clone(),
                namespace,
                search_criteria: Some(pb::SearchCriteria {
                    search_query: args.query,
                    top_k: (top_k * 3).min(100),
                    mode: args.mode.proto(),
                    ..Default::default()
                }),
                page_size: (top_k * 3).min(100),
                ..Default::default()
            })
            .await?;
        let hits: Vec<(&pb::MemoryRecord, f64)> = reply
            .memory_records
            .iter()
            .filter_map(|scored| Some((scored.memory_record.as_ref()?, scored.score)))
            .filter(|(record, _)| self.scope.holds(record))
            .take(top_k as usize)
            .collect();
        let text = if hits.is_empty() {
            "Memory holds nothing relevant to that.".to_string()
        } else {
            hits.iter()
                .map(|(record, _)| render::record_line(record))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let structured: Vec<Value> = hits
            .iter()
            .map(|(record, score)| render::record(record, Some(*score)))
            .collect();
        Ok((text, json!({ "records": structured })))
    }

    async fn search_history(&self, arguments: Option<JsonObject>) -> Result<Success, Failure> {
        let args: SearchHistory = parse(arguments)?;
        let top_k = count("top_k", args.top_k, 5, 50)?;
        let session_ids = match args.session_id.filter(|s| !s.is_empty()) {
            Some(session) => vec![session],
            None => Vec::new(),
        };
        let reply = self
            .backend
            .search_events(pb::SearchEventsRequest {
                memory_id: self.scope.memory_id.clone(),
                actor_id: self.scope.actor_id.clone(),
                session_ids,
                query: args.query,
                top_k,
                mode: args.mode.proto(),
                ..Default::default()
            })
            .await?;
        let events: Vec<&pb::Event> = reply
            .events
            .iter()
            .filter_map(|s| s.event.as_ref())
            .collect();
        let text = if events.is_empty() {
            "No earlier conversation matches that.".to_string()
        } else {
            events
                .iter()
                .map(|e| render::event_line(e))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let structured: Vec<Value> = reply
            .events
            .iter()
            .filter_map(|s| s.event.as_ref().map(|e| render::event(e, Some(s.score))))
            .collect();
        Ok((text, json!({ "events": structured })))
    }

    async fn get_context(&self, arguments: Option<JsonObject>) -> Result<Success, Failure> {
        let args: GetContext = parse(arguments)?;
        let token_budget = match args.token_budget {
            None => 0,
            Some(n) if (100..=100_000).contains(&n) => n as i32,
            Some(_) => return Err(invalid("argument token_budget: must be 100-100000")),
        };
        let (session_id, _) = self.session(args.session_id)?;
        let reply = self
            .backend
            .get_context(pb::GetContextRequest {
                memory_id: self.scope.memory_id.clone(),
                actor_id: self.scope.actor_id.clone(),
                session_id: session_id.clone(),
                query: args.query.unwrap_or_default(),
                token_budget,
            })
            .await?;
        let items: Vec<Value> = reply.items.iter().map(render::context_item).collect();
        Ok((
            render::context_text(&reply.items),
            json!({ "session_id": session_id, "tokens_used": reply.tokens_used, "items": items }),
        ))
    }

    async fn list_sessions(&self, arguments: Option<JsonObject>) -> Result<Success, Failure> {
        let args: ListSessions = parse(arguments)?;
        let limit = count("limit", args.limit, 20, 100)?;
        let reply = self
            .backend
            .list_sessions(pb::ListSessionsRequest {
                memory_id: self.scope.memory_id.clone(),
                actor_id: self.scope.actor_id.clone(),
                page_size: limit,
                page_token: String::new(),
            })
            .await?;
        let sessions: Vec<Value> = reply.sessions.iter().map(render::session).collect();
        let text = if sessions.is_empty() {
            "No sessions yet.".to_string()
        } else {
            sessions
                .iter()
                .map(|s| {
                    format!(
                        "- {} ({}, {} events, last event {})",
                        s["session_id"].as_str().unwrap_or_default(),
                        s["state"].as_str().unwrap_or_default(),
                        s["event_count"],
                        s["last_event_time"].as_str().unwrap_or("never"),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok((text, json!({ "sessions": sessions })))
    }

    async fn forget(&self, arguments: Option<JsonObject>) -> Result<Success, Failure> {
        let args: Forget = parse(arguments)?;
        let memory_id = self.scope.memory_id.clone();
        let record = self
            .backend
            .get_memory_record(pb::GetMemoryRecordRequest {
                memory_id: memory_id.clone(),
                memory_record_id: args.memory_record_id.clone(),
            })
            .await?;
        // The key may reach further than this host's scope; forget stays inside it.
        if !self.scope.holds(&record) {
            return Err(Failure {
                code: "PERMISSION_DENIED",
                message: format!(
                    "record {} is outside this host's scope (actor {}, namespaces under {:?})",
                    record.memory_record_id, self.scope.actor_id, self.scope.namespace
                ),
            });
        }
        self.backend
            .delete_memory_record(pb::DeleteMemoryRecordRequest {
                memory_id,
                memory_record_id: args.memory_record_id.clone(),
            })
            .await?;
        Ok((
            format!("Forgot record {}: {}", args.memory_record_id, record.text),
            json!({ "deleted": args.memory_record_id }),
        ))
    }
}

impl Failure {
    fn into_result(self) -> CallToolResult {
        let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
            "{}: {}",
            self.code, self.message
        ))]);
        result.structured_content =
            Some(json!({ "error": { "code": self.code, "message": self.message } }));
        result
    }
}
