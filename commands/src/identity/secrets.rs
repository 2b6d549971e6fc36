//! Password hashing and opaque tokens.
//!
//! Passwords are hashed with Argon2id at OWASP's minimum (m = 19 MiB, t = 2,
//! p = 1) on the blocking pool, at most one hash per core at a time so a burst
//! of logins cannot exhaust memory. Refresh and reset tokens are 256 random
//! bits plus the ids needed to find their stream; only their SHA-256 is stored.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lectern_domain::identity::Password;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Argon2id memory cost in KiB (OWASP Password Storage Cheat Sheet minimum).
pub const ARGON2_M_KIB: u32 = 19_456;
/// Argon2id passes.
pub const ARGON2_T: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .expect("the OWASP parameters are valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and verifies passwords off the async runtime.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when no account exists,
    /// so an unknown email costs the same time as a wrong password.
    dummy: Arc<String>,
}

impl PasswordHasher {
    /// A hasher allowing one hash per available core at a time.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let random: [u8; 32] = rand::random();
        let dummy = hash_now(&hex::encode(random));
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            dummy: Arc::new(dummy),
        }
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &Password) -> String {
        let password = password.clone();
        self.blocking(move || hash_now(password.expose())).await
    }

    /// Whether `password` matches `phc`. A malformed stored hash never matches.
    pub async fn verify(&self, password: &Password, phc: &str) -> bool {
        let password = password.clone();
        let phc = phc.to_owned();
        self.blocking(move || verify_now(password.expose(), &phc))
            .await
    }

    /// Spend the time of one verification, for a login to no account.
    pub async fn verify_dummy(&self, password: &Password) {
        let dummy = Arc::clone(&self.dummy);
        let _ = self.verify(password, &dummy).await;
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the hasher's semaphore is never closed");
        tokio::task::spawn_blocking(f)
            .await
            .expect("password hashing does not panic")
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

fn hash_now(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing with valid parameters and a fresh salt succeeds")
        .to_string()
}

fn verify_now(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// SHA-256 of `s`, hex.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A fresh opaque token naming `ids`, and its hash. The token is
/// base64url(ids ‖ 32 random bytes): at least 256 bits of secret.
pub fn new_token(ids: &[Uuid]) -> (String, String) {
    let mut bytes = Vec::with_capacity(ids.len() * 16 + 32);
    for id in ids {
        bytes.extend_from_slice(id.as_bytes());
    }
    let secret: [u8; 32] = rand::random();
    bytes.extend_from_slice(&secret);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = sha256_hex(&token);
    (token, hash)
}

/// The ids a token names and its hash, or `None` for anything that is not a
/// token of this shape.
pub fn parse_token<const N: usize>(token: &str) -> Option<([Uuid; N], String)> {
    if token.len() > 256 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if bytes.len() != N * 16 + 32 {
        return None;
    }
    let mut ids = [Uuid::nil(); N];
    for (i, id) in ids.iter_mut().enumerate() {
        *id = Uuid::from_slice(&bytes[i * 16..(i + 1) * 16]).ok()?;
    }
    Some((ids, sha256_hex(token.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (token, hash) = new_token(&[a, b]);
        assert_eq!(parse_token::<2>(&token), Some(([a, b], hash)));
        assert_eq!(parse_token::<1>(&token), None);
        assert_eq!(parse_token::<2>("not a token"), None);
        assert_eq!(parse_token::<2>(""), None);
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_at_owasp_parameters() {
        let phc = hash_now("correct horse battery");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_now("correct horse battery", &phc));
        assert!(!verify_now("wrong horse battery", &phc));
        assert!(!verify_now("x", "not a hash"));
    }
}
