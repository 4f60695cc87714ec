//! Sign-in, sign-out and the account page.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::domain::session::SessionKind;
use crate::idm::IdmError;
use crate::idm::sessions::NewSession;
use crate::render::format_utc;

use super::error::{AppError, describe, log_if_server_error, retry_after};
use super::extract::{CsrfForm, SignedIn, Visitor, safe_return_path};
use super::{AppState, CookieNames};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/account") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", get(logout_page).post(logout))
        .route("/account", get(account_page))
        .route("/account/sessions/{handle}/revoke", post(revoke_session))
        .route("/dev/mail", get(dev_mail))
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// Where a session goes after sign-in: a restricted one to the change page.
fn landing(session: &NewSession) -> String {
    match session.record.kind {
        SessionKind::PasswordChangeRequired => "/password/change".into(),
        SessionKind::Full => session
            .record
            .resume_to
            .clone()
            .unwrap_or_else(|| "/account".into()),
    }
}

/// A 303 to `to` that sets the new session's cookie.
pub fn redirect_with_session(cookies: &CookieNames, session: &NewSession, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    let cookie = cookies.set(&cookies.session, session.cookie_value.expose());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn login_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<LoginQuery>,
) -> Response {
    let return_to = query.return_to.as_deref().and_then(safe_return_path);
    if let Some(session) = &visitor.session {
        let to = if session.is_restricted() {
            "/password/change".to_owned()
        } else {
            return_to.unwrap_or_else(|| "/account".into())
        };
        return Redirect::to(&to).into_response();
    }
    state.page(
        StatusCode::OK,
        "login.html",
        &visitor.csrf_token(&state),
        None,
        false,
        json!({ "email": "", "return_to": return_to.unwrap_or_default(), "errors": [], "notice": null }),
    )
}

async fn login(State(state): State<AppState>, form: CsrfForm) -> Response {
    let email = form.fields.get("email");
    let password = form.fields.get("password");
    let return_to = safe_return_path(form.fields.get("return_to"));
    let visitor = &form.visitor;
    let result = if email.trim().is_empty() || password.is_empty() {
        Err(IdmError::InvalidInput(
            "Enter your email address and your password.".into(),
        ))
    } else {
        state
            .idm
            .sign_in(email, password, return_to.clone(), &visitor.context)
            .await
    };
    match result {
        Ok(session) => {
            state.metrics.record_sign_in(true);
            redirect_with_session(&state.cookies, &session, &landing(&session))
        }
        Err(err) => {
            state.metrics.record_sign_in(false);
            log_if_server_error(&err);
            let (status, _, message) = describe(&err);
            let mut response = state.page(
                status,
                "login.html",
                &visitor.csrf_token(&state),
                None,
                false,
                json!({
                    "email": email.trim(),
                    "return_to": return_to.unwrap_or_default(),
                    "errors": [message],
                    "notice": null,
                }),
            );
            if let Some(seconds) = retry_after(&err)
                && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

async fn logout_page(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Response, AppError> {
    let Some(session) = &visitor.session else {
        return Ok(Redirect::to("/login").into_response());
    };
    let account = state
        .idm
        .directory
        .staff_by_id(&session.record.staff_id())
        .await?;
    Ok(state.page(
        StatusCode::OK,
        "logout.html",
        &visitor.csrf_token(&state),
        account.as_ref(),
        session.is_restricted(),
        json!({}),
    ))
}

async fn logout(State(state): State<AppState>, form: CsrfForm) -> Result<Response, AppError> {
    if let Some(session) = &form.visitor.session {
        state.idm.end_session(session).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&state.cookies.clear(&state.cookies.session)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct AccountQuery {
    notice: Option<String>,
}

async fn account_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<AccountQuery>,
) -> Result<Response, AppError> {
    let SignedIn { visitor, session } = signed_in;
    let account_id = session.record.staff_id();
    let account = state
        .idm
        .directory
        .staff_by_id(&account_id)
        .await?
        .ok_or(AppError::Redirect("/login".into()))?;
    let agency = state.idm.directory.agency(&account.agency_id).await?;
    let sessions: Vec<_> = state
        .idm
        .sessions_of(&account_id, visitor.context.now)
        .await?
        .into_iter()
        .map(|(handle, record)| {
            json!({
                "current": handle == session.key,
                "handle": handle,
                "created_at": format_utc(record.created_at),
                "last_seen_at": format_utc(record.last_seen_at),
                "user_agent": record.user_agent,
                "ip": record.ip,
                "method": record.method.label(),
            })
        })
        .collect();
    let notice = match query.notice.as_deref() {
        Some("password_changed") => {
            Some("Your password was changed. Your other sessions were signed out.")
        }
        Some("session_ended") => Some("The session was ended."),
        _ => None,
    };
    Ok(state.page(
        StatusCode::OK,
        "account.html",
        &visitor.csrf_token(&state),
        Some(&account),
        false,
        json!({
            "account": {
                "name": account.name,
                "email": account.email.to_string(),
                "role_label": account.role.label(),
                "agency_name": agency.map(|a| a.name).unwrap_or_default(),
            },
            "sessions": sessions,
            "notice": notice,
        }),
    ))
}

async fn revoke_session(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    form: CsrfForm,
) -> Result<Response, AppError> {
    let Some(session) = form.visitor.session.as_ref().filter(|s| !s.is_restricted()) else {
        return Err(AppError::Redirect("/login".into()));
    };
    state.idm.revoke_own_session(session, &handle).await?;
    let to = if handle == session.key {
        "/login"
    } else {
        "/account?notice=session_ended"
    };
    Ok(Redirect::to(to).into_response())
}

/// The development outbox: only when mail goes to an outbox folder.
async fn dev_mail(State(state): State<AppState>, visitor: Visitor) -> Result<Response, AppError> {
    let Some(folder) = &state.dev_outbox else {
        return Err(AppError::NotFound);
    };
    let messages = crate::mail::read_outbox(folder, 50).await;
    Ok(state.page(
        StatusCode::OK,
        "dev_mail.html",
        &visitor.csrf_token(&state),
        None,
        false,
        json!({ "messages": messages }),
    ))
}
