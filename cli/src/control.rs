//! `memctl memories …` and `memctl keys …`.

use crate::Globals;
use crate::output::{self, API_KEY_HEADERS, MEMORY_HEADERS};
use clap::{Subcommand, ValueEnum};
use futures::TryStreamExt;
use memd_client::pb;

#[derive(Debug, Subcommand)]
pub enum MemoriesCommand {
    /// Create a memory.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Days events stay readable (default 90).
        #[arg(long, default_value_t = 0)]
        event_expiry_days: i32,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Long-term strategy types to enable with their defaults. Repeatable.
        #[arg(long = "strategy", value_enum)]
        strategies: Vec<StrategyArg>,
        /// Strategies as a JSON array (triggers, LLM settings, CUSTOM prompts; see
        /// `memctl --json memories get` for the shape), added to --strategy.
        #[arg(long)]
        strategies_file: Option<std::path::PathBuf>,
        /// Idempotency token.
        #[arg(long, default_value = "")]
        client_token: String,
    },
    /// Show one memory.
    Get { memory_id: String },
    /// List memories.
    List,
    /// Update a memory's description, expiry or session policy.
    Update {
        memory_id: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        event_expiry_days: Option<i32>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Replace the strategies with this JSON array (`-` for stdin).
        #[arg(long)]
        strategies_file: Option<std::path::PathBuf>,
    },
    /// Delete a memory and everything in it.
    Delete { memory_id: String },
}

/// Session policy flags (seconds; 0 = default).
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Silence before a session terminates (default 900).
    #[arg(long)]
    idle_timeout: Option<u32>,
    /// Lifetime of a session after its first event (default 28800).
    #[arg(long)]
    max_duration: Option<u32>,
    /// Silence before a session shows as idle (default 60).
    #[arg(long)]
    idle_after: Option<u32>,
}

impl PolicyArgs {
    fn given(&self) -> bool {
        self.idle_timeout.is_some() || self.max_duration.is_some() || self.idle_after.is_some()
    }

