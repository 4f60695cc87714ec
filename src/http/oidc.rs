//! The OpenID Connect provider's endpoints: discovery, JWKS, `/authorize` (with its
//! resume and consent steps), `/token`, `/userinfo`, `/introspect`, `/revoke` and
//! `GET /logout` (the end-session endpoint).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthUrl, IssuerUrl, JsonWebKeyId, JsonWebKeySetUrl,
    ProviderMetadata, ResponseTypes, Scope, TokenUrl, UserInfoUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::keys::{Algorithm, jwk_of};
use crate::domain::oauth::KNOWN_SCOPES;
use crate::idm::oidc::{AuthorizeOutcome, AuthorizeParams, ClientCredentials, OAuthError};

use super::AppState;
use super::error::AppError;
use super::extract::{CsrfForm, Visitor};
use super::form::FormFields;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/authorize", get(authorize))
        .route("/authorize/resume", get(resume))
        .route("/authorize/consent", post(consent))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo).post(userinfo))
        .route("/introspect", post(introspect))
        .route("/revoke", post(revoke))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LatchkeyProviderMetadata {
    end_session_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    code_challenge_methods_supported: Vec<String>,
    authorization_response_iss_parameter_supported: bool,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
}

impl AdditionalProviderMetadata for LatchkeyProviderMetadata {}

type Metadata = ProviderMetadata<
    LatchkeyProviderMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

fn metadata(issuer: &str) -> Result<Metadata, String> {
    let url = |path: &str| format!("{issuer}{path}");
    let auth_methods = || {
        vec![
            "client_secret_basic".to_owned(),
            "client_secret_post".to_owned(),
        ]
    };
    let err = |e: openidconnect::url::ParseError| e.to_string();
    Ok(Metadata::new(
        IssuerUrl::new(issuer.to_owned()).map_err(err)?,
        AuthUrl::new(url("/authorize")).map_err(err)?,
        JsonWebKeySetUrl::new(url("/.well-known/jwks.json")).map_err(err)?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![Algorithm::RS256.jws(), Algorithm::ES256.jws()],
        LatchkeyProviderMetadata {
            end_session_endpoint: url("/logout"),
            introspection_endpoint: url("/introspect"),
            revocation_endpoint: url("/revoke"),
            code_challenge_methods_supported: vec!["S256".into()],
            authorization_response_iss_parameter_supported: true,
            introspection_endpoint_auth_methods_supported: auth_methods(),
            // RFC 7009 §2.1: a public client revokes its own tokens by naming itself.
            revocation_endpoint_auth_methods_supported: [auth_methods(), vec!["none".into()]]
                .concat(),
        },
    )
    .set_token_endpoint(Some(TokenUrl::new(url("/token")).map_err(err)?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(url("/userinfo")).map_err(err)?))
    .set_scopes_supported(Some(
        KNOWN_SCOPES
            .iter()
            .map(|s| Scope::new((*s).to_owned()))
            .collect(),
    ))
    .set_response_modes_supported(Some(vec![CoreResponseMode::Query]))
    .set_grant_types_supported(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
        CoreGrantType::ClientCredentials,
    ]))
    .set_token_endpoint_auth_methods_supported(Some(vec![
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
        CoreClientAuthMethod::None,
    ]))
    .set_claims_supported(Some(
        [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "amr",
            "at_hash",
            "email",
            "email_verified",
            "name",
            "agency",
            "roles",
        ]
        .iter()
        .map(|c| CoreClaimName::new((*c).to_owned()))
        .collect(),
    )))
}

async fn discovery(State(state): State<AppState>) -> Response {
    match metadata(&state.idm.rules.public_base) {
        Ok(document) => (
            [(header::CACHE_CONTROL, "public, max-age=300")],
            Json(document),
        )
            .into_response(),
        Err(err) => AppError::Internal(format!("discovery: {err}")).into_response(),
    }
}

async fn jwks(State(state): State<AppState>) -> Result<Response, AppError> {
    let keys = state.idm.published_keys(state.clock.now()).await?;
    let set = CoreJsonWebKeySet::new(
        keys.iter()
            .map(|(kid, alg, public)| jwk_of(*alg, public, Some(JsonWebKeyId::new(kid.clone()))))
            .collect(),
    );
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(set)).into_response())
}

