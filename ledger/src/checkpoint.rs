//! Checkpoints: `origin\nsize\nbase64(root)\n` (C2SP tlog-checkpoint), signed
//! as a C2SP signed note with Ed25519.
//!
//! Keys use the note format of Go's `golang.org/x/mod/sumdb/note` (and of
//! `signed_note`): the signer key `PRIVATE+KEY+<name>+<id>+<base64>` and the
//! verifier key `<name>+<id>+<base64>`, where `<name>` is the log's origin and
//! `<id>` is `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`. An auditor keeps
//! the verifier key; any note tool can check Lectern's checkpoints with it.

use base64::prelude::{Engine, BASE64_STANDARD};
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::Hash;

/// What can go wrong with a key or a note.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// The signer key is not `PRIVATE+KEY+<name>+<id>+<base64>` with an
    /// Ed25519 key whose id matches.
    #[error("the ledger key is malformed (want PRIVATE+KEY+<name>+<id>+<base64>, as `lectern audit keygen` prints)")]
    BadSignerKey,
    /// The verifier key is not `<name>+<id>+<base64>`.
    #[error("the public key is malformed (want <name>+<id>+<base64>)")]
    BadVerifierKey,
    /// The origin cannot be a key name.
    #[error("the ledger origin must be non-empty, without spaces or '+'")]
    BadOrigin,
    /// No signature by the trusted key verifies.
    #[error("no valid signature by the trusted key")]
    BadSignature,
    /// The text is not a checkpoint.
    #[error("the note is not a checkpoint (origin, size, base64 root)")]
    NotACheckpoint,
    /// The note's origin is not the trusted key's name.
    #[error("the checkpoint's origin {0:?} is not the trusted key's name")]
    WrongOrigin(String),
}

/// The key that signs checkpoints.
pub struct LedgerKey {
    signer: StandardSigner,
    skey: String,
    vkey: String,
}

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKey")
            .field("public", &self.vkey)
            .finish_non_exhaustive()
    }
}

impl LedgerKey {
    /// A new random key named `origin`.
    pub fn generate(origin: &str) -> Result<Self, NoteError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(NoteError::BadOrigin);
        }
        let seed: [u8; 32] = rand::random();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let vkey = signed_note::new_ed25519_verifier_key(origin, &signing.verifying_key());
        let id = vkey
            .split('+')
            .nth(1)
            .expect("a verifier key has the form name+id+key")
            .to_owned();
        let mut private = vec![1u8];
        private.extend_from_slice(&seed);
        let skey = format!(
            "PRIVATE+KEY+{origin}+{id}+{}",
            BASE64_STANDARD.encode(private)
        );
        Self::parse(&skey)
    }

    /// A key from its signer-key text.
    pub fn parse(skey: &str) -> Result<Self, NoteError> {
        let skey = skey.trim();
        let signer = StandardSigner::new(skey).map_err(|_| NoteError::BadSignerKey)?;
        // The verifier key: the same name and id, the public half.
        let b64 = skey.splitn(5, '+').nth(4).ok_or(NoteError::BadSignerKey)?;
        let bytes = BASE64_STANDARD
            .decode(b64)
            .map_err(|_| NoteError::BadSignerKey)?;
        let seed: [u8; 32] = bytes
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or(NoteError::BadSignerKey)?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let vkey = signed_note::new_ed25519_verifier_key(signer.name(), &public);
        Ok(Self {
            signer,
            skey: skey.to_owned(),
            vkey,
        })
    }

    /// The origin (the key's name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The signer key's text, to keep in a secret store.
    pub fn private_text(&self) -> &str {
        &self.skey
    }

    /// The verifier key's text, to give to auditors.
    pub fn public_text(&self) -> &str {
        &self.vkey
    }

    /// The signed checkpoint note for a tree of `size` leaves with `root`.
    pub fn sign(&self, size: u64, root: Hash) -> String {
        let text = checkpoint_text(self.origin(), size, root);
        let mut note = Note::new(text.as_bytes(), &[]).expect("a checkpoint is a valid note text");
        note.add_sigs(&[&self.signer as &dyn Signer])
            .expect("an Ed25519 key signs");
        String::from_utf8(note.to_bytes()).expect("a note is UTF-8")
    }
}

