//! `memctl records`, `memctl namespaces` and `memctl jobs`: long-term memory from the shell.
//! Records export and import as JSON Lines (one record per line, proto3 JSON field names);
//! an export imports back idempotently (each line's record id becomes its client token).

use crate::Globals;
use crate::memory::parse_time;
use crate::output::{print_json, table, time};
use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use futures::TryStreamExt;
use memd_client::{MemdClient, pb};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// List live records under a namespace prefix.
    List {
        memory_id: String,
        /// Namespace prefix (default: every namespace the key may read).
        #[arg(long, default_value = "")]
        namespace: String,
        /// Only records of this strategy.
        #[arg(long, default_value = "")]
        strategy: String,
    },
    /// Follow record changes as they happen (reconnects from the last cursor).
    Watch {
        memory_id: String,
        /// Namespace prefix (default: every namespace the key may read).
        #[arg(long, default_value = "")]
        namespace: String,
        /// Resume after this cursor (default: from now).
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Show one record (with --history: its versions and the records it superseded).
    Get {
        memory_id: String,
        record_id: String,
        #[arg(long)]
        history: bool,
    },
    /// Delete records.
    Delete {
        memory_id: String,
        #[arg(required = true)]
        record_ids: Vec<String>,
    },
    /// Write records as JSON Lines (to stdout, or --output FILE).
    Export {
        memory_id: String,
        #[arg(long, default_value = "")]
        namespace: String,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Create records from JSON Lines (a file, or - for stdin), 100 per call.
    Import { memory_id: String, file: PathBuf },
}

/// `memctl search`: records ranked by relevance.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    memory_id: String,
    /// What to look for.
    query: String,
    /// Namespace prefix to search under.
    #[arg(long, default_value = "")]
    namespace: String,
    #[arg(long, default_value = "")]
    strategy: String,
    #[arg(long, default_value_t = 10)]
    top_k: i32,
    /// Leave out results scoring below this.
    #[arg(long, default_value_t = 0.0)]
    min_score: f64,
    /// How to rank (default: the server's, hybrid where it has an embedding model).
    #[arg(long, value_enum, default_value_t = ModeArg::Default)]
    mode: ModeArg,
}

/// `--mode` of the search commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Default,
    Hybrid,
    Keyword,
    Semantic,
}

impl ModeArg {
    pub fn proto(self) -> pb::SearchMode {
        match self {
            Self::Default => pb::SearchMode::Unspecified,
            Self::Hybrid => pb::SearchMode::Hybrid,
            Self::Keyword => pb::SearchMode::Keyword,
            Self::Semantic => pb::SearchMode::Semantic,
        }
    }
}

pub async fn search(ctx: &Globals, args: SearchArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let response = client
        .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
            memory_id: args.memory_id,
            namespace: args.namespace,
            search_criteria: Some(pb::SearchCriteria {
                search_query: args.query,
                top_k: args.top_k,
                strategy_id: args.strategy,
                mode: args.mode.proto() as i32,
                min_score: args.min_score,
                metadata_filters: Vec::new(),
            }),
            ..Default::default()
        })
        .await?;
    if ctx.json {
        print_json(&Value::Array(
            response
                .memory_records
                .iter()
                .map(|r| {
                    let mut record = r
                        .memory_record
                        .as_ref()
                        .map(record_json)
                        .unwrap_or_default();
                    record["score"] = json!(r.score);
                    record
                })
                .collect(),
        ));
        return Ok(());
    }
    table(
        &["SCORE", "TEXT", "NAMESPACE", "ID"],
        response
            .memory_records
            .iter()
            .filter_map(|r| {
                let record = r.memory_record.as_ref()?;
                Some(vec![
                    format!("{:.2}", r.score),
                    shorten(&record.text, 90),
                    record.namespace.clone(),
                    record.memory_record_id.clone(),
                ])
            })
            .collect(),
    );
    Ok(())
}

