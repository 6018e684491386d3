//! `memctl actors …`, `memctl sessions …` and `memctl events …`.

use crate::Globals;
use crate::output::{self, EVENT_HEADERS, SESSION_HEADERS};
use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use memd_client::{named_turn, pb};
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

#[derive(Debug, Subcommand)]
pub enum ActorsCommand {
    /// List a memory's actors.
    List { memory_id: String },
    /// Erase everything stored about an actor.
    Delete { memory_id: String, actor_id: String },
}

pub async fn actors(ctx: &Globals, command: ActorsCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        ActorsCommand::List { memory_id } => {
            let actors: Vec<pb::Actor> = client.all_actors(memory_id).try_collect().await?;
            if ctx.json {
                output::print_json(&actors.iter().map(output::actor_json).collect());
            } else {
                output::table(
                    &["ACTOR ID", "CREATED"],
                    actors
                        .iter()
                        .map(|a| vec![a.actor_id.clone(), output::time(&a.create_time)])
                        .collect(),
                );
            }
        }
        ActorsCommand::Delete {
            memory_id,
            actor_id,
        } => {
            client.delete_actor(&memory_id, &actor_id).await?;
            eprintln!("erased actor {actor_id}");
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List an actor's sessions.
    List { memory_id: String, actor_id: String },
    /// Show one session.
    Get {
        memory_id: String,
        actor_id: String,
        session_id: String,
    },
    /// Keep a session ACTIVE without appending an event.
    Ping {
        memory_id: String,
        actor_id: String,
        session_id: String,
    },
    /// Follow session transitions as they happen (reconnects from the last cursor).
    Watch {
        memory_id: String,
        /// Actor id glob, e.g. "acme/*" (default: every actor the key covers).
        #[arg(long, default_value = "")]
        actor: String,
        /// Resume after this cursor (default: from now).
        #[arg(long, default_value = "")]
        cursor: String,
    },
}

pub async fn sessions(ctx: &Globals, command: SessionsCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let sessions: Vec<pb::Session> = match command {
        SessionsCommand::List {
            memory_id,
            actor_id,
        } => {
            client
                .all_sessions(memory_id, actor_id)
                .try_collect()
                .await?
        }
        SessionsCommand::Get {
            memory_id,
            actor_id,
            session_id,
        } => vec![client.get_session(memory_id, actor_id, session_id).await?],
        SessionsCommand::Ping {
            memory_id,
            actor_id,
            session_id,
        } => vec![client.ping_session(memory_id, actor_id, session_id).await?],
        SessionsCommand::Watch {
            memory_id,
            actor,
            cursor,
        } => return crate::watch::sessions(ctx, memory_id, actor, cursor).await,
    };
    if ctx.json {
        output::print_json(&sessions.iter().map(output::session_json).collect());
    } else {
        output::table(
            &SESSION_HEADERS,
            sessions.iter().map(output::session_row).collect(),
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    User,
    Assistant,
    Tool,
    Other,
}

impl From<RoleArg> for pb::Role {
    fn from(arg: RoleArg) -> Self {
        match arg {
            RoleArg::User => Self::User,
            RoleArg::Assistant => Self::Assistant,
            RoleArg::Tool => Self::Tool,
            RoleArg::Other => Self::Other,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Append an event: a conversational turn and/or a JSON document.
    Put {
        memory_id: String,
        actor_id: String,
        /// Conversation text (omit with --json-payload only).
        text: Option<String>,
        /// Session id; empty generates one.
        #[arg(long, default_value = "")]
        session: String,
        #[arg(long, value_enum, default_value = "user")]
        role: RoleArg,
        /// A JSON payload item.
        #[arg(long)]
        json_payload: Option<String>,
        /// Metadata as key=value. Repeatable.
        #[arg(long = "metadata", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Branch name; with --root to start it.
        #[arg(long)]
        branch: Option<String>,
        /// The event a new branch forks off.
        #[arg(long)]
        root: Option<String>,
        /// When it happened (RFC 3339, default now).
        #[arg(long)]
        timestamp: Option<String>,
        /// Idempotency token.
        #[arg(long, default_value = "")]
        client_token: String,
        /// Who spoke (long-term records name the speaker instead of saying "I").
        #[arg(long, default_value = "")]
        speaker: String,
        /// Keep the event out of long-term extraction.
        #[arg(long)]
        skip_extraction: bool,
    },
    /// List a session's events.
    List {
        memory_id: String,
        actor_id: String,
        session_id: String,
        /// Only this branch ("" = main).
        #[arg(long)]
        branch: Option<String>,
        /// With --branch: include parent branches up to the fork point.
        #[arg(long)]
        with_parents: bool,
        /// Metadata key=value that must match. Repeatable.
        #[arg(long = "where", value_parser = parse_pair)]
        equals: Vec<(String, String)>,
        /// Metadata key that must exist. Repeatable.
        #[arg(long)]
        has: Vec<String>,
        /// Metadata key that must be absent. Repeatable.
        #[arg(long)]
        missing: Vec<String>,
        #[arg(long)]
        newest_first: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Leave payloads out.
        #[arg(long)]
        no_payloads: bool,
    },
    /// Show one event.
    Get {
        memory_id: String,
        actor_id: String,
        session_id: String,
        event_id: String,
    },
    /// Delete one event.
    Delete {
        memory_id: String,
        actor_id: String,
        session_id: String,
        event_id: String,
    },
}

fn parse_pair(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

pub(crate) fn parse_time(raw: &str) -> anyhow::Result<prost_types::Timestamp> {
    let time = humantime::parse_rfc3339_weak(raw)
        .with_context(|| format!("--timestamp {raw:?} is not RFC 3339"))?;
    let since = time
        .duration_since(UNIX_EPOCH)
        .context("--timestamp before 1970")?;
    Ok(prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    })
}

fn show_events(ctx: &Globals, events: &[pb::Event]) {
    if ctx.json {
        output::print_json(&events.iter().map(output::event_json).collect());
    } else {
        output::table(
            &EVENT_HEADERS,
            events.iter().map(output::event_row).collect(),
        );
    }
}

pub async fn events(ctx: &Globals, command: EventsCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        EventsCommand::Put {
            memory_id,
            actor_id,
            text,
            session,
            role,
            json_payload,
            metadata,
            branch,
            root,
            timestamp,
            client_token,
            speaker,
            skip_extraction,
        } => {
            let mut payload: Vec<pb::PayloadItem> = text
                .map(|t| named_turn(role.into(), speaker, t))
                .into_iter()
                .collect();
            payload.extend(json_payload.map(|j| pb::PayloadItem {
                content: Some(pb::payload_item::Content::Json(j)),
            }));
            anyhow::ensure!(
                !payload.is_empty(),
                "give the event a TEXT or --json-payload"
            );
            let request = pb::CreateEventRequest {
                memory_id,
                actor_id,
                session_id: session,
                event_timestamp: timestamp.as_deref().map(parse_time).transpose()?,
                payload,
                branch: branch.map(|name| pb::Branch {
                    name,
                    root_event_id: root.unwrap_or_default(),
                }),
                metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
                client_token,
                extraction_mode: if skip_extraction {
                    pb::ExtractionMode::Skip as i32
                } else {
                    pb::ExtractionMode::Extract as i32
                },
            };
            let event = client.create_event(request).await?;
            if ctx.json {
                output::print_json(&output::event_json(&event));
            } else {
                output::table(
                    &["EVENT ID", "SESSION ID", "TIMESTAMP"],
                    vec![vec![
                        event.event_id.clone(),
                        event.session_id.clone(),
                        output::time(&event.event_timestamp),
                    ]],
                );
            }
        }
        EventsCommand::List {
            memory_id,
            actor_id,
            session_id,
            branch,
            with_parents,
            equals,
            has,
            missing,
            newest_first,
            limit,
            no_payloads,
        } => {
            let condition =
                |key: String, op: pb::MetadataOperator, value: String| pb::MetadataFilter {
                    key,
                    operator: op as i32,
                    value,
                };
            let metadata: Vec<pb::MetadataFilter> = equals
                .into_iter()
                .map(|(k, v)| condition(k, pb::MetadataOperator::EqualsTo, v))
                .chain(
                    has.into_iter()
                        .map(|k| condition(k, pb::MetadataOperator::Exists, String::new())),
                )
                .chain(
                    missing
                        .into_iter()
                        .map(|k| condition(k, pb::MetadataOperator::NotExists, String::new())),
                )
                .collect();
            let branch = branch.map(|name| pb::BranchFilter {
                name,
                include_parent_branches: with_parents,
            });
            let filter = (branch.is_some() || !metadata.is_empty())
                .then_some(pb::EventFilter { branch, metadata });
            let request = pb::ListEventsRequest {
                memory_id,
                actor_id,
                session_id,
                include_payloads: !no_payloads,
                filter,
                page_size: 100,
                page_token: String::new(),
                newest_first,
            };
            let events: Vec<pb::Event> = client
                .all_events(request)
                .take(limit.unwrap_or(usize::MAX))
                .try_collect()
                .await?;
            show_events(ctx, &events);
        }
        EventsCommand::Get {
            memory_id,
            actor_id,
            session_id,
            event_id,
        } => {
            let event = client
                .get_event(pb::GetEventRequest {
                    memory_id,
                    actor_id,
                    session_id,
                    event_id,
                })
                .await?;
            show_events(ctx, &[event]);
        }
        EventsCommand::Delete {
            memory_id,
            actor_id,
            session_id,
            event_id,
        } => {
            client
                .delete_event(pb::DeleteEventRequest {
                    memory_id,
                    actor_id,
                    session_id,
                    event_id: event_id.clone(),
                })
                .await?;
            eprintln!("deleted event {event_id}");
        }
    }
    Ok(())
}
