//! axum only: the routers per area, the extractors that carry authentication, and the
//! middleware every response passes (security headers, request ids, error pages).

mod api;
pub mod error;
pub mod extract;
pub mod form;
mod health;
mod oidc;
mod pages;
mod passwords;
mod settings;
mod sso;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::crypto::tokens;
use crate::domain::StaffAccount;
use crate::idm::Idm;
use crate::idm::ports::Clock;
use crate::metrics::Metrics;
use crate::render::{Renderer, STYLESHEET};
use error::{AppError, ErrorPage};
use extract::PresessionId;

/// How long a browser stays known to an account after a password sign-in.
pub const DEVICE_COOKIE_SECONDS: i64 = 180 * 24 * 3600;

/// Cookie names; with an https public URL they carry the `__Host-` prefix.
#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: String,
    pub presession: String,
    /// Marks a browser that signed in to an account before (see `TrustedDevice`).
    pub device: String,
    pub secure: bool,
}

impl CookieNames {
    pub fn new(https: bool) -> Self {
        let prefix = if https { "__Host-" } else { "" };
        Self {
            session: format!("{prefix}latchkey_session"),
            presession: format!("{prefix}latchkey_csrf"),
            device: format!("{prefix}latchkey_device"),
            secure: https,
        }
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure over https.
    pub fn set(&self, name: &str, value: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/{secure}")
    }

    /// A cookie that outlives the browser session.
    pub fn set_lasting(&self, name: &str, value: &str, max_age_seconds: i64) -> String {
        format!("{}; Max-Age={max_age_seconds}", self.set(name, value))
    }

    pub fn clear(&self, name: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}")
    }
}

pub struct AppStateInner {
    pub idm: Idm,
    pub renderer: Renderer,
    pub clock: Arc<dyn Clock>,
    pub cookies: CookieNames,
    pub csrf_key: Vec<u8>,
    pub https: bool,
    pub trust_forwarded_for: bool,
    /// Set when mail goes to the development outbox: `/dev/mail` lists it.
    pub dev_outbox: Option<PathBuf>,
    pub dev_mode: bool,
    pub metrics: Arc<Metrics>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// What the header of every page needs to know about the signed-in person.
#[derive(Debug, Serialize)]
pub struct CurrentView {
    pub name: String,
    pub email: String,
    pub role_label: &'static str,
    pub is_admin: bool,
}

impl CurrentView {
    pub fn of(account: &StaffAccount) -> Self {
        Self {
            name: account.name.clone(),
            email: account.email.to_string(),
            role_label: account.role.label(),
            is_admin: account.role.is_admin(),
        }
    }
}

impl AppState {
    /// A device cookie for `account`: `account.issued_at.mac`.
    pub fn device_cookie(&self, account: &str, now: i64) -> String {
        let mac = tokens::hmac(&self.csrf_key, &format!("device|{account}|{now}"));
        format!("{account}.{now}.{mac}")
    }

