//! `memd.v1.ControlService`: memories and API keys.

use super::{blocking, convert, request_hash, validate};
use crate::auth::{Authenticator, principal};
use crate::error::ServiceError;
use crate::extraction::LlmEndpoints;
use crate::ids;
use crate::retrieval::{ReindexHandle, Retrieval};
use crate::store::codec::StoredMemory;
use crate::store::{Store, page};
use crate::time::now_us;
use memd_proto::v1 as pb;
use memd_proto::v1::api_key_policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The ControlService implementation.
#[derive(Debug, Clone)]
pub struct ControlApi {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    reindex: ReindexHandle,
    retrieval: Arc<Retrieval>,
    llm: Arc<LlmEndpoints>,
    /// `backup_dir`: where CreateBackup may write (`None`: nowhere).
    backup_root: Option<std::path::PathBuf>,
}

impl ControlApi {
    /// `llm` are the operator's endpoints, which strategies choose from.
    pub fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        reindex: ReindexHandle,
        retrieval: Arc<Retrieval>,
        llm: Arc<LlmEndpoints>,
        backup_root: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            store,
            auth,
            reindex,
            retrieval,
            llm,
            backup_root,
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

const UPDATABLE: [&str; 4] = [
    "description",
    "event_expiry_days",
    "strategies",
    "session_policy",
];

#[tonic::async_trait]
impl pb::control_service_server::ControlService for ControlApi {
    async fn create_memory(&self, request: Request<pb::CreateMemoryRequest>) -> Reply<pb::Memory> {
        principal(&request)?.require_global_admin()?;
        let mut req = request.into_inner();
        let hash = request_hash(&mut req, |r| &mut r.client_token);
        let pb::CreateMemoryRequest {
            name,
            description,
            event_expiry_days,
            strategies,
            session_policy,
            client_token,
        } = req;
        ids::memory_name("name", &name)?;
        validate::description("description", &description)?;
        ids::client_token("client_token", &client_token)?;
        let now = now_us();
        let memory = StoredMemory {
            memory_id: ids::new_memory_id(&name),
            name,
            description,
            event_expiry_days: validate::event_expiry_days(event_expiry_days)?,
            strategies: validate::strategies(strategies, &self.llm)?,
            session_policy: Some(validate::session_policy(session_policy.as_ref())?),
            create_us: now,
            update_us: now,
        };
        let store = self.store.clone();
        let memory = blocking(move || store.create_memory(memory, &client_token, hash)).await?;
        Ok(Response::new(convert::memory(&memory)))
    }

    async fn get_memory(&self, request: Request<pb::GetMemoryRequest>) -> Reply<pb::Memory> {
        let caller = principal(&request)?;
        let pb::GetMemoryRequest { memory_id } = request.into_inner();
        ids::memory_id("memory_id", &memory_id)?;
        caller.require_memory(Action::Read, &memory_id)?;
        let memory = self.store.memory(&memory_id)?;
        Ok(Response::new(convert::memory(&memory)))
    }

    async fn update_memory(&self, request: Request<pb::UpdateMemoryRequest>) -> Reply<pb::Memory> {
        let caller = principal(&request)?;
        let pb::UpdateMemoryRequest {
            memory_id,
            description,
            event_expiry_days,
            strategies,
            session_policy,
            update_mask,
        } = request.into_inner();
        ids::memory_id("memory_id", &memory_id)?;
        caller.require_memory(Action::Admin, &memory_id)?;
        if let Some(unknown) = update_mask
            .iter()
            .find(|f| !UPDATABLE.contains(&f.as_str()))
        {
            return Err(ServiceError::invalid(
                "update_mask",
                format!(
                    "unknown field {unknown}; updatable: {}",
                    UPDATABLE.join(", ")
                ),
            )
            .into());
        }
        let updates =
            |field: &str| update_mask.is_empty() || update_mask.iter().any(|f| f == field);
        validate::description("description", &description)?;
        let expiry = updates("event_expiry_days")
            .then(|| validate::event_expiry_days(event_expiry_days))
            .transpose()?;
        let strategies = updates("strategies")
            .then(|| validate::strategies(strategies, &self.llm))
            .transpose()?;
        let policy = updates("session_policy")
            .then(|| validate::session_policy(session_policy.as_ref()))
            .transpose()?;
        let description = updates("description").then_some(description);
        let store = self.store.clone();
        let memory = blocking(move || {
            store.update_memory(&memory_id, |memory| {
                if let Some(description) = description {
                    memory.description = description;
                }
                if let Some(days) = expiry {
                    memory.event_expiry_days = days;
                }
                if let Some(strategies) = strategies {
                    memory.strategies = strategies;
                }
                if let Some(policy) = policy {
                    memory.session_policy = Some(policy);
                }
                memory.update_us = now_us();
                Ok(())
            })
        })
        .await?;
        Ok(Response::new(convert::memory(&memory)))
    }

    async fn delete_memory(&self, request: Request<pb::DeleteMemoryRequest>) -> Reply<()> {
        let caller = principal(&request)?;
        let pb::DeleteMemoryRequest { memory_id } = request.into_inner();
        ids::memory_id("memory_id", &memory_id)?;
        caller.require_memory(Action::Admin, &memory_id)?;
        let store = self.store.clone();
        blocking(move || store.delete_memory(&memory_id)).await?;
        Ok(Response::new(()))
    }

