//! `memctl bench rest`: the AgentCore REST facade against gRPC, same server, same run:
//! CreateEvent and RetrieveMemoryRecords through each, SigV4-signed JSON over HTTP/1.1 vs.
//! protobuf over HTTP/2, both with an enforced API key. Prints p50/p99, ops/s and the REST/gRPC
//! ratio (target: CreateEvent p50 at concurrency 1 within 1.5x of gRPC).

use crate::Globals;
use crate::bench::{LocalServer, Stats, connections, drive};
use anyhow::Context;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use memd_client::{MemdClient, pb, turn};
use memd_server::rest::sigv4;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RestArgs {
    /// Seconds measured per cell (after a short warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrency levels (in-flight requests).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Records seeded for RetrieveMemoryRecords.
    #[arg(long, default_value_t = 500)]
    records: usize,
}

const ADMIN_KEY: &str = "memctl-bench-rest-admin";
const REGION: &str = "us-east-1";

/// A SigV4-signing JSON client of the REST API (what boto3 does, minus Python).
#[derive(Clone)]
struct RestClient {
    http: Client<HttpConnector, Full<bytes::Bytes>>,
    base: String,
    host: String,
    key_id: String,
    secret: String,
}

impl RestClient {
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let body = body.to_string().into_bytes();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.base))
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.clone())))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        sigv4::sign(
            "POST",
            path,
            None,
            request.headers_mut(),
            &body,
            &self.key_id,
            &self.secret,
            REGION,
            now,
        );
        let response = self.http.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "REST {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(())
    }
}

struct Row {
    operation: &'static str,
    concurrency: usize,
    grpc: Stats,
    rest: Stats,
}

