//! The AgentCore control plane's memory operations (CreateMemory, GetMemory, ListMemories,
//! UpdateMemory, DeleteMemory) on memd's ControlService. memd applies every change before
//! the call returns, so memories and strategies are ACTIVE at once.

use super::errors::AwsError;
use super::shapes::{self, compact, epoch};
use super::strategies::{
    ExpiryIn, StrategyIn, custom_configuration_out, expiry_in, namespace_in, strategy_in,
    strategy_type_out,
};
use super::{Ctx, Reply, ids};
use memd_proto::v1 as pb;
use memd_proto::v1::control_service_server::ControlService;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateMemoryInput {
    client_token: Option<String>,
    name: String,
    description: Option<String>,
    event_expiry_duration: Option<i64>,
    #[serde(default)]
    memory_strategies: Vec<StrategyIn>,
    /// memd's extension: how sessions age (AgentCore has no such member).
    memd_session_policy: Option<SessionPolicyIn>,
    encryption_key_arn: Option<Value>,
    memory_execution_role_arn: Option<Value>,
    indexed_keys: Option<Value>,
    namespace_keys: Option<Value>,
    stream_delivery_resources: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionPolicyIn {
    idle_timeout_seconds: Option<u32>,
    max_duration_seconds: Option<u32>,
    idle_after_seconds: Option<u32>,
}

fn memory_out(region: &str, memory: &pb::Memory) -> Value {
    let strategies: Vec<Value> = memory
        .strategies
        .iter()
        .map(|s| {
            json!({
                "strategyId": s.strategy_id,
                "name": s.name,
                "description": (!s.description.is_empty()).then_some(&s.description),
                "configuration": custom_configuration_out(s),
                "type": strategy_type_out(s),
                "namespaces": [s.namespace_template],
                "namespaceTemplates": [s.namespace_template],
                "status": "ACTIVE",
                "recordExpiryDurationDays": (s.record_expiry_days > 0).then_some(s.record_expiry_days),
            })
        })
        .collect();
    let policy = memory.session_policy.unwrap_or_default();
    compact(json!({
        "arn": ids::memory_arn(region, &memory.memory_id),
        "id": memory.memory_id,
        "name": memory.name,
        "description": (!memory.description.is_empty()).then_some(&memory.description),
        "eventExpiryDuration": memory.event_expiry_days,
        "status": "ACTIVE",
        "createdAt": epoch(memory.create_time.as_ref()),
        "updatedAt": epoch(memory.update_time.as_ref()),
        "strategies": strategies,
        "memdSessionPolicy": {
            "idleTimeoutSeconds": policy.idle_timeout_seconds,
            "maxDurationSeconds": policy.max_duration_seconds,
            "idleAfterSeconds": policy.idle_after_seconds,
        },
    }))
}

fn refuse_aws_only(members: &[(&str, bool)]) -> Result<(), AwsError> {
    for &(member, given) in members {
        if given {
            return Err(AwsError::unsupported(
                member,
                "an AWS resource memd has no counterpart for",
            ));
        }
    }
    Ok(())
}

fn session_policy_in(policy: Option<SessionPolicyIn>) -> Option<pb::SessionPolicy> {
    policy.map(|p| pb::SessionPolicy {
        idle_timeout_seconds: p.idle_timeout_seconds.unwrap_or(0),
        max_duration_seconds: p.max_duration_seconds.unwrap_or(0),
        idle_after_seconds: p.idle_after_seconds.unwrap_or(0),
    })
}

fn expiry_days(field: &str, days: Option<i64>) -> Result<i32, AwsError> {
    match days {
        None => Ok(0),
        Some(d) if (1..=3650).contains(&d) => Ok(d as i32),
        Some(_) => Err(AwsError::validation(field, "must be 1-3650 days")),
    }
}

pub async fn create(ctx: &Ctx<'_>) -> Reply {
    let input: CreateMemoryInput = shapes::parse(&ctx.body)?;
    refuse_aws_only(&[
        ("encryptionKeyArn", input.encryption_key_arn.is_some()),
        (
            "memoryExecutionRoleArn",
            input.memory_execution_role_arn.is_some(),
        ),
        ("indexedKeys", input.indexed_keys.is_some()),
        ("namespaceKeys", input.namespace_keys.is_some()),
        (
            "streamDeliveryResources",
            input.stream_delivery_resources.is_some(),
        ),
    ])?;
    let strategies = input
        .memory_strategies
        .into_iter()
        .enumerate()
        .map(|(i, s)| strategy_in(format!("memoryStrategies[{i}]"), s))
        .collect::<Result<_, _>>()?;
    let request = pb::CreateMemoryRequest {
        name: input.name,
        description: input.description.unwrap_or_default(),
        event_expiry_days: expiry_days("eventExpiryDuration", input.event_expiry_duration)?,
        strategies,
        session_policy: session_policy_in(input.memd_session_policy),
        client_token: input.client_token.unwrap_or_default(),
    };
    let memory = ctx
        .api
        .control
        .create_memory(ctx.request(request))
        .await?
        .into_inner();
    Ok((202, json!({ "memory": memory_out(&ctx.region, &memory) })))
}

async fn get_memory(ctx: &Ctx<'_>, memory_id: String) -> Result<pb::Memory, AwsError> {
    let request = pb::GetMemoryRequest { memory_id };
    Ok(ctx
        .api
        .control
        .get_memory(ctx.request(request))
        .await?
        .into_inner())
}

pub async fn get(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    if let Some(view) = ctx.query_param("view")
        && !matches!(view, "full" | "without_decryption")
    {
        return Err(AwsError::validation(
            "view",
            "must be full or without_decryption",
        ));
    }
    let memory = get_memory(ctx, memory_id).await?;
    Ok((200, json!({ "memory": memory_out(&ctx.region, &memory) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListInput {
    max_results: Option<i64>,
    next_token: Option<String>,
}

pub async fn list(ctx: &Ctx<'_>) -> Reply {
    let input: ListInput = shapes::parse(&ctx.body)?;
    let request = pb::ListMemoriesRequest {
        page_size: shapes::page_size(input.max_results, 100)?,
        page_token: input.next_token.unwrap_or_default(),
    };
    let reply = ctx
        .api
        .control
        .list_memories(ctx.request(request))
        .await?
        .into_inner();
    let memories: Vec<Value> = reply
        .memories
        .iter()
        .map(|m| {
            json!({
                "arn": ids::memory_arn(&ctx.region, &m.memory_id),
                "id": m.memory_id,
                "status": "ACTIVE",
                "createdAt": epoch(m.create_time.as_ref()),
                "updatedAt": epoch(m.update_time.as_ref()),
            })
        })
        .collect();
    Ok((
        200,
        compact(
            json!({ "memories": memories, "nextToken": shapes::next_token(reply.next_page_token) }),
        ),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateMemoryInput {
    /// Updates are idempotent by content: replaying one leaves the memory as it was.
    #[allow(dead_code)]
    client_token: Option<String>,
    description: Option<String>,
    event_expiry_duration: Option<i64>,
    memory_strategies: Option<ModifyStrategiesIn>,
    memd_session_policy: Option<SessionPolicyIn>,
    memory_execution_role_arn: Option<Value>,
    add_indexed_keys: Option<Value>,
    namespace_keys: Option<Value>,
    stream_delivery_resources: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ModifyStrategiesIn {
    #[serde(default)]
    add_memory_strategies: Vec<StrategyIn>,
    #[serde(default)]
    modify_memory_strategies: Vec<ModifyStrategyIn>,
    #[serde(default)]
    delete_memory_strategies: Vec<StrategyRefIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ModifyStrategyIn {
    memory_strategy_id: String,
    description: Option<String>,
    namespaces: Option<Vec<String>>,
    namespace_templates: Option<Vec<String>>,
    record_expiry_specification: Option<ExpiryIn>,
    configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StrategyRefIn {
    memory_strategy_id: String,
}

/// Applies add/modify/delete to the current strategies.
fn modified_strategies(
    mut current: Vec<pb::MemoryStrategy>,
    changes: ModifyStrategiesIn,
) -> Result<Vec<pb::MemoryStrategy>, AwsError> {
    let missing = |field: &str, id: &str| {
        AwsError::new(
            "ResourceNotFoundException",
            404,
            format!("{field}: memory strategy {id} not found"),
        )
    };
    for (i, gone) in changes.delete_memory_strategies.iter().enumerate() {
        let before = current.len();
        current.retain(|s| s.strategy_id != gone.memory_strategy_id);
        if current.len() == before {
            return Err(missing(
                &format!("memoryStrategies.deleteMemoryStrategies[{i}]"),
                &gone.memory_strategy_id,
            ));
        }
    }
    for (i, change) in changes.modify_memory_strategies.into_iter().enumerate() {
        let field = format!("memoryStrategies.modifyMemoryStrategies[{i}]");
        if change.configuration.is_some() {
            return Err(AwsError::unsupported(
                &format!("{field}.configuration"),
                "replace the strategy (delete and add) to change its configuration",
            ));
        }
        let strategy = current
            .iter_mut()
            .find(|s| s.strategy_id == change.memory_strategy_id)
            .ok_or_else(|| missing(&field, &change.memory_strategy_id))?;
        if let Some(description) = change.description {
            strategy.description = description;
        }
        let namespace = namespace_in(&field, change.namespaces, change.namespace_templates)?;
        if !namespace.is_empty() {
            strategy.namespace_template = namespace;
        }
        if change.record_expiry_specification.is_some() {
            strategy.record_expiry_days = expiry_in(&field, change.record_expiry_specification)?;
        }
    }
    for (i, strategy) in changes.add_memory_strategies.into_iter().enumerate() {
        current.push(strategy_in(
            format!("memoryStrategies.addMemoryStrategies[{i}]"),
            strategy,
        )?);
    }
    Ok(current)
}

pub async fn update(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let input: UpdateMemoryInput = shapes::parse(&ctx.body)?;
    refuse_aws_only(&[
        (
            "memoryExecutionRoleArn",
            input.memory_execution_role_arn.is_some(),
        ),
        ("addIndexedKeys", input.add_indexed_keys.is_some()),
        ("namespaceKeys", input.namespace_keys.is_some()),
        (
            "streamDeliveryResources",
            input.stream_delivery_resources.is_some(),
        ),
    ])?;
    let mut update_mask = Vec::new();
    let mut request = pb::UpdateMemoryRequest {
        memory_id: memory_id.clone(),
        ..Default::default()
    };
    if let Some(description) = input.description {
        request.description = description;
        update_mask.push("description".to_string());
    }
    if input.event_expiry_duration.is_some() {
        request.event_expiry_days =
            expiry_days("eventExpiryDuration", input.event_expiry_duration)?;
        update_mask.push("event_expiry_days".to_string());
    }
    if let Some(policy) = session_policy_in(input.memd_session_policy) {
        request.session_policy = Some(policy);
        update_mask.push("session_policy".to_string());
    }
    if let Some(changes) = input.memory_strategies {
        // AgentCore edits strategies one by one; memd replaces the list, so read it first.
        let current = get_memory(ctx, memory_id).await?.strategies;
        request.strategies = modified_strategies(current, changes)?;
        update_mask.push("strategies".to_string());
    }
    let memory = if update_mask.is_empty() {
        get_memory(ctx, request.memory_id).await?
    } else {
        request.update_mask = update_mask;
        ctx.api
            .control
            .update_memory(ctx.request(request))
            .await?
            .into_inner()
    };
    Ok((202, json!({ "memory": memory_out(&ctx.region, &memory) })))
}

pub async fn delete(ctx: &Ctx<'_>, memory_id: String) -> Reply {
    let request = pb::DeleteMemoryRequest {
        memory_id: memory_id.clone(),
    };
    ctx.api.control.delete_memory(ctx.request(request)).await?;
    // memd deletes at once; the model's last status before a memory is gone is DELETING.
    Ok((202, json!({ "memoryId": memory_id, "status": "DELETING" })))
}
