//! Who is calling, and what they may do: users and their roles, local
//! passwords (Argon2id), API tokens, and the policy of each action on a
//! recording (`policy.rs`).
//!
//! Every API route but the health check runs behind `api::require_sign_in`,
//! which turns the request's credentials into a [`Principal`] through
//! [`Authenticator::authenticate`]; handlers and services only ever see that.
//! With `PWA_AUTH=off` every request acts as the original's single clinician.

pub mod api;
pub mod limiter;
pub mod model;
pub mod oidc;
pub mod password;
pub mod policy;
pub mod store;
pub mod users_api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use sha2::{Digest, Sha256};

pub use model::{AccountError, Principal, Role, TokenInfo, User};
use store::{NewUser, TokenStore, UserStore};

use crate::db::{Database, StoreError};
use crate::timestamp::Timestamp;

/// The clinician the original attributed every request to (`PWA_AUTH=off`,
/// and the owner of the rows of an adopted database).
pub const DEFAULT_CLINICIAN: &str = "current-clinician";

/// How long a credential found valid is trusted without asking the database
/// again: what bounds the time a revocation, a sign-out or a disabled user
/// takes to be noticed by every instance (the issue asks for 2 s).
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(1);
/// A token's or session's last use is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Entries kept in the credential cache before it is emptied.
const CACHE_MAX: usize = 10_000;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "clinscribe_session";
/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Whether requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API request needs a valid credential.
    On,
    /// The original's behaviour: every request is [`DEFAULT_CLINICIAN`].
    Off,
}

/// Sessions' limits and the sign-in rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// Whether requests must authenticate.
    pub mode: AuthMode,
    /// A session unused this long ends (`PWA_SESSION_IDLE`).
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not (`PWA_SESSION_MAX`).
    pub session_max: Duration,
    /// Failed sign-ins allowed per account within `failure_window`.
    pub failures_per_account: usize,
    /// Failed sign-ins allowed per client address within `failure_window`.
    pub failures_per_address: usize,
    /// The window failed sign-ins are counted in.
    pub failure_window: Duration,
}

impl AuthSettings {
    /// The defaults, with `mode` (docs/OPERATIONS.md, "Accounts").
    pub fn new(mode: AuthMode) -> Self {
        Self {
            mode,
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            failures_per_account: 5,
            failures_per_address: 20,
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

/// Why a request has no principal.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("Not authenticated")]
    Missing,
    /// A credential that is not valid (unknown, expired, revoked, ended, or
    /// its user disabled); which of these is not said.
    #[error("Invalid authentication credentials")]
    Invalid,
    /// A state-changing request with the session cookie but without its
    /// CSRF token.
    #[error("CSRF token missing or wrong: send the session's csrf_token in X-CSRF-Token")]
    Csrf,
    /// A wrong user name or password (which of the two is not said).
    #[error("Incorrect username or password")]
    BadSignIn,
    /// Too many failed sign-ins: retry after this long.
    #[error("Too many failed sign-ins; retry in {} s", .0.as_secs().max(1))]
    TooManyFailures(Duration),
    /// The first-run code is wrong, used, or an admin exists already.
    #[error("This setup link is not valid (used already, or an administrator exists)")]
    BadSetupCode,
    /// The new account is refused (id, name or password).
    #[error(transparent)]
    Account(#[from] AccountError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] password::HashError),
    /// The database could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an account command failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountCommandError {
    /// The input or the state refuses it.
    #[error(transparent)]
    Refused(#[from] AccountError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] password::HashError),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The session cookie's value.
    pub session: Option<&'a str>,
    /// The `X-CSRF-Token` header.
    pub csrf: Option<&'a str>,
    /// Whether the method changes state (anything but GET, HEAD, OPTIONS).
    pub state_changing: bool,
}

/// Who a request is, and through which session if it came with the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub principal: Principal,
    /// The session (id, CSRF token), when signed in with the cookie.
    pub session: Option<(String, String)>,
}

impl From<AccountCommandError> for AuthError {
    fn from(err: AccountCommandError) -> Self {
        match err {
            AccountCommandError::Refused(e) => Self::Account(e),
            AccountCommandError::Hash(e) => Self::Hash(e),
            AccountCommandError::Store(e) => Self::Store(e),
        }
    }
}

/// A credential found valid, and when.
#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    caller: Caller,
    /// For a session: when its use must be written again (which is also
    /// before its idle deadline), so the cache must not answer past it.
    touch_due: Option<Timestamp>,
}

/// A new browser session: its cookie's secret and what the page needs.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// The session's public id.
    pub session_id: String,
    /// The cookie's value (shown to no one but the browser).
    pub secret: String,
    /// The token the page sends back in `X-CSRF-Token`.
    pub csrf_token: String,
    /// How long the cookie lives (the absolute lifetime).
    pub max_age: Duration,
}

/// Authenticates requests, signs people in and out, and manages accounts
/// and tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    settings: AuthSettings,
    users: Arc<dyn UserStore>,
    tokens: Arc<dyn TokenStore>,
    sessions: Arc<dyn store::SessionStore>,
    logins: Arc<dyn store::LoginStore>,
    /// Single sign-on, when `PWA_OIDC_ISSUER` is set.
    oidc: Option<oidc::SingleSignOn>,
    /// Valid credentials by the SHA-256 of their secret (never the secret).
    cache: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
    by_account: Arc<limiter::FailureLimiter>,
    by_address: Arc<limiter::FailureLimiter>,
    /// The first-run code that creates the first admin, while none exists.
    setup_code: Arc<Mutex<Option<String>>>,
}