/// The checkpoint body, `origin\nsize\nbase64(root)\n`.
pub fn checkpoint_text(origin: &str, size: u64, root: Hash) -> String {
    let cp = Checkpoint::new(origin, size, root, "").expect("a key name is a valid origin");
    String::from_utf8(cp.to_bytes()).expect("a checkpoint is UTF-8")
}

/// A checkpoint whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// The log's origin.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
}

/// The key that checks checkpoints.
pub struct TrustedKey {
    name: String,
    verifier: StandardVerifier,
}

impl TrustedKey {
    /// A verifier key from its text (`<name>+<id>+<base64>`).
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let vkey = vkey.trim();
        let verifier = StandardVerifier::new(vkey).map_err(|_| NoteError::BadVerifierKey)?;
        let name = vkey
            .split('+')
            .next()
            .ok_or(NoteError::BadVerifierKey)?
            .to_owned();
        Ok(Self { name, verifier })
    }

    /// Open a signed checkpoint: its signature by this key must verify, and its
    /// origin must be the key's name.
    pub fn open(&self, note: &str) -> Result<SignedCheckpoint, NoteError> {
        let parsed = Note::from_bytes(note.as_bytes()).map_err(|_| NoteError::BadSignature)?;
        let list = VerifierList::new(vec![Box::new(self.verifier.clone())]);
        parsed.verify(&list).map_err(|_| NoteError::BadSignature)?;
        let cp = Checkpoint::from_bytes(parsed.text()).map_err(|_| NoteError::NotACheckpoint)?;
        if cp.origin() != self.name {
            return Err(NoteError::WrongOrigin(cp.origin().to_owned()));
        }
        Ok(SignedCheckpoint {
            origin: cp.origin().to_owned(),
            size: cp.size(),
            root: *cp.hash(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_the_public_key_only() {
        let key = LedgerKey::generate("lectern.example/ledger").expect("valid");
        let root = tlog_tiles::record_hash(b"x");
        let note = key.sign(42, root);
        let (text, sig) = note.split_once("\n\n").expect("valid");
        assert_eq!(
            format!("{text}\n"),
            format!(
                "lectern.example/ledger\n42\n{}\n",
                BASE64_STANDARD.encode(root.0)
            )
        );
        assert!(sig.starts_with("— lectern.example/ledger "));
        let trusted = TrustedKey::parse(key.public_text()).expect("valid");
        let cp = trusted.open(&note).expect("valid");
        assert_eq!((cp.size, cp.root), (42, root));
        // The same key parsed back from its text signs the same way.
        let again = LedgerKey::parse(key.private_text()).expect("valid");
        assert_eq!(again.public_text(), key.public_text());
        assert!(trusted.open(&again.sign(43, root)).is_ok());
    }

    #[test]
    fn a_changed_size_or_another_key_fails() {
        let key = LedgerKey::generate("lectern.example/ledger").expect("valid");
        let trusted = TrustedKey::parse(key.public_text()).expect("valid");
        let note = key.sign(42, tlog_tiles::record_hash(b"x"));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            trusted.open(&forged),
            Err(NoteError::BadSignature)
        ));
        let other = LedgerKey::generate("lectern.example/ledger").expect("valid");
        let note = other.sign(42, tlog_tiles::record_hash(b"x"));
        assert!(matches!(trusted.open(&note), Err(NoteError::BadSignature)));
        assert!(LedgerKey::parse("PRIVATE+KEY+x+00000000+AAAA").is_err());
        assert!(LedgerKey::generate("two words").is_err());
    }
}
