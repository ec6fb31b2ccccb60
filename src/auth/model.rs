//! Users, roles and API tokens, and the checks on what a person types (ids,
//! names, passwords, token lifetimes). No HTTP, no SQL.

use std::time::Duration;

use serde_json::Value;

pub use crate::identity::{Principal, Role};
use crate::timestamp::Timestamp;
use crate::validation::ValidationIssue;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The id: what recordings' `clinician_id` holds.
    pub id: String,
    /// The name shown.
    pub display_name: String,
    /// Their role.
    pub role: Role,
    /// When the account was created.
    pub created_at: Timestamp,
    /// When it was disabled (it can no longer sign in or use its tokens).
    pub disabled_at: Option<Timestamp>,
    /// Whether the account has a password (local sign-in).
    pub has_password: bool,
    /// The identity provider's subject (single sign-on), if linked.
    pub oidc_subject: Option<String>,
}

/// An API token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The public id that `token list` shows and `token revoke` takes.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
}

/// The longest user id (the column's check).
pub const MAX_USER_ID: usize = 64;
/// The longest display name (the column's check).
pub const MAX_DISPLAY_NAME: usize = 200;
/// The shortest password accepted: NIST SP 800-63B-4 §3.1.1.2 for a password
/// that is the only factor (docs/OPERATIONS.md, "Accounts").
pub const MIN_PASSWORD_CHARS: usize = 15;
/// The longest password accepted (bounds the work of hashing one).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// The prefix of every API token, so that a leaked one is recognisable (and
/// secret scanners can find it).
pub const TOKEN_PREFIX: &str = "cst_";

/// Why a user, password or token request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The id is empty, too long, or has characters other than letters,
    /// digits and `.`, `_`, `-`, `@`.
    #[error(
        "a user id is 1 to {MAX_USER_ID} letters, digits or '.', '_', '-', '@' (and not 'system:…'); got {0:?}"
    )]
    BadUserId(String),
    /// The display name is empty or too long.
    #[error("a display name is 1 to {MAX_DISPLAY_NAME} characters")]
    BadDisplayName,
    /// The password is too short or too long.
    #[error(
        "a password is {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters; this one has {0}"
    )]
    BadPassword(usize),
    /// A token lifetime that is not a duration.
    #[error("--expires takes a duration such as 90d or 12h; got {0:?}")]
    BadExpiry(String),
    /// No such user.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// The id is taken.
    #[error("a user {0:?} exists already")]
    UserExists(String),
    /// No such token.
    #[error("no API token {0:?}")]
    NoSuchToken(String),
    /// A token for a disabled user.
    #[error("user {0:?} is disabled")]
    Disabled(String),
    /// A single sign-on subject that is empty, too long or not printable.
    #[error("an OIDC subject is 1 to {MAX_SUBJECT} printable characters")]
    BadSubject,
    /// The subject belongs to another user already.
    #[error("that OIDC subject belongs to user {0:?} already")]
    SubjectLinked(String),
}

/// The longest single sign-on subject (OpenID Connect Core 1.0 §2: 255 ASCII characters).
pub const MAX_SUBJECT: usize = 255;

/// Checks a single sign-on subject given to `user add --oidc-subject`.
pub fn check_subject(subject: &str) -> Result<(), AccountError> {
    let ok = !subject.is_empty()
        && subject.len() <= MAX_SUBJECT
        && subject.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadSubject)
    }
}

/// Checks a new user's id and display name.
pub fn check_new_user(id: &str, display_name: &str) -> Result<(), AccountError> {
    let id_ok = !id.is_empty()
        && id.len() <= MAX_USER_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !id_ok {
        return Err(AccountError::BadUserId(id.to_owned()));
    }
    let chars = display_name.trim().chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME || display_name.chars().any(char::is_control) {
        return Err(AccountError::BadDisplayName);
    }
    Ok(())
}

/// Checks a new password's length (in characters, as a person counts them).
pub fn check_password(password: &str) -> Result<(), AccountError> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(AccountError::BadPassword(chars));
    }
    Ok(())
}

/// Parses a token lifetime such as `90d`.
pub fn parse_expiry(text: &str) -> Result<Duration, AccountError> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| AccountError::BadExpiry(text.to_owned()))
}

/// `POST /api/v1/auth/login`: who, and their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInRequest {
    /// The user id.
    pub username: String,
    /// The password.
    pub password: String,
}

impl SignInRequest {
    /// Checks a sign-in body (the password's content is never echoed back).
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let mut issues = Vec::new();
        let username = required_string(body, "username", true, &mut issues);
        let password = required_string(body, "password", false, &mut issues);
        match (username, password) {
            (Some(username), Some(password)) if issues.is_empty() => {
                Ok(Self { username, password })
            }
            _ => Err(issues),
        }
    }
}

