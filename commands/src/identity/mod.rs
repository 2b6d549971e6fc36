//! The identity service: registration, login, token rotation, password
//! changes and resets, each a command on the User or EmailClaim aggregate.
//!
//! Work that is not pure (hashing, the clock, fresh ids and tokens) happens
//! here, before the command; the aggregate then decides with those facts.
//!
//! Past 500 lines on purpose: every method is the same shape (gather the
//! outside facts, run one command, map its refusal), and the facts they
//! share (the dummy hash, token hashing, the outbox) are private here.

pub mod secrets;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use lectern_domain::access::{AccessCommand, AccessLog, RecordAuditRead, RecordDenial};
use lectern_domain::identity::user::RevokeReason;
use lectern_domain::identity::{
    Claim, DisplayName, Email, EmailClaim, Password, Role, User, UserCommand, UserError, UserEvent,
};
use lectern_domain::{EventMetadata, Position};
use sqlx::PgPool;
use uuid::Uuid;

use crate::bus::{CommandBus, Committed, DispatchConfig};
use crate::error::{CommandError, StoreError};
use crate::store::PgEventStore;
pub use secrets::{sha256_hex, PasswordHasher};

/// How long a password-reset token is valid.
pub const RESET_TOKEN_LIFETIME: Duration = Duration::hours(1);
/// How old a claim on an email must be before a registration may take it over
/// from a user that was never created.
const ORPHAN_AGE: Duration = Duration::minutes(1);

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The email address is already registered.
    #[error("the email address is already registered")]
    EmailTaken,
    /// Invalid email or password.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The account is locked until ….
    #[error("the account is locked until {0}")]
    Locked(DateTime<Utc>),
    /// The refresh token is not valid.
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    /// The session was revoked: ….
    #[error("the session was revoked: {0:?}")]
    SessionRevoked(RevokeReason),
    /// The reset token is not valid.
    #[error("the reset token is not valid")]
    InvalidResetToken,
    /// The current password is not correct.
    #[error("the current password is not correct")]
    WrongPassword,
    /// A User rule refused it.
    #[error(transparent)]
    Rule(UserError),
    /// The account was changed concurrently; retry.
    #[error("the account was changed concurrently; retry")]
    Conflict,
    /// The store failed underneath.
    #[error(transparent)]
    Store(StoreError),
}

impl From<CommandError<UserError>> for IdentityError {
    fn from(e: CommandError<UserError>) -> Self {
        match e {
            CommandError::Rejected(UserError::InvalidRefreshToken) => Self::InvalidRefreshToken,
            CommandError::Rejected(UserError::InvalidResetToken) => Self::InvalidResetToken,
            CommandError::Rejected(r) => Self::Rule(r),
            CommandError::Conflict => Self::Conflict,
            CommandError::Store(s) => Self::Store(s),
        }
    }
}

impl From<StoreError> for IdentityError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Tokens issued by a login or a refresh.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The user.
    pub user_id: Uuid,
    /// The session (refresh-token family).
    pub session_id: Uuid,
    /// The opaque refresh token. Shown to the client once; never stored.
    pub refresh_token: String,
    /// The role.
    pub role: Role,
    /// Tokens allow only the password change until it is changed.
    pub must_change_password: bool,
    /// The user's version after this command; access tokens carry it so a
    /// later role change or deactivation can invalidate them.
    pub version: u64,
    /// The position in the log.
    pub position: Option<Position>,
}

impl Issued {
    /// The tokens a commit issued; `grant` is the role and must-change flag
    /// its event recorded.
    fn new(
        user_id: Uuid,
        session_id: Uuid,
        refresh_token: String,
        (role, must_change_password): (Role, bool),
        committed: &Committed<UserEvent>,
    ) -> Self {
        Self {
            user_id,
            session_id,
            refresh_token,
            role,
            must_change_password,
            version: committed.version,
            position: committed.position,
        }
    }
}

/// A message put in the outbox for the mail relay.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The address it goes to.
    pub recipient: String,
    /// The subject line.
    pub subject: String,
    /// The text body.
    pub body: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// Called with every committed user event: `(user_id, version, event)`.
pub type UserObserver = Arc<dyn Fn(Uuid, u64, &UserEvent) + Send + Sync>;

