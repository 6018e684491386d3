//! memd's extractors: conversation turns in, candidate long-term memory records out.
//!
//! Pure logic: no storage, no gRPC, no clocks. The server's in-process workers, remote
//! workers and the tests all call the same [`Extractor`]s, and [`consolidate`] decides what a
//! candidate does to the records a namespace already holds.
//!
//! The built-in extractor ([`BuiltinExtractor`]) needs no model and no network: it attributes
//! first-person statements to the speaker by name, resolves relative dates against the turn's
//! timestamp, and builds session summaries and episodes from the most informative sentences.

pub mod builtin;
pub mod consolidate;
pub mod dates;
pub mod llm;
pub mod text;

pub use builtin::BuiltinExtractor;
pub use consolidate::{Decision, Existing, Namespace, consolidate};
pub use llm::{LlmConfig, LlmExtractor};

use chrono::{DateTime, Utc};

/// What a strategy keeps; each memd strategy type maps onto one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// Standalone facts about the speakers and the world (`SEMANTIC`).
    Fact,
    /// Preferences with the context they were stated in (`USER_PREFERENCE`).
    Preference,
    /// A running summary of one session (`SUMMARY`).
    Summary,
    /// One record per completed episode: situation, actions, outcome (`EPISODIC`).
    Episode,
}

/// Who produced a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    Tool,
    Other,
}

/// One conversational event, as the extractor sees it.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The event id: becomes the provenance of every record drawn from this turn.
    pub event_id: String,
    /// When the turn happened (the event timestamp); relative dates resolve against it.
    pub time: DateTime<Utc>,
    pub role: Role,
    /// Who spoke, by name ("Caroline"); records say this instead of "I".
    pub speaker: String,
    pub text: String,
}

/// One extraction request: the new turns of a job, with the turns before them for context.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub kind: RecordKind,
    /// The turns to extract from, in conversation order.
    pub turns: &'a [Turn],
    /// Earlier turns of the same session (oldest first), used to tell who "you" is.
    pub context: &'a [Turn],
    /// The session has ended: summaries and episodes are final.
    pub session_ended: bool,
    /// What the extractor returned as [`Candidate::state`] for this slot last time (running
    /// summaries fold new turns into it instead of re-reading the whole session).
    pub state: Option<&'a str>,
}

/// How a candidate relates to records that describe the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    /// At most one live record per key, rewritten in place (a session's running summary).
    Running(String),
    /// At most one value can hold per key ("Caroline lives in X"): a different value
    /// supersedes the old record, which stays in history with its validity interval.
    Exclusive(String),
}

/// The slot of the one running record a kind keeps per namespace (summaries, episodes).
pub fn running_slot(kind: RecordKind) -> Option<Slot> {
    match kind {
        RecordKind::Summary => Some(Slot::Running("summary".into())),
        RecordKind::Episode => Some(Slot::Running("episode".into())),
        RecordKind::Fact | RecordKind::Preference => None,
    }
}

/// A record an extractor proposes; consolidation decides whether it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub text: String,
    /// Ids of the turns the text was drawn from.
    pub source_event_ids: Vec<String>,
    pub slot: Option<Slot>,
    /// When the fact became true: a resolved date in the text, else the turn's time.
    pub valid_from: DateTime<Utc>,
    /// Opaque state to hand back in the next [`Input::state`] for the same slot.
    pub state: Option<String>,
}

/// Why an extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Worth retrying (a timeout, a rate limit, a malformed model answer).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (bad configuration).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Turns conversation into candidate records.
pub trait Extractor: Send + Sync {
    /// Recorded in every record's provenance, e.g. `builtin`.
    fn name(&self) -> &str;
    /// Bumped whenever the same input would give different records.
    fn version(&self) -> &str;
    fn extract(&self, input: &Input<'_>) -> Result<Vec<Candidate>, ExtractError>;
    /// Model tokens spent so far (a running total; zero for extractors without a model).
    fn tokens_used(&self) -> u64 {
        0
    }
}
