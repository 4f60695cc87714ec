//! Settings → SSO (owners only) and the sign-in round trip through an agency's
//! corporate identity provider: `/sso/start` and `/sso/callback`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::domain::Role;
use crate::idm::IdmError;
use crate::idm::sso::SsoSettingsInput;

use super::AppState;
use super::error::AppError;
use super::extract::{AdminSession, CsrfForm, Visitor, safe_return_path};
use super::pages::redirect_with_session;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings/sso", get(settings_page).post(save_settings))
        .route("/sso/start", get(start))
        .route("/sso/callback", get(callback))
}

#[derive(Deserialize)]
struct SettingsQuery {
    saved: Option<String>,
}

fn owner_only(admin: &AdminSession) -> Result<(), AppError> {
    if admin.account.role == Role::Owner {
        Ok(())
    } else {
        Err(IdmError::Forbidden.into())
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split([' ', ',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn render_settings(
    state: &AppState,
    admin: &AdminSession,
    status: StatusCode,
    form: serde_json::Value,
    errors: Vec<String>,
    notice: Option<&str>,
) -> Result<Response, AppError> {
    let connection = state
        .idm
        .sso_connection_of(&admin.account.agency_id)
        .await?;
    Ok(state.page(
        status,
        "settings_sso.html",
        &admin.signed_in.visitor.csrf_token(state),
        Some(&admin.account),
        false,
        json!({
            "redirect_uri": state.idm.sso_redirect_uri(),
            "configured": connection.is_some(),
            "enforce": connection.as_ref().is_some_and(|c| c.enforce),
            "form": form,
            "errors": errors,
            "notice": notice,
        }),
    ))
}

async fn settings_page(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(query): Query<SettingsQuery>,
) -> Result<Response, AppError> {
    owner_only(&admin)?;
    let connection = state
        .idm
        .sso_connection_of(&admin.account.agency_id)
        .await?;
    let form = match &connection {
        Some(c) => json!({
            "issuer": c.issuer,
            "client_id": c.client_id,
            "domains": c.domains.join(" "),
            "scopes": c.scopes.join(" "),
            "enforce": c.enforce,
            "create_accounts": c.create_accounts,
        }),
        None => {
            json!({ "issuer": "", "client_id": "", "domains": "", "scopes": "openid email profile", "enforce": false, "create_accounts": false })
        }
    };
    let notice = query
        .saved
        .is_some()
        .then_some("Single sign-on settings saved.");
    render_settings(&state, &admin, StatusCode::OK, form, Vec::new(), notice).await
}

async fn save_settings(
    State(state): State<AppState>,
    form: CsrfForm,
) -> Result<Response, AppError> {
    let admin = AdminSession::from_form(&state, &form).await?;
    owner_only(&admin)?;
    let fields = &form.fields;
    let domains = split_list(fields.get("domains"));
    let scopes = split_list(fields.get("scopes"));
    let enforce = fields.get("enforce") == "on";
    let create_accounts = fields.get("create_accounts") == "on";
    let result = state
        .idm
        .configure_sso(
            Some(&admin.account.id),
            &admin.account.agency_id,
            &SsoSettingsInput {
                issuer: fields.get("issuer"),
                client_id: fields.get("client_id"),
                client_secret: fields.get("client_secret"),
                domains: &domains,
                scopes: &scopes,
                enforce,
                create_accounts,
            },
            &form.visitor.context,
        )
        .await;
    match result {
        Ok(_) => Ok(Redirect::to("/settings/sso?saved=1").into_response()),
        Err(err @ (IdmError::SsoSetup(_) | IdmError::Conflict { .. })) => {
            let errors = match err {
                IdmError::SsoSetup(problems) => problems,
                _ => vec!["One of these email domains already belongs to another agency's single sign-on.".into()],
            };
            let echo = json!({
                "issuer": fields.get("issuer"),
                "client_id": fields.get("client_id"),
                "domains": fields.get("domains"),
                "scopes": fields.get("scopes"),
                "enforce": enforce,
                "create_accounts": create_accounts,
            });
            render_settings(
                &state,
                &admin,
                StatusCode::UNPROCESSABLE_ENTITY,
                echo,
                errors,
                None,
            )
            .await
        }
        Err(err) => Err(err.into()),
    }
}

#[derive(Deserialize)]
struct StartQuery {
    email: Option<String>,
    agency: Option<String>,
    return_to: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<StartQuery>,
) -> Result<Response, AppError> {
    let return_to = query.return_to.as_deref().and_then(safe_return_path);
    let url = state
        .idm
        .sso_start(
            query.email.as_deref(),
            query.agency.as_deref(),
            &visitor.presession,
            return_to,
            visitor.context.now,
        )
        .await?;
    Ok(Redirect::to(&url).into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, AppError> {
    let (session, return_to) = state
        .idm
        .sso_callback(
            query.code.as_deref(),
            query.state.as_deref(),
            query.iss.as_deref(),
            query.error.as_deref(),
            &visitor.presession,
            &visitor.context,
        )
        .await?;
    if let Some(previous) = &visitor.session {
        state.idm.end_session(previous).await?;
    }
    let to = return_to.unwrap_or_else(|| "/account".into());
    Ok(redirect_with_session(&state.cookies, &session, &to))
}
