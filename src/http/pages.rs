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
        .route("/session", get(session_check))
        .route("/account/sessions/{handle}/revoke", post(revoke_session))
        .route("/dev/mail", get(dev_mail))
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
    /// An app asked for a fresh sign-in (`prompt=login`, `max_age`): show the form even
    /// to a signed-in browser.
    reauth: Option<String>,
}

/// Where a session goes after sign-in: a restricted one to the change page.
fn landing(session: &NewSession) -> String {
    match session.record.kind {
        SessionKind::PasswordChangeRequired => "/password/change".into(),
        SessionKind::Full => match &session.record.resume_to {
            Some(path) => path.clone(),
            None if session.break_glass => "/account?notice=break_glass".into(),
            None => "/account".into(),
        },
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
    let reauth = query.reauth.as_deref() == Some("1");
    if let Some(session) = visitor.session.as_ref().filter(|_| !reauth) {
        let to = if session.is_restricted() {
            "/password/change".to_owned()
        } else {
            return_to.unwrap_or_else(|| "/account".into())
        };
        return Redirect::to(&to).into_response();
    }
    let notice = reauth.then_some("The application asks you to sign in again.");
    state.page(
        StatusCode::OK,
        "login.html",
        &visitor.csrf_token(&state),
        None,
        false,
        json!({ "email": "", "return_to": return_to.unwrap_or_default(), "errors": [], "notice": notice }),
    )
}

async fn login(State(state): State<AppState>, form: CsrfForm) -> Response {
    let email = form.fields.get("email");
    let password = form.fields.get("password");
    let return_to = safe_return_path(form.fields.get("return_to"));
    let visitor = &form.visitor;
    let wants_sso = form.fields.get("sso") == "1";
    let result = if email.trim().is_empty() {
        Err(IdmError::InvalidInput(if wants_sso {
            "Enter your email address to sign in with single sign-on.".into()
        } else {
            "Enter your email address and your password.".into()
        }))
    } else if wants_sso {
        Err(IdmError::SsoRequired {
            email: email.trim().to_owned(),
        })
    } else if password.is_empty() {
        // Identifier-first: the email alone is enough when its agency enforces SSO.
        match crate::domain::EmailAddress::parse(email) {
            Ok(parsed) => match state.idm.password_rule(&parsed).await {
                Ok(crate::idm::sso::PasswordRule::SsoRequired) => Err(IdmError::SsoRequired {
                    email: parsed.to_string(),
                }),
                Ok(_) => Err(IdmError::InvalidInput("Enter your password.".into())),
                Err(err) => Err(err),
            },
            Err(_) => Err(IdmError::InvalidInput(
                "Enter your email address and your password.".into(),
            )),
        }
    } else {
        let device = visitor
            .device_cookie
            .as_deref()
            .and_then(|c| state.trusted_device(c, visitor.context.now));
        state
            .idm
            .sign_in(
                email,
                password,
                return_to.clone(),
                device.as_ref(),
                &visitor.context,
            )
            .await
    };
    // Signing in over a session (a shared computer, or an app asking to re-authenticate)
    // ends it: the browser gets a new id and the one it held must not live on (S2).
    let result = match (result, &visitor.session) {
        (Ok(session), Some(previous)) => state.idm.end_session(previous).await.map(|()| session),
        (result, _) => result,
    };
    match result {
        Err(IdmError::SsoRequired { email }) => {
            let encoded: String = url::form_urlencoded::byte_serialize(email.as_bytes()).collect();
            let mut to = format!("/sso/start?email={encoded}");
            if let Some(path) = &return_to {
                let path: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
                to.push_str(&format!("&return_to={path}"));
            }
            Redirect::to(&to).into_response()
        }
        Ok(session) => {
            state.metrics.record_sign_in(true);
            let mut response = redirect_with_session(&state.cookies, &session, &landing(&session));
            let device = state.device_cookie(&session.record.account_id, visitor.context.now);
            let cookie = state.cookies.set_lasting(
                &state.cookies.device,
                &device,
                crate::http::DEVICE_COOKIE_SECONDS,
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
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

/// The end-session request of an app (OpenID Connect RP-Initiated Logout), or a plain
/// visit to `/logout`.
#[derive(Deserialize, Default)]
struct LogoutQuery {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    client_id: Option<String>,
}

/// Where to go after sign-out: a registered `post_logout_redirect_uri` of the client
/// (with `state`), or the sign-in page. An unregistered URI is an error, never followed.
async fn after_logout_target(
    state: &AppState,
    client_id: Option<&str>,
    uri: Option<&str>,
    client_state: Option<&str>,
) -> Result<String, AppError> {
    let Some(uri) = uri.filter(|u| !u.is_empty()) else {
        return Ok("/login".into());
    };
    let refused = || {
        AppError::Idm(IdmError::InvalidInput(
            "The post_logout_redirect_uri is not registered for this application.".into(),
        ))
    };
    let client_id = client_id.filter(|c| !c.is_empty()).ok_or_else(refused)?;
    let client = state
        .idm
        .clients
        .client(client_id)
        .await?
        .ok_or_else(refused)?;
    if !client.has_post_logout_redirect_uri(uri) {
        return Err(refused());
    }
    let mut url = url::Url::parse(uri).map_err(|_| refused())?;
    if let Some(value) = client_state.filter(|s| !s.is_empty()) {
        url.query_pairs_mut().append_pair("state", value);
    }
    Ok(url.to_string())
}

fn signed_out(state: &AppState, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&state.cookies.clear(&state.cookies.session)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn logout_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<LogoutQuery>,
) -> Result<Response, AppError> {
    let now = visitor.context.now;
    let hint =
        match query.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
            Some(hint) => Some(state.idm.read_id_token_hint(hint, now).await?.ok_or_else(
                || {
                    AppError::Idm(IdmError::InvalidInput(
                        "The id_token_hint is not valid.".into(),
                    ))
                },
            )?),
            None => None,
        };
    let client_id = hint
        .as_ref()
        .map(|(audience, _)| audience.clone())
        .or(query.client_id.clone());
    let target = after_logout_target(
        &state,
        client_id.as_deref(),
        query.post_logout_redirect_uri.as_deref(),
        query.state.as_deref(),
    )
    .await?;
    let Some(session) = &visitor.session else {
        return Ok(signed_out(&state, &target));
    };
    // The app proved who it is signing out: no need to ask.
    if hint
        .as_ref()
        .is_some_and(|(_, subject)| *subject == session.record.account_id)
    {
        state.idm.end_session(session).await?;
        return Ok(signed_out(&state, &target));
    }
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
        json!({
            "client_id": client_id.unwrap_or_default(),
            "post_logout_redirect_uri": query.post_logout_redirect_uri.unwrap_or_default(),
            "state": query.state.unwrap_or_default(),
        }),
    ))
}

async fn logout(State(state): State<AppState>, form: CsrfForm) -> Result<Response, AppError> {
    let fields = &form.fields;
    let target = after_logout_target(
        &state,
        Some(fields.get("client_id")),
        Some(fields.get("post_logout_redirect_uri")),
        Some(fields.get("state")),
    )
    .await?;
    if let Some(session) = &form.visitor.session {
        state.idm.end_session(session).await?;
    }
    Ok(signed_out(&state, &target))
}

/// The session check a reverse proxy or an app's back end can ask (forward auth): who
/// this cookie belongs to, from the session store alone, or 401.
async fn session_check(visitor: Visitor) -> Response {
    match visitor.session.filter(|s| !s.is_restricted()) {
        Some(session) => axum::Json(json!({
            "sub": session.record.account_id,
            "agency_id": session.record.agency_id,
            "amr": [session.record.method.amr()],
            "auth_time": session.record.created_at,
            "expires_at": session.record.absolute_expires_at,
        }))
        .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "unauthorized", "message": "no session" })),
        )
            .into_response(),
    }
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
        Some("break_glass") => Some(
            "Your agency signs in with single sign-on. You used your password as the owner's break-glass account; this sign-in was recorded in the audit log.",
        ),
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