    async fn list_memories(
        &self,
        request: Request<pb::ListMemoriesRequest>,
    ) -> Reply<pb::ListMemoriesResponse> {
        let caller = principal(&request)?;
        let pb::ListMemoriesRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let page_size = page::page_size("page_size", page_size)?;
        let (memories, next_page_token) =
            self.store
                .list_memories(page_size, &page_token, |id| caller.sees_memory(id))?;
        Ok(Response::new(pb::ListMemoriesResponse {
            memories: memories.iter().map(|m| convert::memory(m)).collect(),
            next_page_token,
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreateApiKeyResponse> {
        principal(&request)?.require_global_admin()?;
        let pb::CreateApiKeyRequest { name, policy } = request.into_inner();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(ServiceError::invalid("name", "must be 1-128 characters").into());
        }
        let policy = validate::api_key_policy(policy)?;
        let (store, auth) = (self.store.clone(), self.auth.clone());
        let (key, secret) =
            blocking(move || auth.create_key(&store, name, policy, now_us())).await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key_id: key.key_id.clone(),
            secret,
            key: Some(convert::api_key(&key)),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Reply<pb::ListApiKeysResponse> {
        principal(&request)?.require_global_admin()?;
        let pb::ListApiKeysRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let page_size = page::page_size("page_size", page_size)?;
        let store = self.store.clone();
        let (keys, next_page_token) =
            blocking(move || store.list_api_keys(page_size, &page_token)).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.iter().map(convert::api_key).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Reply<()> {
        principal(&request)?.require_global_admin()?;
        let pb::RevokeApiKeyRequest { key_id } = request.into_inner();
        ids::memory_id("key_id", &key_id)?;
        let (store, auth) = (self.store.clone(), self.auth.clone());
        blocking(move || auth.revoke_key(&store, &key_id, now_us())).await?;
        Ok(Response::new(()))
    }

    async fn reindex(&self, request: Request<pb::ReindexRequest>) -> Reply<pb::ReindexResponse> {
        principal(&request)?.require_global_admin()?;
        let handle = self.reindex.clone();
        let (records, events) = blocking(move || handle.reindex()).await?;
        let semantic = self.retrieval.semantic.as_ref();
        if let Some(semantic) = semantic {
            semantic.status.request_rebuild();
        }
        Ok(Response::new(pb::ReindexResponse {
            records_indexed: records as i64,
            events_indexed: events as i64,
            vectors_rebuilding: semantic.is_some(),
        }))
    }

    async fn get_index_status(
        &self,
        request: Request<pb::GetIndexStatusRequest>,
    ) -> Reply<pb::IndexStatus> {
        principal(&request)?.require_global_admin()?;
        let (store, retrieval) = (self.store.clone(), self.retrieval.clone());
        let backlog = blocking(move || retrieval.backlog(&store)).await?;
        let status = pb::IndexStatus {
            keyword_pending: backlog.keyword as i64,
            vectors_pending: backlog.vectors as i64,
            vectors_rebuilding: backlog.rebuilding,
            embedding_model: backlog.model,
            vectors_partitioned: backlog.partitioned as i64,
            embedded_events: backlog.embedded.events as i64,
            embedded_records: backlog.embedded.records as i64,
            reembedded_records: backlog.embedded.records_again as i64,
            embedding_seconds: backlog.embedded.model_seconds,
            keyword_lag_seconds: backlog.keyword_lag_seconds,
            vectors_lag_seconds: backlog.vectors_lag_seconds,
            record_vectors_lag_seconds: backlog.record_vectors_lag_seconds,
            skipped_events: backlog.embedded.skipped_events as i64,
        };
        Ok(Response::new(status))
    }

    async fn create_backup(&self, request: Request<pb::CreateBackupRequest>) -> Reply<pb::Backup> {
        principal(&request)?.require_global_admin()?;
        let pb::CreateBackupRequest { dir } = request.into_inner();
        validate::server_dir("dir", &dir)?;
        let path = std::path::PathBuf::from(&dir);
        let Some(root) = &self.backup_root else {
            return Err(ServiceError::FailedPrecondition(
                "online backups are off: the operator sets backup_dir (MEMD_BACKUP_DIR) to the directory they may be written under".into(),
            )
            .into());
        };
        if !path.starts_with(root) || path == *root {
            return Err(ServiceError::invalid(
                "dir",
                format!("must be a directory inside backup_dir ({})", root.display()),
            )
            .into());
        }
        let store = self.store.clone();
        let manifest = blocking(move || Ok(crate::backup::create(&store, &path)?)).await?;
        Ok(Response::new(pb::Backup {
            backup_id: manifest.backup_id.clone(),
            dir,
            sequence: manifest.sequence,
            memd_version: manifest.memd_version.clone(),
            storage_format_version: manifest.storage_format_version,
            created_at: manifest.created_at.clone(),
            file_count: manifest.files.len() as i64,
            total_bytes: manifest.total_bytes() as i64,
        }))
    }
}
