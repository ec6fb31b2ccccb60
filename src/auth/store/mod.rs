//! The `users`, `api_tokens`, `sessions` and `oidc_logins` tables. They keep ids and timestamps as text,
//! so one SQL text serves both backends; the `stores!` macro writes the traits'
//! implementations once, for the SQLite and the PostgreSQL store, which differ
//! only in the connections they run on.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use super::model::{Role, TokenInfo, User};
use crate::db::{Database, StoreError};
use crate::timestamp::Timestamp;

/// A new user's row.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    /// The id.
    pub id: &'a str,
    /// The name shown.
    pub display_name: &'a str,
    /// Their role.
    pub role: Role,
    /// The Argon2id PHC string, for a local account.
    pub password_hash: Option<&'a str>,
    /// The identity provider's subject, for a single sign-on account.
    pub oidc_subject: Option<&'a str>,
}

/// What a token's hash leads to: the token and its user, as they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    /// The token's public id.
    pub token_id: String,
    /// Its user.
    pub user_id: String,
    /// The user's role.
    pub role: Role,
    /// Whether the user is disabled.
    pub user_disabled: bool,
    /// When the token expires.
    pub expires_at: Option<Timestamp>,
    /// Whether the token was revoked.
    pub revoked: bool,
    /// When it was last used.
    pub last_used_at: Option<Timestamp>,
}

/// Reads and writes `users`.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Adds a user; `StoreError::Duplicate` when the id is taken.
    async fn insert(&self, user: NewUser<'_>) -> Result<(), StoreError>;
    /// The user, and their password hash if they have one.
    async fn get(&self, id: &str) -> Result<Option<(User, Option<String>)>, StoreError>;
    /// The user the identity provider knows as `subject`.
    async fn by_subject(&self, subject: &str) -> Result<Option<User>, StoreError>;
    /// Sets a user's role; false when there is no such user.
    async fn set_role(&self, id: &str, role: Role) -> Result<bool, StoreError>;
    /// Every user, by id.
    async fn list(&self) -> Result<Vec<User>, StoreError>;
    /// Sets a user's password hash; false when there is no such user.
    async fn set_password(&self, id: &str, hash: &str) -> Result<bool, StoreError>;
    /// Disables a user from `at` on (kept if already disabled); false when
    /// there is no such user.
    async fn disable(&self, id: &str, at: &Timestamp) -> Result<bool, StoreError>;
    /// How many admins can sign in (not disabled).
    async fn active_admins(&self) -> Result<i64, StoreError>;
}

/// Reads and writes `api_tokens`.
#[async_trait]
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// Stores a new token by the SHA-256 (hex) of its secret.
    async fn insert(&self, token: &TokenInfo, sha256: &str) -> Result<(), StoreError>;
    /// The token whose secret hashes to `sha256`, with its user.
    async fn owner(&self, sha256: &str) -> Result<Option<TokenOwner>, StoreError>;
    /// Records a use of token `id` at `at`.
    async fn touch(&self, id: &str, at: &Timestamp) -> Result<(), StoreError>;
    /// The tokens (of one user, or everyone's), newest first.
    async fn list(&self, user_id: Option<&str>) -> Result<Vec<TokenInfo>, StoreError>;
    /// Revokes token `id` (kept if already revoked); false when there is none.
    async fn revoke(&self, id: &str, at: &Timestamp) -> Result<bool, StoreError>;
}

/// A browser session as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The public id.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// What a page sends back in `X-CSRF-Token`.
    pub csrf_token: String,
    /// When it began.
    pub created_at: Timestamp,
    /// When it was last used (to a fraction of the idle timeout).
    pub last_seen_at: Timestamp,
    /// When it ends whatever happens (the absolute lifetime).
    pub expires_at: Timestamp,
}

/// What a session's secret leads to: the session and its user, as they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The session.
    pub session: SessionRecord,
    /// The user's role.
    pub role: Role,
    /// Whether the user is disabled.
    pub user_disabled: bool,
    /// Whether the session was ended (sign-out).
    pub ended: bool,
}

