//! `/api/v1/auth/*`: registration, login, token refresh, logout, token
//! introspection, password change and reset.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use lectern_commands::identity::IdentityService;
use lectern_domain::identity::user::RevokeReason;
use lectern_domain::identity::{DisplayName, Email, Password, Role, UserCommand};
use lectern_domain::policy::Action;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accepted::CommandAccepted;
use crate::app::AppState;
use crate::auth::tokens::ACCESS_TTL_SECS;
use crate::auth::{Caller, Origin};
use crate::extract::ApiJson;
use crate::problem::{Code, FieldError, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(verify))
        .routes(routes!(change_password))
        .routes(routes!(request_reset))
        .routes(routes!(confirm_reset))
}

/// A new account.
#[derive(Deserialize, ToSchema)]
pub struct Register {
    email: String,
    /// 12 to 128 characters.
    password: String,
    display_name: String,
    /// `student` or `tutor`; an admin may also create `admin`, `auditor` and `guest`.
    role: String,
}

/// Create an account. Anyone may register as a student or tutor; other roles
/// need an admin's token.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Register,
    responses((status = 201, body = CommandAccepted), (status = 409, description = "Email taken", body = Problem),
              (status = 422, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
async fn register(
    State(state): State<AppState>,
    origin: Origin,
    caller: Option<Caller>,
    ApiJson(body): ApiJson<Register>,
) -> Result<(StatusCode, Json<CommandAccepted>), Problem> {
    match &caller {
        Some(c) => {
            c.authorize(&state, Action::AuthRegister).await?;
        }
        None => origin.authorize(&state, Action::AuthRegister, None).await?,
    }
    let mut errors = Vec::new();
    let mut field = |pointer: &str, r: Result<(), String>| {
        if let Err(detail) = r {
            errors.push(FieldError {
                pointer: pointer.into(),
                detail,
            });
        }
    };
    let email = Email::parse(&body.email);
    field(
        "#/email",
        email.as_ref().map(|_| ()).map_err(ToString::to_string),
    );
    let password = Password::parse(&body.password);
    field(
        "#/password",
        password.as_ref().map(|_| ()).map_err(ToString::to_string),
    );
    let name = DisplayName::parse(&body.display_name);
    field(
        "#/display_name",
        name.as_ref().map(|_| ()).map_err(ToString::to_string),
    );
    let role = Role::parse(&body.role);
    field(
        "#/role",
        role.map(|_| ())
            .ok_or_else(|| "must be one of student, tutor, admin, auditor, guest".to_owned()),
    );
    let (Ok(email), Ok(password), Ok(name), Some(role), true) =
        (email, password, name, role, errors.is_empty())
    else {
        return Err(Problem::validation(errors));
    };
    let meta = match &caller {
        Some(c) => c.metadata(),
        None => origin.metadata(),
    };
    if !role.self_service() {
        let Some(c) = &caller else {
            return Err(origin
                .deny(
                    &state,
                    Action::AdminUsersCreate,
                    Code::ROLE_NOT_ALLOWED,
                    "Only an admin can create accounts with this role.",
                )
                .await);
        };
        c.authorize(&state, Action::AdminUsersCreate).await?;
    }
    let committed = state
        .identity
        .register(&email, &password, &name, role, &meta)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CommandAccepted::new(&committed.aggregate_id, &committed)),
    ))
}

/// Credentials for a login.
#[derive(Deserialize, ToSchema)]
pub struct Login {
    email: String,
    password: String,
    /// A stable identifier of the client device; the session is bound to it.
    device_fingerprint: String,
}

/// Tokens for a session.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Opaque; rotates on every refresh. Store it securely.
    refresh_token: String,
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
    session_id: Uuid,
    /// The log position of this login, for `consistent_with`.
    position: Option<String>,
}

fn fingerprint(raw: &str) -> Result<&str, Problem> {
    let f = raw.trim();
    if f.is_empty() || f.chars().count() > 256 {
        return Err(Problem::invalid(
            "#/device_fingerprint",
            "must be 1 to 256 characters",
        ));
    }
    Ok(f)
}

fn tokens(state: &AppState, issued: &lectern_commands::identity::Issued) -> TokenResponse {
    let (access_token, _) = state.auth.issue(issued);
    TokenResponse {
        access_token,
        refresh_token: issued.refresh_token.clone(),
        token_type: "Bearer",
        expires_in: ACCESS_TTL_SECS,
        session_id: issued.session_id,
        position: issued.position.map(|p| p.to_string()),
    }
}

/// Log in. An unknown email and a wrong password get the same answer after
/// the same work. Five failures within 15 minutes lock the account, for a
/// time that doubles with each lock.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem),
              (status = 422, body = Problem), (status = 429, description = "Locked or rate-limited", body = Problem)))]
