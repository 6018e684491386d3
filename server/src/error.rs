//! The service's error type and its one mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything a request can fail with. Each variant maps to exactly one gRPC code in
/// [`From<ServiceError> for Status`]; messages name the offending field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is malformed or out of bounds.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The named resource does not exist (or has expired).
    #[error("{0} not found")]
    NotFound(String),
    /// An idempotency token was reused with a different request, or a resource already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the resource is in the wrong state (e.g. terminated session).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No or unknown credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's key does not allow this action on this resource.
    #[error("{0}")]
    PermissionDenied(String),
    /// A stored value could not be decoded: corruption or a format from a newer memd.
    #[error("stored data is unreadable: {0}")]
    DataLoss(String),
    /// A position (a cursor) outside what the server still holds.
    #[error("{0}")]
    OutOfRange(String),
    /// The request asks for something this server does not do (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// A needed part (the embedding model, ONNX Runtime) is not available.
    #[error("{0}")]
    Unavailable(String),
    /// Too much work is queued (e.g. query embeddings); retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A per-key quota refused the request; `retry_after` travels as a google.rpc.RetryInfo
    /// detail.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The data directory's filesystem is full: writes are refused until space is freed;
    /// reads go on. The detail (RocksDB's message) is logged, not sent.
    #[error("storage is full: {0}")]
    StorageFull(String),
    /// The request's deadline (the client's or `request_timeout_seconds`) passed; its work
    /// stopped.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A storage or runtime failure; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// Shorthand for [`ServiceError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ServiceError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }
}

impl From<rocksdb::Error> for ServiceError {
    fn from(err: rocksdb::Error) -> Self {
        if crate::store::space::is_no_space(&err) {
            Self::StorageFull(err.into_string())
        } else {
            Self::Internal(format!("rocksdb: {err}"))
        }
    }
}

impl From<crate::backup::BackupError> for ServiceError {
    fn from(err: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError as E;
        match err {
            E::InvalidDir(reason) => Self::invalid("dir", reason),
            // The backup directory is the operator's: what went wrong there is theirs to see.
            E::NotEmpty(_) | E::Io { .. } => Self::FailedPrecondition(err.to_string()),
            E::NotABackup(_) => Self::NotFound(err.to_string()),
            E::Corrupt(_) => Self::DataLoss(err.to_string()),
            E::Incompatible(_) => Self::FailedPrecondition(err.to_string()),
            E::Storage(err) => err.into(),
        }
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Internal(format!("blocking task failed: {err}"))
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let code = match &err {
            ServiceError::InvalidArgument { .. } => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::DataLoss(_) => Code::DataLoss,
            ServiceError::OutOfRange(_) => Code::OutOfRange,
            ServiceError::Unimplemented(_) => Code::Unimplemented,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::ResourceExhausted(_)
            | ServiceError::Throttled { .. }
            | ServiceError::StorageFull(_) => Code::ResourceExhausted,
            ServiceError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServiceError::Internal(_) => Code::Internal,
        };
        match err {
            // Storage details stay in the log; clients get a stable message.
            ServiceError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::new(code, "internal error")
            }
            ServiceError::DataLoss(detail) => {
                tracing::error!(%detail, "undecodable stored value");
                Status::new(code, "stored data is unreadable")
            }
            ServiceError::StorageFull(detail) => {
                use tonic_types::{ErrorDetails, StatusExt};
                tracing::warn!(%detail, "write refused: storage is full");
                // RocksDB looks for free space every five seconds (see store::space).
                Status::with_error_details(
                    code,
                    "the server's storage is full: writes are refused until disk space is freed (reads still work); retry later",
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(5))),
                )
            }
            ServiceError::Throttled {
                message,
                retry_after,
            } => {
                use tonic_types::{ErrorDetails, StatusExt};
                let mut status = Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_retry_info(Some(retry_after)),
                );
                // For the layers that hold a refusal back (crate::auth::hold).
                if let Ok(ms) = retry_after.as_millis().to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(crate::auth::RETRY_AFTER_HEADER, ms);
                }
                status
            }
            other => Status::new(code, other.to_string()),
        }
    }
}

/// Result alias for service code.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