/// Identity commands, with their aggregates' dispatchers.
#[derive(Clone)]
pub struct IdentityService {
    /// The User streams.
    pub users: CommandBus<User>,
    /// The verified claims.
    pub claims: CommandBus<EmailClaim>,
    /// Deny, allow, or own resources only.
    pub access: CommandBus<AccessLog>,
    /// Argon2id hashing on the blocking pool.
    pub hasher: PasswordHasher,
    pool: PgPool,
    observer: Option<UserObserver>,
}

/// The id of the EmailClaim stream for `email`: its SHA-256, so no address
/// appears in an aggregate id.
pub fn claim_id(email: &Email) -> String {
    sha256_hex(email.as_str())
}

impl IdentityService {
    /// The service over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            users: CommandBus::new(
                PgEventStore::new(pool.clone()).with_snapshots(50),
                (),
                DispatchConfig::default(),
            ),
            claims: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            access: CommandBus::new(
                PgEventStore::new(pool.clone()).with_snapshots(100),
                (),
                DispatchConfig::default(),
            ),
            hasher: PasswordHasher::new(),
            pool,
            observer: None,
        }
    }

    /// Call `observer` with every user event this service commits, as soon
    /// as it commits (the API uses it to revoke tokens at once).
    pub fn with_observer(mut self, observer: UserObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    async fn run(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: EventMetadata,
    ) -> Result<Committed<UserEvent>, CommandError<UserError>> {
        let committed = self
            .users
            .execute(&user_id.to_string(), command, meta)
            .await?;
        if let Some(observe) = &self.observer {
            for e in &committed.events {
                observe(user_id, e.sequence, &e.payload);
            }
        }
        Ok(committed)
    }

    /// Create an account. The email is claimed first, so of concurrent
    /// registrations with one address exactly one succeeds.
    pub async fn register(
        &self,
        email: &Email,
        password: &Password,
        display_name: &DisplayName,
        role: Role,
        meta: &EventMetadata,
    ) -> Result<Committed<UserEvent>, IdentityError> {
        let password_hash = self.hasher.hash(password).await;
        let user_id = meta.new_id(0);
        let claim = claim_id(email);
        let mut orphan = None;
        loop {
            let command = Claim {
                user_id,
                orphan,
                now: Utc::now(),
            };
            match self.claims.execute(&claim, command, meta.clone()).await {
                Ok(_) => break,
                Err(CommandError::Rejected(taken)) if orphan.is_none() => {
                    if !self.is_orphan(&claim, taken.0).await? {
                        return Err(IdentityError::EmailTaken);
                    }
                    orphan = Some(taken.0);
                }
                Err(CommandError::Rejected(_)) => return Err(IdentityError::EmailTaken),
                Err(CommandError::Conflict) => return Err(IdentityError::Conflict),
                Err(CommandError::Store(e)) => return Err(e.into()),
            }
        }
        let command = UserCommand::Register {
            user_id,
            email: email.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
            role,
            password_hash,
        };
        Ok(self.run(user_id, command, meta.clone()).await?)
    }

    /// Whether `owner`'s claim on `claim` is left over from a registration
    /// that never created its user.
    async fn is_orphan(&self, claim: &str, owner: Uuid) -> Result<bool, IdentityError> {
        let state = self.claims.store().load(claim).await?;
        let old = state
            .aggregate
            .claimed_at
            .is_some_and(|at| Utc::now() - at > ORPHAN_AGE);
        if !old {
            return Ok(false);
        }
        let user = self.users.store().load(&owner.to_string()).await?;
        Ok(user.version == 0)
    }

    /// The role of account `user_id` as its stream says; `None` for no
    /// account.
    pub async fn role_of(&self, user_id: Uuid) -> Result<Option<Role>, IdentityError> {
        let user = self.users.store().load(&user_id.to_string()).await?;
        Ok(user.aggregate.role)
    }

    /// Account `user_id` as its stream says, if it exists.
    pub async fn user(&self, user_id: Uuid) -> Result<Option<User>, IdentityError> {
        let user = self.users.store().load(&user_id.to_string()).await?;
        Ok((user.version > 0).then_some(user.aggregate))
    }

    /// The account registered with `email`, if any, and its state.
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<User>, IdentityError> {
        let claim = self.claims.store().load(&claim_id(email)).await?;
        let Some(owner) = claim.aggregate.owner else {
            return Ok(None);
        };
        let user = self.users.store().load(&owner.to_string()).await?;
        Ok((user.version > 0).then_some(user.aggregate))
    }

    /// Check a password and start a session. An unknown email, a wrong
    /// password and a deactivated account give the same error after the same
    /// work (one Argon2 verification).
    pub async fn login(
        &self,
        email: &str,
        password: &Password,
        fingerprint: &str,
        meta: &EventMetadata,
    ) -> Result<Issued, IdentityError> {
        let user = match Email::parse(email) {
            Ok(email) => self.find_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(mut user) = user else {
            self.hasher.verify_dummy(password).await;
            return Err(IdentityError::InvalidCredentials);
        };
        let user_id = user.id.ok_or(IdentityError::InvalidCredentials)?;
        for _ in 0..3 {
            let ok = self.hasher.verify(password, &user.password_hash).await;
            let session_id = Uuid::new_v4();
            let (refresh_token, refresh_hash) = secrets::new_token(&[user_id, session_id]);
            let command = UserCommand::AttemptLogin {
                password_ok: ok,
                verified_against: user.password_hash.clone(),
                session_id,
                refresh_hash,
                fingerprint_hash: sha256_hex(fingerprint),
                now: Utc::now(),
            };
            let committed = match self.run(user_id, command, meta.clone()).await {
                Err(CommandError::Rejected(UserError::StaleCredentials)) => {
                    user = self
                        .users
                        .store()
                        .load(&user_id.to_string())
                        .await?
                        .aggregate;
                    continue;
                }
                other => other?,
            };
            for e in &committed.events {
                match &e.payload {
                    UserEvent::AccountLocked { until, .. } => {
                        return Err(IdentityError::Locked(*until))
                    }
                    UserEvent::LoginFailed { reason, .. } if reason == "locked" => {
                        return Err(IdentityError::Locked(
                            user.locked_until.unwrap_or_else(Utc::now),
                        ))
                    }
                    UserEvent::SessionStarted {
                        role,
                        must_change_password,
                        ..
                    } => {
                        return Ok(Issued::new(
                            user_id,
                            session_id,
                            refresh_token,
                            (*role, *must_change_password),
                            &committed,
                        ))
                    }
                    _ => {}
                }
            }
            return Err(IdentityError::InvalidCredentials);
        }
        Err(IdentityError::Conflict)
    }

    /// Rotate a refresh token. A token already rotated away ends its session
    /// (theft), as does a different device fingerprint.
    pub async fn refresh(
        &self,
        token: &str,
        fingerprint: &str,
        meta: &EventMetadata,
    ) -> Result<Issued, IdentityError> {
        let ([user_id, session_id], presented_hash) =
            secrets::parse_token::<2>(token).ok_or(IdentityError::InvalidRefreshToken)?;
        let (refresh_token, new_hash) = secrets::new_token(&[user_id, session_id]);
        let command = UserCommand::Refresh {
            session_id,
            presented_hash,
            fingerprint_hash: sha256_hex(fingerprint),
            new_hash,
            now: Utc::now(),
        };
        let committed = match self.run(user_id, command, meta.clone()).await {
            Err(CommandError::Rejected(UserError::NotRegistered)) => {
                return Err(IdentityError::InvalidRefreshToken)
            }
            other => other?,
        };
        for e in &committed.events {
            match &e.payload {
                UserEvent::SessionRevoked { reason, .. } => {
                    return Err(IdentityError::SessionRevoked(*reason))
                }
                UserEvent::SessionRefreshed {
                    role,
                    must_change_password,
                    ..
                } => {
                    return Ok(Issued::new(
                        user_id,
                        session_id,
                        refresh_token,
                        (*role, *must_change_password),
                        &committed,
                    ))
                }
                _ => {}
            }
        }
        Err(IdentityError::InvalidRefreshToken)
    }

    /// The session id a refresh token names, without checking it; for rate
    /// limiting per session before any work is done.
    pub fn refresh_token_session(token: &str) -> Option<Uuid> {
        secrets::parse_token::<2>(token).map(|([_, session], _)| session)
    }

    /// Run `command` on user `user_id`.
    pub async fn execute(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: &EventMetadata,
    ) -> Result<Committed<UserEvent>, IdentityError> {
        Ok(self.run(user_id, command, meta.clone()).await?)
    }

    /// Change a password after checking the current one; every other session
    /// of the user ends.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        keep_session: Uuid,
        current: &Password,
        new: &Password,
        meta: &EventMetadata,
    ) -> Result<Committed<UserEvent>, IdentityError> {
        let user = self
            .users
            .store()
            .load(&user_id.to_string())
            .await?
            .aggregate;
        if !self.hasher.verify(current, &user.password_hash).await {
            return Err(IdentityError::WrongPassword);
        }
        let new_hash = self.hasher.hash(new).await;
        self.execute(
            user_id,
            UserCommand::ChangePassword {
                verified_against: user.password_hash,
                new_hash,
                keep_session: Some(keep_session),
            },
            meta,
        )
        .await
    }

    /// Start a password reset for `email` if it has an account: record the
    /// token's hash and queue the mail with the token. Returns whether a
    /// message was queued; the caller answers the same either way.
    pub async fn request_password_reset(
        &self,
        email: &Email,
        meta: &EventMetadata,
    ) -> Result<bool, IdentityError> {
        let Some(user) = self.find_by_email(email).await? else {
            return Ok(false);
        };
        let Some(user_id) = user.id else {
            return Ok(false);
        };
        let (token, token_hash) = secrets::new_token(&[user_id]);
        let expires_at = Utc::now() + RESET_TOKEN_LIFETIME;
        match self
            .execute(
                user_id,
                UserCommand::RequestPasswordReset {
                    token_hash,
                    expires_at,
                },
                meta,
            )
            .await
        {
            Err(IdentityError::Rule(UserError::Deactivated)) => return Ok(false),
            other => other?,
        };
        self.enqueue(&Outgoing {
            recipient: user.email,
            subject: "Reset your Lectern password".to_owned(),
            body: format!(
                "Someone asked to reset the password of this account. If it was you, use this \
                 token within one hour; it works once:\n\n{token}\n\nIf it was not you, ignore this message."
            ),
            expires_at,
        })
        .await?;
        tracing::info!(
            recipient = %lectern_domain::mask::email(email.as_str()),
            "password reset mail queued"
        );
        Ok(true)
    }

    /// Set a new password with a reset token; every session of the user ends.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new: &Password,
        meta: &EventMetadata,
    ) -> Result<Committed<UserEvent>, IdentityError> {
        let ([user_id], token_hash) =
            secrets::parse_token::<1>(token).ok_or(IdentityError::InvalidResetToken)?;
        let user = self
            .users
            .store()
            .load(&user_id.to_string())
            .await?
            .aggregate;
        // Check before hashing, so garbage tokens cost no Argon2 work.
        match &user.reset {
            Some((hash, expires)) if *hash == token_hash && *expires > Utc::now() => {}
            _ => return Err(IdentityError::InvalidResetToken),
        }
        let new_hash = self.hasher.hash(new).await;
        self.execute(
            user_id,
            UserCommand::ConfirmPasswordReset {
                token_hash,
                new_hash,
                now: Utc::now(),
            },
            meta,
        )
        .await
    }

    async fn enqueue(&self, message: &Outgoing) -> Result<(), IdentityError> {
        sqlx::query!(
            "INSERT INTO outbound_messages (kind, recipient, subject, body, expires_at)
             VALUES ('password_reset', $1, $2, $3, $4)",
            message.recipient,
            message.subject,
            message.body,
            message.expires_at,
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::from)?;
        Ok(())
    }

    /// Record that `actor` (`user:<id>` or `ip:<address>`) was refused.
    pub async fn record_denial(
        &self,
        actor: &str,
        denial: RecordDenial,
        meta: &EventMetadata,
    ) -> Result<Option<Position>, StoreError> {
        self.record_access(actor, AccessCommand::Deny(denial), meta)
            .await
    }

    /// Record a read of the audit history on `actor`'s access log.
    pub async fn record_audit_read(
        &self,
        actor: &str,
        read: RecordAuditRead,
        meta: &EventMetadata,
    ) -> Result<Option<Position>, StoreError> {
        self.record_access(actor, AccessCommand::AuditRead(read), meta)
            .await
    }

    async fn record_access(
        &self,
        actor: &str,
        command: AccessCommand,
        meta: &EventMetadata,
    ) -> Result<Option<Position>, StoreError> {
        match self.access.execute(actor, command, meta.clone()).await {
            Ok(c) => Ok(c.position),
            Err(CommandError::Store(e)) => Err(e),
            Err(CommandError::Conflict) => Err(StoreError::Conflict),
            Err(CommandError::Rejected(never)) => match never {},
        }
    }
}