pub async fn run(ctx: &Globals, args: RestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| c > 0),
        "--concurrency values must be positive"
    );
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = LocalServer::start_with(|config| {
        config.sync_writes = false;
        config.admin_key = Some(ADMIN_KEY.into());
        config.http_listen = format!("127.0.0.1:{http_port}");
        // Retrieval is measured on the keyword path: the facade's cost, not the model's.
        config.embedding_model = "off".into();
    })
    .await?;
    eprintln!(
        "in-process server: gRPC {}, REST http://127.0.0.1:{http_port} (sync_writes=false)",
        server.endpoint
    );
    let admin = MemdClient::connect(server.endpoint.clone(), Some(ADMIN_KEY.into())).await?;
    let memory = admin
        .create_memory(pb::CreateMemoryRequest {
            name: "bench".into(),
            ..Default::default()
        })
        .await?;
    let created = admin
        .create_api_key(
            "bench",
            pb::ApiKeyPolicy {
                memory_ids: vec!["*".into()],
                actor_patterns: vec!["*".into()],
                namespace_prefixes: vec!["*".into()],
                actions: vec![
                    pb::api_key_policy::Action::Read as i32,
                    pb::api_key_policy::Action::Write as i32,
                ],
            },
        )
        .await?;
    let key = created.secret.clone();
    let records: Vec<pb::MemoryRecordInput> = (0..args.records)
        .map(|i| pb::MemoryRecordInput {
            namespace: "/bench/facts".into(),
            text: format!(
                "Customer {i} ordered a {} blender and asked about delivery on day {}.",
                ["red", "blue", "green"][i % 3],
                i % 28
            ),
            ..Default::default()
        })
        .collect();
    for chunk in records.chunks(100) {
        admin
            .batch_create_memory_records(&memory.memory_id, chunk.to_vec())
            .await?;
    }
    let rest = RestClient {
        http: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://127.0.0.1:{http_port}"),
        host: format!("127.0.0.1:{http_port}"),
        key_id: created.key_id.clone(),
        secret: created.secret.clone(),
    };
    let measure = Duration::from_secs_f64(args.seconds);
    let memory_id = Arc::new(memory.memory_id.clone());
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        let clients = connections(&server.endpoint, Some(key.clone()), concurrency).await?;
        // CreateEvent: one short user turn, as an agent appends after each message.
        let (c, m) = (clients.clone(), memory_id.clone());
        let grpc = drive(concurrency, measure, move |worker| {
            let (client, memory_id) = (c[worker % c.len()].clone(), m.clone());
            async move {
                client
                    .create_event(pb::CreateEventRequest {
                        memory_id: memory_id.to_string(),
                        actor_id: format!("grpc-{worker}"),
                        session_id: "s".into(),
                        payload: vec![turn(pb::Role::User, "Please move my delivery to Tuesday.")],
                        extraction_mode: pb::ExtractionMode::Skip as i32,
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        })
        .await
        .context("gRPC CreateEvent")?;
        let (r, m) = (rest.clone(), memory_id.clone());
        let rest_stats = drive(concurrency, measure, move |worker| {
            let (client, memory_id) = (r.clone(), m.clone());
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs_f64();
                client
                    .post(
                        &format!("/memories/{memory_id}/events"),
                        json!({
                            "actorId": format!("rest-{worker}"),
                            "sessionId": "s",
                            "eventTimestamp": now,
                            "payload": [{"conversational": {"content": {"text": "Please move my delivery to Tuesday."}, "role": "USER"}}],
                            "extractionMode": "SKIP",
                        }),
                    )
                    .await
            }
        })
        .await
        .context("REST CreateEvent")?;
        rows.push(Row {
            operation: "CreateEvent",
            concurrency,
            grpc,
            rest: rest_stats,
        });

        let (c, m) = (clients.clone(), memory_id.clone());
        let grpc = drive(concurrency, measure, move |worker| {
            let (client, memory_id) = (c[worker % c.len()].clone(), m.clone());
            async move {
                client
                    .retrieve_memory_records(pb::RetrieveMemoryRecordsRequest {
                        memory_id: memory_id.to_string(),
                        namespace: "/bench/".into(),
                        search_criteria: Some(pb::SearchCriteria {
                            search_query: "blue blender delivery".into(),
                            top_k: 10,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        })
        .await
        .context("gRPC RetrieveMemoryRecords")?;
        let (r, m) = (rest.clone(), memory_id.clone());
        let rest_stats = drive(concurrency, measure, move |_| {
            let (client, memory_id) = (r.clone(), m.clone());
            async move {
                client
                    .post(
                        &format!("/memories/{memory_id}/retrieve"),
                        json!({
                            "namespacePath": "/bench/",
                            "searchCriteria": {"searchQuery": "blue blender delivery", "topK": 10},
                        }),
                    )
                    .await
            }
        })
        .await
        .context("REST RetrieveMemoryRecords")?;
        rows.push(Row {
            operation: "RetrieveMemoryRecords",
            concurrency,
            grpc,
            rest: rest_stats,
        });
    }
    server.stop().await;
    report(ctx, &rows);
    Ok(())
}

fn report(ctx: &Globals, rows: &[Row]) {
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "operation": r.operation,
                    "concurrency": r.concurrency,
                    "grpc": r.grpc.json(),
                    "rest": r.rest.json(),
                    "rest_over_grpc_p50": r.rest.p50_us / r.grpc.p50_us,
                })
            })
            .collect();
        crate::output::print_json(&json!(out));
        return;
    }
    let mut table = comfy_table::Table::new();
    table.set_header([
        "operation",
        "conc",
        "gRPC ops/s",
        "gRPC p50 µs",
        "gRPC p99 µs",
        "REST ops/s",
        "REST p50 µs",
        "REST p99 µs",
        "REST/gRPC p50",
    ]);
    for r in rows {
        table.add_row([
            r.operation.to_string(),
            r.concurrency.to_string(),
            format!("{:.0}", r.grpc.per_second),
            format!("{:.0}", r.grpc.p50_us),
            format!("{:.0}", r.grpc.p99_us),
            format!("{:.0}", r.rest.per_second),
            format!("{:.0}", r.rest.p50_us),
            format!("{:.0}", r.rest.p99_us),
            format!("{:.2}x", r.rest.p50_us / r.grpc.p50_us),
        ]);
    }
    println!("{table}");
    println!("target: REST CreateEvent p50 at concurrency 1 <= 1.5x gRPC");
}
