//! `memctl eval locomo DIR`: retrieval quality on LoCoMo-format conversations, through the
//! public API only. Every conversation in DIR is ingested into a fresh memory (one actor per
//! conversation, one session per LoCoMo session, each turn an event with its speaker and
//! date), extraction is awaited, then every question of categories 1-4 is asked through
//! RetrieveMemoryRecords and, separately, SearchEvents; a question's recall@k is the share of
//! its evidence turns that the top k records cite as sources (or that are among the top k
//! events). Beside turn recall it reports answer rank (MRR, hit@1, hit@3: where the first
//! result holding the answer sits, `answer_rank`) for records, facts alone and events, and
//! both measures for BM25 over the raw turns without memd, computed in the same run. Without
//! --endpoint an in-process server is used.

use crate::Globals;
use crate::answer_rank::{RankTable, RawTurns, rank};
use crate::bench::LocalServer;
use crate::locomo::{
    Conversation, Question, conversation_files, create_memory, drained, ingest, session_count,
};
use anyhow::Context;
use clap::{Args, Subcommand};
use memd_client::{MemdClient, pb};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Evidence recall@k on a directory of LoCoMo conversation files.
    Locomo(LocomoArgs),
}

#[derive(Debug, Args)]
pub struct LocomoArgs {
    /// A directory of LoCoMo JSON files (session_N, session_N_date_time, qa).
    dir: PathBuf,
    /// Cut-offs to report.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20")]
    k: Vec<usize>,
    /// Search modes to compare, each over the same ingested data (default: the server's,
    /// hybrid where it has an embedding model).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "default")]
    mode: Vec<crate::longterm::ModeArg>,
    /// Also write every question's top results, with the turns they cite and whether each is
    /// evidence, to this file as JSON Lines (one line per question and mode): for finding out
    /// why a question is missed.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Ask again on a memory an earlier run of this command left on the server at
    /// --endpoint, instead of creating a fresh one: turns are re-sent with the same client
    /// tokens, so nothing is stored, extracted or embedded twice and the questions are asked
    /// within seconds. For comparing ranking changes: restart the server on new code, then
    /// rerun with the id the first run printed.
    #[arg(long)]
    memory_id: Option<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Recall per (category, k) as (sum, questions); category 0 is overall.
type RecallTable = BTreeMap<(u64, usize), (f64, usize)>;

fn mean(table: &RecallTable, category: u64, k: usize) -> f64 {
    table
        .get(&(category, k))
        .map_or(f64::NAN, |(sum, n)| sum / *n as f64)
}

/// What one search mode scored.
struct ModeReport {
    mode: pb::SearchMode,
    recall: RecallTable,
    event_recall: RecallTable,
    /// Answer rank of all records, of facts alone, and of events.
    answers: AnswerRanks,
    latencies: Vec<f64>,
    event_latencies: Vec<f64>,
}

impl ModeReport {
    fn questions(&self) -> usize {
        self.latencies.len()
    }

    fn latency(&self, sorted: &[f64]) -> (f64, f64, f64) {
        (
            percentile(sorted, 50.0),
            percentile(sorted, 95.0),
            percentile(sorted, 99.0),
        )
    }

