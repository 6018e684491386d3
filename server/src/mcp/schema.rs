//! What the model sees of memd's MCP tools: the instructions, each tool's description and
//! annotations, and its argument schema, derived from the structs below (their doc comments
//! become the argument descriptions). `deny_unknown_fields` makes an argument outside the
//! schema, such as an attempt to name another actor, an error that names it.

use memd_proto::v1 as pb;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use rmcp::schemars::{self, JsonSchema};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Told to the host at initialisation; hosts pass it to the model.
pub const INSTRUCTIONS: &str = "memd is this agent's long-term memory. Call `get_context` \
when a conversation starts or resumes, with what you are about to work on. Call `remember` \
with anything the user tells you that should outlive this conversation (facts about them, \
preferences, decisions, commitments), in their words. Call `recall` to ask what memory knows \
about something, `search_history` to find what was said before, and `forget` when the user \
asks you to forget a specific thing.";

/// Every tool's name.
pub const NAMES: [&str; 6] = [
    "remember",
    "recall",
    "search_history",
    "get_context",
    "list_sessions",
    "forget",
];

/// The speaker of a turn.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Role {
    /// What the user said (the default); facts and preferences are drawn from these.
    #[default]
    User,
    /// What the assistant (you) said.
    Assistant,
    /// A tool's output.
    Tool,
    /// Anything else, e.g. a note.
    Other,
}

/// How a query is matched.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Mode {
    /// Words and meaning together (the default).
    #[default]
    Hybrid,
    /// Exact words only (names, ids, codes).
    Keyword,
    /// Meaning only (paraphrases).
    Semantic,
}

impl Mode {
    pub(super) fn proto(self) -> i32 {
        match self {
            Mode::Hybrid => pb::SearchMode::Hybrid as i32,
            Mode::Keyword => pb::SearchMode::Keyword as i32,
            Mode::Semantic => pb::SearchMode::Semantic as i32,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Remember {
    /// What was said or should be noted, in full sentences (at most 100,000 characters).
    pub(super) text: String,
    /// Who said it: "user" (default), "assistant", "tool" or "other".
    #[serde(default)]
    pub(super) role: Role,
    /// The speaker's name, e.g. "Caroline"; long-term records name them instead of saying
    /// "I". Default: the actor for user turns, the role otherwise.
    #[serde(default)]
    pub(super) speaker: Option<String>,
    /// The session to append to (default: this conversation's session).
    #[serde(default)]
    pub(super) session_id: Option<String>,
    /// Up to 15 string labels, e.g. {"topic": "travel"}.
    #[serde(default)]
    pub(super) metadata: Option<BTreeMap<String, String>>,
    /// Whether long-term memory (facts, preferences, summaries) is drawn from it (default
    /// true). Use false for chatter that should only be kept as history.
    #[serde(default)]
    pub(super) extract: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Recall {
    /// What you want to know, as a question or keywords, e.g. "Where does the user live?".
    pub(super) query: String,
    /// How many records to return, 1-50 (default 5).
    #[serde(default)]
    pub(super) top_k: Option<u32>,
    /// Only records in namespaces starting with this prefix, e.g. "/users/alice/preferences".
    #[serde(default)]
    pub(super) namespace: Option<String>,
    /// "hybrid" (default), "keyword" or "semantic".
    #[serde(default)]
    pub(super) mode: Mode,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchHistory {
    /// Words or a sentence to look for in earlier conversation.
    pub(super) query: String,
    /// How many events to return, 1-50 (default 5).
    #[serde(default)]
    pub(super) top_k: Option<u32>,
    /// Only this session (default: every session of this actor).
    #[serde(default)]
    pub(super) session_id: Option<String>,
    /// "hybrid" (default), "keyword" or "semantic".
    #[serde(default)]
    pub(super) mode: Mode,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetContext {
    /// What you are about to work on; relevant long-term memory and earlier conversation
    /// are chosen by it. Empty: the session's latest turn.
    #[serde(default)]
    pub(super) query: Option<String>,
    /// Roughly how many tokens the context may use, 100-100000 (default 2000).
    #[serde(default)]
    pub(super) token_budget: Option<u32>,
    /// The session being resumed (default: this conversation's session).
    #[serde(default)]
    pub(super) session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListSessions {
    /// How many sessions to return, 1-100 (default 20).
    #[serde(default)]
    pub(super) limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Forget {
    /// The id of the record to delete, as `recall` or `get_context` returned it.
    pub(super) memory_record_id: String,
}

fn tool<T: JsonSchema + 'static>(name: &'static str, description: &'static str) -> Tool {
    Tool::new(name, description, JsonObject::new()).with_input_schema::<T>()
}

/// Every tool, with its schema and annotations.
pub fn definitions() -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true).open_world(false);
    vec![
        tool::<Remember>(
            "remember",
            "Store a conversation turn or a note in memory. Long-term facts, preferences and \
             summaries are drawn from it in the background, so state things plainly (\"I am \
             allergic to peanuts\"). Returns the stored event's id.",
        )
        .annotate(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .open_world(false),
        ),
        tool::<Recall>(
            "recall",
            "Ask long-term memory what it knows: returns the most relevant facts, preferences \
             and summaries, each with its record id, namespace and the date it became true.",
        )
        .annotate(read_only()),
        tool::<SearchHistory>(
            "search_history",
            "Search earlier conversation turns (all sessions of this user unless one is given) \
             for words or a meaning; returns the matching turns with when they were said.",
        )
        .annotate(read_only()),
        tool::<GetContext>(
            "get_context",
            "Load what you need to resume work, within a token budget: the session's summary \
             and latest turns, then the long-term records and earlier turns most relevant to \
             the query. Call it when a conversation starts or resumes.",
        )
        .annotate(read_only()),
        tool::<ListSessions>(
            "list_sessions",
            "List this user's conversation sessions with their state (ACTIVE, IDLE or \
             TERMINATED), size and last activity.",
        )
        .annotate(read_only()),
        tool::<Forget>(
            "forget",
            "Delete one long-term memory record by id (from recall or get_context), e.g. when \
             the user asks you to forget something. Conversation history is kept.",
        )
        .annotate(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
    ]
}