    fn to_proto(&self) -> Option<pb::SessionPolicy> {
        self.given().then(|| pb::SessionPolicy {
            idle_timeout_seconds: self.idle_timeout.unwrap_or(0),
            max_duration_seconds: self.max_duration.unwrap_or(0),
            idle_after_seconds: self.idle_after.unwrap_or(0),
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    Semantic,
    UserPreference,
    Summary,
    Episodic,
    SelfManaged,
}

impl From<StrategyArg> for pb::StrategyType {
    fn from(arg: StrategyArg) -> Self {
        match arg {
            StrategyArg::Semantic => Self::Semantic,
            StrategyArg::UserPreference => Self::UserPreference,
            StrategyArg::Summary => Self::Summary,
            StrategyArg::Episodic => Self::Episodic,
            StrategyArg::SelfManaged => Self::SelfManaged,
        }
    }
}

fn show_memory(ctx: &Globals, memory: &pb::Memory) {
    if ctx.json {
        output::print_json(&output::memory_json(memory));
    } else {
        output::table(&MEMORY_HEADERS, vec![output::memory_row(memory)]);
    }
}

pub async fn memories(ctx: &Globals, command: MemoriesCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        MemoriesCommand::Create {
            name,
            description,
            event_expiry_days,
            policy,
            strategies,
            strategies_file,
            client_token,
        } => {
            let mut strategies: Vec<pb::MemoryStrategy> = strategies
                .into_iter()
                .map(|s| pb::MemoryStrategy {
                    r#type: pb::StrategyType::from(s) as i32,
                    ..Default::default()
                })
                .collect();
            if let Some(path) = strategies_file {
                strategies.extend(crate::strategies::from_file(&path)?);
            }
            let request = pb::CreateMemoryRequest {
                name,
                description,
                event_expiry_days,
                strategies,
                session_policy: policy.to_proto(),
                client_token,
            };
            show_memory(ctx, &client.create_memory(request).await?);
        }
        MemoriesCommand::Get { memory_id } => {
            show_memory(ctx, &client.get_memory(memory_id).await?)
        }
        MemoriesCommand::List => {
            let memories: Vec<pb::Memory> = client.all_memories().try_collect().await?;
            if ctx.json {
                output::print_json(&memories.iter().map(output::memory_json).collect());
            } else {
                output::table(
                    &MEMORY_HEADERS,
                    memories.iter().map(output::memory_row).collect(),
                );
            }
        }
        MemoriesCommand::Update {
            memory_id,
            description,
            event_expiry_days,
            policy,
            strategies_file,
        } => {
            let mut mask = Vec::new();
            let strategies = match strategies_file {
                Some(path) => {
                    mask.push("strategies".to_string());
                    crate::strategies::from_file(&path)?
                }
                None => Vec::new(),
            };
            if description.is_some() {
                mask.push("description".to_string());
            }
            if event_expiry_days.is_some() {
                mask.push("event_expiry_days".to_string());
            }
            if policy.given() {
                mask.push("session_policy".to_string());
            }
            anyhow::ensure!(
                !mask.is_empty(),
                "nothing to update: pass --description, --event-expiry-days, a policy flag or --strategies-file"
            );
            let request = pb::UpdateMemoryRequest {
                memory_id,
                description: description.unwrap_or_default(),
                event_expiry_days: event_expiry_days.unwrap_or_default(),
                strategies,
                session_policy: policy.to_proto(),
                update_mask: mask,
            };
            show_memory(ctx, &client.update_memory(request).await?);
        }
        MemoriesCommand::Delete { memory_id } => {
            client.delete_memory(&memory_id).await?;
            eprintln!("deleted memory {memory_id}");
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create {
        name: String,
        /// Memory ids the key may use ("*" for all). Repeatable.
        #[arg(long = "memory", required = true)]
        memories: Vec<String>,
        /// Actor id globs, e.g. "acme/*". Repeatable.
        #[arg(long = "actor", default_value = "*")]
        actors: Vec<String>,
        /// Long-term namespace prefixes. Repeatable.
        #[arg(long = "namespace", default_value = "/")]
        namespaces: Vec<String>,
        /// Allowed actions. Repeatable.
        #[arg(long = "action", value_enum, required = true)]
        actions: Vec<ActionArg>,
    },
    /// List API keys.
    List,
    /// Revoke an API key immediately.
    Revoke { key_id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    Read,
    Write,
    Admin,
}

impl From<ActionArg> for pb::api_key_policy::Action {
    fn from(arg: ActionArg) -> Self {
        match arg {
            ActionArg::Read => Self::Read,
            ActionArg::Write => Self::Write,
            ActionArg::Admin => Self::Admin,
        }
    }
}

pub async fn keys(ctx: &Globals, command: KeysCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        KeysCommand::Create {
            name,
            memories,
            actors,
            namespaces,
            actions,
        } => {
            let policy = pb::ApiKeyPolicy {
                memory_ids: memories,
                actor_patterns: actors,
                namespace_prefixes: namespaces,
                actions: actions
                    .into_iter()
                    .map(|a| pb::api_key_policy::Action::from(a) as i32)
                    .collect(),
            };
            let created = client.create_api_key(name, policy).await?;
            let key = created.key.unwrap_or_default();
            if ctx.json {
                let mut value = output::api_key_json(&key);
                value["secret"] = created.secret.into();
                output::print_json(&value);
            } else {
                output::table(&API_KEY_HEADERS, vec![output::api_key_row(&key)]);
                println!("secret (shown once): {}", created.secret);
                // The same key signs AWS SDK requests to the AgentCore REST API (SigV4).
                println!(
                    "for AWS SDKs: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={}",
                    key.key_id, created.secret
                );
            }
        }
        KeysCommand::List => {
            let keys: Vec<pb::ApiKey> = client.all_api_keys().try_collect().await?;
            if ctx.json {
                output::print_json(&keys.iter().map(output::api_key_json).collect());
            } else {
                output::table(
                    &API_KEY_HEADERS,
                    keys.iter().map(output::api_key_row).collect(),
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            client.revoke_api_key(&key_id).await?;
            eprintln!("revoked {key_id}");
        }
    }
    Ok(())
}