/// Reads and writes `sessions`.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Stores a new session by the SHA-256 (hex) of its secret.
    async fn insert(&self, session: &SessionRecord, sha256: &str) -> Result<(), StoreError>;
    /// The session whose secret hashes to `sha256`, with its user.
    async fn owner(&self, sha256: &str) -> Result<Option<SessionOwner>, StoreError>;
    /// Records a use of session `id` at `at`.
    async fn touch(&self, id: &str, at: &Timestamp) -> Result<(), StoreError>;
    /// Ends session `id` (sign-out).
    async fn end(&self, id: &str, at: &Timestamp) -> Result<(), StoreError>;
    /// Ends every session of `user_id` (sign-out everywhere); how many.
    async fn end_all(&self, user_id: &str, at: &Timestamp) -> Result<u64, StoreError>;
    /// Deletes the sessions that ended, or expired, before `before`; how many.
    async fn delete_finished(&self, before: &Timestamp) -> Result<u64, StoreError>;
    /// Sessions not ended, not expired at `now`, and seen since `idle_since`.
    async fn count_active(
        &self,
        now: &Timestamp,
        idle_since: &Timestamp,
    ) -> Result<i64, StoreError>;
}

/// A single sign-on login under way, as its callback needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier the token request sends.
    pub pkce_verifier: String,
    /// The redirect URI the authorization request named.
    pub redirect_uri: String,
    /// The page to go to once signed in.
    pub return_to: String,
    /// When the login began.
    pub created_at: Timestamp,
}

/// Reads and writes `oidc_logins`.
#[async_trait]
pub trait LoginStore: Send + Sync + std::fmt::Debug {
    /// Stores a login by the SHA-256 (hex) of its `state`.
    async fn insert(&self, login: &PendingLogin, state_sha256: &str) -> Result<(), StoreError>;
    /// Takes (deletes and returns) the login of a `state`: each works once.
    async fn take(&self, state_sha256: &str) -> Result<Option<PendingLogin>, StoreError>;
    /// Deletes the logins begun before `before`; how many.
    async fn delete_older(&self, before: &Timestamp) -> Result<u64, StoreError>;
}

/// The stores of `db`'s four tables.
#[derive(Debug, Clone)]
pub struct AuthStores {
    /// `users`.
    pub users: Arc<dyn UserStore>,
    /// `api_tokens`.
    pub tokens: Arc<dyn TokenStore>,
    /// `sessions`.
    pub sessions: Arc<dyn SessionStore>,
    /// `oidc_logins`.
    pub logins: Arc<dyn LoginStore>,
}

/// The stores for `db`.
pub fn open(db: &Database) -> AuthStores {
    match db {
        Database::Sqlite(db) => {
            let store = Arc::new(sqlite::SqliteAuthStore::new(db.clone()));
            AuthStores {
                users: store.clone(),
                tokens: store.clone(),
                sessions: store.clone(),
                logins: store,
            }
        }
        Database::Postgres(db) => {
            let store = Arc::new(postgres::PgAuthStore::new(db.clone()));
            AuthStores {
                users: store.clone(),
                tokens: store.clone(),
                sessions: store.clone(),
                logins: store,
            }
        }
    }
}

/// The statements, in the `$n` parameter style both backends accept.
mod sql {
    pub const INSERT_USER: &str = "INSERT INTO users (id, display_name, role, created_at, \
        password_hash, oidc_subject) VALUES ($1, $2, $3, $4, $5, $6)";
    pub const GET_USER: &str = "SELECT id, display_name, role, created_at, disabled_at, \
        password_hash, oidc_subject FROM users WHERE id = $1";
    pub const USER_BY_SUBJECT: &str = "SELECT id, display_name, role, created_at, disabled_at, \
        password_hash, oidc_subject FROM users WHERE oidc_subject = $1";
    pub const LIST_USERS: &str = "SELECT id, display_name, role, created_at, disabled_at, \
        password_hash, oidc_subject FROM users ORDER BY id";
    pub const SET_ROLE: &str = "UPDATE users SET role = $2 WHERE id = $1";
    pub const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";
    pub const DISABLE_USER: &str =
        "UPDATE users SET disabled_at = coalesce(disabled_at, $2) WHERE id = $1";

