//! The admin JSON API (SPEC §5). Its OpenAPI document is generated from these handlers'
//! annotations (utoipa), so the document and the router cannot drift apart.
//!
//! Callers authenticate with a Latchkey access token carrying scope `staff:admin` (for
//! an owner or client administrator), or with an administrator's browser session plus
//! the session's CSRF token in `X-CSRF-Token` for anything that changes state.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::crypto::tokens;
use crate::domain::account::PasswordState;
use crate::domain::{Role, StaffAccount, Violation};
use crate::idm::IdmError;

use super::AppState;
use super::error::{describe, log_if_server_error};
use super::extract::Visitor;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Latchkey admin API",
        description = "Staff administration for an agency's owners and client administrators."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Latchkey access token with scope staff:admin"))
                    .build(),
            ),
        );
    }
}

/// The router and its OpenAPI document, built from the same handler list.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_staff, create_staff))
        .routes(routes!(get_staff))
        .routes(routes!(reset_staff_password))
        .routes(routes!(audit_log))
        .split_for_parts()
}

/// Every error: `{"error": code, "message": text}` (plus `violations` for the policy).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiErrorBody {
    error: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    violations: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ApiErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiErrorBody {
                error: error.to_owned(),
                message: message.into(),
                violations: None,
            },
        }
    }
}

impl From<IdmError> for ApiError {
    fn from(err: IdmError) -> Self {
        log_if_server_error(&err);
        let (status, _, message) = describe(&err);
        let code = match &err {
            IdmError::NotFound => "not_found",
            IdmError::Forbidden => "forbidden",
            IdmError::OwnAccount => "own_account",
            IdmError::InvalidInput(_) => "invalid_request",
            IdmError::Conflict { .. } => "conflict",
            IdmError::Busy | IdmError::Unavailable { .. } => "unavailable",
            IdmError::PasswordPolicy(_) | IdmError::PasswordChangeRefused { .. } => {
                "password_policy"
            }
            IdmError::Throttled { .. } => "throttled",
            IdmError::SsoSetup(_) => "invalid_request",
            IdmError::InvalidCredentials
            | IdmError::TemporaryPasswordExpired
            | IdmError::InvalidResetToken => "invalid_grant",
            IdmError::AccountDisabled
            | IdmError::SsoRefused(_)
            | IdmError::SsoNoAccount { .. }
            | IdmError::SsoRequired { .. } => "forbidden",
            IdmError::UpstreamUnavailable(_) => "unavailable",
            IdmError::Internal(_) => "internal",
        };
        let mut api = Self::new(status, code, message);
        if let IdmError::PasswordPolicy(violations) = &err {
            api.body.message = violations
                .iter()
                .map(Violation::message)
                .collect::<Vec<_>>()
                .join(" ");
            api.body.violations = Some(violations.iter().map(|v| v.code().to_owned()).collect());
        }
        api
    }
}

impl From<crate::idm::ports::PortError> for ApiError {
    fn from(err: crate::idm::ports::PortError) -> Self {
        IdmError::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"latchkey\""),
            );
        }
        response
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            rejection.body_text(),
        )
    })
}

/// An owner or client administrator, by bearer token (scope `staff:admin`) or session.
pub struct ApiAdmin {
    pub account: StaffAccount,
}

impl<S> FromRequestParts<S> for ApiAdmin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let now = app.clock.now();
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let account = if let Some(token) = bearer {
            let (record, account) = app.idm.token_owner(token, now).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the access token is invalid, expired or revoked",
                )
            })?;
            if !record.scopes.iter().any(|s| s == "staff:admin") {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    "the token lacks scope staff:admin",
                ));
            }
            account
        } else {
            let visitor = Visitor::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "try again shortly",
                    )
                })?;
            let session = visitor
                .session
                .filter(|s| !s.is_restricted())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "sign in or send a bearer token",
                    )
                })?;
            if parts.method != Method::GET {
                let sent = parts
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !tokens::constant_time_eq(sent, &session.record.csrf_token) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "send the session's CSRF token in X-CSRF-Token",
                    ));
                }
            }
            app.idm
                .directory
                .staff_by_id(&session.record.staff_id())
                .await?
                .ok_or_else(|| {
                    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "sign in again")
                })?
        };
        if !account.role.is_admin() || !account.is_active() {
            return Err(IdmError::Forbidden.into());
        }
        Ok(Self { account })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffView {
    id: String,
    email: String,
    name: String,
    /// owner, client_admin or staff
    role: String,
    /// active or disabled
    status: String,
    /// A temporary password is set and must be changed at the next sign-in.
    must_change_password: bool,
}

