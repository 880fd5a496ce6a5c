//! API errors: an HTTP status, a stable code a client can match on, and a message for people.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use steward_runtime::Error as EngineError;
use steward_store::Error as StoreError;

/// An error answer: `{"error": {"code": "...", "message": "..."}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, snake_case: `not_found`, `wrong_state`, `conflict`, `invalid`, ...
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
    /// Located detail a client can show (the diagnostics of a broken definition).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with this status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None }
    }

    /// 400: the request itself is malformed (a bad query parameter, a body that is not JSON).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: what the request names is not there.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422: the request is well formed but its content is refused (a broken definition).
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(details) = self.details {
            body["error"]["details"] = details;
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match &e {
            StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            // A decision that lost a race, a write against a state that moved on.
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::InvalidTransition { .. } => (StatusCode::CONFLICT, "wrong_state"),
            StoreError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            StoreError::Unavailable { .. } | StoreError::ReadOnly { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            StoreError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Store(e) => e.into(),
            e @ (EngineError::WrongState { .. } | EngineError::RunningElsewhere { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            EngineError::Definition(diagnostics) => {
                let message = EngineError::Definition(diagnostics.clone()).to_string();
                let list: Vec<serde_json::Value> = diagnostics.iter().map(crate::views::diagnostic_json).collect();
                ApiError { details: Some(json!({"diagnostics": list})), ..ApiError::invalid(message) }
            }
            e @ (EngineError::Refused(_)
            | EngineError::Contract(_)
            | EngineError::Inputs(_)
            | EngineError::Decision(_)
            | EngineError::Secret(_)) => ApiError::invalid(e.to_string()),
            e @ EngineError::NotApprover { .. } => ApiError::new(StatusCode::FORBIDDEN, "not_approver", e.to_string()),
            e @ EngineError::NotWaiting { .. } => ApiError::new(StatusCode::CONFLICT, "not_waiting", e.to_string()),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "engine", e.to_string()),
        }
    }
}
