//! The one error type of HTTP handlers, its status mapping (one exhaustive
//! `match`) and its client-safe body: storage and internal failures are
//! logged here and answered `internal error`, nothing more.

use sai_core::notification::{FieldError, ReplayError, SigError};
use warp::Reply;
use warp::http::StatusCode;

use crate::store::StoreError;

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is over the configured limit.
    #[error("body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body could not be read, or is not what the endpoint takes.
    #[error("{what}")]
    BadRequest {
        /// What is wrong.
        what: String,
        /// More.
        detail: Option<String>,
    },
    /// The hook got a content type it does not take.
    #[error("expected multipart/form-data or application/json")]
    UnsupportedMediaType,
    /// The hook signature is missing, malformed or wrong.
    #[error("{0}")]
    Signature(SigError),
    /// The hook names a project this server does not know.
    #[error("unknown project{}", .0.as_ref().map(|p| format!(" {p:?}")).unwrap_or_default())]
    UnknownProject(Option<String>),
    /// The notification is not JSON.
    #[error("notification is not valid JSON")]
    NotJson(String),
    /// A notification field breaks its rule.
    #[error("{0}")]
    Field(FieldError),
    /// The saifile does not parse or expand.
    #[error("saifile does not {stage}")]
    Saifile {
        /// `parse` or `expand`.
        stage: &'static str,
        /// `file:line:col: message`.
        detail: String,
    },
    /// No such route, event, task, project or artifact.
    #[error("{0}")]
    NotFound(&'static str),
    /// The route takes another method.
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// A user token is required, or the one given is not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// Not possible in the current state.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Something else failed inside the server.
    #[error("{0}")]
    Internal(String),
    /// A hook notification outside the replay window, or without the
    /// timestamp the server requires.
    #[error("{0}")]
    Replay(ReplayError),
    /// A push over one of the server's caps.
    #[error("{0}")]
    OverLimit(#[from] crate::push_limits::OverLimit),
    /// Every API connection slot is taken.
    #[error(
        "server busy: all {0} API connections in use (limits.max_api_connections); retry later"
    )]
    Busy(u32),
    /// The request body did not arrive in time.
    #[error("request body not received within {0} ms (limits.body_timeout_ms)")]
    BodyTimeout(u64),
}

impl Error {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadRequest { .. } | Error::NotJson(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Signature(SigError::Missing | SigError::Malformed) => StatusCode::UNAUTHORIZED,
            Error::Signature(SigError::Mismatch) => StatusCode::FORBIDDEN,
            Error::UnknownProject(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Field(FieldError::SaifileTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Field(_) => StatusCode::BAD_REQUEST,
            Error::Saifile { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Store(e) if e.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
            Error::Store(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Replay(ReplayError::OutsideWindow { .. }) => StatusCode::FORBIDDEN,
            Error::Replay(ReplayError::NoTimestamp) => StatusCode::BAD_REQUEST,
            Error::OverLimit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// What the client is told.
    pub fn body(&self) -> sai_core::api::Error {
        let (error, detail) = match self {
            Error::Store(e) if e.is_disk_full() => (
                "the server's data disk is full: nothing was stored; try again later".to_string(),
                None,
            ),
            Error::Store(_) | Error::Internal(_) => ("internal error".to_string(), None),
            Error::BadRequest { detail, .. } => (self.to_string(), detail.clone()),
            Error::NotJson(detail) | Error::Field(FieldError::SaifileBase64(detail)) => {
                (self.to_string(), Some(detail.clone()))
            }
            Error::Saifile { detail, .. } => (self.to_string(), Some(detail.clone())),
            _ => (self.to_string(), None),
        };
        sai_core::api::Error { error, detail }
    }

    /// The response; server-side failures are logged with their cause.
    pub fn into_response(self) -> warp::reply::Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(cause = %self, "internal error");
        }
        warp::reply::with_status(warp::reply::json(&self.body()), status).into_response()
    }

    /// A 400 with a detail.
    pub fn bad_request(what: impl Into<String>, detail: Option<String>) -> Error {
        Error::BadRequest {
            what: what.into(),
            detail,
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Error {
        Error::Internal(format!("worker task failed: {e}"))
    }
}