    pub const INSERT_TOKEN: &str = "INSERT INTO api_tokens (id, user_id, token_sha256, \
        created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
    pub const TOKEN_OWNER: &str = "SELECT t.id, t.user_id, u.role, u.disabled_at, \
        t.expires_at, t.revoked_at, t.last_used_at \
        FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_sha256 = $1";
    pub const TOUCH_TOKEN: &str = "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1";
    pub const LIST_TOKENS: &str = "SELECT id, user_id, created_at, expires_at, last_used_at, \
        revoked_at FROM api_tokens WHERE $1 = '' OR user_id = $1 ORDER BY created_at DESC, id";
    pub const REVOKE_TOKEN: &str =
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1";
    pub const COUNT_ADMINS: &str =
        "SELECT count(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL";

    pub const INSERT_SESSION: &str = "INSERT INTO sessions (id, user_id, secret_sha256, \
        csrf_token, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub const SESSION_OWNER: &str = "SELECT s.id, s.user_id, s.csrf_token, s.created_at, \
        s.last_seen_at, s.expires_at, s.ended_at, u.role, u.disabled_at \
        FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.secret_sha256 = $1";
    pub const TOUCH_SESSION: &str = "UPDATE sessions SET last_seen_at = $2 WHERE id = $1";
    pub const END_SESSION: &str =
        "UPDATE sessions SET ended_at = coalesce(ended_at, $2) WHERE id = $1";
    pub const END_ALL_SESSIONS: &str =
        "UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL";
    pub const DELETE_FINISHED_SESSIONS: &str =
        "DELETE FROM sessions WHERE expires_at < $1 OR ended_at < $1";
    pub const COUNT_ACTIVE_SESSIONS: &str = "SELECT count(*) FROM sessions \
        WHERE ended_at IS NULL AND expires_at > $1 AND last_seen_at > $2";

    pub const INSERT_LOGIN: &str = "INSERT INTO oidc_logins (state_sha256, nonce, \
        pkce_verifier, redirect_uri, return_to, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
    pub const TAKE_LOGIN: &str = "DELETE FROM oidc_logins WHERE state_sha256 = $1 \
        RETURNING nonce, pkce_verifier, redirect_uri, return_to, created_at";
    pub const DELETE_OLD_LOGINS: &str = "DELETE FROM oidc_logins WHERE created_at < $1";
}

/// An `oidc_logins` row.
#[derive(sqlx::FromRow)]
struct LoginRow {
    nonce: String,
    pkce_verifier: String,
    redirect_uri: String,
    return_to: String,
    created_at: String,
}

impl LoginRow {
    fn decode(self) -> Result<PendingLogin, StoreError> {
        Ok(PendingLogin {
            created_at: time(&self.created_at)?,
            nonce: self.nonce,
            pkce_verifier: self.pkce_verifier,
            redirect_uri: self.redirect_uri,
            return_to: self.return_to,
        })
    }
}

/// A session and its user's role and state.
#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: String,
    csrf_token: String,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
    ended_at: Option<String>,
    role: String,
    disabled_at: Option<String>,
}

impl SessionRow {
    fn decode(self) -> Result<SessionOwner, StoreError> {
        Ok(SessionOwner {
            role: role(&self.role)?,
            user_disabled: self.disabled_at.is_some(),
            ended: self.ended_at.is_some(),
            session: SessionRecord {
                created_at: time(&self.created_at)?,
                last_seen_at: time(&self.last_seen_at)?,
                expires_at: time(&self.expires_at)?,
                id: self.id,
                user_id: self.user_id,
                csrf_token: self.csrf_token,
            },
        })
    }
}

