//! Validated identifiers. Every id in Paddock is a newtype built only by a fallible
//! constructor, so an id that reaches the data layout or a Kubernetes name is known to
//! be safe there: no `/`, no `..`, no NUL, bounded length.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an id was refused: names the field and the rule, never echoes more than 64 chars.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {shown:?}: must match {rule}")]
pub struct IdError {
    /// The field name as the API spells it (`thread_id`, `user_id`, `sandbox_id`).
    pub field: &'static str,
    /// The rule, in words a user can act on.
    pub rule: &'static str,
    shown: String,
}

impl IdError {
    fn new(field: &'static str, rule: &'static str, value: &str) -> Self {
        let shown: String = value.chars().take(64).collect();
        Self { field, rule, shown }
    }
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $rule:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The API field name this id travels in.
            pub const FIELD: &'static str = $field;
            /// The validation rule, as shown in errors.
            pub const RULE: &'static str = $rule;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let check: fn(&str) -> bool = $check;
                if check(&value) {
                    Ok(Self(value))
                } else {
                    Err(IdError::new($field, $rule, &value))
                }
            }

            /// Whether `value` would be accepted.
            pub fn is_valid(value: &str) -> bool {
                let check: fn(&str) -> bool = $check;
                check(value)
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the id.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A conversation thread: `^[A-Za-z0-9_-]{1,64}$`.
    ThreadId,
    "thread_id",
    "^[A-Za-z0-9_-]{1,64}$",
    |s| (1..=64).contains(&s.len()) && s.bytes().all(is_word_char)
);

id_type!(
    /// A user (tenant): `^[A-Za-z0-9_-]{1,128}$`. Absent means [`UserId::default_user`].
    UserId,
    "user_id",
    "^[A-Za-z0-9_-]{1,128}$",
    |s| (1..=128).contains(&s.len()) && s.bytes().all(is_word_char)
);

id_type!(
    /// A sandbox: a DNS-1123 label of 1..=53 chars (lower-case alphanumerics and `-`,
    /// starting and ending alphanumeric), so `sandbox-{id}-svc` is a valid Kubernetes name.
    SandboxId,
    "sandbox_id",
    "1-53 lower-case letters, digits or '-', starting and ending with a letter or digit",
    |s| {
        let b = s.as_bytes();
        (1..=53).contains(&b.len())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    }
);

/// The user id used when a request names none.
pub const DEFAULT_USER: &str = "default";

impl UserId {
    /// The `default` user.
    pub fn default_user() -> Self {
        Self(DEFAULT_USER.to_owned())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::default_user()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thread_ids() {
        for ok in ["a", "thread-42", "A_b-9", &"x".repeat(64)] {
            assert!(ThreadId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", ".", "a b", "é", "a\0b", &"x".repeat(65)] {
            let err = ThreadId::new(bad).unwrap_err();
            assert_eq!(err.field, "thread_id");
        }
    }

    #[test]
    fn user_ids() {
        assert!(UserId::new("x".repeat(128)).is_ok());
        assert!(UserId::new("x".repeat(129)).is_err());
        assert_eq!(UserId::default().as_str(), "default");
        assert!(UserId::new("../root").is_err());
    }

    #[test]
    fn sandbox_ids() {
        // DeerFlow's ids: 16 lower-case hex chars.
        assert!(SandboxId::new("0123456789abcdef").is_ok());
        assert!(SandboxId::new("a").is_ok());
        assert!(SandboxId::new("a-b").is_ok());
        assert!(SandboxId::new("x".repeat(53)).is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(54), "a/b"] {
            assert_eq!(
                SandboxId::new(bad).unwrap_err().field,
                "sandbox_id",
                "{bad}"
            );
        }
    }

    #[test]
    fn error_message_names_field_and_rule() {
        let e = ThreadId::new("a/b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid thread_id \"a/b\": must match ^[A-Za-z0-9_-]{1,64}$"
        );
        let long = "y".repeat(500);
        let e = UserId::new(long).unwrap_err();
        assert!(e.to_string().len() < 200);
    }

    #[test]
    fn serde_validates() {
        let t: Result<ThreadId, _> = serde_json::from_str("\"ok-1\"");
        assert!(t.is_ok());
        let t: Result<ThreadId, _> = serde_json::from_str("\"../x\"");
        assert!(t.unwrap_err().to_string().contains("thread_id"));
    }

    proptest! {
        #[test]
        fn thread_id_matches_regex(s in "\\PC{0,80}") {
            let re = regex::Regex::new("^[A-Za-z0-9_-]{1,64}$").unwrap();
            prop_assert_eq!(ThreadId::is_valid(&s), re.is_match(&s));
        }

        #[test]
        fn user_id_matches_regex(s in "[A-Za-z0-9_./ -]{0,140}") {
            let re = regex::Regex::new("^[A-Za-z0-9_-]{1,128}$").unwrap();
            prop_assert_eq!(UserId::is_valid(&s), re.is_match(&s));
        }

        #[test]
        fn sandbox_id_is_dns_label(s in "[a-z0-9A-Z_.-]{0,60}") {
            let re = regex::Regex::new("^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$").unwrap();
            prop_assert_eq!(SandboxId::is_valid(&s), re.is_match(&s));
        }

        #[test]
        fn valid_ids_are_safe_path_segments(s in "[A-Za-z0-9_-]{1,64}") {
            let t = ThreadId::new(s).unwrap();
            prop_assert!(!t.as_str().contains('/') && t.as_str() != ".." && t.as_str() != ".");
        }
    }
}
