//! The one table from errors to HTTP answers.
//!
//! Handlers return [`AppError`]; its response carries an [`ErrorPage`] that the
//! `render_error_pages` middleware turns into the HTML error page. 5xx causes are logged
//! with their chain; the page shows nothing internal.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::idm::IdmError;

#[derive(Debug)]
pub enum AppError {
    Idm(IdmError),
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// The request body is not a readable form.
    BadForm(String),
    PayloadTooLarge,
    NotFound,
    /// Sign-in needed (or a forced password change): go there first.
    Redirect(String),
    Internal(String),
}

impl From<IdmError> for AppError {
    fn from(err: IdmError) -> Self {
        Self::Idm(err)
    }
}

impl From<crate::idm::ports::PortError> for AppError {
    fn from(err: crate::idm::ports::PortError) -> Self {
        Self::Idm(err.into())
    }
}

/// What the error page shows; attached to the response for the middleware to render.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    pub back_href: &'static str,
    pub back_label: &'static str,
}

/// Status, title and message for a domain error, as every page and form shows it.
pub fn describe(err: &IdmError) -> (StatusCode, &'static str, String) {
    match err {
        IdmError::InvalidCredentials => (
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            "Wrong email or password.".into(),
        ),
        IdmError::Throttled { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            format!(
                "Too many attempts. Wait {retry_after} second{}, then try again.",
                if *retry_after == 1 { "" } else { "s" }
            ),
        ),
        IdmError::TemporaryPasswordExpired => (
            StatusCode::UNAUTHORIZED,
            "Temporary password expired",
            "Your temporary password has expired. Ask an owner or client administrator at your agency to set a new one.".into(),
        ),
        IdmError::AccountDisabled => (
            StatusCode::FORBIDDEN,
            "Account disabled",
            "This account is disabled. Ask your agency's administrator.".into(),
        ),
        IdmError::PasswordPolicy(_) | IdmError::PasswordChangeRefused { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Password not accepted",
            "The password does not meet the rules.".into(),
        ),
        IdmError::InvalidResetToken => (
            StatusCode::GONE,
            "Link not valid",
            "This reset link is invalid, has expired or has already been used.".into(),
        ),
        IdmError::NotFound => (
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here.".into(),
        ),
        IdmError::Forbidden => (
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Your role does not allow this.".into(),
        ),
        IdmError::OwnAccount => (
            StatusCode::FORBIDDEN,
            "Use Change password",
            "You cannot reset your own password here. Use Change password on your account page.".into(),
        ),
        IdmError::InvalidInput(message) => (StatusCode::BAD_REQUEST, "Check your input", message.clone()),
        IdmError::Conflict { what } => (
            StatusCode::CONFLICT,
            "Already exists",
            format!("{what} already exists."),
        ),
        IdmError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Latchkey is very busy right now. Try again shortly.".into(),
        ),
        IdmError::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            "Latchkey cannot reach a service it needs right now. Try again shortly.".into(),
        ),
        IdmError::SsoSetup(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Single sign-on not saved",
            problems.join(" "),
        ),
        IdmError::SsoRefused(message) => (
            StatusCode::FORBIDDEN,
            "Single sign-on failed",
            message.clone(),
        ),
        IdmError::SsoNoAccount { agency_name } => (
            StatusCode::FORBIDDEN,
            "No Latchkey account",
            format!(
                "You signed in at your company's identity provider, but there is no Latchkey account for you{}. Ask an owner or client administrator at your agency to add you.",
                if agency_name.is_empty() { String::new() } else { format!(" at {agency_name}") }
            ),
        ),
        IdmError::SsoRequired { .. } => (
            StatusCode::FORBIDDEN,
            "Use single sign-on",
            "Your agency signs in through its corporate single sign-on.".into(),
        ),
        IdmError::UpstreamUnavailable(_) => (
            StatusCode::BAD_GATEWAY,
            "Identity provider not answering",
            "Your company's identity provider is not answering right now. Try again shortly, or ask your IT team.".into(),
        ),
        IdmError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Something went wrong on our side. Try again shortly.".into(),
        ),
    }
}

/// Logs what the user is not shown.
pub fn log_if_server_error(err: &IdmError) {
    match err {
        IdmError::Unavailable { service, cause } => {
            tracing::error!(service, error = %cause, "dependency unavailable");
        }
        IdmError::Internal(message) => tracing::error!(error = %message, "internal error"),
        IdmError::Busy => tracing::warn!("password hashing queue full"),
        IdmError::UpstreamUnavailable(message) => {
            tracing::warn!(error = %message, "identity provider unavailable");
        }
        _ => {}
    }
}

/// Headers some errors need (Retry-After).
pub fn retry_after(err: &IdmError) -> Option<u64> {
    match err {
        IdmError::Throttled { retry_after } => Some(*retry_after),
        IdmError::Busy | IdmError::Unavailable { .. } => Some(2),
        _ => None,
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let page = |status, title, message: String| ErrorPage {
            status,
            title,
            message,
            back_href: "/",
            back_label: "Go to the start",
        };
        let (page, wait) = match self {
            Self::Redirect(to) => return Redirect::to(&to).into_response(),
            Self::Idm(err) => {
                log_if_server_error(&err);
                let (status, title, message) = describe(&err);
                let mut page = page(status, title, message);
                if matches!(err, IdmError::InvalidResetToken) {
                    page.back_href = "/password/forgot";
                    page.back_label = "Request a new link";
                }
                if matches!(
                    err,
                    IdmError::SsoRefused(_) | IdmError::SsoNoAccount { .. } | IdmError::UpstreamUnavailable(_)
                ) {
                    page.back_href = "/login";
                    page.back_label = "Back to sign in";
                }
                (page, retry_after(&err))
            }
            Self::Csrf => (
                page(
                    StatusCode::FORBIDDEN,
                    "Form expired",
                    "This form has expired or did not come from Latchkey. Go back, reload the page and try again.".into(),
                ),
                None,
            ),
            Self::BadForm(message) => (
                page(StatusCode::BAD_REQUEST, "The form could not be read", message),
                None,
            ),
            Self::PayloadTooLarge => (
                page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too much data",
                    "The form sent more data than Latchkey accepts.".into(),
                ),
                None,
            ),
            Self::NotFound => (
                page(StatusCode::NOT_FOUND, "Not found", "There is nothing here.".into()),
                None,
            ),
            Self::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                (
                    page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Something went wrong",
                        "Something went wrong on our side. Try again shortly.".into(),
                    ),
                    None,
                )
            }
        };
        let mut response = (page.status, page.message.clone()).into_response();
        if let Some(seconds) = wait
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response.extensions_mut().insert(page);
        response
    }
}
