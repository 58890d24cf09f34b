//! Identifiers that arrive from clients, validated before they touch a query or a storage path.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationErrors;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:expr, $what:literal, $pattern:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value`; the error says what would be accepted.
            pub fn parse(value: &str) -> Result<Self, String> {
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(format!("{:?} is not {}", truncate(value), $what))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::string_schema(concat!("Must be ", $what, "."), Some($pattern))
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// Shortens a client value before echoing it in an error message.
pub(crate) fn truncate(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut s: String = value.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

string_id!(
    /// An IMS organisation id (`x-gw-ims-org-id`): `[A-Za-z0-9@._-]{1,128}`, never `.` or `..`,
    /// since it becomes a directory name under the storage root.
    OrgId,
    |s| {
        (1..=128).contains(&s.len())
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b))
    },
    "a valid organisation id (1 to 128 characters of A-Z, a-z, 0-9, @, ., _ and -, not . or ..)",
    "^[A-Za-z0-9@._-]{1,128}$"
);

string_id!(
    /// A sandbox name (`x-sandbox-name`): lowercase `[a-z0-9-]{1,64}`.
    SandboxName,
    |s| {
        (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    },
    "a valid sandbox name (1 to 64 characters of a-z, 0-9 and -)",
    "^[a-z0-9-]{1,64}$"
);

string_id!(
    /// A Catalog dataset id: 24 lowercase hex characters.
    DatasetId,
    |s| is_lower_hex(s, 24),
    "a dataset id (24 lowercase hex characters)",
    "^[0-9a-f]{24}$"
);

string_id!(
    /// A Catalog batch id: 32 lowercase hex characters.
    BatchId,
    |s| is_lower_hex(s, 32),
    "a batch id (32 lowercase hex characters)",
    "^[0-9a-f]{32}$"
);

/// A random (version 4) UUID. Built from `rand` rather than uuid's own generator so that the
/// workspace carries one `getrandom`, not two.
pub fn new_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

impl DatasetId {
    pub fn generate() -> Self {
        let hex = new_uuid().simple().to_string();
        Self(hex[..24].to_owned())
    }
}

impl BatchId {
    pub fn generate() -> Self {
        Self(new_uuid().simple().to_string())
    }
}

/// The (org, sandbox) pair that scopes everything a request sees or changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub org: OrgId,
    pub sandbox: SandboxName,
}

impl Tenant {
    /// Validates both header values, reporting each one that is wrong.
    pub fn parse(org: &str, sandbox: &str) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let org = OrgId::parse(org).map_err(|m| errors.push("x-gw-ims-org-id", m)).ok();
        let sandbox =
            SandboxName::parse(sandbox).map_err(|m| errors.push("x-sandbox-name", m)).ok();
        match (org, sandbox) {
            (Some(org), Some(sandbox)) => Ok(Self { org, sandbox }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        assert!(OrgId::parse("1BD6382559DF0C130A49422D@AdobeOrg").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(OrgId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sandboxes_are_lowercase() {
        assert!(SandboxName::parse("prod-1").is_ok());
        assert!(SandboxName::parse("Prod").is_err());
        assert!(SandboxName::parse("").is_err());
        assert!(SandboxName::parse("a_b").is_err());
    }

    #[test]
    fn uuids_are_random_version_4() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 4);
    }

    #[test]
    fn generated_ids_are_valid() {
        let d = DatasetId::generate();
        assert!(DatasetId::parse(d.as_str()).is_ok());
        let b = BatchId::generate();
        assert!(BatchId::parse(b.as_str()).is_ok());
        assert!(BatchId::parse("DA5CFB4DE32C4B93A09F7E37FA53AD52").is_err());
    }
}
