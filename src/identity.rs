//! Who is calling: the principal of a request and its role, the types every
//! domain shares. Authentication (`auth/`) makes them; the audit trail and
//! the services read them.

/// What a user may do beyond their own recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Records, reviews and signs their own dictations.
    Clinician,
    /// Manages users, and may read every recording.
    Admin,
    /// The original's one clinician (`PWA_AUTH=off`), who may do anything to
    /// any recording, as in the original; never a stored user's role.
    Single,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clinician | Self::Single => "clinician",
            Self::Admin => "admin",
        }
    }

    /// The role stored as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clinician" => Some(Self::Clinician),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who a request acts for: a signed-in user, or (with `PWA_AUTH=off`) the
/// original's single clinician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (what `clinician_id` of their recordings holds).
    pub id: String,
    /// Their role.
    pub role: Role,
}
