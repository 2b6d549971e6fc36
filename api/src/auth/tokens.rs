//! Access tokens: JWTs per RFC 9068 (`typ: at+jwt`) and RFC 8725.
//!
//! HS256 only (the allowlist has one entry); each key has a `kid`, and the
//! keyring's first key signs while every key in it verifies, so a new key can
//! take over while tokens signed by the old one live out their 15 minutes.
//! Keys come from `LECTERN_JWT_KEYS`, or in development are derived from the
//! secret key with HMAC (never used directly as an HS256 key).

use std::collections::HashMap;

use anyhow::Context;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lectern_domain::identity::Role;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

/// Access-token lifetime in seconds.
pub const ACCESS_TTL_SECS: i64 = 900;
/// Clock skew tolerated on `exp` and `nbf`, in seconds: servers in one
/// deployment run NTP, and a token is good for 15 minutes anyway.
pub const LEEWAY_SECS: u64 = 5;
/// The media type in the `typ` header (RFC 9068, without `application/`).
pub const TYP: &str = "at+jwt";
const ALGORITHM: Algorithm = Algorithm::HS256;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// The issuer.
    pub iss: String,
    /// The audience.
    pub aud: String,
    /// The user (subject).
    pub sub: Uuid,
    /// The session.
    pub sid: Uuid,
    /// The role.
    pub role: Role,
    /// The token id.
    pub jti: Uuid,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// The user's stream version when the token was issued: a later role
    /// change or deactivation outdates it.
    pub uv: u64,
    /// The user must change their password; the token allows nothing else.
    pub mcp: bool,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is malformed, forged, or not an access token.
    #[error("the token is malformed, forged, or not an access token")]
    Invalid,
}

struct Key {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Signing and verification keys, with the issuer and audience.
pub struct Keyring {
    signing_kid: String,
    /// The root of keys derived for other signatures (video URLs), from the
    /// signing secret.
    mac_root: Vec<u8>,
    keys: HashMap<String, Key>,
    validation: Validation,
    /// The `iss` of access tokens.
    pub issuer: String,
    /// The `aud` of access tokens.
    pub audience: String,
}

impl Keyring {
    /// A keyring from `(kid, secret)` pairs; the first signs.
    pub fn new(keys: Vec<(String, Vec<u8>)>, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let signing_kid = keys
            .first()
            .context("the keyring needs at least one key")?
            .0
            .clone();
        let mac_root = {
            let first = &keys
                .first()
                .context("the keyring needs at least one key")?
                .1;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(first).expect("HMAC takes keys of any length");
            mac.update(b"lectern derived signing keys v1");
            mac.finalize().into_bytes().to_vec()
        };
        let mut map = HashMap::new();
        for (kid, secret) in keys {
            anyhow::ensure!(
                secret.len() >= 32,
                "JWT key {kid} must hold at least 32 bytes"
            );
            anyhow::ensure!(
                !kid.is_empty()
                    && kid.len() <= 64
                    && kid
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "JWT key ids are 1-64 characters of [A-Za-z0-9-_.]"
            );
            map.insert(
                kid,
                Key {
                    encoding: EncodingKey::from_secret(&secret),
                    decoding: DecodingKey::from_secret(&secret),
                },
            );
        }
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            signing_kid,
            mac_root,
            keys: map,
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// Parse `LECTERN_JWT_KEYS`: `kid:hex,kid:hex`, the first signing.
    pub fn parse_keys(spec: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (kid, secret) = entry
                    .split_once(':')
                    .context("LECTERN_JWT_KEYS entries are kid:hex-secret")?;
                let secret = hex::decode(secret).context("a JWT key secret must be hex")?;
                Ok((kid.to_owned(), secret))
            })
            .collect()
    }

    /// One key derived from the server's secret key, for development.
    pub fn derived_key(secret: &[u8]) -> (String, Vec<u8>) {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"lectern access-token signing key v1");
        ("dev-1".to_owned(), mac.finalize().into_bytes().to_vec())
    }

    /// An HMAC-SHA256 of `data` (hex) under a key derived for `purpose`:
    /// signatures that are not access tokens (playback URLs, video session
    /// tokens) never share a key with them.
    pub fn mac(&self, purpose: &str, data: &str) -> String {
        let mut derive =
            Hmac::<Sha256>::new_from_slice(&self.mac_root).expect("HMAC takes keys of any length");
        derive.update(purpose.as_bytes());
        let key = derive.finalize().into_bytes();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(data.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` is [`Keyring::mac`] of `data` for `purpose`
    /// (compared in constant time).
    pub fn verify_mac(&self, purpose: &str, data: &str, signature: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.mac(purpose, data);
        expected.len() == signature.len()
            && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    }

    /// Sign `claims` with the current key.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        let mut header = Header::new(ALGORITHM);
        header.typ = Some(TYP.to_owned());
        header.kid = Some(self.signing_kid.clone());
        let key = &self.keys[&self.signing_kid].encoding;
        jsonwebtoken::encode(&header, claims, key)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Verify a token: a known `kid`, the allowed algorithm, `typ: at+jwt`,
    /// the signature, issuer, audience, and time claims (with
    /// [`LEEWAY_SECS`] of skew; a lifetime, `exp - iat`, of at most
    /// [`ACCESS_TTL_SECS`]; not issued in the future). Returns the claims and
    /// the id of the key that signed them.
    pub fn verify(&self, token: &str) -> Result<(AccessClaims, String), TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != ALGORITHM || header.typ.as_deref() != Some(TYP) {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = self.keys.get(&kid).ok_or(TokenError::Invalid)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        // A token that lives longer than this server issues, or was issued
        // in the future, was not issued by it as configured.
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY_SECS as i64;
        if claims.exp - claims.iat > ACCESS_TTL_SECS || claims.iat > now + leeway {
            return Err(TokenError::Invalid);
        }
        Ok((claims, kid))
    }
}
