//! What users say about themselves becomes long-term memory: the labelled set in
//! `tests/data/self-statements` (a tuning split and a held-out split) through a real server
//! with SEMANTIC and USER_PREFERENCE strategies on the built-in extractor. Prints the numbers
//! of both splits and holds the held-out one to the targets in docs/benchmarks.md.

use memd_client::{MemdClient, pb};
use memd_tests::{TestServer, extraction_jobs, memory_records, named_event};
use regex::Regex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

/// Share of statements (facts, likes, instructions) that must yield their record.
const MIN_YIELD: f64 = 0.95;
/// Share of likes, dislikes and instructions that must reach USER_PREFERENCE.
const MIN_PREFERENCE: f64 = 0.90;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Fact,
    Preference,
    Instruction,
    Chat,
}

#[derive(Debug)]
struct Item {
    category: String,
    kind: Kind,
    negated: bool,
    text: String,
    expected: Vec<String>,
}

fn load(split: &str) -> Vec<Item> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/self-statements")
        .join(format!("{split}.tsv"));
    let raw = std::fs::read_to_string(&path).expect("the labelled set");
    raw.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "{}: {line:?}", path.display());
            Item {
                category: cols[0].into(),
                kind: match cols[1] {
                    "fact" => Kind::Fact,
                    "pref" => Kind::Preference,
                    "instr" => Kind::Instruction,
                    "chat" => Kind::Chat,
                    other => panic!("unknown kind {other:?} in {line:?}"),
                },
                negated: cols[2] == "neg",
                text: cols[3].into(),
                expected: cols[4]
                    .split('|')
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect(),
            }
        })
        .collect()
}

static NEGATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(\b(not|no|never|nor|without|rarely|seldom|hardly|barely|none)\b|n't\b)")
        .unwrap()
});
/// Words that leave a record in the first or second person, or as an order to the assistant.
static NOT_THIRD_PERSON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(i|i'm|me|my|mine|you|your|please)\b|^(reply|answer|respond|use|call|keep|be|write|talk|speak|always|never|don't|no)\b").unwrap()
});

/// A record holds an item's fact: every expected word, about Maria, in the third person.
fn holds(record: &str, item: &Item) -> bool {
    let lower = record.to_lowercase();
    item.expected.iter().all(|w| lower.contains(w))
        && record.contains("Maria")
        && !NOT_THIRD_PERSON.is_match(record.split(" (said on").next().unwrap_or(record))
}

#[derive(Default)]
struct Score {
    statements: usize,
    yielded: usize,
    preferences: usize,
    in_preference: usize,
    chat: usize,
    chat_records: usize,
    negated: usize,
    negation_lost: usize,
    misses: Vec<String>,
}

impl Score {
    fn ratio(part: usize, whole: usize) -> f64 {
        if whole == 0 {
            1.0
        } else {
            part as f64 / whole as f64
        }
    }

    fn report(&self, split: &str) -> String {
        format!(
            "{split}: facts yielded {}/{} ({:.3}); preferences and instructions in USER_PREFERENCE {}/{} ({:.3}); chit-chat with records {}/{}; negations lost {}/{}",
            self.yielded,
            self.statements,
            Self::ratio(self.yielded, self.statements),
            self.in_preference,
            self.preferences,
            Self::ratio(self.in_preference, self.preferences),
            self.chat_records,
            self.chat,
            self.negation_lost,
            self.negated,
        )
    }
}