/// `redirect_uri` with the given parameters added (and the RFC 9207 `iss`).
fn redirect_with(redirect_uri: &str, issuer: &str, params: &[(&str, Option<&str>)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return AppError::Internal("registered redirect_uri does not parse".into()).into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.append_pair("iss", issuer);
    }
    Redirect::to(url.as_str()).into_response()
}

fn authorization_error_page(message: String) -> Response {
    AppError::Idm(crate::idm::IdmError::InvalidInput(message)).into_response()
}

async fn answer(
    state: &AppState,
    visitor: &Visitor,
    outcome: AuthorizeOutcome,
) -> Result<Response, AppError> {
    let issuer = state.idm.rules.public_base.as_str();
    Ok(match outcome {
        AuthorizeOutcome::ErrorPage(message) => authorization_error_page(message),
        AuthorizeOutcome::RedirectError {
            redirect_uri,
            error,
            state: client_state,
        } => redirect_with(
            &redirect_uri,
            issuer,
            &[
                ("error", Some(error.code)),
                ("error_description", Some(&error.description)),
                ("state", client_state.as_deref()),
            ],
        ),
        AuthorizeOutcome::Code {
            redirect_uri,
            code,
            state: client_state,
        } => redirect_with(
            &redirect_uri,
            issuer,
            &[("code", Some(&code)), ("state", client_state.as_deref())],
        ),
        AuthorizeOutcome::NeedsLogin {
            pending,
            reauthenticate,
        } => {
            let resume = format!("/authorize/resume?request={pending}");
            let encoded: String = url::form_urlencoded::byte_serialize(resume.as_bytes()).collect();
            let reauth = if reauthenticate { "reauth=1&" } else { "" };
            Redirect::to(&format!("/login?{reauth}return_to={encoded}")).into_response()
        }
        AuthorizeOutcome::NeedsPasswordChange { pending } => {
            if let Some(session) = &visitor.session {
                state
                    .idm
                    .remember_resume_path(
                        session,
                        format!("/authorize/resume?request={pending}"),
                        visitor.context.now,
                    )
                    .await?;
            }
            Redirect::to("/password/change").into_response()
        }
        AuthorizeOutcome::NeedsConsent {
            pending,
            client_name,
            scopes,
        } => {
            let account = match &visitor.session {
                Some(session) => {
                    state
                        .idm
                        .directory
                        .staff_by_id(&session.record.staff_id())
                        .await?
                }
                None => None,
            };
            state.page(
                StatusCode::OK,
                "consent.html",
                &visitor.csrf_token(state),
                account.as_ref(),
                false,
                json!({ "request": pending, "client_name": client_name, "scopes": scopes }),
            )
        }
    })
}

async fn authorize(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(params): Query<AuthorizeParams>,
) -> Result<Response, AppError> {
    let outcome = state
        .idm
        .authorize(&params, visitor.session.as_ref(), visitor.context.now)
        .await?;
    answer(&state, &visitor, outcome).await
}

#[derive(Deserialize)]
struct ResumeQuery {
    request: Option<String>,
}

async fn resume(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<ResumeQuery>,
) -> Result<Response, AppError> {
    let pending = query.request.unwrap_or_default();
    let outcome = state
        .idm
        .resume_authorization(&pending, visitor.session.as_ref(), visitor.context.now)
        .await?;
    answer(&state, &visitor, outcome).await
}

async fn consent(State(state): State<AppState>, form: CsrfForm) -> Result<Response, AppError> {
    let Some(session) = form.visitor.session.clone().filter(|s| !s.is_restricted()) else {
        return Err(AppError::Redirect("/login".into()));
    };
    let approved = form.fields.get("decision") == "allow";
    let outcome = state
        .idm
        .consent(
            form.fields.get("request"),
            &session,
            approved,
            form.visitor.context.now,
        )
        .await?;
    answer(&state, &form.visitor, outcome).await
}

/// An RFC 6749 §5.2 error: JSON, `no-store`, and `WWW-Authenticate` for `invalid_client`.
fn oauth_error(error: &OAuthError) -> Response {
    let status = match error.code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({ "error": error.code, "error_description": error.description })),
    )
        .into_response();
    if error.code == "invalid_client" {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"latchkey\""),
        );
    }
    response
}

fn no_store_json(value: serde_json::Value) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(value),
    )
        .into_response()
}

