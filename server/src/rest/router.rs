//! Which AgentCore operation a method and path name, with its path parameters decoded.
//! Both planes share one listener: their paths do not overlap.

use super::errors::AwsError;
use super::events::EventPath;
use super::ids;
use http::Method;
use percent_encoding::percent_decode_str;

/// An operation and its path parameters (memory ids already freed of any ARN).
pub enum Route {
    CreateMemory,
    ListMemories,
    GetMemory {
        memory_id: String,
    },
    UpdateMemory {
        memory_id: String,
    },
    DeleteMemory {
        memory_id: String,
    },
    CreateEvent {
        memory_id: String,
    },
    GetEvent(EventPath),
    DeleteEvent(EventPath),
    ListEvents {
        memory_id: String,
        actor_id: String,
        session_id: String,
    },
    ListActors {
        memory_id: String,
    },
    ListSessions {
        memory_id: String,
        actor_id: String,
    },
    RetrieveMemoryRecords {
        memory_id: String,
    },
    ListMemoryRecords {
        memory_id: String,
    },
    GetMemoryRecord {
        memory_id: String,
        record_id: String,
    },
    DeleteMemoryRecord {
        memory_id: String,
        record_id: String,
    },
    BatchCreateMemoryRecords {
        memory_id: String,
    },
    BatchUpdateMemoryRecords {
        memory_id: String,
    },
    BatchDeleteMemoryRecords {
        memory_id: String,
    },
    ListMemoryExtractionJobs {
        memory_id: String,
    },
    StartMemoryExtractionJob {
        memory_id: String,
    },
}

impl Route {
    /// The operation's name (a metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Route::CreateMemory => "CreateMemory",
            Route::ListMemories => "ListMemories",
            Route::GetMemory { .. } => "GetMemory",
            Route::UpdateMemory { .. } => "UpdateMemory",
            Route::DeleteMemory { .. } => "DeleteMemory",
            Route::CreateEvent { .. } => "CreateEvent",
            Route::GetEvent(_) => "GetEvent",
            Route::DeleteEvent(_) => "DeleteEvent",
            Route::ListEvents { .. } => "ListEvents",
            Route::ListActors { .. } => "ListActors",
            Route::ListSessions { .. } => "ListSessions",
            Route::RetrieveMemoryRecords { .. } => "RetrieveMemoryRecords",
            Route::ListMemoryRecords { .. } => "ListMemoryRecords",
            Route::GetMemoryRecord { .. } => "GetMemoryRecord",
            Route::DeleteMemoryRecord { .. } => "DeleteMemoryRecord",
            Route::BatchCreateMemoryRecords { .. } => "BatchCreateMemoryRecords",
            Route::BatchUpdateMemoryRecords { .. } => "BatchUpdateMemoryRecords",
            Route::BatchDeleteMemoryRecords { .. } => "BatchDeleteMemoryRecords",
            Route::ListMemoryExtractionJobs { .. } => "ListMemoryExtractionJobs",
            Route::StartMemoryExtractionJob { .. } => "StartMemoryExtractionJob",
        }
    }
}