/// A memory with a SEMANTIC ("facts") and a USER_PREFERENCE ("prefs") strategy; its id.
async fn facts_and_preferences(admin: &MemdClient, name: &str) -> String {
    let strategy = |id: &str, kind: pb::StrategyType| pb::MemoryStrategy {
        strategy_id: id.into(),
        r#type: kind as i32,
        ..Default::default()
    };
    admin
        .create_memory(pb::CreateMemoryRequest {
            name: name.into(),
            strategies: vec![
                strategy("facts", pb::StrategyType::Semantic),
                strategy("prefs", pb::StrategyType::UserPreference),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .memory_id
}

async fn measure(split: &str) -> Score {
    let items = load(split);
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_and_preferences(&admin, &format!("self-{split}")).await;
    for (i, item) in items.iter().enumerate() {
        let actor = format!("user-{i}");
        admin
            .create_event(named_event(&m, &actor, "s1", "Maria", &item.text))
            .await
            .unwrap();
        let reply = pb::CreateEventRequest {
            payload: vec![memd_client::turn(pb::Role::Assistant, "Got it.")],
            ..named_event(&m, &actor, "s1", "Maria", "Got it.")
        };
        admin.create_event(reply).await.unwrap();
    }
    drain(&admin, &m).await;
    let mut by_actor: HashMap<String, Vec<pb::MemoryRecord>> = HashMap::new();
    for record in memory_records(&admin, &m, "").await {
        by_actor
            .entry(record.actor_id.clone())
            .or_default()
            .push(record);
    }

    let mut score = Score::default();
    for (i, item) in items.iter().enumerate() {
        let records = by_actor.remove(&format!("user-{i}")).unwrap_or_default();
        let holds_in = |strategy: &str| {
            records
                .iter()
                .any(|r| r.strategy_id == strategy && holds(&r.text, item))
        };
        let shown = || {
            records
                .iter()
                .map(|r| format!("{}: {}", r.strategy_id, r.text))
                .collect::<Vec<_>>()
        };
        if item.kind == Kind::Chat {
            score.chat += 1;
            if !records.is_empty() {
                score.chat_records += 1;
                score
                    .misses
                    .push(format!("chat {:?} -> {:?}", item.text, shown()));
            }
            continue;
        }
        score.statements += 1;
        let yielded = match item.kind {
            Kind::Instruction => holds_in("prefs"),
            _ => holds_in("facts"),
        };
        if yielded {
            score.yielded += 1;
        } else {
            score.misses.push(format!(
                "{} {:?} (want {:?}) -> {:?}",
                item.category,
                item.text,
                item.expected,
                shown()
            ));
        }
        if matches!(item.kind, Kind::Preference | Kind::Instruction) {
            score.preferences += 1;
            if holds_in("prefs") {
                score.in_preference += 1;
            } else if yielded {
                score.misses.push(format!(
                    "{} {:?}: no preference -> {:?}",
                    item.category,
                    item.text,
                    shown()
                ));
            }
        }
        if item.negated {
            score.negated += 1;
            if records.iter().any(|r| !NEGATION.is_match(&r.text)) {
                score.negation_lost += 1;
                score
                    .misses
                    .push(format!("negation lost {:?} -> {:?}", item.text, shown()));
            }
        }
    }
    score
}

/// Waits until extraction has no job left for the memory.
async fn drain(client: &MemdClient, memory_id: &str) {
    for _ in 0..600 {
        if extraction_jobs(client, memory_id).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("extraction did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_users_say_about_themselves_is_remembered() {
    let tune = measure("tune").await;
    let heldout = measure("heldout").await;
    for (split, score) in [("tune", &tune), ("heldout", &heldout)] {
        println!("{}", score.report(split));
        for miss in &score.misses {
            println!("  {split} miss: {miss}");
        }
    }
    let s = &heldout;
    assert!(
        Score::ratio(s.yielded, s.statements) >= MIN_YIELD
            && Score::ratio(s.in_preference, s.preferences) >= MIN_PREFERENCE
            && s.chat_records == 0
            && s.negation_lost == 0,
        "held-out split below target (facts >= {MIN_YIELD}, preferences >= {MIN_PREFERENCE}, no chit-chat record, no negation lost): {}",
        s.report("heldout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_diet_job_or_instruction_supersedes_the_old_one() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let m = facts_and_preferences(&admin, "changes").await;
    for text in [
        "I'm vegetarian.",
        "I'm a pharmacist.",
        "Reply in German.",
        "I'm vegan now.",
        "I work as a teacher these days.",
        "From now on, answer in French.",
    ] {
        admin
            .create_event(named_event(&m, "maria", "s1", "Maria", text))
            .await
            .unwrap();
        // Later statements must come later: records are ordered by when they were said.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drain(&admin, &m).await;
    let live: Vec<String> = memory_records(&admin, &m, "")
        .await
        .into_iter()
        .map(|r| format!("{}: {}", r.strategy_id, r.text))
        .collect();
    let has = |needle: &str| live.iter().any(|r| r.contains(needle));
    assert!(has("Maria is vegan now") && !has("vegetarian"), "{live:#?}");
    assert!(
        has("Maria works as a teacher") && !has("pharmacist"),
        "{live:#?}"
    );
    assert!(has("prefs: Maria wants answers in French"), "{live:#?}");
    assert!(!has("German"), "{live:#?}");
    // The old values stay in history, superseded.
    let vegan = memory_records(&admin, &m, "")
        .await
        .into_iter()
        .find(|r| r.text.contains("vegan now"))
        .unwrap();
    let history = admin
        .get_memory_record_history(&m, &vegan.memory_record_id)
        .await
        .unwrap();
    assert!(
        history
            .iter()
            .any(|r| r.text.contains("vegetarian") && r.invalid_from.is_some()),
        "{history:#?}"
    );
}
