//! Settings → Staff: the filtered list, and Actions → Reset Password.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::crypto::tokens::generate_temporary_password;
use crate::domain::{PasswordKind, Role, StaffAccount, StaffStatus, Violation};
use crate::idm::IdmError;
use crate::idm::ports::StaffFilter;

use super::AppState;
use super::error::AppError;
use super::extract::{AdminSession, CsrfForm};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/settings",
            get(|| async { Redirect::to("/settings/staff") }),
        )
        .route("/settings/staff", get(staff_list))
        .route(
            "/settings/staff/{id}/reset-password",
            get(reset_page).post(reset_password),
        )
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    role: Option<String>,
    status: Option<String>,
    reset: Option<String>,
}

fn parse_filter(query: &ListQuery) -> Result<StaffFilter, AppError> {
    Ok(staff_filter(
        query.q.as_deref(),
        query.role.as_deref(),
        query.status.as_deref(),
    )?)
}

/// The Settings → Staff filter (and the API's), from its three optional parameters.
pub(super) fn staff_filter(
    q: Option<&str>,
    role: Option<&str>,
    status: Option<&str>,
) -> Result<StaffFilter, IdmError> {
    let q = q.map(str::trim).unwrap_or_default();
    if q.chars().count() > 200 {
        return Err(IdmError::InvalidInput(
            "The search text is too long.".into(),
        ));
    }
    let role = match role.unwrap_or_default() {
        "" => None,
        other => Some(
            other
                .parse::<Role>()
                .map_err(|e| IdmError::InvalidInput(e.to_string()))?,
        ),
    };
    let status = match status.unwrap_or_default() {
        "" => None,
        other => Some(
            other
                .parse::<StaffStatus>()
                .map_err(IdmError::InvalidInput)?,
        ),
    };
    // Compared in the form names and emails are stored in.
    let q: String = unicode_normalization::UnicodeNormalization::nfc(q).collect();
    Ok(StaffFilter {
        query: (!q.is_empty()).then_some(q),
        role,
        status,
    })
}

fn staff_row(account: &StaffAccount) -> serde_json::Value {
    json!({
        "id": account.id.0,
        "name": account.name,
        "email": account.email.to_string(),
        "role_label": account.role.label(),
        "status_label": account.status.label(),
        "must_change": matches!(account.password_state, crate::domain::account::PasswordState::Temporary { .. }),
    })
}

async fn staff_list(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let filter = parse_filter(&query)?;
    let session = &admin.signed_in.session;
    let (actor, staff) = state
        .idm
        .list_staff(&session.record.staff_id(), &filter)
        .await?;
    let notice = match &query.reset {
        Some(id) => staff
            .iter()
            .find(|s| &s.id.0 == id)
            .map(|s| {
                format!(
                    "Temporary password set for {}. Share it with them: they must change it when they next sign in.",
                    s.name
                )
            }),
        None => None,
    };
    Ok(state.page(
        StatusCode::OK,
        "staff_list.html",
        &admin.signed_in.visitor.csrf_token(&state),
        Some(&actor),
        false,
        json!({
            "filter": {
                "q": filter.query.unwrap_or_default(),
                "role": filter.role.map_or("", Role::as_str),
                "status": filter.status.map_or("", StaffStatus::as_str),
            },
            "role_options": Role::ALL.iter().map(|r| json!({"value": r.as_str(), "label": r.label()})).collect::<Vec<_>>(),
            "status_options": StaffStatus::ALL.iter().map(|s| json!({"value": s.as_str(), "label": s.label()})).collect::<Vec<_>>(),
            "staff": staff.iter().map(staff_row).collect::<Vec<_>>(),
            "is_owner": actor.role == Role::Owner,
            "notice": notice,
        }),
    ))
}

fn render_reset(
    state: &AppState,
    admin: &AdminSession,
    target: &StaffAccount,
    status: StatusCode,
    errors: Vec<String>,
) -> Response {
    state.page(
        status,
        "staff_reset.html",
        &admin.signed_in.visitor.csrf_token(state),
        Some(&admin.account),
        false,
        json!({
            "target": {
                "id": target.id.0,
                "name": target.name,
                "email": target.email.to_string(),
                "role_label": target.role.label(),
            },
            "suggested_password": generate_temporary_password(),
            "errors": errors,
            "policy_rules": state.idm.policy.describe(PasswordKind::Temporary),
        }),
    )
}

async fn reset_page(
    State(state): State<AppState>,
    admin: AdminSession,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let target = state.idm.admin_target(&admin.account, &id).await?;
    admin
        .account
        .may_admin_reset(&target)
        .map_err(IdmError::from)?;
    Ok(render_reset(
        &state,
        &admin,
        &target,
        StatusCode::OK,
        Vec::new(),
    ))
}

async fn reset_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Result<Response, AppError> {
    // The CSRF token is checked (by the extractor) before who is asking.
    let admin = AdminSession::from_form(&state, &form).await?;
    let session = &admin.signed_in.session;
    let result = state
        .idm
        .admin_reset(
            &session.record.staff_id(),
            &id,
            form.fields.get("temporary_password"),
            &form.visitor.context,
        )
        .await;
    match result {
        Ok(target) => {
            Ok(Redirect::to(&format!("/settings/staff?reset={}", target.id)).into_response())
        }
        Err(IdmError::PasswordPolicy(violations)) => {
            let target = state.idm.admin_target(&admin.account, &id).await?;
            let errors = violations.iter().map(Violation::message).collect();
            Ok(render_reset(
                &state,
                &admin,
                &target,
                StatusCode::UNPROCESSABLE_ENTITY,
                errors,
            ))
        }
        Err(err) => Err(err.into()),
    }
}