/// `POST /api/v1/auth/setup`: the first admin, with the first-run code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRequest {
    /// The one-time code `serve` printed.
    pub code: String,
    /// The admin's user id.
    pub username: String,
    /// Their name.
    pub display_name: String,
    /// Their password.
    pub password: String,
}

impl SetupRequest {
    /// Checks a setup body.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let mut issues = Vec::new();
        let code = required_string(body, "code", false, &mut issues);
        let username = required_string(body, "username", true, &mut issues);
        let display_name = required_string(body, "display_name", true, &mut issues);
        let password = required_string(body, "password", false, &mut issues);
        match (code, username, display_name, password) {
            (Some(code), Some(username), Some(display_name), Some(password))
                if issues.is_empty() =>
            {
                Ok(Self {
                    code,
                    username,
                    display_name,
                    password,
                })
            }
            _ => Err(issues),
        }
    }
}

/// `POST /api/v1/users`: a new account, made by an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUserRequest {
    /// The user id.
    pub id: String,
    /// Their name.
    pub display_name: String,
    /// Their role (`clinician` unless said).
    pub role: Role,
    /// A password, for a local account.
    pub password: Option<String>,
    /// The single sign-on provider's subject, to link.
    pub oidc_subject: Option<String>,
}

impl NewUserRequest {
    /// Checks a new-user body (the password's content is never echoed back).
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationIssue>> {
        let mut issues = Vec::new();
        let id = required_string(body, "id", true, &mut issues);
        let display_name = required_string(body, "display_name", true, &mut issues);
        let password = optional_string(body, "password", false, &mut issues);
        let oidc_subject = optional_string(body, "oidc_subject", true, &mut issues);
        let role = match optional_string(body, "role", true, &mut issues).as_deref() {
            None | Some("clinician") => Role::Clinician,
            Some("admin") => Role::Admin,
            Some(other) => {
                issues.push(ValidationIssue::new(
                    "enum",
                    vec![Value::from("body"), Value::from("role")],
                    "Input should be 'clinician' or 'admin'",
                    Value::from(other),
                ));
                Role::Clinician
            }
        };
        match (id, display_name) {
            (Some(id), Some(display_name)) if issues.is_empty() => Ok(Self {
                id,
                display_name,
                role,
                password,
                oidc_subject,
            }),
            _ => Err(issues),
        }
    }
}

/// The string `field` of `body` if present (null counts as absent), or an
/// issue when it is not a non-empty string.
fn optional_string(
    body: &Value,
    field: &str,
    echo: bool,
    issues: &mut Vec<ValidationIssue>,
) -> Option<String> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(_) => required_string(body, field, echo, issues),
    }
}

/// The string `field` of `body`, or an issue (showing the input only when
/// `echo`: never a password).
fn required_string(
    body: &Value,
    field: &str,
    echo: bool,
    issues: &mut Vec<ValidationIssue>,
) -> Option<String> {
    let loc = vec![Value::from("body"), Value::from(field)];
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None => {
            // FastAPI echoes the whole body for a missing field; never a password in it.
            let input = match body {
                Value::Object(fields) if echo => Value::Object(
                    fields
                        .iter()
                        .filter(|(name, _)| name.as_str() != "password")
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect(),
                ),
                _ => Value::Null,
            };
            issues.push(ValidationIssue::new(
                "missing",
                loc,
                "Field required",
                input,
            ));
            None
        }
        Some(other) => {
            let input = if echo { other.clone() } else { Value::Null };
            issues.push(ValidationIssue::new(
                "string_type",
                loc,
                "Input should be a non-empty string",
                input,
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_plain_and_bounded() {
        assert_eq!(check_new_user("dr.smith@clinic", "Dr Smith"), Ok(()));
        for bad in ["", "system:cleanup", "a b", "x/y", &"a".repeat(65)] {
            assert_eq!(
                check_new_user(bad, "Name"),
                Err(AccountError::BadUserId(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_new_user("dr-a", "  "),
            Err(AccountError::BadDisplayName)
        );
    }

    #[test]
    fn passwords_are_counted_in_characters() {
        assert_eq!(
            check_password("fourteen chars"),
            Err(AccountError::BadPassword(14))
        );
        assert_eq!(check_password("fifteen chars.."), Ok(()));
        // Counted as characters, not bytes.
        assert_eq!(
            check_password(&"é".repeat(14)),
            Err(AccountError::BadPassword(14))
        );
        assert_eq!(check_password(&"é".repeat(15)), Ok(()));
    }

    #[test]
    fn expiry_is_a_positive_duration() {
        assert_eq!(parse_expiry("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(parse_expiry("0s").is_err());
        assert!(parse_expiry("soon").is_err());
    }
}
