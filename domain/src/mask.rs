//! Masking personal data and redacting secrets, for the audit log and for
//! anything written to logs: emails become `j***e@e***.com`, phone numbers
//! `+380***4567`, and password, token, secret, key and hash fields
//! `[redacted]`.

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// `jane@example.com` → `j***e@e***.com`.
pub fn email(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return "***".to_owned();
    };
    let edge = |s: &str| {
        let first = s.chars().next().map(String::from).unwrap_or_default();
        let last = s.chars().last().map(String::from).unwrap_or_default();
        (first, last)
    };
    let (lf, ll) = edge(local);
    let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
    let (hf, _) = edge(host);
    format!("{lf}***{ll}@{hf}***.{tld}")
}

/// `+380501234567` → `+380***4567`.
pub fn phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() < 8 {
        return "***".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "token",
        "secret",
        "key",
        "hash",
        "fingerprint",
        "authorization",
        "cookie",
    ]
    .iter()
    .any(|s| k.contains(s))
}

fn looks_like_email(s: &str) -> bool {
    s.len() <= 320
        && s.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !s.contains(char::is_whitespace)
        })
}

fn looks_like_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    s.starts_with('+')
        && (8..=15).contains(&digits)
        && s[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
}

/// A copy of `value` with secrets redacted and emails and phones masked, at
/// any depth.
pub fn json(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let masked = if is_secret_key(k) && !v.is_null() {
                        Value::String(REDACTED.to_owned())
                    } else {
                        json(v)
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        Value::String(s) => Value::String(text(s)),
        other => other.clone(),
    }
}

/// Whether [`json`] would change `value`: the same walk, without building a
/// copy (the audit API serves most values as stored).
pub fn needs_masking(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            if is_secret_key(k) && !v.is_null() {
                v.as_str() != Some(REDACTED)
            } else {
                needs_masking(v)
            }
        }),
        Value::Array(items) => items.iter().any(needs_masking),
        Value::String(s) => (looks_like_email(s) || looks_like_phone(s)) && text(s) != *s,
        _ => false,
    }
}

/// `s` with an email or phone number masked; other text unchanged.
pub fn text(s: &str) -> String {
    if looks_like_email(s) {
        email(s)
    } else if looks_like_phone(s) {
        phone(s)
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn needs_masking_says_whether_masking_changes_anything() {
        for v in [
            json!({"a": 1, "b": [true, null, "text"], "c": {"d": 1.5}}),
            json!({"password_hash": "$argon2id$..."}),
            json!({"password_hash": null, "x": "y"}),
            json!({"token": "[redacted]"}),
            json!({"nested": [{"email": "jane@example.com"}]}),
            json!({"to": "j***e@e***.com"}),
            json!(["+380501234567"]),
            json!("plain"),
        ] {
            assert_eq!(needs_masking(&v), json(&v) != v, "{v}");
        }
    }

    #[test]
    fn emails_and_phones_are_masked_as_design_says() {
        assert_eq!(email("jane@example.com"), "j***e@e***.com");
        assert_eq!(phone("+380501234567"), "+380***4567");
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = json!({
            "email": "jane@example.com",
            "password_hash": "$argon2id$v=19$...",
            "nested": [{"refresh_token_hash": "abc", "phone": "+380501234567", "name": "Jane"}],
            "reset_token": null
        });
        assert_eq!(
            json(&v),
            json!({
                "email": "j***e@e***.com",
                "password_hash": "[redacted]",
                "nested": [{"refresh_token_hash": "[redacted]", "phone": "+380***4567", "name": "Jane"}],
                "reset_token": null
            })
        );
    }
}
