//! Who is calling, and what they may do: users and their roles, local
//! passwords (Argon2id), API tokens, and the policy of each action on a
//! recording (`policy.rs`).
//!
//! Every API route but the health check runs behind `api::require_sign_in`,
//! which turns the request's credentials into a [`Principal`] through
//! [`Authenticator::authenticate`]; handlers and services only ever see that.
//! With `PWA_AUTH=off` every request acts as the original's single clinician.

pub mod api;
pub mod model;
pub mod password;
pub mod policy;
pub mod store;

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

/// How long a token found valid is trusted without asking the database again:
/// what bounds the time a revocation or a disabled user takes to be noticed
/// by every instance (the issue asks for 2 s).
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);
/// A token's `last_used_at` is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Entries kept in the token cache before it is emptied.
const TOKEN_CACHE_MAX: usize = 10_000;

/// Whether requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API request needs a valid credential.
    On,
    /// The original's behaviour: every request is [`DEFAULT_CLINICIAN`].
    Off,
}

/// Why a request has no principal.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("Not authenticated")]
    Missing,
    /// A credential that is not valid (unknown, expired, revoked, or its user
    /// disabled); which of these is not said.
    #[error("Invalid authentication credentials")]
    Invalid,
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

/// A token found valid, and when.
#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    principal: Principal,
}

/// Authenticates requests and manages accounts and tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    mode: AuthMode,
    users: Arc<dyn UserStore>,
    tokens: Arc<dyn TokenStore>,
    /// Valid tokens by the SHA-256 of their secret (never the secret).
    cache: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
}

impl Authenticator {
    /// Over `db`'s users and tokens.
    pub fn new(db: &Database, mode: AuthMode) -> Self {
        let (users, tokens) = store::open(db);
        Self {
            mode,
            users,
            tokens,
            cache: Arc::default(),
        }
    }

    /// Whether requests must authenticate.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The principal of a request whose `Authorization` header is `header`.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(Principal {
                id: DEFAULT_CLINICIAN.to_owned(),
                role: Role::Clinician,
            });
        }
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        self.token_principal(token.trim()).await
    }

    /// The user of API token `token`, from the cache when it was found valid
    /// less than [`TOKEN_CACHE_TTL`] ago.
    async fn token_principal(&self, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.cached(&digest) {
            return Ok(principal);
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
        let principal = Principal {
            id: owner.user_id,
            role: owner.role,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                digest,
                Cached {
                    at: Instant::now(),
                    principal: principal.clone(),
                },
            );
        }
        Ok(principal)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(digest) {
            Some(hit) if hit.at.elapsed() < TOKEN_CACHE_TTL => Some(hit.principal.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Adds a user, with a password (checked, then hashed) for a local account.
    pub async fn add_user(
        &self,
        id: &str,
        display_name: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<(), AccountCommandError> {
        model::check_new_user(id, display_name)?;
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

    /// Whether `password` is user `id`'s; false for a user without one, a
    /// disabled user, or no such user (after the same work, so that the
    /// answer's time does not tell which).
    pub async fn check_password(&self, id: &str, password: &str) -> Result<bool, StoreError> {
        let stored = self.users.get(id).await?;
        let hash = stored
            .as_ref()
            .filter(|(user, _)| user.disabled_at.is_none())
            .and_then(|(_, hash)| hash.as_deref());
        Ok(password::verify(password, hash))
    }

    /// Disables a user: their tokens stop working at once (within
    /// [`TOKEN_CACHE_TTL`] on every instance).
    pub async fn disable(&self, id: &str) -> Result<(), AccountCommandError> {
        if !self.users.disable(id, &Timestamp::now()).await? {
            return Err(AccountError::NoSuchUser(id.to_owned()).into());
        }
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
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let token = format!("{}{}", model::TOKEN_PREFIX, crate::digest::hex(&secret));
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
        Ok(())
    }
}