fn form_fields(body: &Bytes) -> Result<FormFields, OAuthError> {
    FormFields::parse(body).map_err(|e| OAuthError::new("invalid_request", e.to_string()))
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1: each part form-urlencoded) or
/// from the body; both at once is refused.
fn client_credentials(
    headers: &HeaderMap,
    fields: &FormFields,
) -> Result<ClientCredentials, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let body_id = fields.get("client_id");
    let body_secret = fields.get("client_secret");
    let invalid = || OAuthError::new("invalid_client", "client authentication failed");
    if let Some(encoded) = basic {
        if !body_secret.is_empty() {
            return Err(OAuthError::new(
                "invalid_request",
                "use one client authentication method",
            ));
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let id = decode(id);
        if !body_id.is_empty() && body_id != id {
            return Err(invalid());
        }
        return Ok(ClientCredentials {
            client_id: id,
            secret: Some(decode(secret)),
        });
    }
    if body_id.is_empty() {
        return Err(invalid());
    }
    Ok(ClientCredentials {
        client_id: body_id.to_owned(),
        secret: (!body_secret.is_empty()).then(|| body_secret.to_owned()),
    })
}

async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = state.clock.now();
    let result = async {
        let fields = form_fields(&body)?;
        let credentials = client_credentials(&headers, &fields)?;
        let client = state.idm.authenticate_client(&credentials).await?;
        match fields.get("grant_type") {
            "authorization_code" => {
                state
                    .idm
                    .exchange_code(
                        &client,
                        fields.get("code"),
                        fields.get("redirect_uri"),
                        fields.get("code_verifier"),
                        now,
                    )
                    .await
            }
            "refresh_token" => {
                state
                    .idm
                    .refresh(&client, fields.get("refresh_token"), now)
                    .await
            }
            "client_credentials" => {
                let scope = Some(fields.get("scope")).filter(|s| !s.is_empty());
                state.idm.client_credentials(&client, scope, now).await
            }
            "" => Err(OAuthError::new("invalid_request", "grant_type is missing")),
            other => Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported"),
            )),
        }
    }
    .await;
    match result {
        Ok(tokens) => no_store_json(serde_json::to_value(tokens).unwrap_or_default()),
        Err(error) => oauth_error(&error),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn invalid_token() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer error=\"invalid_token\", error_description=\"the access token is invalid, expired or revoked\"",
        )],
        Json(json!({ "error": "invalid_token", "error_description": "the access token is invalid, expired or revoked" })),
    )
        .into_response()
}

async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let Some(token) = bearer(&headers) else {
        return Ok(invalid_token());
    };
    let Some((record, account)) = state.idm.token_owner(token, state.clock.now()).await? else {
        return Ok(invalid_token());
    };
    if !record.scopes.iter().any(|s| s == "openid") {
        return Ok((
            StatusCode::FORBIDDEN,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer error=\"insufficient_scope\", scope=\"openid\"",
            )],
            Json(json!({ "error": "insufficient_scope" })),
        )
            .into_response());
    }
    let agency = state.idm.directory.agency(&account.agency_id).await?;
    Ok(no_store_json(json!({
        "sub": account.id.0,
        "email": account.email.as_str(),
        "email_verified": true,
        "name": account.name,
        "agency": agency.map(|a| a.slug).unwrap_or_default(),
        "roles": [account.role.as_str()],
    })))
}

async fn authenticated_client(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(crate::domain::oauth::Client, FormFields), OAuthError> {
    let fields = form_fields(body)?;
    let credentials = client_credentials(headers, &fields)?;
    let client = state.idm.authenticate_client(&credentials).await?;
    Ok((client, fields))
}

async fn introspect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match authenticated_client(&state, &headers, &body).await {
        // RFC 7662 §2.1: the caller must authenticate; a public client can only name itself.
        Ok((client, _)) if client.is_public() => oauth_error(&OAuthError::new(
            "invalid_client",
            "introspection needs a confidential client",
        )),
        Ok((client, fields)) => match state
            .idm
            .introspect(&client, fields.get("token"), state.clock.now())
            .await
        {
            Ok(answer) => no_store_json(answer),
            Err(err) => AppError::from(err).into_response(),
        },
        Err(error) => oauth_error(&error),
    }
}

async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match authenticated_client(&state, &headers, &body).await {
        Ok((client, fields)) => match state.idm.revoke_token(&client, fields.get("token")).await {
            Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
            Err(err) => AppError::from(err).into_response(),
        },
        Err(error) => oauth_error(&error),
    }
}