impl Authenticator {
    /// Over `db`'s users, tokens and sessions, with the default settings.
    pub fn new(db: &Database, mode: AuthMode) -> Self {
        Self::with_settings(db, AuthSettings::new(mode))
    }

    /// Over `db`'s users, tokens and sessions.
    pub fn with_settings(db: &Database, settings: AuthSettings) -> Self {
        let stores = store::open(db);
        Self {
            settings,
            users: stores.users,
            tokens: stores.tokens,
            sessions: stores.sessions,
            logins: stores.logins,
            oidc: None,
            cache: Arc::default(),
            by_account: Arc::new(limiter::FailureLimiter::new(
                settings.failures_per_account,
                settings.failure_window,
            )),
            by_address: Arc::new(limiter::FailureLimiter::new(
                settings.failures_per_address,
                settings.failure_window,
            )),
            setup_code: Arc::default(),
        }
    }

    /// With single sign-on through the provider of `settings`.
    pub fn with_single_sign_on(
        mut self,
        settings: oidc::OidcSettings,
    ) -> Result<Self, oidc::OidcError> {
        self.oidc = Some(oidc::SingleSignOn::new(settings, self.logins.clone())?);
        Ok(self)
    }

    /// Whether requests must authenticate.
    pub fn mode(&self) -> AuthMode {
        self.settings.mode
    }

