//! What the chaos driver knows it wrote and deleted, and how sure it is: a write or a delete
//! is acknowledged (it must be there, or gone, for good), in flight when memd was killed
//! (unknown: it may or may not have happened, but never twice), or in flight with a client
//! token (retried after the restart: it must then have happened exactly once).

/// Whether a write happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Acked,
    /// In flight at the kill, no client token: found at most once, or not at all.
    Unknown,
    /// In flight at the kill with a client token: retried after the restart.
    Retry,
    /// In flight at the kill, and not found afterwards: it never happened.
    Lost,
}

/// Whether a delete happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    No,
    /// Sent (in progress), or in flight at the kill.
    Maybe,
    /// Acknowledged in `cycle`.
    Yes {
        cycle: usize,
    },
}

/// One CreateEvent.
#[derive(Debug, Clone)]
pub struct Event {
    pub cycle: usize,
    pub actor: String,
    /// Unique among everything the driver writes; also a search term.
    pub tag: String,
    pub text: String,
    /// The client token, when the request carried one.
    pub token: Option<String>,
    pub id: Option<String>,
    pub written: Written,
    pub deleted: Deleted,
    /// Written to an actor that the workload may erase whole (not a DeleteEvent target).
    pub disposable: bool,
}

impl Event {
    /// Whether it must be there now.
    pub fn live(&self) -> bool {
        self.written == Written::Acked && self.deleted == Deleted::No
    }
}

/// One record written with BatchCreateMemoryRecords (always with a client token).
#[derive(Debug, Clone)]
pub struct Record {
    pub cycle: usize,
    pub namespace: String,
    pub tag: String,
    pub text: String,
    pub token: String,
    pub id: Option<String>,
    pub written: Written,
    pub deleted: Deleted,
}

impl Record {
    pub fn live(&self) -> bool {
        self.written == Written::Acked && self.deleted == Deleted::No
    }
}

/// An actor the workload writes a few events to and then erases with DeleteActor.
#[derive(Debug, Clone)]
pub struct Disposable {
    pub actor: String,
    pub deleted: Deleted,
}

/// Everything written so far, across cycles.
#[derive(Debug, Default)]
pub struct Ledger {
    pub events: Vec<Event>,
    pub records: Vec<Record>,
    pub disposables: Vec<Disposable>,
    /// Requests that failed before the kill: memd must not fail under this load.
    pub unexpected: Vec<String>,
}

/// The actor of worker `worker`'s events in `cycle` (one per cycle keeps each check's
/// listings to what the cycle wrote).
pub fn worker_actor(cycle: usize, worker: usize) -> String {
    format!("chaos/c{cycle}/w{worker}")
}

/// The namespace of the records written directly in `cycle`.
pub fn record_namespace(cycle: usize) -> String {
    format!("/chaos/direct/c{cycle}/")
}

/// The namespace prefix of the records extracted from `cycle`'s events (the "facts"
/// strategy's default template).
pub fn extracted_namespace(cycle: usize) -> String {
    format!("/strategies/facts/actors/chaos/c{cycle}/")
}

const ANIMALS: [&str; 6] = ["cat", "dog", "parrot", "rabbit", "tortoise", "hamster"];
const CITIES: [&str; 6] = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Tunis"];

/// A self-statement the built-in extractor turns into one fact; `tag` is its own word.
pub fn event_text(tag: &str, n: usize) -> String {
    format!(
        "I adopted a {} named {tag} in {}, microchip number {n}77.",
        ANIMALS[n % ANIMALS.len()],
        CITIES[(n / ANIMALS.len()) % CITIES.len()]
    )
}

/// A record's text; `tag` is its own word.
pub fn record_text(tag: &str, n: usize) -> String {
    format!(
        "Invoice {tag} was paid by wire transfer from {}.",
        CITIES[n % CITIES.len()]
    )
}
