//! Secrets: from the environment in production; generated once and kept in
//! the data directory in development. Never a built-in constant.

use std::path::Path;

use anyhow::Context;

/// A secret key of at least 32 bytes.
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// `LECTERN_SECRET_KEY` (hex, at least 64 digits) if set; otherwise the key
    /// in `<data_dir>/secret-key`, created with 256 random bits on first use.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        if let Ok(hex_key) = std::env::var("LECTERN_SECRET_KEY") {
            let bytes = hex::decode(hex_key.trim()).context("LECTERN_SECRET_KEY must be hex")?;
            anyhow::ensure!(
                bytes.len() >= 32,
                "LECTERN_SECRET_KEY must hold at least 32 bytes (64 hex digits)"
            );
            return Ok(Self(bytes));
        }
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("secret-key");
        if !path.exists() {
            let key: [u8; 32] = rand::random();
            crate::embedded::write_private(&path, &hex::encode(key))?;
            tracing::warn!(path = %path.display(), "LECTERN_SECRET_KEY is not set: generated a development key");
        }
        let stored = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let bytes =
            hex::decode(stored.trim()).with_context(|| format!("{} is not hex", path.display()))?;
        anyhow::ensure!(
            bytes.len() >= 32,
            "{} holds fewer than 32 bytes",
            path.display()
        );
        Ok(Self(bytes))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}