    fn json(&self, ks: &[usize]) -> Value {
        let of = |table: &RecallTable, category: u64| recall_json(table, category, ks);
        let by_category = |table: &RecallTable| -> Value {
            (1..=4)
                .map(|c| (c.to_string(), of(table, c)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let (p50, p95, p99) = self.latency(&self.latencies);
        let (e50, e95, e99) = self.latency(&self.event_latencies);
        json!({
            "questions": self.questions(),
            "mode": self.mode.as_str_name(),
            "answer_rank": self.answers.json(),
            "overall": of(&self.recall, 0),
            "by_category": by_category(&self.recall),
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
            "events": {
                "overall": of(&self.event_recall, 0),
                "by_category": by_category(&self.event_recall),
                "latency_ms": {"p50": e50, "p95": e95, "p99": e99},
            },
        })
    }
}

/// Answer rank by retriever.
#[derive(Default)]
struct AnswerRanks {
    records: RankTable,
    facts: RankTable,
    events: RankTable,
}

impl AnswerRanks {
    fn json(&self) -> Value {
        json!({
            "records": self.records.json(),
            "facts": self.facts.json(),
            "events": self.events.json(),
        })
    }
}

/// BM25 over each conversation's raw turns, no memd: turn recall and answer rank.
struct Baseline {
    recall: RecallTable,
    answers: RankTable,
}

impl Baseline {
    fn measure(conversations: &[Conversation], ks: &[usize]) -> anyhow::Result<Self> {
        let top = *ks.iter().max().expect("checked non-empty");
        let mut baseline = Self {
            recall: RecallTable::new(),
            answers: RankTable::default(),
        };
        for conversation in conversations {
            let turns = RawTurns::new(
                conversation
                    .turns
                    .iter()
                    .map(|(id, (_, text))| (id.as_str(), text.as_str())),
            )?;
            for question in &conversation.questions {
                let found = turns.search(&question.text, top)?;
                for &k in ks {
                    let returned: BTreeSet<&String> = found.iter().take(k).collect();
                    let share = evidence_share(question, &returned);
                    add(&mut baseline.recall, question.category, k, share);
                }
                if !question.answer.is_empty() {
                    let texts = found.iter().map(|id| turn_text(conversation, id));
                    baseline
                        .answers
                        .add(question.category, rank(texts, &question.answer));
                }
            }
        }
        Ok(baseline)
    }

    fn json(&self, ks: &[usize]) -> Value {
        json!({
            "overall": recall_json(&self.recall, 0, ks),
            "by_category": (1..=4)
                .map(|c| (c.to_string(), recall_json(&self.recall, c, ks)))
                .collect::<serde_json::Map<_, _>>(),
            "answer_rank": self.answers.json(),
        })
    }
}

/// The share of the question's evidence turns among `found` (event ids).
fn evidence_share(question: &Question, found: &BTreeSet<&String>) -> f64 {
    let hits = question
        .evidence
        .iter()
        .filter(|e| found.contains(e))
        .count();
    hits as f64 / question.evidence.len() as f64
}

/// `{"recall@k": ...}` of one category.
fn recall_json(table: &RecallTable, category: u64, ks: &[usize]) -> Value {
    ks.iter()
        .map(|&k| (format!("recall@{k}"), json!(mean(table, category, k))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The texts of a search's records, best first.
fn record_texts(found: &pb::RetrieveMemoryRecordsResponse) -> impl Iterator<Item = &str> {
    found
        .memory_records
        .iter()
        .filter_map(|r| r.memory_record.as_ref())
        .map(|r| r.text.as_str())
}

/// An event's turn text as memd stores it ("Speaker: text"), empty when unknown.
fn turn_text<'a>(conversation: &'a Conversation, event_id: &str) -> &'a str {
    conversation
        .turns
        .get(event_id)
        .map_or("", |(_, text)| text.as_str())
}

fn add(table: &mut RecallTable, category: u64, k: usize, hit: f64) {
    for category in [category, 0] {
        let entry = table.entry((category, k)).or_default();
        entry.0 += hit;
        entry.1 += 1;
    }
}

/// Asks every question in `mode` through RetrieveMemoryRecords and SearchEvents.
async fn ask(
    client: &MemdClient,
    m: &str,
    conversations: &[Conversation],
    ks: &[usize],
    mode: crate::longterm::ModeArg,
    mut trace: Option<&mut dyn std::io::Write>,
) -> anyhow::Result<ModeReport> {
    let top = *ks.iter().max().expect("checked non-empty");
    let mut report = ModeReport {
        mode: mode.proto(),
        recall: RecallTable::new(),
        event_recall: RecallTable::new(),
        answers: AnswerRanks::default(),
        latencies: Vec::new(),
        event_latencies: Vec::new(),
    };
    for conversation in conversations {
        for question in &conversation.questions {
            let records = |namespace: String| {
                client.retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                    memory_id: m.to_string(),
                    namespace,
                    search_criteria: Some(pb::SearchCriteria {
                        search_query: question.text.clone(),
                        top_k: top as i32,
                        mode: mode.proto() as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            };
            let asked = Instant::now();
            let found = records(format!("/conversations/{}/", conversation.actor)).await?;
            report.latencies.push(asked.elapsed().as_secs_f64() * 1e3);
            let facts = records(format!("/conversations/{}/facts", conversation.actor)).await?;
            let asked = Instant::now();
            let events = client
                .search_events(pb::SearchEventsRequest {
                    memory_id: m.to_string(),
                    actor_id: conversation.actor.clone(),
                    query: question.text.clone(),
                    top_k: top as i32,
                    mode: mode.proto() as i32,
                    ..Default::default()
                })
                .await?;
            report
                .event_latencies
                .push(asked.elapsed().as_secs_f64() * 1e3);
            let share = |found: &BTreeSet<&String>| evidence_share(question, found);
            for &k in ks {
                let returned: BTreeSet<&String> = events
                    .events
                    .iter()
                    .take(k)
                    .filter_map(|e| e.event.as_ref())
                    .map(|e| &e.event_id)
                    .collect();
                add(
                    &mut report.event_recall,
                    question.category,
                    k,
                    share(&returned),
                );
                let cited: BTreeSet<&String> = found
                    .memory_records
                    .iter()
                    .take(k)
                    .filter_map(|r| r.memory_record.as_ref())
                    .flat_map(|r| &r.source_event_ids)
                    .collect();
                add(&mut report.recall, question.category, k, share(&cited));
            }
            if !question.answer.is_empty() {
                let answers = &mut report.answers;
                let category = question.category;
                answers
                    .records
                    .add(category, rank(record_texts(&found), &question.answer));
                answers
                    .facts
                    .add(category, rank(record_texts(&facts), &question.answer));
                let event_texts = events
                    .events
                    .iter()
                    .filter_map(|e| e.event.as_ref())
                    .map(|e| turn_text(conversation, &e.event_id));
                answers
                    .events
                    .add(category, rank(event_texts, &question.answer));
            }
            if let Some(out) = trace.as_deref_mut() {
                let line = trace_line(conversation, question, mode, &found, &events);
                writeln!(out, "{line}")?;
            }
        }
    }
    report.latencies.sort_by(f64::total_cmp);
    report.event_latencies.sort_by(f64::total_cmp);
    Ok(report)
}

/// One question's results for `--trace`: the evidence turns, and each returned record and
/// event with the turns it stands for and whether it hit.
fn trace_line(
    conversation: &Conversation,
    question: &Question,
    mode: crate::longterm::ModeArg,
    found: &pb::RetrieveMemoryRecordsResponse,
    events: &pb::SearchEventsResponse,
) -> Value {
    let turn = |id: &String| {
        conversation.turns.get(id).map_or_else(
            || json!(id),
            |(dia, text)| json!({"turn": dia, "text": text}),
        )
    };
    let dia = |id: &String| -> String {
        conversation
            .turns
            .get(id)
            .map_or_else(|| id.clone(), |(d, _)| d.clone())
    };
    let records: Vec<Value> = found
        .memory_records
        .iter()
        .filter_map(|r| Some((r.memory_record.as_ref()?, r.score)))
        .map(|(r, score)| {
            json!({
                "score": score,
                "strategy": r.strategy_id,
                "text": r.text,
                "sources": r.source_event_ids.iter().map(dia).collect::<Vec<_>>(),
                "hits": r.source_event_ids.iter().filter(|e| question.evidence.contains(*e)).count(),
            })
        })
        .collect();
    let events: Vec<Value> = events
        .events
        .iter()
        .filter_map(|e| Some((e.event.as_ref()?, e.score)))
        .map(|(e, score)| {
            json!({
                "score": score,
                "turn": dia(&e.event_id),
                "hit": question.evidence.contains(&e.event_id),
            })
        })
        .collect();
    json!({
        "mode": mode.proto().as_str_name(),
        "actor": conversation.actor,
        "category": question.category,
        "question": question.text,
        "evidence": question.evidence.iter().map(turn).collect::<Vec<_>>(),
        "records": records,
        "events": events,
    })
}

pub async fn run(ctx: &Globals, command: EvalCommand) -> anyhow::Result<()> {
    let EvalCommand::Locomo(args) = command;
    anyhow::ensure!(
        !args.k.is_empty() && args.k.iter().all(|&k| (1..=100).contains(&k)),
        "--k values must be 1-100"
    );
    let files = conversation_files(&args.dir)?;
    anyhow::ensure!(
        args.memory_id.is_none() || ctx.endpoint_explicit,
        "--memory-id needs --endpoint: an in-process server keeps nothing between runs"
    );
    let local = if ctx.endpoint_explicit {
        None
    } else {
        Some(LocalServer::start(false).await?)
    };
    let (endpoint, key) = match &local {
        Some(server) => (server.endpoint.clone(), None),
        None => (ctx.endpoint.clone(), ctx.api_key.clone()),
    };
    let client = MemdClient::connect(endpoint.clone(), key).await?;
    let m = match &args.memory_id {
        Some(id) => {
            let memory = client
                .get_memory(id.clone())
                .await
                .with_context(|| format!("memory {id} on {endpoint}"))?;
            memory.memory_id
        }
        None => create_memory(&client).await?,
    };
    let started = Instant::now();
    let mut conversations = Vec::new();
    for file in &files {
        conversations.push(ingest(&client, &m, file).await?);
    }
    let sessions = session_count(&conversations);
    let ingested = started.elapsed();
    while !drained(&client, &m, sessions).await? {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let extracted = started.elapsed();
    // Questions are asked once every record and event is searchable by every index.
    loop {
        match client.index_status().await {
            Ok(status)
                if status.keyword_pending == 0
                    && status.vectors_pending == 0
                    && !status.vectors_rebuilding =>
            {
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                eprintln!(
                    "memctl: not a global admin key, cannot wait for the indexes (GetIndexStatus); asking now"
                );
                break;
            }
            Err(status) => return Err(status.into()),
        }
    }
    let indexed = started.elapsed();

    let mut trace = match &args.trace {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut reports = Vec::new();
    for &mode in &args.mode {
        let out = trace.as_mut().map(|t| t as &mut dyn std::io::Write);
        reports.push(ask(&client, &m, &conversations, &args.k, mode, out).await?);
    }
    if let Some(mut trace) = trace {
        std::io::Write::flush(&mut trace)?;
    }
    let baseline = Baseline::measure(&conversations, &args.k)?;
    match local {
        Some(server) => server.stop().await,
        None if args.memory_id.is_none() => eprintln!(
            "memctl: the evaluation's memory {m} stays on {endpoint}; add --memory-id {m} to ask again without ingesting"
        ),
        None => {}
    }
    if ctx.json {
        let mut out = reports[0].json(&args.k);
        out["memory_id"] = json!(m);
        out["conversations"] = json!(conversations.len());
        out["ingest_seconds"] = json!(ingested.as_secs_f64());
        out["extraction_seconds"] = json!(extracted.as_secs_f64());
        out["indexed_seconds"] = json!(indexed.as_secs_f64());
        out["bm25_raw_turns"] = baseline.json(&args.k);
        out["by_mode"] = reports
            .iter()
            .map(|r| (r.mode.as_str_name().to_string(), r.json(&args.k)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        crate::output::print_json(&out);
        return Ok(());
    }
    let mut headers = vec![
        "MODE".to_string(),
        "SEARCH".to_string(),
        "CATEGORY".to_string(),
    ];
    headers.extend(args.k.iter().map(|k| format!("RECALL@{k}")));
    let categories = [
        (0, "overall"),
        (1, "1 multi-hop"),
        (2, "2 temporal"),
        (3, "3 open-domain"),
        (4, "4 single-hop"),
    ];
    let mut rows = Vec::new();
    for report in &reports {
        let mode = report.mode.as_str_name().trim_start_matches("SEARCH_MODE_");
        for (search, table) in [
            ("records", &report.recall),
            ("events", &report.event_recall),
        ] {
            for (c, name) in categories {
                let mut row = vec![mode.to_string(), search.to_string(), name.to_string()];
                row.extend(args.k.iter().map(|&k| format!("{:.3}", mean(table, c, k))));
                rows.push(row);
            }
        }
    }
    for (c, name) in categories {
        let mut row = vec![
            "-".to_string(),
            "bm25 raw turns (no memd)".to_string(),
            name.to_string(),
        ];
        row.extend(
            args.k
                .iter()
                .map(|&k| format!("{:.3}", mean(&baseline.recall, c, k))),
        );
        rows.push(row);
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    crate::output::table(&headers, rows);
    let top = args.k.iter().max().copied().unwrap_or_default();
    println!(
        "answer rank: the first of the top {top} that holds {:.0}% of the answer's content words",
        crate::answer_rank::HOLDS_SHARE * 100.0
    );
    let mut rows = Vec::new();
    let mut answer_rows = |mode: &str, search: &str, table: &RankTable| {
        for (c, name) in categories {
            let (mrr, hit1, hit3) = table.scores(c);
            rows.push(vec![
                mode.to_string(),
                search.to_string(),
                name.to_string(),
                format!("{mrr:.3}"),
                format!("{hit1:.3}"),
                format!("{hit3:.3}"),
            ]);
        }
    };
    for report in &reports {
        let mode = report.mode.as_str_name().trim_start_matches("SEARCH_MODE_");
        answer_rows(mode, "records", &report.answers.records);
        answer_rows(mode, "facts", &report.answers.facts);
        answer_rows(mode, "events", &report.answers.events);
    }
    answer_rows("-", "bm25 raw turns (no memd)", &baseline.answers);
    crate::output::table(
        &["MODE", "SEARCH", "CATEGORY", "MRR", "HIT@1", "HIT@3"],
        rows,
    );
    println!(
        "{} conversations, {} questions; ingest {:.1} s, extraction done after {:.1} s, indexes after {:.1} s",
        conversations.len(),
        reports[0].questions(),
        ingested.as_secs_f64(),
        extracted.as_secs_f64(),
        indexed.as_secs_f64()
    );
    for report in &reports {
        let (p50, p95, p99) = report.latency(&report.latencies);
        let (e50, e95, e99) = report.latency(&report.event_latencies);
        println!(
            "{}: RetrieveMemoryRecords p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms; SearchEvents p50 {e50:.1} ms, p95 {e95:.1} ms, p99 {e99:.1} ms",
            report.mode.as_str_name()
        );
    }
    Ok(())
}