impl From<&StaffAccount> for StaffView {
    fn from(account: &StaffAccount) -> Self {
        Self {
            id: account.id.0.clone(),
            email: account.email.to_string(),
            name: account.name.clone(),
            role: account.role.as_str().to_owned(),
            status: account.status.as_str().to_owned(),
            must_change_password: matches!(account.password_state, PasswordState::Temporary { .. }),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StaffQuery {
    /// Matches name or email.
    q: Option<String>,
    /// owner, client_admin or staff
    role: Option<String>,
    /// active or disabled
    status: Option<String>,
}

/// The agency's staff, filtered.
#[utoipa::path(
    get,
    path = "/api/v1/staff",
    params(StaffQuery),
    responses(
        (status = 200, description = "The matching staff", body = [StaffView]),
        (status = 400, description = "A bad filter", body = ApiErrorBody),
        (status = 401, description = "Not authenticated", body = ApiErrorBody),
        (status = 403, description = "Not an administrator", body = ApiErrorBody),
    )
)]
async fn list_staff(
    State(state): State<AppState>,
    admin: ApiAdmin,
    Query(query): Query<StaffQuery>,
) -> Result<Json<Vec<StaffView>>, ApiError> {
    let filter = super::settings::staff_filter(
        query.q.as_deref(),
        query.role.as_deref(),
        query.status.as_deref(),
    )?;
    let (_, staff) = state.idm.list_staff(&admin.account.id, &filter).await?;
    Ok(Json(staff.iter().map(StaffView::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewStaffBody {
    email: String,
    name: String,
    /// owner, client_admin or staff
    role: String,
}

/// Adds a colleague to the caller's agency (no password yet).
#[utoipa::path(
    post,
    path = "/api/v1/staff",
    request_body = NewStaffBody,
    responses(
        (status = 201, description = "Created", body = StaffView),
        (status = 400, description = "Bad input", body = ApiErrorBody),
        (status = 401, description = "Not authenticated", body = ApiErrorBody),
        (status = 403, description = "The role may not create this role", body = ApiErrorBody),
        (status = 409, description = "The email is taken", body = ApiErrorBody),
    )
)]
async fn create_staff(
    State(state): State<AppState>,
    admin: ApiAdmin,
    body: Result<Json<NewStaffBody>, JsonRejection>,
) -> Result<(StatusCode, Json<StaffView>), ApiError> {
    let body = json_body(body)?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e: crate::domain::role::UnknownRole| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
        })?;
    let account = state
        .idm
        .add_colleague(
            &admin.account.id,
            &body.email,
            &body.name,
            role,
            state.clock.now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(StaffView::from(&account))))
}

/// One colleague.
#[utoipa::path(
    get,
    path = "/api/v1/staff/{id}",
    params(("id" = String, Path, description = "The staff id")),
    responses(
        (status = 200, description = "The account", body = StaffView),
        (status = 401, description = "Not authenticated", body = ApiErrorBody),
        (status = 403, description = "Not an administrator", body = ApiErrorBody),
        (status = 404, description = "No such account in this agency", body = ApiErrorBody),
    )
)]
async fn get_staff(
    State(state): State<AppState>,
    admin: ApiAdmin,
    Path(id): Path<String>,
) -> Result<Json<StaffView>, ApiError> {
    let account = state.idm.colleague(&admin.account.id, &id).await?;
    Ok(Json(StaffView::from(&account)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetBody {
    /// Must meet the policy for temporary passwords (e.g. `Password.1`).
    temporary_password: String,
}

/// Sets a temporary password; the person must change it at the next sign-in, and their
/// sessions and refresh tokens end now.
#[utoipa::path(
    post,
    path = "/api/v1/staff/{id}/reset-password",
    params(("id" = String, Path, description = "The staff id")),
    request_body = ResetBody,
    responses(
        (status = 204, description = "The temporary password is set"),
        (status = 400, description = "Bad input", body = ApiErrorBody),
        (status = 401, description = "Not authenticated", body = ApiErrorBody),
        (status = 403, description = "The role may not reset this account, or it is the caller's own", body = ApiErrorBody),
        (status = 404, description = "No such account in this agency", body = ApiErrorBody),
        (status = 422, description = "The password does not meet the policy", body = ApiErrorBody),
    )
)]
async fn reset_staff_password(
    State(state): State<AppState>,
    admin: ApiAdmin,
    Path(id): Path<String>,
    visitor: Visitor,
    body: Result<Json<ResetBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let body = json_body(body)?;
    state
        .idm
        .admin_reset(
            &admin.account.id,
            &id,
            &body.temporary_password,
            &visitor.context,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Unix seconds.
    at: i64,
    event: String,
    actor: Option<String>,
    subject: Option<String>,
    ip: String,
    detail: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// At most this many events (1–1000, default 100).
    limit: Option<i64>,
}

/// The agency's security events, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Events", body = [AuditView]),
        (status = 401, description = "Not authenticated", body = ApiErrorBody),
        (status = 403, description = "Not an administrator", body = ApiErrorBody),
    )
)]
async fn audit_log(
    State(state): State<AppState>,
    admin: ApiAdmin,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = state.idm.audit_log(&admin.account.id, limit).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| AuditView {
                at: e.at,
                event: e.event,
                actor: e.actor,
                subject: e.subject,
                ip: e.ip,
                detail: e.detail,
            })
            .collect(),
    ))
}