/// A `users` row.
#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    display_name: String,
    role: String,
    created_at: String,
    disabled_at: Option<String>,
    password_hash: Option<String>,
    oidc_subject: Option<String>,
}

/// A token and its user's role and state.
#[derive(sqlx::FromRow)]
struct OwnerRow {
    id: String,
    user_id: String,
    role: String,
    disabled_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

/// An `api_tokens` row, without the hash.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    user_id: String,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

fn corrupt(what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn time(s: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(s).map_err(|e| corrupt("timestamp", &e))
}

fn maybe_time(s: Option<&str>) -> Result<Option<Timestamp>, StoreError> {
    s.map(time).transpose()
}

fn role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| corrupt("role", &s))
}

impl UserRow {
    fn decode(self) -> Result<(User, Option<String>), StoreError> {
        let user = User {
            role: role(&self.role)?,
            created_at: time(&self.created_at)?,
            disabled_at: maybe_time(self.disabled_at.as_deref())?,
            has_password: self.password_hash.is_some(),
            oidc_subject: self.oidc_subject,
            id: self.id,
            display_name: self.display_name,
        };
        Ok((user, self.password_hash))
    }
}

impl OwnerRow {
    fn decode(self) -> Result<TokenOwner, StoreError> {
        Ok(TokenOwner {
            role: role(&self.role)?,
            user_disabled: self.disabled_at.is_some(),
            expires_at: maybe_time(self.expires_at.as_deref())?,
            revoked: self.revoked_at.is_some(),
            last_used_at: maybe_time(self.last_used_at.as_deref())?,
            token_id: self.id,
            user_id: self.user_id,
        })
    }
}

impl TokenRow {
    fn decode(self) -> Result<TokenInfo, StoreError> {
        Ok(TokenInfo {
            created_at: time(&self.created_at)?,
            expires_at: maybe_time(self.expires_at.as_deref())?,
            last_used_at: maybe_time(self.last_used_at.as_deref())?,
            revoked_at: maybe_time(self.revoked_at.as_deref())?,
            id: self.id,
            user_id: self.user_id,
        })
    }
}

