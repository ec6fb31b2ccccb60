//! Who may do what: one function per action on a recording, and who manages
//! users, which every service asks before it acts. A recording a principal may not see is
//! answered as if it did not exist (404), so that its existence is not
//! revealed. With `PWA_AUTH=off` the one clinician ([`Role::Single`]) may
//! do anything, as in the original.

use super::model::Role;

/// Whether the user `who`, of role `role`, may read the recording owned by
/// `owner` (its fields, its history): its clinician, or an admin.
pub fn may_read(who: &str, role: Role, owner: &str) -> bool {
    who == owner || matches!(role, Role::Admin | Role::Single)
}

/// Whether `who` may list the recordings of `clinician`: their own, or any
/// clinician's for an admin.
pub fn may_list(who: &str, role: Role, clinician: &str) -> bool {
    may_read(who, role, clinician)
}

/// Whether `who` may download its audio: the same as reading it.
pub fn may_download(who: &str, role: Role, owner: &str) -> bool {
    may_read(who, role, owner)
}

/// Whether `who` may change it (patch, sign, amend, retry): its clinician only.
pub fn may_change(who: &str, role: Role, owner: &str) -> bool {
    who == owner || role == Role::Single
}

/// Whether `who` may delete it: its clinician only.
pub fn may_delete(who: &str, role: Role, owner: &str) -> bool {
    who == owner || role == Role::Single
}

/// Whether `role` may list, add and disable users: administrators only
/// (not the one clinician of `PWA_AUTH=off`, where there are no users).
pub fn may_manage_users(role: Role) -> bool {
    role == Role::Admin
}

/// Whether `role` may see the instance's status (the operations page):
/// administrators, and the one clinician of `PWA_AUTH=off` (served on
/// loopback only, so the person at this machine).
pub fn may_see_status(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Single)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinicians_have_their_own_and_admins_read_all() {
        type Rule = fn(&str, Role, &str) -> bool;
        let rules: [(&str, Rule, bool); 5] = [
            ("read", may_read, true),
            ("list", may_list, true),
            ("download", may_download, true),
            ("change", may_change, false),
            ("delete", may_delete, false),
        ];
        for (action, rule, admin_may) in rules {
            assert!(rule("dr-a", Role::Clinician, "dr-a"), "{action} own");
            assert!(!rule("dr-a", Role::Clinician, "dr-b"), "{action} another's");
            assert_eq!(
                rule("admin", Role::Admin, "dr-b"),
                admin_may,
                "admin {action}"
            );
            assert!(rule("admin", Role::Admin, "admin"), "admin {action} own");
            assert!(
                rule("current-clinician", Role::Single, "dr-b"),
                "PWA_AUTH=off {action}"
            );
        }
    }
}
