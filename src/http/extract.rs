//! Authentication lives in extractors, so a handler cannot forget a check:
//! - [`Visitor`]: anyone, with their session if they have one;
//! - [`SignedIn`]: a full session (a restricted one is sent to the change page);
//! - [`ChangeSession`]: a full or a restricted session (the change-password page);
//! - [`AdminSession`]: a full session of an owner or client administrator;
//! - [`CsrfForm`]: a form whose CSRF token was checked before anything else.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::crypto::tokens;
use crate::domain::StaffAccount;
use crate::idm::RequestContext;
use crate::idm::sessions::CurrentSession;

use super::AppState;
use super::error::AppError;
use super::form::FormFields;

/// The pre-session cookie value, put in the request by the `presession_cookie` middleware.
#[derive(Debug, Clone)]
pub struct PresessionId(pub String);

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `return_to` that stays on this site: a path, not `//host` or `/\host`.
pub fn safe_return_path(candidate: &str) -> Option<String> {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.contains('\\')
        && candidate.len() <= 2048
        && !candidate.chars().any(char::is_control);
    ok.then(|| candidate.to_owned())
}

/// Anyone: who they are (if signed in), where they connect from, and their CSRF token.
/// Loaded once per request, however many extractors ask.
#[derive(Clone)]
pub struct Visitor {
    pub session: Option<CurrentSession>,
    /// The device cookie, as sent (checked where it is used).
    pub device_cookie: Option<String>,
    pub presession: String,
    pub context: RequestContext,
}

impl Visitor {
    /// The token every form of this visitor carries.
    pub fn csrf_token(&self, state: &AppState) -> String {
        match &self.session {
            Some(session) => session.record.csrf_token.clone(),
            None => state.presession_csrf(&self.presession),
        }
    }

    fn csrf_matches(&self, state: &AppState, submitted: &str) -> bool {
        !submitted.is_empty() && tokens::constant_time_eq(&self.csrf_token(state), submitted)
    }
}

fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        if let Some(ip) = forwarded {
            return ip.chars().take(64).collect();
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".into(),
            |ConnectInfo(addr)| addr.ip().to_string(),
        )
}

impl<S> FromRequestParts<S> for Visitor
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(visitor) = parts.extensions.get::<Visitor>() {
            return Ok(visitor.clone());
        }
        let state = AppState::from_ref(state);
        let now = state.clock.now();
        let context = RequestContext {
            now,
            ip: client_ip(parts, state.trust_forwarded_for),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .chars()
                .take(160)
                .collect(),
        };
        let session = match cookie(&parts.headers, &state.cookies.session) {
            Some(value) => state.idm.load_session(value, now).await?,
            None => None,
        };
        let presession = parts
            .extensions
            .get::<PresessionId>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        let device_cookie = cookie(&parts.headers, &state.cookies.device).map(str::to_owned);
        let visitor = Self {
            session,
            device_cookie,
            presession,
            context,
        };
        parts.extensions.insert(visitor.clone());
        Ok(visitor)
    }
}

/// Where a request without the right session is sent: the sign-in page, coming back here.
fn login_redirect(parts: &Parts) -> AppError {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if parts.method == Method::GET {
        let encoded: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        AppError::Redirect(format!("/login?return_to={encoded}"))
    } else {
        AppError::Redirect("/login".into())
    }
}

/// A full session. A restricted (forced-change) session is sent to the change page, and
/// the page it asked for is remembered so that the flow resumes after the change.
pub struct SignedIn {
    pub visitor: Visitor,
    pub session: CurrentSession,
}

impl<S> FromRequestParts<S> for SignedIn
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        // Any session first; then a restricted one is turned away here.
        let ChangeSession { visitor, session } =
            ChangeSession::from_request_parts(parts, state).await?;
        if session.is_restricted() {
            if parts.method == Method::GET {
                let wanted = parts.uri.path_and_query().map(|p| p.as_str().to_owned());
                if let Some(path) = wanted.as_deref().and_then(safe_return_path) {
                    app.idm
                        .remember_resume_path(&session, path, visitor.context.now)
                        .await?;
                }
            }
            return Err(AppError::Redirect("/password/change".into()));
        }
        Ok(Self { visitor, session })
    }
}

/// A full or a restricted session: only the change-password page and logout take this.
pub struct ChangeSession {
    pub visitor: Visitor,
    pub session: CurrentSession,
}

impl<S> FromRequestParts<S> for ChangeSession
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        let Some(session) = visitor.session.clone() else {
            return Err(login_redirect(parts));
        };
        Ok(Self { visitor, session })
    }
}

/// A full session of an owner or client administrator, with their account.
pub struct AdminSession {
    pub signed_in: SignedIn,
    pub account: StaffAccount,
}

impl<S> FromRequestParts<S> for AdminSession
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        AdminSession::of(&app, signed_in).await
    }
}

impl AdminSession {
    /// Checks that a signed-in person is an active owner or client administrator.
    pub async fn of(app: &AppState, signed_in: SignedIn) -> Result<Self, AppError> {
        let account = app
            .idm
            .directory
            .staff_by_id(&signed_in.session.record.staff_id())
            .await?
            .ok_or(AppError::Redirect("/login".into()))?;
        if !account.role.is_admin() || !account.is_active() {
            return Err(crate::idm::IdmError::Forbidden.into());
        }
        Ok(Self { signed_in, account })
    }

    /// For a form already checked for CSRF: the admin behind it, or the refusal.
    pub async fn from_form(app: &AppState, form: &CsrfForm) -> Result<Self, AppError> {
        let Some(session) = form.visitor.session.clone() else {
            return Err(AppError::Redirect("/login".into()));
        };
        if session.is_restricted() {
            return Err(AppError::Redirect("/password/change".into()));
        }
        let signed_in = SignedIn {
            visitor: form.visitor.clone(),
            session,
        };
        Self::of(app, signed_in).await
    }
}

/// A submitted form whose CSRF token matched, checked before any other field is read.
pub struct CsrfForm {
    pub visitor: Visitor,
    pub fields: FormFields,
}

impl<S> FromRequest<S> for CsrfForm
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/x-www-form-urlencoded");
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(AppError::BadForm(
                "Forms must be sent as application/x-www-form-urlencoded.".into(),
            ));
        }
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge
                } else {
                    AppError::BadForm("The form could not be read.".into())
                }
            })?;
        let fields = FormFields::parse(&bytes).map_err(|e| {
            // An unreadable body cannot prove its token either; answer as the form error.
            AppError::BadForm(e.to_string())
        })?;
        if !visitor.csrf_matches(&app, fields.get("csrf_token")) {
            return Err(AppError::Csrf);
        }
        Ok(Self { visitor, fields })
    }
}
