//! Agencies and staff accounts, and the checks an administrator's action must pass.

use std::fmt;
use std::str::FromStr;

use super::role::Denial;
use super::{EmailAddress, Role};

macro_rules! id_type {
    ($name:ident) => {
        /// An opaque random identifier, safe to show in URLs.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(AgencyId);
id_type!(StaffId);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    pub id: AgencyId,
    pub slug: String,
    pub name: String,
    /// Staff reset their own password through an emailed link.
    pub sso_enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffStatus {
    Active,
    Disabled,
}

impl StaffStatus {
    pub const ALL: [StaffStatus; 2] = [StaffStatus::Active, StaffStatus::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Disabled => "Disabled",
        }
    }
}

impl FromStr for StaffStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}: expected active or disabled"))
    }
}

/// The password state of an account: what sign-in must do after the hash matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordState {
    /// No password set (an SSO-only account): password sign-in always fails.
    None,
    /// A password the holder chose.
    Chosen,
    /// A temporary password an administrator set; it must be changed, and it expires.
    Temporary { expires_at: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffAccount {
    pub id: StaffId,
    pub agency_id: AgencyId,
    pub email: EmailAddress,
    pub name: String,
    pub role: Role,
    pub status: StaffStatus,
    /// argon2id PHC string, when a password is set.
    pub password_hash: Option<String>,
    pub password_state: PasswordState,
    /// Bumped at every password change: reset links and sessions from before it are dead.
    pub password_version: i64,
    pub created_at: i64,
}

impl StaffAccount {
    pub fn is_active(&self) -> bool {
        self.status == StaffStatus::Active
    }

    /// Checks that `self` may set a temporary password for `target`.
    pub fn may_admin_reset(&self, target: &StaffAccount) -> Result<(), Denial> {
        if self.agency_id != target.agency_id {
            return Err(Denial::NotFound);
        }
        if !self.role.is_admin() || !self.is_active() {
            return Err(Denial::Forbidden);
        }
        if self.id == target.id {
            return Err(Denial::OwnAccount);
        }
        if !self.role.may_reset_password_of(target.role) {
            return Err(Denial::Forbidden);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, agency: &str, role: Role) -> StaffAccount {
        StaffAccount {
            id: StaffId(id.into()),
            agency_id: AgencyId(agency.into()),
            email: EmailAddress::parse(&format!("{id}@x.example")).unwrap(),
            name: id.into(),
            role,
            status: StaffStatus::Active,
            password_hash: None,
            password_state: PasswordState::None,
            password_version: 0,
            created_at: 0,
        }
    }

    #[test]
    fn admin_reset_rules() {
        let owner = account("o", "a", Role::Owner);
        let admin = account("c", "a", Role::ClientAdmin);
        let staff = account("s", "a", Role::Staff);
        let foreign = account("f", "b", Role::Staff);
        assert_eq!(owner.may_admin_reset(&staff), Ok(()));
        assert_eq!(owner.may_admin_reset(&admin), Ok(()));
        assert_eq!(admin.may_admin_reset(&staff), Ok(()));
        assert_eq!(admin.may_admin_reset(&owner), Err(Denial::Forbidden));
        assert_eq!(staff.may_admin_reset(&admin), Err(Denial::Forbidden));
        assert_eq!(owner.may_admin_reset(&foreign), Err(Denial::NotFound));
        assert_eq!(staff.may_admin_reset(&foreign), Err(Denial::NotFound));
        assert_eq!(owner.may_admin_reset(&owner), Err(Denial::OwnAccount));
    }
}
