//! `lectern audit …`: make a checkpoint key, export a bundle, verify one
//! (offline) or the database itself (`--online`). See docs/audit.md.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use lectern_ledger::bundle::{self, Line};
use lectern_ledger::verify::Report;
use lectern_ledger::{LedgerKey, SignedCheckpoint, TrustedKey};
use lectern_projections::ledger::export;
use sqlx::PgPool;

/// Print a new key: the private key on stdout, the public key on stderr
/// (and to `public_out`).
pub fn keygen(origin: &str, public_out: Option<&Path>) -> anyhow::Result<()> {
    let key = LedgerKey::generate(origin).context("--origin")?;
    if let Some(path) = public_out {
        std::fs::write(path, format!("{}\n", key.public_text()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", key.private_text());
    eprintln!("public key: {}", key.public_text());
    Ok(())
}

/// Write a bundle of the ledger from leaf `from` into `out`; what it wrote.
pub async fn export(pool: &PgPool, out: &Path, from: u64) -> anyhow::Result<export::Exported> {
    std::fs::create_dir_all(out.join(bundle::CHECKPOINTS_DIR))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let events_path = out.join(bundle::EVENTS_FILE);
    if events_path.exists() {
        bail!("{} already holds a bundle", out.display());
    }
    let file = std::fs::File::create(&events_path)
        .with_context(|| format!("cannot write {}", events_path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut conn = pool.acquire().await?;
    let mut tx = export::snapshot(&mut conn).await?;
    let exported = export::export(&mut tx, from, |line: Line<'_>| {
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n").map_err(serde_json::Error::io)
    })
    .await?;
    tx.commit().await?;
    w.flush()?;
    for (size, note) in &exported.checkpoints {
        std::fs::write(
            out.join(bundle::CHECKPOINTS_DIR)
                .join(bundle::checkpoint_file(*size)),
            note,
        )?;
    }
    let keys: String = exported
        .public_keys
        .iter()
        .map(|k| format!("{k}\n"))
        .collect();
    std::fs::write(out.join(bundle::PUBKEY_FILE), keys)?;
    if let Some(prefix) = &exported.prefix {
        std::fs::write(
            out.join(bundle::PREFIX_FILE),
            serde_json::to_string_pretty(prefix)?,
        )?;
    }
    Ok(exported)
}

fn trusted_key(path: &Path) -> anyhow::Result<TrustedKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    TrustedKey::parse(first).with_context(|| path.display().to_string())
}

fn trusted_checkpoint(
    key: &TrustedKey,
    path: Option<&Path>,
) -> anyhow::Result<Option<SignedCheckpoint>> {
    let Some(path) = path else { return Ok(None) };
    let note =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cp = key.open(&note).with_context(|| {
        format!(
            "the trusted checkpoint {} does not verify with the public key",
            path.display()
        )
    })?;
    Ok(Some(cp))
}

/// Verify a bundle; print the outcome. The exit status: 0, or the first
/// finding's.
pub fn verify_bundle(dir: &Path, pubkey: &Path, trusted: Option<&Path>) -> anyhow::Result<u8> {
    let key = trusted_key(pubkey)?;
    let trusted = trusted_checkpoint(&key, trusted)?;
    let started = std::time::Instant::now();
    let report = lectern_ledger::verify::verify_bundle(dir, &key, trusted.as_ref())?;
    Ok(print_report(&report, trusted.as_ref(), started.elapsed()))
}

/// Verify the database against its checkpoints, with `pubkey` or, without
/// it, the keys the database records.
pub async fn verify_online(
    pool: &PgPool,
    pubkey: Option<&Path>,
    trusted: Option<&Path>,
) -> anyhow::Result<u8> {
    let mut conn = pool.acquire().await?;
    let key = match pubkey {
        Some(path) => trusted_key(path)?,
        None => {
            let keys = lectern_projections::ledger::public_keys(&mut *conn).await?;
            let Some(newest) = keys.last() else {
                bail!("the database records no ledger key yet; pass --pubkey");
            };
            eprintln!(
                "note: verifying with the key the database records ({newest}); pass --pubkey to use your own copy"
            );
            TrustedKey::parse(newest)?
        }
    };
    let trusted = trusted_checkpoint(&key, trusted)?;
    let started = std::time::Instant::now();
    let mut tx = export::snapshot(&mut conn).await?;
    let report = export::verify(&mut tx, &key, trusted.as_ref()).await?;
    tx.commit().await?;
    Ok(print_report(&report, trusted.as_ref(), started.elapsed()))
}

/// Print a report: one line when everything verifies, each finding when not.
fn print_report(
    report: &Report,
    trusted: Option<&SignedCheckpoint>,
    took: std::time::Duration,
) -> u8 {
    let rate = report.lines as f64 / took.as_secs_f64().max(1e-9);
    if report.ok() {
        let latest = report
            .latest
            .as_ref()
            .map(|c| {
                format!(
                    "{} (size {}, root {})",
                    c.origin,
                    c.size,
                    hex::encode(c.root.0)
                )
            })
            .unwrap_or_else(|| "none".to_owned());
        println!(
            "verified: {} sealed events, {} checkpoints (latest {latest}){}{} in {:.2} s ({rate:.0} events/s)",
            report.sealed,
            report.checkpoints,
            trusted
                .map(|t| format!(", consistent with the trusted checkpoint of size {}", t.size))
                .unwrap_or_default(),
            if report.unsealed_tail > 0 {
                format!("; {} newer events not sealed yet", report.unsealed_tail)
            } else {
                String::new()
            },
            took.as_secs_f64(),
        );
        return 0;
    }
    eprintln!(
        "TAMPERED: {} finding(s){}",
        report.findings.len() as u64 + report.more_findings,
        if report.more_findings > 0 {
            format!(" ({} not listed)", report.more_findings)
        } else {
            String::new()
        }
    );
    for f in &report.findings {
        eprintln!("{f}");
    }
    report.findings[0].exit_code()
}
