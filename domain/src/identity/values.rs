//! Identity value types. Each constructor is the only way in, so a handler or
//! an aggregate never holds an unchecked email, password or name.

use serde::{Deserialize, Serialize};

/// Why a value was refused; the message is safe to show the client (it never
/// repeats the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// A syntactically valid email address, trimmed and lowercased so that one
/// mailbox has one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Normalise and check `raw`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        if email.len() > 254 {
            return Err(Invalid("must be at most 254 characters"));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(Invalid("must be an email address"));
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
        if !local_ok || !domain_ok {
            return Err(Invalid("must be an email address"));
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// A password a user chose. It is only ever hashed: it has no `Serialize`, and
/// its `Debug` prints nothing.
#[derive(Clone)]
pub struct Password(String);

/// Fewest characters in a password (OWASP ASVS 2.1.1 asks for 12).
pub const PASSWORD_MIN_CHARS: usize = 12;
/// Most characters in a password; bounds the hashing work per request.
pub const PASSWORD_MAX_CHARS: usize = 128;

const COMMON: &[&str] = &[
    "password1234",
    "123456789012",
    "qwertyuiop12",
    "passwordpassword",
    "letmein12345",
    "iloveyou1234",
    "administrator",
    "welcome12345",
];

impl Password {
    /// Check a password for a new credential: 12 to 128 characters, not a
    /// well-known password, and not one character repeated.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(Invalid("must be at least 12 characters"));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(Invalid("must be at most 128 characters"));
        }
        let mut distinct: Vec<char> = raw.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 5 || COMMON.contains(&raw.to_lowercase().as_str()) {
            return Err(Invalid("is too easy to guess"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A password presented at login, checked only for length so that an
    /// oversized input cannot make hashing expensive.
    pub fn presented(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.chars().count() > PASSWORD_MAX_CHARS {
            return Err(Invalid("must be 1 to 128 characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The characters, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A name shown to other users: 1 to 100 characters after trimming, with no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    /// Trim and check `raw`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > 100 {
            return Err(Invalid("must be 1 to 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid("must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

impl From<DisplayName> for String {
    fn from(n: DisplayName) -> String {
        n.0
    }
}

/// A user's role. Self-registration may only choose `student` or `tutor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages accounts and everything else.
    Admin,
    /// Reads history and the audit log; changes nothing.
    Auditor,
    /// Teaches lessons.
    Tutor,
    /// Takes lessons.
    Student,
    /// Looks around; created by an admin.
    Guest,
}

impl Role {
    /// Every role, in the policy table's column order.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Auditor,
        Role::Tutor,
        Role::Student,
        Role::Guest,
    ];

    /// The lowercase name used in tokens, metadata and the policy table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::Tutor => "tutor",
            Self::Student => "student",
            Self::Guest => "guest",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether anyone may give themselves this role at registration.
    pub fn self_service(self) -> bool {
        matches!(self, Self::Student | Self::Tutor)
    }
}

/// The platform of a registered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A browser.
    Web,
    /// An Android app.
    Android,
    /// An iOS app.
    Ios,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Jane.Doe@Example.COM ").map(|e| e.0),
            Ok("jane.doe@example.com".to_owned())
        );
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "jane..d@example.com",
            "jane@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn weak_and_oversized_passwords_are_refused() {
        assert!(Password::parse("correct horse battery").is_ok());
        assert_eq!(
            Password::parse("short").err(),
            Some(Invalid("must be at least 12 characters"))
        );
        assert_eq!(
            Password::parse("aaaaaaaaaaaaaaaa").err(),
            Some(Invalid("is too easy to guess"))
        );
        assert_eq!(
            Password::parse("Password1234").err(),
            Some(Invalid("is too easy to guess"))
        );
        assert!(Password::parse(&"x1y2z3".repeat(30)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("correct horse battery")),
            "Ok(Password([redacted]))"
        );
    }
}