/// Implements [`UserStore`] and [`TokenStore`] for a store type whose `$write`
/// and `$read` methods give the connections to write and read on. The SQL
/// and the binding are the same on both backends; only those differ.
macro_rules! stores {
    ($store:ty, write: $write:ident, read: $read:ident) => {
        #[async_trait::async_trait]
        impl $crate::auth::store::UserStore for $store {
            #[tracing::instrument(name = "users.insert", skip_all)]
            async fn insert(
                &self,
                user: $crate::auth::store::NewUser<'_>,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::INSERT_USER)
                    .bind(user.id)
                    .bind(user.display_name)
                    .bind(user.role.as_str())
                    .bind($crate::timestamp::Timestamp::now().to_string())
                    .bind(user.password_hash)
                    .bind(user.oidc_subject)
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "users.get", skip_all)]
            async fn get(
                &self,
                id: &str,
            ) -> Result<Option<($crate::auth::model::User, Option<String>)>, $crate::db::StoreError>
            {
                let row: Option<$crate::auth::store::UserRow> =
                    sqlx::query_as($crate::auth::store::sql::GET_USER)
                        .bind(id)
                        .fetch_optional(self.db.$read())
                        .await?;
                row.map($crate::auth::store::UserRow::decode).transpose()
            }

            #[tracing::instrument(name = "users.by_subject", skip_all)]
            async fn by_subject(
                &self,
                subject: &str,
            ) -> Result<Option<$crate::auth::model::User>, $crate::db::StoreError> {
                let row: Option<$crate::auth::store::UserRow> =
                    sqlx::query_as($crate::auth::store::sql::USER_BY_SUBJECT)
                        .bind(subject)
                        .fetch_optional(self.db.$read())
                        .await?;
                Ok(row
                    .map($crate::auth::store::UserRow::decode)
                    .transpose()?
                    .map(|(user, _)| user))
            }

            #[tracing::instrument(name = "users.set_role", skip_all)]
            async fn set_role(
                &self,
                id: &str,
                role: $crate::auth::model::Role,
            ) -> Result<bool, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::SET_ROLE)
                    .bind(id)
                    .bind(role.as_str())
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(name = "users.list", skip_all)]
            async fn list(&self) -> Result<Vec<$crate::auth::model::User>, $crate::db::StoreError> {
                let rows: Vec<$crate::auth::store::UserRow> =
                    sqlx::query_as($crate::auth::store::sql::LIST_USERS)
                        .fetch_all(self.db.$read())
                        .await?;
                rows.into_iter().map(|r| Ok(r.decode()?.0)).collect()
            }

            #[tracing::instrument(name = "users.set_password", skip_all)]
            async fn set_password(
                &self,
                id: &str,
                hash: &str,
            ) -> Result<bool, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::SET_PASSWORD)
                    .bind(id)
                    .bind(hash)
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(name = "users.disable", skip_all)]
            async fn disable(
                &self,
                id: &str,
                at: &$crate::timestamp::Timestamp,
            ) -> Result<bool, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::DISABLE_USER)
                    .bind(id)
                    .bind(at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(name = "users.active_admins", skip_all)]
            async fn active_admins(&self) -> Result<i64, $crate::db::StoreError> {
                Ok(sqlx::query_scalar($crate::auth::store::sql::COUNT_ADMINS)
                    .fetch_one(self.db.$read())
                    .await?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::auth::store::TokenStore for $store {
            #[tracing::instrument(name = "api_tokens.insert", skip_all)]
            async fn insert(
                &self,
                token: &$crate::auth::model::TokenInfo,
                sha256: &str,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::INSERT_TOKEN)
                    .bind(&token.id)
                    .bind(&token.user_id)
                    .bind(sha256)
                    .bind(token.created_at.to_string())
                    .bind(token.expires_at.map(|t| t.to_string()))
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "api_tokens.owner", skip_all)]
            async fn owner(
                &self,
                sha256: &str,
            ) -> Result<Option<$crate::auth::store::TokenOwner>, $crate::db::StoreError> {
                let row: Option<$crate::auth::store::OwnerRow> =
                    sqlx::query_as($crate::auth::store::sql::TOKEN_OWNER)
                        .bind(sha256)
                        .fetch_optional(self.db.$read())
                        .await?;
                row.map($crate::auth::store::OwnerRow::decode).transpose()
            }

            #[tracing::instrument(name = "api_tokens.touch", skip_all)]
            async fn touch(
                &self,
                id: &str,
                at: &$crate::timestamp::Timestamp,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::TOUCH_TOKEN)
                    .bind(id)
                    .bind(at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "api_tokens.list", skip_all)]
            async fn list(
                &self,
                user_id: Option<&str>,
            ) -> Result<Vec<$crate::auth::model::TokenInfo>, $crate::db::StoreError> {
                let rows: Vec<$crate::auth::store::TokenRow> =
                    sqlx::query_as($crate::auth::store::sql::LIST_TOKENS)
                        .bind(user_id.unwrap_or(""))
                        .fetch_all(self.db.$read())
                        .await?;
                rows.into_iter()
                    .map($crate::auth::store::TokenRow::decode)
                    .collect()
            }

            #[tracing::instrument(name = "api_tokens.revoke", skip_all)]
            async fn revoke(
                &self,
                id: &str,
                at: &$crate::timestamp::Timestamp,
            ) -> Result<bool, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::REVOKE_TOKEN)
                    .bind(id)
                    .bind(at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::auth::store::SessionStore for $store {
            #[tracing::instrument(name = "sessions.insert", skip_all)]
            async fn insert(
                &self,
                session: &$crate::auth::store::SessionRecord,
                sha256: &str,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::INSERT_SESSION)
                    .bind(&session.id)
                    .bind(&session.user_id)
                    .bind(sha256)
                    .bind(&session.csrf_token)
                    .bind(session.created_at.to_string())
                    .bind(session.last_seen_at.to_string())
                    .bind(session.expires_at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "sessions.owner", skip_all)]
            async fn owner(
                &self,
                sha256: &str,
            ) -> Result<Option<$crate::auth::store::SessionOwner>, $crate::db::StoreError> {
                let row: Option<$crate::auth::store::SessionRow> =
                    sqlx::query_as($crate::auth::store::sql::SESSION_OWNER)
                        .bind(sha256)
                        .fetch_optional(self.db.$read())
                        .await?;
                row.map($crate::auth::store::SessionRow::decode).transpose()
            }

            #[tracing::instrument(name = "sessions.touch", skip_all)]
            async fn touch(
                &self,
                id: &str,
                at: &$crate::timestamp::Timestamp,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::TOUCH_SESSION)
                    .bind(id)
                    .bind(at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "sessions.end", skip_all)]
            async fn end(
                &self,
                id: &str,
                at: &$crate::timestamp::Timestamp,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::END_SESSION)
                    .bind(id)
                    .bind(at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "sessions.end_all", skip_all)]
            async fn end_all(
                &self,
                user_id: &str,
                at: &$crate::timestamp::Timestamp,
            ) -> Result<u64, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::END_ALL_SESSIONS)
                    .bind(user_id)
                    .bind(at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected())
            }

            #[tracing::instrument(name = "sessions.delete_finished", skip_all)]
            async fn delete_finished(
                &self,
                before: &$crate::timestamp::Timestamp,
            ) -> Result<u64, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::DELETE_FINISHED_SESSIONS)
                    .bind(before.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected())
            }

            #[tracing::instrument(name = "sessions.count_active", skip_all)]
            async fn count_active(
                &self,
                now: &$crate::timestamp::Timestamp,
                idle_since: &$crate::timestamp::Timestamp,
            ) -> Result<i64, $crate::db::StoreError> {
                Ok(
                    sqlx::query_scalar($crate::auth::store::sql::COUNT_ACTIVE_SESSIONS)
                        .bind(now.to_string())
                        .bind(idle_since.to_string())
                        .fetch_one(self.db.$read())
                        .await?,
                )
            }
        }

        #[async_trait::async_trait]
        impl $crate::auth::store::LoginStore for $store {
            #[tracing::instrument(name = "oidc_logins.insert", skip_all)]
            async fn insert(
                &self,
                login: &$crate::auth::store::PendingLogin,
                state_sha256: &str,
            ) -> Result<(), $crate::db::StoreError> {
                sqlx::query($crate::auth::store::sql::INSERT_LOGIN)
                    .bind(state_sha256)
                    .bind(&login.nonce)
                    .bind(&login.pkce_verifier)
                    .bind(&login.redirect_uri)
                    .bind(&login.return_to)
                    .bind(login.created_at.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "oidc_logins.take", skip_all)]
            async fn take(
                &self,
                state_sha256: &str,
            ) -> Result<Option<$crate::auth::store::PendingLogin>, $crate::db::StoreError> {
                let row: Option<$crate::auth::store::LoginRow> =
                    sqlx::query_as($crate::auth::store::sql::TAKE_LOGIN)
                        .bind(state_sha256)
                        .fetch_optional(self.db.$write())
                        .await?;
                row.map($crate::auth::store::LoginRow::decode).transpose()
            }

            #[tracing::instrument(name = "oidc_logins.delete_older", skip_all)]
            async fn delete_older(
                &self,
                before: &$crate::timestamp::Timestamp,
            ) -> Result<u64, $crate::db::StoreError> {
                let done = sqlx::query($crate::auth::store::sql::DELETE_OLD_LOGINS)
                    .bind(before.to_string())
                    .execute(self.db.$write())
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
use stores;
