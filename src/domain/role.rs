//! Roles and what each may do to another account in the same agency (SPEC §1).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Owner,
    ClientAdmin,
    Staff,
}

/// Why an administrative action on an account is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The account is in another agency: the answer must not reveal that it exists.
    NotFound,
    /// The role may not do this.
    Forbidden,
    /// Admins change their own password through change-password, not the admin reset.
    OwnAccount,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::ClientAdmin, Role::Staff];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::ClientAdmin => "client_admin",
            Self::Staff => "staff",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Owner => "Owner",
            Self::ClientAdmin => "Client administrator",
            Self::Staff => "Staff",
        }
    }

    /// May open Settings → Staff and the audit log.
    pub fn is_admin(self) -> bool {
        matches!(self, Self::Owner | Self::ClientAdmin)
    }

    /// May set a temporary password for an account with role `target`.
    pub fn may_reset_password_of(self, target: Role) -> bool {
        match self {
            Self::Owner => true,
            Self::ClientAdmin => matches!(target, Role::Staff | Role::ClientAdmin),
            Self::Staff => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected owner, client_admin or staff")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_reset_whom() {
        use Role::*;
        assert!(Owner.may_reset_password_of(Owner));
        assert!(Owner.may_reset_password_of(ClientAdmin));
        assert!(ClientAdmin.may_reset_password_of(Staff));
        assert!(ClientAdmin.may_reset_password_of(ClientAdmin));
        assert!(!ClientAdmin.may_reset_password_of(Owner));
        assert!(!Staff.may_reset_password_of(Staff));
    }

    #[test]
    fn roles_round_trip_through_text() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