/// `memctl context`: what an agent would load to resume a session.
#[derive(Debug, clap::Args)]
pub struct ContextArgs {
    memory_id: String,
    actor_id: String,
    session_id: String,
    /// What the agent is about to do (default: the session's latest turn).
    #[arg(long, default_value = "")]
    query: String,
    /// Estimated tokens the context may use.
    #[arg(long, default_value_t = 2000)]
    token_budget: i32,
}

pub async fn context(ctx: &Globals, args: ContextArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let context = client
        .get_context(pb::GetContextRequest {
            memory_id: args.memory_id,
            actor_id: args.actor_id,
            session_id: args.session_id,
            query: args.query,
            token_budget: args.token_budget,
        })
        .await?;
    let source = |s: i32| {
        pb::context_item::Source::try_from(s)
            .map(|s| s.as_str_name().trim_start_matches("SOURCE_").to_lowercase())
            .unwrap_or_default()
    };
    if ctx.json {
        print_json(&json!({
            "tokensUsed": context.tokens_used,
            "items": context.items.iter().map(|i| json!({
                "source": source(i.source),
                "text": i.text,
                "score": i.score,
                "memoryRecordId": i.memory_record_id,
                "eventId": i.event_id,
                "sessionId": i.session_id,
                "namespace": i.namespace,
                "time": time(&i.time),
                "tokens": i.tokens,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    table(
        &["SOURCE", "TEXT", "SCORE", "TOKENS"],
        context
            .items
            .iter()
            .map(|i| {
                vec![
                    source(i.source),
                    shorten(&i.text, 100),
                    if i.score > 0.0 {
                        format!("{:.2}", i.score)
                    } else {
                        String::new()
                    },
                    i.tokens.to_string(),
                ]
            })
            .collect(),
    );
    println!("{} tokens used", context.tokens_used);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum NamespacesCommand {
    /// The namespaces that hold live records, with their record counts.
    List {
        memory_id: String,
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Pending,
    Running,
    Failed,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Unfinished extraction jobs (pending, running, failed).
    List {
        memory_id: String,
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[arg(long, default_value = "")]
        actor: String,
        #[arg(long, default_value = "")]
        strategy: String,
    },
    /// Run a FAILED job again.
    Redrive { memory_id: String, job_id: String },
}

fn record_json(r: &pb::MemoryRecord) -> Value {
    json!({
        "memoryRecordId": r.memory_record_id,
        "memoryId": r.memory_id,
        "namespace": r.namespace,
        "strategyId": r.strategy_id,
        "text": r.text,
        "metadata": r.metadata,
        "createTime": time(&r.create_time),
        "updateTime": time(&r.update_time),
        "validFrom": time(&r.valid_from),
        "invalidFrom": time(&r.invalid_from),
        "sourceEventIds": r.source_event_ids,
        "actorId": r.actor_id,
        "sessionId": r.session_id,
        "extractor": r.extractor,
        "extractorVersion": r.extractor_version,
        "version": r.version,
        "supersededBy": r.superseded_by,
    })
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max - 1).collect::<String>() + "…"
    }
}

fn show_records(ctx: &Globals, records: &[pb::MemoryRecord]) {
    if ctx.json {
        print_json(&Value::Array(records.iter().map(record_json).collect()));
        return;
    }
    table(
        &["ID", "NAMESPACE", "TEXT", "SOURCES", "VERSION", "UPDATED"],
        records
            .iter()
            .map(|r| {
                vec![
                    r.memory_record_id.clone(),
                    r.namespace.clone(),
                    shorten(&r.text, 80),
                    r.source_event_ids.len().to_string(),
                    r.version.to_string(),
                    time(&r.update_time),
                ]
            })
            .collect(),
    );
}

async fn all_records(
    client: &MemdClient,
    memory_id: String,
    namespace: String,
    strategy_id: String,
) -> anyhow::Result<Vec<pb::MemoryRecord>> {
    Ok(client
        .all_memory_records(pb::ListMemoryRecordsRequest {
            memory_id,
            namespace,
            strategy_id,
            page_size: 100,
            ..Default::default()
        })
        .try_collect()
        .await?)
}

fn report_items(ctx: &Globals, results: &[pb::BatchItemResult], offset: usize) -> usize {
    let mut failed = 0;
    for result in results {
        if result.code != 0 {
            failed += 1;
            if !ctx.json {
                eprintln!(
                    "item {}: {:?}: {}",
                    offset + result.index as usize,
                    tonic::Code::from_i32(result.code),
                    result.message
                );
            }
        }
    }
    failed
}

/// One JSON Lines record as a create item; an exported record's id becomes its token.
fn input_of(line: &str, number: usize) -> anyhow::Result<pb::MemoryRecordInput> {
    let value: Value =
        serde_json::from_str(line).with_context(|| format!("line {number}: not JSON"))?;
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
    let valid_from = match value["validFrom"].as_str().filter(|s| !s.is_empty()) {
        Some(raw) => Some(parse_time(raw).with_context(|| format!("line {number}: validFrom"))?),
        None => None,
    };
    let metadata: BTreeMap<String, String> = value["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let token = match text("clientToken") {
        t if !t.is_empty() => t,
        _ => match text("memoryRecordId") {
            id if !id.is_empty() => format!("import-{id}"),
            _ => String::new(),
        },
    };
    Ok(pb::MemoryRecordInput {
        namespace: text("namespace"),
        text: text("text"),
        metadata: metadata.into_iter().collect(),
        strategy_id: text("strategyId"),
        actor_id: text("actorId"),
        session_id: text("sessionId"),
        valid_from,
        source_event_ids: value["sourceEventIds"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        client_token: token,
    })
}

pub async fn records(ctx: &Globals, command: RecordsCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        RecordsCommand::Watch {
            memory_id,
            namespace,
            cursor,
        } => return crate::watch::records(ctx, memory_id, namespace, cursor).await,
        RecordsCommand::List {
            memory_id,
            namespace,
            strategy,
        } => {
            let records = all_records(&client, memory_id, namespace, strategy).await?;
            show_records(ctx, &records);
        }
        RecordsCommand::Get {
            memory_id,
            record_id,
            history,
        } => {
            let records = if history {
                client
                    .get_memory_record_history(memory_id, record_id)
                    .await?
            } else {
                vec![client.get_memory_record(memory_id, record_id).await?]
            };
            if ctx.json || history {
                show_records(ctx, &records);
            } else {
                print_json(&record_json(&records[0]));
            }
        }
        RecordsCommand::Delete {
            memory_id,
            record_ids,
        } => {
            let mut failed = 0;
            for (chunk_index, chunk) in record_ids.chunks(100).enumerate() {
                let results = client
                    .batch_delete_memory_records(&memory_id, chunk.to_vec())
                    .await?;
                failed += report_items(ctx, &results, chunk_index * 100);
            }
            anyhow::ensure!(
                failed == 0,
                "{failed} of {} deletions failed",
                record_ids.len()
            );
        }
        RecordsCommand::Export {
            memory_id,
            namespace,
            output,
        } => {
            let records = all_records(&client, memory_id, namespace, String::new()).await?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            for record in &records {
                writeln!(out, "{}", record_json(record))?;
            }
            out.flush()?;
            if output.is_some() {
                eprintln!("exported {} records", records.len());
            }
        }
        RecordsCommand::Import { memory_id, file } => {
            let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?,
                ))
            };
            // Records from another memory may name strategies this one lacks: keep the
            // records, drop the strategy reference.
            let strategies: Vec<String> = client
                .get_memory(memory_id.clone())
                .await?
                .strategies
                .into_iter()
                .map(|s| s.strategy_id)
                .collect();
            let mut items = Vec::new();
            let mut unlinked = 0;
            for (i, line) in reader.lines().enumerate() {
                let line = line?;
                if !line.trim().is_empty() {
                    let mut item = input_of(&line, i + 1)?;
                    if !item.strategy_id.is_empty() && !strategies.contains(&item.strategy_id) {
                        item.strategy_id.clear();
                        unlinked += 1;
                    }
                    items.push(item);
                }
            }
            if unlinked > 0 && !ctx.json {
                eprintln!(
                    "{unlinked} records name a strategy this memory lacks; imported without it"
                );
            }
            let (mut created, mut failed) = (0, 0);
            for (chunk_index, chunk) in items.chunks(100).enumerate() {
                let results = client
                    .batch_create_memory_records(&memory_id, chunk.to_vec())
                    .await?;
                let bad = report_items(ctx, &results, chunk_index * 100);
                failed += bad;
                created += results.len() - bad;
            }
            if ctx.json {
                print_json(&json!({ "imported": created, "failed": failed }));
            } else {
                println!("imported {created} records, {failed} failed");
            }
            anyhow::ensure!(failed == 0, "{failed} records were not imported");
        }
    }
    Ok(())
}

pub async fn namespaces(ctx: &Globals, command: NamespacesCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let NamespacesCommand::List { memory_id, prefix } = command;
    // Counted from the listing, so a key sees exactly the namespaces it may read.
    let records = all_records(&client, memory_id, prefix, String::new()).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        *counts.entry(record.namespace).or_default() += 1;
    }
    if ctx.json {
        print_json(&Value::Array(
            counts
                .iter()
                .map(|(ns, n)| json!({ "namespace": ns, "recordCount": n }))
                .collect(),
        ));
    } else {
        table(
            &["NAMESPACE", "RECORDS"],
            counts
                .into_iter()
                .map(|(ns, n)| vec![ns, n.to_string()])
                .collect(),
        );
    }
    Ok(())
}

fn status_name(status: i32) -> String {
    pb::ExtractionJobStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("EXTRACTION_JOB_STATUS_")
                .to_string()
        })
        .unwrap_or_else(|_| status.to_string())
}

fn job_json(job: &pb::ExtractionJob) -> Value {
    json!({
        "jobId": job.job_id,
        "memoryId": job.memory_id,
        "strategyId": job.strategy_id,
        "actorId": job.actor_id,
        "sessionId": job.session_id,
        "status": status_name(job.status),
        "attempts": job.attempts,
        "failureReason": job.failure_reason,
        "eventIds": job.event_ids,
        "trigger": job.trigger,
        "createTime": time(&job.create_time),
        "nextAttemptTime": time(&job.next_attempt_time),
    })
}

pub async fn jobs(ctx: &Globals, command: JobsCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        JobsCommand::List {
            memory_id,
            status,
            actor,
            strategy,
        } => {
            let status = status.map_or(pb::ExtractionJobStatus::Unspecified, |s| match s {
                StatusArg::Pending => pb::ExtractionJobStatus::Pending,
                StatusArg::Running => pb::ExtractionJobStatus::Running,
                StatusArg::Failed => pb::ExtractionJobStatus::Failed,
            });
            let jobs: Vec<pb::ExtractionJob> = client
                .all_extraction_jobs(pb::ListMemoryExtractionJobsRequest {
                    memory_id,
                    filter: Some(pb::ExtractionJobFilter {
                        strategy_id: strategy,
                        actor_id: actor,
                        session_id: String::new(),
                        status: status as i32,
                    }),
                    page_size: 100,
                    ..Default::default()
                })
                .try_collect()
                .await?;
            if ctx.json {
                print_json(&Value::Array(jobs.iter().map(job_json).collect()));
                return Ok(());
            }
            table(
                &[
                    "JOB", "STRATEGY", "ACTOR", "SESSION", "STATUS", "ATTEMPTS", "TRIGGER",
                    "REASON",
                ],
                jobs.iter()
                    .map(|j| {
                        vec![
                            j.job_id.clone(),
                            j.strategy_id.clone(),
                            j.actor_id.clone(),
                            j.session_id.clone(),
                            status_name(j.status),
                            j.attempts.to_string(),
                            j.trigger.clone(),
                            shorten(&j.failure_reason, 60),
                        ]
                    })
                    .collect(),
            );
        }
        JobsCommand::Redrive { memory_id, job_id } => {
            let job = client.start_extraction_job(memory_id, job_id).await?;
            if ctx.json {
                print_json(&job_json(&job));
            } else {
                println!("job {} is {} again", job.job_id, status_name(job.status));
            }
        }
    }
    Ok(())
}