/// Percent-decodes one path segment or query component.
pub fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// Routes `method` and the raw (still encoded) `path`.
pub fn route(method: &Method, path: &str) -> Result<Route, AwsError> {
    let unknown = || {
        AwsError::new(
            "UnknownOperationException",
            404,
            format!("no AgentCore Memory operation is {method} {path}"),
        )
    };
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if raw.first() != Some(&"memories") {
        return Err(unknown());
    }
    let segments: Vec<String> = raw.iter().map(|s| decode(s)).collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let memory = || ids::memory_id("memoryId", s[1]);
    let event = |s: &[&str]| -> Result<EventPath, AwsError> {
        Ok(EventPath {
            memory_id: memory()?,
            actor_id: s[3].to_string(),
            session_id: s[5].to_string(),
            event_id: s[7].to_string(),
        })
    };
    let m = method.clone();
    Ok(match (&m, &s[1..]) {
        (&Method::POST, ["create"]) => Route::CreateMemory,
        (&Method::POST, [] | [""]) => Route::ListMemories,
        (&Method::GET, [_, "details"]) => Route::GetMemory {
            memory_id: memory()?,
        },
        (&Method::PUT, [_, "update"]) => Route::UpdateMemory {
            memory_id: memory()?,
        },
        (&Method::DELETE, [_, "delete"]) => Route::DeleteMemory {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "events"]) => Route::CreateEvent {
            memory_id: memory()?,
        },
        (&Method::GET, [_, "actor", _, "sessions", _, "events", _]) => Route::GetEvent(event(&s)?),
        (&Method::DELETE, [_, "actor", _, "sessions", _, "events", _]) => {
            Route::DeleteEvent(event(&s)?)
        }
        (&Method::POST, [_, "actor", actor, "sessions", session]) => Route::ListEvents {
            memory_id: memory()?,
            actor_id: actor.to_string(),
            session_id: session.to_string(),
        },
        (&Method::POST, [_, "actors"]) => Route::ListActors {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "actor", actor, "sessions"]) => Route::ListSessions {
            memory_id: memory()?,
            actor_id: actor.to_string(),
        },
        (&Method::POST, [_, "retrieve"]) => Route::RetrieveMemoryRecords {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "memoryRecords"]) => Route::ListMemoryRecords {
            memory_id: memory()?,
        },
        (&Method::GET, [_, "memoryRecord", record]) => Route::GetMemoryRecord {
            memory_id: memory()?,
            record_id: record.to_string(),
        },
        (&Method::DELETE, [_, "memoryRecords", record]) => Route::DeleteMemoryRecord {
            memory_id: memory()?,
            record_id: record.to_string(),
        },
        (&Method::POST, [_, "memoryRecords", "batchCreate"]) => Route::BatchCreateMemoryRecords {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "memoryRecords", "batchUpdate"]) => Route::BatchUpdateMemoryRecords {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "memoryRecords", "batchDelete"]) => Route::BatchDeleteMemoryRecords {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "extractionJobs"]) => Route::ListMemoryExtractionJobs {
            memory_id: memory()?,
        },
        (&Method::POST, [_, "extractionJobs", "start"]) => Route::StartMemoryExtractionJob {
            memory_id: memory()?,
        },
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_both_planes_route() {
        let ok = |m: Method, p: &str| route(&m, p).is_ok();
        assert!(matches!(
            route(&Method::POST, "/memories/create"),
            Ok(Route::CreateMemory)
        ));
        assert!(matches!(
            route(&Method::POST, "/memories/"),
            Ok(Route::ListMemories)
        ));
        assert!(ok(Method::GET, "/memories/support-abcdefghij/details"));
        assert!(ok(Method::POST, "/memories/support-abcdefghij/events"));
        match route(
            &Method::POST,
            "/memories/m-abcdefghij/actor/acme%2Fu1/sessions/s1",
        ) {
            Ok(Route::ListEvents {
                actor_id,
                session_id,
                ..
            }) => {
                assert_eq!((actor_id.as_str(), session_id.as_str()), ("acme/u1", "s1"));
            }
            _ => panic!("ListEvents"),
        }
        match route(
            &Method::GET,
            "/memories/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A000000000000%3Amemory%2Fm-abcdefghij/actor/a/sessions/s/events/17%23ab",
        ) {
            Ok(Route::GetEvent(path)) => {
                assert_eq!(path.memory_id, "m-abcdefghij");
                assert_eq!(path.event_id, "17#ab");
            }
            _ => panic!("GetEvent"),
        }
        assert!(ok(
            Method::POST,
            "/memories/m-abcdefghij/memoryRecords/batchDelete"
        ));
        assert!(ok(
            Method::POST,
            "/memories/m-abcdefghij/extractionJobs/start"
        ));
        for (m, p) in [
            (Method::GET, "/memories/m-abcdefghij/events"),
            (Method::POST, "/other"),
            (Method::POST, "/memories/m/x/y/z"),
        ] {
            assert_eq!(
                route(&m, p).err().map(|e| e.code),
                Some("UnknownOperationException"),
                "{p}"
            );
        }
    }
}
