//! Stripe's webhook signature, exactly as Stripe signs: the header is
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, and each `v1`
//! is the hex HMAC-SHA256 of `"{t}.{raw body}"` keyed with an endpoint
//! secret (`whsec_…`, its UTF-8 bytes). Every `v1` is tried against every
//! secret in constant time; any other scheme (`v0`, Stripe's fake test-mode
//! signature) is ignored, so a signature cannot be downgraded. `t` must be
//! within the tolerance of now in both directions (Stripe's SDKs only look
//! at the past).

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The endpoint's signing secrets: more than one while a secret rolls.
/// They never print.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl FromStr for Secrets {
    type Err = String;

    /// Comma-separated; empty for none.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl Secrets {
    /// No secret is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a signature was refused. The reasons are recorded with the refusal;
/// the caller is told only that the signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Stripe-Signature` header.
    Missing,
    /// The header has no usable `t`.
    Malformed,
    /// The header has no `v1` signature (a `v0` alone is not one).
    NoSignature,
    /// `t` is older than the tolerance.
    Stale,
    /// `t` is further in the future than the tolerance.
    Future,
    /// No `v1` matches any secret.
    Mismatch,
}

impl Refusal {
    /// The reason as recorded in the `AccessDenied` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "signature_missing",
            Refusal::Malformed => "signature_malformed",
            Refusal::NoSignature => "signature_no_v1",
            Refusal::Stale => "signature_stale",
            Refusal::Future => "signature_future",
            Refusal::Mismatch => "signature_mismatch",
        }
    }
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Check `header` over `body` at `now` (Unix seconds): the signed `t`, or
/// why not.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &Secrets,
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, Refusal> {
    let header = header.ok_or(Refusal::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" if t.is_none() => t = Some(value.parse::<i64>().map_err(|_| Refusal::Malformed)?),
            // A `v1` that is not hex matches nothing; the others may.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(Refusal::Malformed)?;
    if signatures.is_empty() {
        return Err(Refusal::NoSignature);
    }
    if t < now.saturating_sub(tolerance_secs) {
        return Err(Refusal::Stale);
    }
    if t > now.saturating_add(tolerance_secs) {
        return Err(Refusal::Future);
    }
    let matched = secrets.0.iter().any(|secret| {
        let expected = mac(secret, t, body);
        signatures
            .iter()
            .any(|s| expected.clone().verify_slice(s).is_ok())
    });
    if matched {
        Ok(t)
    } else {
        Err(Refusal::Mismatch)
    }
}

/// The `v1` signature of `body` at `t` with `secret`, in hex: what Stripe
/// (and its SDKs' test helpers) compute.
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    hex::encode(mac(secret, t, body).finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    //! The signature fixtures: each header is built with the real scheme.
    use super::*;

    const NOW: i64 = 1_780_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn secrets(list: &str) -> Secrets {
        list.parse().expect("secrets")
    }

    fn header(t: i64, secret: &str) -> String {
        format!("t={t},v1={}", sign(BODY, secret, t))
    }

    fn check(header: &str, body: &[u8], list: &str) -> Result<i64, Refusal> {
        verify(Some(header), body, &secrets(list), NOW, 300)
    }

    #[test]
    fn a_valid_signature_verifies() {
        assert_eq!(check(&header(NOW, "whsec_a"), BODY, "whsec_a"), Ok(NOW));
        // Within the tolerance, either way.
        assert_eq!(
            check(&header(NOW - 300, "whsec_a"), BODY, "whsec_a"),
            Ok(NOW - 300)
        );
        assert_eq!(
            check(&header(NOW + 300, "whsec_a"), BODY, "whsec_a"),
            Ok(NOW + 300)
        );
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused() {
        assert_eq!(
            check(&header(NOW - 301, "whsec_a"), BODY, "whsec_a"),
            Err(Refusal::Stale)
        );
        assert_eq!(
            check(&header(NOW + 301, "whsec_a"), BODY, "whsec_a"),
            Err(Refusal::Future)
        );
    }

    #[test]
    fn during_a_roll_either_signature_verifies_against_either_secret() {
        let rolled = format!(
            "t={NOW},v1={},v1={}",
            sign(BODY, "whsec_old", NOW),
            sign(BODY, "whsec_new", NOW)
        );
        assert_eq!(check(&rolled, BODY, "whsec_new"), Ok(NOW));
        assert_eq!(check(&rolled, BODY, "whsec_old"), Ok(NOW));
        assert_eq!(check(&rolled, BODY, "whsec_old,whsec_new"), Ok(NOW));
        // A server that has the new secret verifies an old-only header too.
        assert_eq!(
            check(&header(NOW, "whsec_old"), BODY, "whsec_new, whsec_old"),
            Ok(NOW)
        );
    }

    #[test]
    fn a_v0_signature_alone_is_no_signature() {
        let v0 = format!("t={NOW},v0={}", sign(BODY, "whsec_a", NOW));
        assert_eq!(check(&v0, BODY, "whsec_a"), Err(Refusal::NoSignature));
        // Beside a bad v1, a good v0 does not help.
        let mixed = format!(
            "t={NOW},v1={},v0={}",
            "00".repeat(32),
            sign(BODY, "whsec_a", NOW)
        );
        assert_eq!(check(&mixed, BODY, "whsec_a"), Err(Refusal::Mismatch));
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let tampered = br#"{"id":"evt_1","type":"payment_intent.succeeded" }"#;
        assert_eq!(
            check(&header(NOW, "whsec_a"), tampered, "whsec_a"),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn a_tampered_header_is_refused() {
        // The timestamp changed after signing.
        let sig = sign(BODY, "whsec_a", NOW);
        let moved = format!("t={},v1={sig}", NOW - 1);
        assert_eq!(check(&moved, BODY, "whsec_a"), Err(Refusal::Mismatch));
        // One hex digit of the signature changed.
        let mut flipped = sig.into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = format!("t={NOW},v1={}", String::from_utf8(flipped).expect("hex"));
        assert_eq!(check(&flipped, BODY, "whsec_a"), Err(Refusal::Mismatch));
        // No timestamp, or not a number.
        let sig = sign(BODY, "whsec_a", NOW);
        assert_eq!(
            check(&format!("v1={sig}"), BODY, "whsec_a"),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&format!("t=soon,v1={sig}"), BODY, "whsec_a"),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            verify(None, BODY, &secrets("whsec_a"), NOW, 300),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn an_unknown_secret_is_refused() {
        assert_eq!(
            check(&header(NOW, "whsec_other"), BODY, "whsec_a"),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(&header(NOW, "whsec_a"), BODY, ""),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = secrets("whsec_topsecret,whsec_other");
        assert_eq!(format!("{s:?}"), "Secrets(2 redacted)");
    }
}