async fn login(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<TokenResponse>, Problem> {
    origin.authorize(&state, Action::AuthLogin, None).await?;
    let password = Password::presented(&body.password)
        .map_err(|e| Problem::invalid("#/password", e.to_string()))?;
    let fp = fingerprint(&body.device_fingerprint)?;
    let issued = state
        .identity
        .login(&body.email, &password, fp, &origin.metadata())
        .await?;
    Ok(Json(tokens(&state, &issued)))
}

/// A refresh request.
#[derive(Deserialize, ToSchema)]
pub struct Refresh {
    refresh_token: String,
    device_fingerprint: String,
}

/// Exchange a refresh token for new tokens. The presented token is used up;
/// presenting it again ends the whole session (theft detection), as does a
/// different device fingerprint. At most 10 per hour per session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = Refresh,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn refresh(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<Refresh>,
) -> Result<Json<TokenResponse>, Problem> {
    let session = IdentityService::refresh_token_session(&body.refresh_token);
    origin
        .authorize(&state, Action::AuthRefresh, session)
        .await?;
    let fp = fingerprint(&body.device_fingerprint)?;
    let issued = state
        .identity
        .refresh(&body.refresh_token, fp, &origin.metadata())
        .await?;
    Ok(Json(tokens(&state, &issued)))
}

/// End this session. Its access tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = CommandAccepted), (status = 401, body = Problem)))]
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::AuthLogout).await?;
    let command = UserCommand::RevokeSession {
        session_id: caller.session_id,
        reason: RevokeReason::Logout,
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(caller.session_id, &committed)))
}

/// End every session of the caller.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = CommandAccepted), (status = 401, body = Problem)))]
async fn logout_all(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::AuthLogout).await?;
    let command = UserCommand::RevokeAllSessions {
        except: None,
        reason: RevokeReason::LogoutAll,
    };
    let committed = state
        .identity
        .execute(caller.user_id, command, &caller.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(caller.user_id, &committed)))
}

/// What a valid access token says.
#[derive(Serialize, ToSchema)]
pub struct Introspection {
    active: bool,
    sub: Uuid,
    sid: Uuid,
    role: String,
    jti: Uuid,
    kid: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// The token allows only the password change.
    restricted: bool,
}

/// Describe the presented access token.
#[utoipa::path(get, path = "/api/v1/auth/verify", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Introspection), (status = 401, body = Problem)))]
async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Introspection>, Problem> {
    caller.authorize(&state, Action::AuthVerify).await?;
    let c = &caller.claims;
    Ok(Json(Introspection {
        active: true,
        sub: c.sub,
        sid: c.sid,
        role: c.role.as_str().to_owned(),
        jti: c.jti,
        kid: caller.kid.clone(),
        iss: c.iss.clone(),
        aud: c.aud.clone(),
        iat: c.iat,
        exp: c.exp,
        restricted: caller.restricted,
    }))
}

/// A password change.
#[derive(Deserialize, ToSchema)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Change the caller's password. Every other session ends. Allowed even when
/// a forced reset restricts the token.
#[utoipa::path(post, path = "/api/v1/auth/change-password", tag = "auth", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 200, body = CommandAccepted), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<Json<CommandAccepted>, Problem> {
    caller.authorize(&state, Action::AuthChangePassword).await?;
    let current = Password::presented(&body.current_password)
        .map_err(|e| Problem::invalid("#/current_password", e.to_string()))?;
    let new = Password::parse(&body.new_password)
        .map_err(|e| Problem::invalid("#/new_password", e.to_string()))?;
    let committed = state
        .identity
        .change_password(
            caller.user_id,
            caller.session_id,
            &current,
            &new,
            &caller.metadata(),
        )
        .await?;
    Ok(Json(CommandAccepted::new(caller.user_id, &committed)))
}

/// A reset request.
#[derive(Deserialize, ToSchema)]
pub struct ResetRequest {
    email: String,
}

/// The answer to a reset request: always the same.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    status: &'static str,
}

/// Ask for a password reset. Always 202: whether the address has an account
/// is not revealed. If it has, a single-use token valid for one hour is
/// mailed through the outbox; no response ever contains it.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/request", tag = "auth", request_body = ResetRequest,
    responses((status = 202, body = Accepted), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn request_reset(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    origin
        .authorize(&state, Action::AuthPasswordReset, None)
        .await?;
    let email =
        Email::parse(&body.email).map_err(|e| Problem::invalid("#/email", e.to_string()))?;
    state
        .identity
        .request_password_reset(&email, &origin.metadata())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })))
}

/// A reset confirmation.
#[derive(Deserialize, ToSchema)]
pub struct ResetConfirm {
    token: String,
    new_password: String,
}

/// Set a new password with a reset token. The token works once; every session
/// of the account ends.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 200, body = CommandAccepted), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn confirm_reset(
    State(state): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<Json<CommandAccepted>, Problem> {
    origin
        .authorize(&state, Action::AuthPasswordReset, None)
        .await?;
    let new = Password::parse(&body.new_password)
        .map_err(|e| Problem::invalid("#/new_password", e.to_string()))?;
    let committed = state
        .identity
        .confirm_password_reset(&body.token, &new, &origin.metadata())
        .await?;
    Ok(Json(CommandAccepted::new(
        &committed.aggregate_id,
        &committed,
    )))
}