    /// The account a device cookie vouches for, if its MAC holds and it is not too old.
    pub fn trusted_device(
        &self,
        cookie: &str,
        now: i64,
    ) -> Option<crate::idm::sign_in::TrustedDevice> {
        let mut parts = cookie.split('.');
        let (account, issued, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let issued_at: i64 = issued.parse().ok()?;
        let expected = tokens::hmac(&self.csrf_key, &format!("device|{account}|{issued_at}"));
        let fresh = now - issued_at < DEVICE_COOKIE_SECONDS && issued_at <= now;
        (parts.next().is_none() && fresh && tokens::constant_time_eq(&expected, mac)).then(|| {
            crate::idm::sign_in::TrustedDevice {
                account: crate::domain::StaffId(account.to_owned()),
                id: tokens::digest(cookie),
            }
        })
    }

    /// The CSRF token for a visitor without a session: an HMAC of their pre-session cookie.
    pub fn presession_csrf(&self, presession: &str) -> String {
        tokens::hmac(&self.csrf_key, presession)
    }

    /// Renders a page with the context every template expects.
    pub fn page(
        &self,
        status: StatusCode,
        template: &str,
        csrf_token: &str,
        current: Option<&StaffAccount>,
        restricted: bool,
        extra: Value,
    ) -> Response {
        let mut context = json!({
            "csrf_token": csrf_token,
            "dev_mode": self.dev_mode,
            "current": current.map(CurrentView::of),
            "restricted": restricted,
        });
        if let (Some(base), Value::Object(extra)) = (context.as_object_mut(), extra) {
            base.extend(extra);
        }
        match self.renderer.render(template, &context) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(err) => AppError::Internal(format!("template {template}: {err:#}")).into_response(),
        }
    }
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (api_routes, openapi) = api::routes();
    let openapi_json = openapi.to_pretty_json().unwrap_or_default();
    Router::new()
        .merge(api_routes)
        .route(
            "/api/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi_json.clone(),
                )
            }),
        )
        .merge(pages::routes())
        .merge(passwords::routes())
        .merge(settings::routes())
        .merge(health::routes())
        .merge(oidc::routes())
        .merge(sso::routes())
        .route("/static/style.css", get(stylesheet))
        .fallback(|| async { AppError::NotFound })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            presession_cookie,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            render_error_pages,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), request_log))
        .with_state(state)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Paths browsers show to people (and so need a pre-session CSRF cookie); APIs and
/// the provider's back-channel endpoints do not.
fn is_browser_path(path: &str) -> bool {
    !is_machine_path(path)
        && !path.starts_with("/api/")
        && !path.starts_with("/.well-known/")
        && !matches!(
            path,
            "/token" | "/introspect" | "/revoke" | "/userinfo" | "/session"
        )
}

fn is_machine_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/static/")
}

/// Gives every browser a pre-session cookie, so forms shown before sign-in carry a CSRF
/// token bound to it.
async fn presession_cookie(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_browser_path(request.uri().path()) {
        return next.run(request).await;
    }
    let existing = extract::cookie(request.headers(), &state.cookies.presession)
        .filter(|v| v.len() == 43)
        .map(str::to_owned);
    let (value, fresh) = match existing {
        Some(value) => (value, false),
        None => (tokens::random_token(32), true),
    };
    request.extensions_mut().insert(PresessionId(value.clone()));
    let mut response = next.run(request).await;
    if fresh
        && let Ok(cookie) =
            HeaderValue::from_str(&state.cookies.set(&state.cookies.presession, &value))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn render_error_pages(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    let mut rendered = state.page(
        page.status,
        "error.html",
        "",
        None,
        false,
        json!({
            "status": page.status.as_u16(),
            "title": page.title,
            "message": page.message,
            "back_href": page.back_href,
            "back_label": page.back_label,
        }),
    );
    // Keep headers the handler set (Retry-After, cookies).
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    rendered
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    set_default(headers, "content-security-policy", CONTENT_SECURITY_POLICY);
    set_default(headers, "x-content-type-options", "nosniff");
    set_default(headers, "x-frame-options", "DENY");
    set_default(headers, "referrer-policy", "no-referrer");
    set_default(headers, "cross-origin-opener-policy", "same-origin");
    set_default(headers, "cache-control", "no-store");
    if state.https {
        set_default(
            headers,
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        );
    }
    response
}

fn set_default(headers: &mut HeaderMap, name: &'static str, value: &'static str) {
    headers
        .entry(name)
        .or_insert_with(|| HeaderValue::from_static(value));
}

/// One log line per request, with a request id; the query string is never logged, since
/// it may carry a reset token.
async fn request_log(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = tokens::random_id()[..16].to_owned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %request_id);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    state.metrics.record_request(status.as_u16());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if !is_machine_path(&path) {
        let _entered = span.enter();
        tracing::info!(
            %method,
            path = %path,
            status = status.as_u16(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
    response
}
