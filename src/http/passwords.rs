//! The password pages: change (forced or voluntary), forgot, and reset by emailed link.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::domain::{PasswordKind, Violation};
use crate::idm::IdmError;
use crate::idm::passwords::NewPasswordForm;

use super::AppState;
use super::error::{AppError, describe};
use super::extract::{ChangeSession, CsrfForm, Visitor};
use super::pages::redirect_with_session;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/password/change", get(change_page).post(change))
        .route("/password/forgot", get(forgot_page).post(forgot))
        .route("/password/forgot/sent", get(forgot_sent))
        .route("/password/reset", get(reset_page).post(reset))
        .route("/password/reset/done", get(reset_done))
}

fn messages(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(Violation::message).collect()
}

async fn render_change(
    state: &AppState,
    session: &ChangeSession,
    status: StatusCode,
    errors: Vec<String>,
) -> Result<Response, AppError> {
    let account = state
        .idm
        .directory
        .staff_by_id(&session.session.record.staff_id())
        .await?;
    let forced = session.session.is_restricted();
    Ok(state.page(
        status,
        "password_change.html",
        &session.visitor.csrf_token(state),
        account.as_ref(),
        forced,
        json!({
            "forced": forced,
            "errors": errors,
            "policy_rules": state.idm.policy.describe(PasswordKind::Chosen),
        }),
    ))
}

async fn change_page(
    State(state): State<AppState>,
    session: ChangeSession,
) -> Result<Response, AppError> {
    render_change(&state, &session, StatusCode::OK, Vec::new()).await
}

async fn change(State(state): State<AppState>, form: CsrfForm) -> Result<Response, AppError> {
    let Some(current) = form.visitor.session.clone() else {
        return Err(AppError::Redirect("/login".into()));
    };
    let result = state
        .idm
        .change_password(
            &current,
            form.fields.get("current_password"),
            &NewPasswordForm {
                new_password: form.fields.get("new_password"),
                confirm_password: form.fields.get("confirm_password"),
            },
            &form.visitor.context,
        )
        .await;
    let session = ChangeSession {
        session: current,
        visitor: form.visitor,
    };
    match result {
        Ok(fresh) => {
            let to = fresh
                .record
                .resume_to
                .clone()
                .unwrap_or_else(|| "/account?notice=password_changed".into());
            Ok(redirect_with_session(&state.cookies, &fresh, &to))
        }
        Err(IdmError::PasswordChangeRefused {
            current_wrong,
            violations,
        }) => {
            let mut errors = Vec::new();
            if current_wrong {
                errors.push("The current password is wrong.".to_owned());
            }
            errors.extend(messages(&violations));
            render_change(&state, &session, StatusCode::UNPROCESSABLE_ENTITY, errors).await
        }
        Err(err @ (IdmError::Throttled { .. } | IdmError::Busy)) => {
            let (status, _, message) = describe(&err);
            render_change(&state, &session, status, vec![message]).await
        }
        Err(err) => Err(err.into()),
    }
}

fn render_forgot(
    state: &AppState,
    visitor: &Visitor,
    status: StatusCode,
    email: &str,
    errors: Vec<String>,
) -> Response {
    state.page(
        status,
        "forgot.html",
        &visitor.csrf_token(state),
        None,
        false,
        json!({ "email": email, "errors": errors }),
    )
}

async fn forgot_page(State(state): State<AppState>, visitor: Visitor) -> Response {
    render_forgot(&state, &visitor, StatusCode::OK, "", Vec::new())
}

/// Answers at once, the same for every address: the lookup, the rate limits and the
/// mail all happen in the background.
async fn forgot(State(state): State<AppState>, form: CsrfForm) -> Response {
    let email = form.fields.get("email").trim().to_owned();
    if email.is_empty() {
        return render_forgot(
            &state,
            &form.visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            vec!["Enter your email address.".into()],
        );
    }
    if email.chars().count() > 254 {
        return render_forgot(
            &state,
            &form.visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            vec!["That email address is too long.".into()],
        );
    }
    let idm = state.idm.clone();
    let context = form.visitor.context.clone();
    tokio::spawn(async move { idm.request_reset(&email, &context).await });
    Redirect::to("/password/forgot/sent").into_response()
}

async fn forgot_sent(State(state): State<AppState>, visitor: Visitor) -> Response {
    state.page(
        StatusCode::OK,
        "forgot_sent.html",
        &visitor.csrf_token(&state),
        None,
        false,
        json!({}),
    )
}

#[derive(Deserialize)]
struct ResetQuery {
    token: Option<String>,
}

fn render_reset(
    state: &AppState,
    visitor: &Visitor,
    status: StatusCode,
    token: &str,
    errors: Vec<String>,
) -> Response {
    state.page(
        status,
        "reset.html",
        &visitor.csrf_token(state),
        None,
        false,
        json!({
            "token": token,
            "errors": errors,
            "policy_rules": state.idm.policy.describe(PasswordKind::Chosen),
        }),
    )
}

fn render_reset_invalid(state: &AppState, visitor: &Visitor) -> Response {
    state.page(
        StatusCode::GONE,
        "reset_invalid.html",
        &visitor.csrf_token(state),
        None,
        false,
        json!({}),
    )
}

/// Shows the form only: opening the link (as mail scanners do) never consumes it.
async fn reset_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<ResetQuery>,
) -> Result<Response, AppError> {
    let token = query.token.unwrap_or_default();
    match state
        .idm
        .check_reset_token(&token, visitor.context.now)
        .await
    {
        Ok(_) => Ok(render_reset(
            &state,
            &visitor,
            StatusCode::OK,
            &token,
            Vec::new(),
        )),
        Err(IdmError::InvalidResetToken) => Ok(render_reset_invalid(&state, &visitor)),
        Err(err) => Err(err.into()),
    }
}

async fn reset(State(state): State<AppState>, form: CsrfForm) -> Result<Response, AppError> {
    let token = form.fields.get("token");
    let result = state
        .idm
        .redeem_reset(
            token,
            &NewPasswordForm {
                new_password: form.fields.get("new_password"),
                confirm_password: form.fields.get("confirm_password"),
            },
            &form.visitor.context,
        )
        .await;
    match result {
        Ok(_) => Ok(Redirect::to("/password/reset/done").into_response()),
        Err(IdmError::PasswordPolicy(violations)) => Ok(render_reset(
            &state,
            &form.visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            token,
            messages(&violations),
        )),
        Err(IdmError::InvalidResetToken) => Ok(render_reset_invalid(&state, &form.visitor)),
        Err(err) => Err(err.into()),
    }
}

async fn reset_done(State(state): State<AppState>, visitor: Visitor) -> Response {
    state.page(
        StatusCode::OK,
        "reset_done.html",
        &visitor.csrf_token(&state),
        None,
        false,
        json!({}),
    )
}
