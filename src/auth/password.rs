//! Password hashing: Argon2id with the `argon2` crate's default parameters,
//! which are OWASP's first recommended configuration (m = 19 MiB, t = 2,
//! p = 1; OWASP Password Storage Cheat Sheet, "Argon2id"). Hashes are PHC
//! strings, so a later change of parameters still verifies old hashes.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};

/// Hashing failed (the parameters or the salt were refused: not expected).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// The PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// A hash of no one's password: verified against when there is no stored
/// hash, so that a missing account costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash("no account has this password").ok());

/// Whether `password` matches `stored` (a PHC string); false when there is
/// none, after the same work. The comparison inside is constant-time.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let (phc, real) = match stored {
        Some(h) => (h, true),
        None => match DUMMY_HASH.as_deref() {
            Some(h) => (h, false),
            None => return false,
        },
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matches && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery").unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse battery", Some(&stored)));
        assert!(!verify("correct horse batterY", Some(&stored)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("anything", Some("not a phc string")));
        // A fresh salt each time.
        assert_ne!(stored, hash("correct horse battery").unwrap());
    }
}