    /// The caller of a request carrying `credentials`: an API token in
    /// `Authorization: Bearer`, else the session cookie (with its CSRF token
    /// on a state-changing request).
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Caller, AuthError> {
        if self.settings.mode == AuthMode::Off {
            return Ok(Caller {
                principal: Principal {
                    id: DEFAULT_CLINICIAN.to_owned(),
                    role: Role::Single,
                },
                session: None,
            });
        }
        if let Some(header) = credentials.authorization {
            let (scheme, token) = header.split_once(' ').ok_or(AuthError::Missing)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Missing);
            }
            return self.token_caller(token.trim()).await;
        }
        let secret = credentials.session.ok_or(AuthError::Missing)?;
        let caller = self.session_caller(secret).await?;
        if credentials.state_changing {
            let expected = caller.session.as_ref().map(|(_, csrf)| csrf.as_bytes());
            let sent = credentials.csrf.map(str::as_bytes);
            if !matches!((expected, sent), (Some(e), Some(s)) if constant_time_eq(e, s)) {
                return Err(AuthError::Csrf);
            }
        }
        Ok(caller)
    }

    /// The user of API token `token`.
    async fn token_caller(&self, token: &str) -> Result<Caller, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self.cached(&digest) {
            return Ok(caller);
        }
        let owner = self
            .tokens
            .owner(&crate::digest::hex(&digest))
            .await?
            .ok_or(AuthError::Invalid)?;
        let now = Timestamp::now();
        if owner.revoked || owner.user_disabled || owner.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Invalid);
        }
        if owner
            .last_used_at
            .is_none_or(|at| at <= Timestamp::ago(TOUCH_EVERY))
        {
            // A record of use, not a condition of it: a failure only loses the time.
            if let Err(e) = self.tokens.touch(&owner.token_id, &now).await {
                tracing::warn!(error = %e, "could not record an API token's last use");
            }
        }
        let caller = Caller {
            principal: Principal {
                id: owner.user_id,
                role: owner.role,
            },
            session: None,
        };
        self.remember(digest, &caller, None);
        Ok(caller)
    }

    /// The user of the session whose cookie holds `secret`.
    async fn session_caller(&self, secret: &str) -> Result<Caller, AuthError> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(caller) = self.cached(&digest) {
            return Ok(caller);
        }
        let owner = self
            .sessions
            .owner(&crate::digest::hex(&digest))
            .await?
            .ok_or(AuthError::Invalid)?;
        let now = Timestamp::now();
        let session = &owner.session;
        let idle_deadline = session.last_seen_at.plus(self.settings.session_idle);
        if owner.ended || owner.user_disabled || session.expires_at <= now || idle_deadline <= now {
            return Err(AuthError::Invalid);
        }
        // Often enough that the idle timeout is kept to a tenth of itself.
        let touch_every = TOUCH_EVERY.min(self.settings.session_idle / 10);
        let last_seen = if session.last_seen_at <= Timestamp::ago(touch_every) {
            self.sessions.touch(&session.id, &now).await?;
            now
        } else {
            session.last_seen_at
        };
        let caller = Caller {
            principal: Principal {
                id: session.user_id.clone(),
                role: owner.role,
            },
            session: Some((session.id.clone(), session.csrf_token.clone())),
        };
        self.remember(digest, &caller, Some(last_seen.plus(touch_every)));
        Ok(caller)
    }

    fn remember(&self, digest: [u8; 32], caller: &Caller, touch_due: Option<Timestamp>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                digest,
                Cached {
                    at: Instant::now(),
                    caller: caller.clone(),
                    touch_due,
                },
            );
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Caller> {
        let mut cache = self.cache.lock().ok()?;
        let hit = cache.get(digest)?;
        let fresh = hit.at.elapsed() < CREDENTIAL_CACHE_TTL
            && hit.touch_due.is_none_or(|due| due > Timestamp::now());
        if fresh {
            return Some(hit.caller.clone());
        }
        cache.remove(digest);
        None
    }

    /// Signs `user_id` in with `password` from client address `client`: a
    /// new session, or why not (the same answer for a wrong password and for
    /// no such user; 429 after too many failures from the address or to the
    /// account).
    pub async fn sign_in(
        &self,
        user_id: &str,
        password: &str,
        client: &str,
    ) -> Result<SignedIn, AuthError> {
        let (account, address) = (format!("user:{user_id}"), format!("addr:{client}"));
        let wait = [
            &self.by_account.wait_for(&account),
            &self.by_address.wait_for(&address),
        ]
        .into_iter()
        .flatten()
        .max()
        .copied();
        if let Some(wait) = wait {
            tracing::warn!(client, "sign-in refused: too many failures (rate limited)");
            crate::metrics::sign_in_rate_limited();
            return Err(AuthError::TooManyFailures(wait));
        }
        let stored = self.users.get(user_id).await?;
        let active = stored.filter(|(user, _)| user.disabled_at.is_none());
        let hash = active.as_ref().and_then(|(_, hash)| hash.as_deref());
        let verified = {
            let (password, hash) = (password.to_owned(), hash.map(str::to_owned));
            // Argon2 takes tens of milliseconds of CPU: off the async threads.
            tokio::task::spawn_blocking(move || password::verify(&password, hash.as_deref()))
                .await
                .unwrap_or(false)
        };
        let Some((user, _)) = active.filter(|_| verified) else {
            self.by_account.failed(&account);
            self.by_address.failed(&address);
            tracing::warn!(client, "failed sign-in");
            crate::metrics::sign_in("password", "failure");
            return Err(AuthError::BadSignIn);
        };
        self.by_account.succeeded(&account);
        crate::metrics::sign_in("password", "success");
        self.start_session(user).await
    }

    async fn start_session(&self, user: User) -> Result<SignedIn, AuthError> {
        let secret = random_hex();
        let sha256 = crate::digest::hex(&Sha256::digest(secret.as_bytes()));
        let now = Timestamp::now();
        let record = store::SessionRecord {
            id: sha256[..16].to_owned(),
            user_id: user.id.clone(),
            csrf_token: random_hex(),
            created_at: now,
            last_seen_at: now,
            expires_at: now.plus(self.settings.session_max),
        };
        self.sessions.insert(&record, &sha256).await?;
        tracing::info!(session = %record.id, "signed in");
        Ok(SignedIn {
            user,
            session_id: record.id,
            secret,
            csrf_token: record.csrf_token,
            max_age: self.settings.session_max,
        })
    }

    /// Browser sessions active now (not ended, expired or idle): for the metrics.
    pub async fn active_sessions(&self) -> Result<i64, StoreError> {
        let now = Timestamp::now();
        let idle_since = Timestamp::ago(self.settings.session_idle);
        self.sessions.count_active(&now, &idle_since).await
    }

    /// Ends session `id`: at once on this instance, within
    /// [`CREDENTIAL_CACHE_TTL`] on the others.
    pub async fn sign_out(&self, session_id: &str) -> Result<(), StoreError> {
        self.sessions.end(session_id, &Timestamp::now()).await?;
        self.forget(|caller| {
            caller
                .session
                .as_ref()
                .is_some_and(|(id, _)| id == session_id)
        });
        Ok(())
    }

    /// Drops the cached credentials of the callers `which` selects.
    fn forget(&self, which: impl Fn(&Caller) -> bool) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, hit| !which(&hit.caller));
        }
    }

    /// Deletes, every hour, the sessions that ended or expired more than a
    /// day ago (kept that long for whoever looks into a sign-in), and the
    /// single sign-on logins never finished.
    pub async fn sweep_sessions_periodically(self, stop: crate::tasks::CancellationToken) {
        const EVERY: Duration = Duration::from_secs(3600);
        const KEPT: Duration = Duration::from_secs(24 * 3600);
        loop {
            match self.delete_finished_sessions(KEPT).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "session cleanup"),
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "session cleanup failed; retrying later"),
            }
            if let Some(oidc) = &self.oidc
                && let Err(e) = oidc.delete_stale_logins().await
            {
                tracing::warn!(error = %e, "cleanup of unfinished single sign-ons failed");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// Deletes the sessions that ended or expired more than `kept` ago; how many.
    pub async fn delete_finished_sessions(&self, kept: Duration) -> Result<u64, StoreError> {
        self.sessions.delete_finished(&Timestamp::ago(kept)).await
    }

    /// Ends every session of `user_id`; how many.
    pub async fn sign_out_everywhere(&self, user_id: &str) -> Result<u64, StoreError> {
        let ended = self.sessions.end_all(user_id, &Timestamp::now()).await?;
        self.forget(|caller| caller.session.is_some() && caller.principal.id == user_id);
        Ok(ended)
    }

    /// The user `id`.
    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self.users.get(id).await?.map(|(user, _)| user))
    }

    /// When no admin can sign in: a new one-time code that creates the first
    /// one (valid until used or until an admin exists); None otherwise.
    pub async fn first_run_code(&self) -> Result<Option<String>, StoreError> {
        if self.settings.mode == AuthMode::Off || self.users.active_admins().await? > 0 {
            return Ok(None);
        }
        let code = random_hex();
        if let Ok(mut slot) = self.setup_code.lock() {
            *slot = Some(code.clone());
        }
        Ok(Some(code))
    }

    /// Creates the first admin with the first-run `code`, and signs them in.
    pub async fn set_up(
        &self,
        code: &str,
        id: &str,
        display_name: &str,
        password: &str,
    ) -> Result<SignedIn, AuthError> {
        // Taken out while in use, so that two requests with the code cannot
        // both make an administrator; put back if this one fails.
        let taken = self.setup_code.lock().ok().and_then(|mut slot| {
            let matches = slot
                .as_ref()
                .is_some_and(|e| constant_time_eq(e.as_bytes(), code.as_bytes()));
            if matches { slot.take() } else { None }
        });
        let Some(taken) = taken else {
            return Err(AuthError::BadSetupCode);
        };
        let created = async {
            if self.users.active_admins().await? > 0 {
                return Err(AuthError::BadSetupCode);
            }
            self.add_user(id, display_name, Role::Admin, Some(password), None)
                .await
                .map_err(AuthError::from)
        }
        .await;
        if let Err(e) = created {
            if !matches!(e, AuthError::BadSetupCode)
                && let Ok(mut slot) = self.setup_code.lock()
            {
                *slot = Some(taken);
            }
            return Err(e);
        }
        let user = self.user(id).await?.ok_or(AuthError::BadSetupCode)?;
        self.start_session(user).await
    }

    /// Adds a user, with a password (checked, then hashed) for a local
    /// account, and the identity provider's subject for single sign-on.
    pub async fn add_user(
        &self,
        id: &str,
        display_name: &str,
        role: Role,
        password: Option<&str>,
        oidc_subject: Option<&str>,
    ) -> Result<(), AccountCommandError> {
        model::check_new_user(id, display_name)?;
        if let Some(subject) = oidc_subject {
            model::check_subject(subject)?;
            if let Some(other) = self.users.by_subject(subject).await? {
                return Err(AccountError::SubjectLinked(other.id).into());
            }
        }
        let hash = password
            .map(|p| {
                model::check_password(p)?;
                Ok::<_, AccountCommandError>(password::hash(p)?)
            })
            .transpose()?;
        let user = NewUser {
            id,
            display_name: display_name.trim(),
            role,
            password_hash: hash.as_deref(),
            oidc_subject,
        };
        match self.users.insert(user).await {
            Err(StoreError::Duplicate(_)) => Err(AccountError::UserExists(id.to_owned()).into()),
            other => Ok(other?),
        }
    }

    /// Every user, by id.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.users.list().await
    }

    /// Sets a user's password.
    pub async fn set_password(&self, id: &str, password: &str) -> Result<(), AccountCommandError> {
        model::check_password(password)?;
        let hash = password::hash(password)?;
        if !self.users.set_password(id, &hash).await? {
            return Err(AccountError::NoSuchUser(id.to_owned()).into());
        }
        Ok(())
    }

    /// Disables a user: their tokens and sessions stop working at once
    /// (within [`CREDENTIAL_CACHE_TTL`] on every instance).
    pub async fn disable(&self, id: &str) -> Result<(), AccountCommandError> {
        if !self.users.disable(id, &Timestamp::now()).await? {
            return Err(AccountError::NoSuchUser(id.to_owned()).into());
        }
        self.forget(|caller| caller.principal.id == id);
        Ok(())
    }

    /// Creates an API token for `user_id`; returns it stored, and its secret,
    /// which is shown once and kept nowhere.
    pub async fn create_token(
        &self,
        user_id: &str,
        lifetime: Option<Duration>,
    ) -> Result<(TokenInfo, String), AccountCommandError> {
        let (user, _) = self
            .users
            .get(user_id)
            .await?
            .ok_or_else(|| AccountError::NoSuchUser(user_id.to_owned()))?;
        if user.disabled_at.is_some() {
            return Err(AccountError::Disabled(user_id.to_owned()).into());
        }
        let token = format!("{}{}", model::TOKEN_PREFIX, random_hex());
        let sha256 = crate::digest::hex(&Sha256::digest(token.as_bytes()));
        let info = TokenInfo {
            // Public: names the token in lists without revealing it.
            id: sha256[..16].to_owned(),
            user_id: user.id,
            created_at: Timestamp::now(),
            expires_at: lifetime.map(Timestamp::after),
            last_used_at: None,
            revoked_at: None,
        };
        self.tokens.insert(&info, &sha256).await?;
        Ok((info, token))
    }

    /// The tokens of one user, or everyone's.
    pub async fn tokens(&self, user_id: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        self.tokens.list(user_id).await
    }

    /// Revokes token `id`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), AccountCommandError> {
        if !self.tokens.revoke(id, &Timestamp::now()).await? {
            return Err(AccountError::NoSuchToken(id.to_owned()).into());
        }
        // The cache does not know which entry is this token's (it keeps no
        // token ids): this instance, like the others, notices within the TTL.
        Ok(())
    }
}

/// 256 random bits, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    crate::digest::hex(&bytes)
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
