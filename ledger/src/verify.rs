//! The offline verifier: no database, no network, no trust in the server.
//!
//! Given a bundle's lines in file order, its checkpoints and the auditor's
//! own copy of the public key (and, optionally, a checkpoint the auditor kept
//! from before), it
//! 1. checks every checkpoint's signature;
//! 2. recomputes every leaf from its envelope and every checkpoint's root;
//! 3. checks that the sequence numbers are dense and in feed order;
//! 4. checks that the log extends the trusted checkpoint.
//!
//! Each kind of tampering has its own [`Finding`]. The leaf and the roots are
//! the proof; what the sealer recorded beside each leaf (the digests of the
//! payload and metadata, the position) only says *what* changed.

use std::fmt;
use std::io::BufRead;
use std::path::Path;

use crate::bundle::{self, Line, Prefix, Sealed};
use crate::checkpoint::{SignedCheckpoint, TrustedKey};
use crate::envelope::text_hash;
use crate::tree::MemoryTree;
use crate::Hash;

/// One way the bundle disagrees with what was sealed and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A sealed event's payload changed.
    PayloadEdited {
        /// The leaf index.
        seq: u64,
        /// The event id.
        event_id: String,
    },
    /// A sealed event's metadata changed.
    MetadataEdited {
        /// The leaf index.
        seq: u64,
        /// The event id.
        event_id: String,
    },
    /// Another column of a sealed event changed.
    FieldEdited {
        /// The leaf index.
        seq: u64,
        /// The event id.
        event_id: String,
    },
    /// An event sits before sealed events but is not in the ledger.
    Inserted {
        /// Its position, `<transaction>.<global position>`.
        position: String,
        /// The event id.
        event_id: String,
    },
    /// A sealed event is gone from the log, and events after it remain.
    Deleted {
        /// The leaf index.
        seq: u64,
        /// The position it was sealed at.
        position: String,
    },
    /// Leaves appear out of their order.
    Reordered {
        /// The leaf index found.
        seq: u64,
        /// The leaf index that belongs here.
        expected: u64,
    },
    /// The log ends before what a checkpoint (or the trusted one) covers.
    Truncated {
        /// Sealed events present.
        present: u64,
        /// Events the checkpoint covers.
        covered: u64,
    },
    /// A checkpoint's signature does not verify with the trusted key.
    BadSignature {
        /// Which checkpoint.
        name: String,
        /// Why.
        reason: String,
    },
    /// The events hash to another root than a signed checkpoint's, while
    /// every leaf matches what was recorded: the ledger itself was rewritten.
    RootMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// The log is not an extension of the trusted checkpoint.
    InconsistentWithTrusted {
        /// The trusted checkpoint's size.
        size: u64,
    },
    /// A line of the bundle is not valid.
    Malformed {
        /// The line number (from 1).
        line: u64,
        /// Why.
        reason: String,
    },
}

impl Finding {
    /// A stable name for the kind of finding.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PayloadEdited { .. } => "payload-edited",
            Self::MetadataEdited { .. } => "metadata-edited",
            Self::FieldEdited { .. } => "field-edited",
            Self::Inserted { .. } => "inserted",
            Self::Deleted { .. } => "deleted",
            Self::Reordered { .. } => "reordered",
            Self::Truncated { .. } => "truncated",
            Self::BadSignature { .. } => "bad-signature",
            Self::RootMismatch { .. } => "root-mismatch",
            Self::InconsistentWithTrusted { .. } => "inconsistent-with-trusted",
            Self::Malformed { .. } => "malformed",
        }
    }

    /// The process exit status for this kind (`lectern audit verify`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::PayloadEdited { .. } => 10,
            Self::MetadataEdited { .. } => 11,
            Self::FieldEdited { .. } => 12,
            Self::Inserted { .. } => 13,
            Self::Deleted { .. } => 14,
            Self::Reordered { .. } => 15,
            Self::Truncated { .. } => 16,
            Self::BadSignature { .. } => 17,
            Self::RootMismatch { .. } => 18,
            Self::InconsistentWithTrusted { .. } => 19,
            Self::Malformed { .. } => 20,
        }
    }

    /// Whether the finding is about one event (rather than the tree).
    fn is_event_level(&self) -> bool {
        !matches!(
            self,
            Self::BadSignature { .. }
                | Self::RootMismatch { .. }
                | Self::InconsistentWithTrusted { .. }
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind();
        match self {
            Self::PayloadEdited { seq, event_id } => write!(
                f,
                "{kind}: seq {seq} (event {event_id}): the payload differs from what was sealed"
            ),
            Self::MetadataEdited { seq, event_id } => write!(
                f,
                "{kind}: seq {seq} (event {event_id}): the metadata differs from what was sealed"
            ),
            Self::FieldEdited { seq, event_id } => write!(
                f,
                "{kind}: seq {seq} (event {event_id}): a column other than the payload and the metadata differs from what was sealed"
            ),
            Self::Inserted { position, event_id } => write!(
                f,
                "{kind}: event {event_id} at position {position} lies before sealed events but is not in the ledger: it was inserted after sealing"
            ),
            Self::Deleted { seq, position } => write!(
                f,
                "{kind}: seq {seq} (position {position}) was sealed but its event is missing from the log, and later events remain"
            ),
            Self::Reordered { seq, expected } => write!(
                f,
                "{kind}: seq {seq} appears where seq {expected} belongs: events are out of their sealed order"
            ),
            Self::Truncated { present, covered } => write!(
                f,
                "{kind}: the log holds {present} sealed events but a signed checkpoint covers {covered}: its tail was removed"
            ),
            Self::BadSignature { name, reason } => write!(
                f,
                "{kind}: checkpoint {name}: {reason}"
            ),
            Self::RootMismatch { size } => write!(
                f,
                "{kind}: the events do not hash to the signed root of the checkpoint of size {size}, though each matches its recorded leaf: the ledger tables were rewritten"
            ),
            Self::InconsistentWithTrusted { size } => write!(
                f,
                "{kind}: the first {size} events do not hash to the trusted checkpoint's root: this log is not an extension of the one the trusted checkpoint signed"
            ),
            Self::Malformed { line, reason } => write!(f, "{kind}: line {line}: {reason}"),
        }
    }
}

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines read.
    pub lines: u64,
    /// Sealed events verified (leaves in the tree).
    pub sealed: u64,
    /// Events after the last sealed one, not yet sealed (not a finding).
    pub unsealed_tail: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// The largest checkpoint whose signature verified.
    pub latest: Option<SignedCheckpoint>,
    /// Everything wrong, in the order found (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// Findings beyond those listed.
    pub more_findings: u64,
}

/// Findings kept in a report; the rest are counted.
pub const MAX_FINDINGS: usize = 100;

impl Report {
    /// Whether nothing was found.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        } else {
            self.more_findings += 1;
        }
    }
}

/// Verifies a bundle fed line by line.
pub struct Verifier {
    tree: MemoryTree,
    next_seq: u64,
    last_position: Option<(u64, i64)>,
    /// Unsealed events seen since the last sealed one: position, event id.
    unsealed: Vec<((u64, i64), uuid::Uuid)>,
    /// Leaves without events seen since the last event: seq, position.
    missing: Vec<(u64, (u64, i64))>,
    line: u64,
    buf: Vec<u8>,
    report: Report,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(MemoryTree::new())
    }
}

impl Verifier {
    /// A verifier over `tree` (empty, or a partial bundle's prefix).
    pub fn new(tree: MemoryTree) -> Self {
        Self {
            next_seq: tree.size(),
            tree,
            last_position: None,
            unsealed: Vec::new(),
            missing: Vec::new(),
            line: 0,
            buf: Vec::with_capacity(4096),
            report: Report::default(),
        }
    }

    /// Feed one line of `events.jsonl`.
    pub fn push_text(&mut self, text: &str) {
        let facts = LineFacts::of_text(text, &mut self.buf);
        self.push_facts(facts);
    }

    /// Feed one parsed line.
    pub fn push(&mut self, line: Line<'_>) {
        let facts = LineFacts::of(&line, &mut self.buf);
        self.push_facts(facts);
    }

    /// Feed what the next line says (see [`LineFacts`]).
    pub fn push_facts(&mut self, facts: LineFacts) {
        self.line += 1;
        let line_no = self.line;
        let malformed = |reason: String| Finding::Malformed {
            line: line_no,
            reason,
        };
        let LineFacts::Line {
            seq,
            position,
            event,
            sealed,
        } = facts
        else {
            if let LineFacts::Malformed(reason) = facts {
                self.report.add(malformed(reason));
            }
            return;
        };
        self.report.lines += 1;
        // Feed order: the exporter writes lines by position; an exporter that
        // does not is caught here.
        if self.last_position.is_some_and(|last| position <= last) {
            self.report.add(malformed(format!(
                "position {}.{} is not after the previous line's",
                position.0, position.1
            )));
        }
        self.last_position = Some(position);

        match (seq, event, sealed) {
            (None, Some(e), _) => self.unsealed.push((position, e.event_id)),
            (Some(seq), None, Some(sealed)) => {
                self.check_order(seq);
                self.missing.push((seq, position));
                // The leaf as recorded keeps the tree's shape, so the roots
                // do not add findings about what `Deleted` already says.
                self.append(sealed.leaf);
            }
            (Some(seq), Some(e), Some(_)) => {
                self.flush_gaps();
                let in_order = self.check_order(seq);
                if in_order {
                    let event_id = e.event_id.to_string();
                    match e.differs {
                        Differs::Nothing => {}
                        Differs::Payload => {
                            self.report.add(Finding::PayloadEdited { seq, event_id })
                        }
                        Differs::Metadata => {
                            self.report.add(Finding::MetadataEdited { seq, event_id })
                        }
                        Differs::Other => self.report.add(Finding::FieldEdited { seq, event_id }),
                    }
                }
                self.append(e.leaf);
            }
            (Some(_), _, None) => {
                self.report.add(malformed(
                    "a sequence number without the sealed record".into(),
                ));
            }
            (None, None, _) => self
                .report
                .add(malformed("neither an event nor a sealed leaf".into())),
        }
    }

    /// Whether `seq` is the next leaf; a finding if not.
    fn check_order(&mut self, seq: u64) -> bool {
        let expected = self.next_seq;
        self.next_seq += 1;
        if seq == expected {
            return true;
        }
        self.report.add(Finding::Reordered { seq, expected });
        false
    }

    fn append(&mut self, leaf: Hash) {
        self.tree.append(leaf);
        self.report.sealed += 1;
    }

    /// An event line follows: the unsealed events and the missing ones seen
    /// since the last event are not a tail.
    fn flush_gaps(&mut self) {
        let text = |(t, g): (u64, i64)| format!("{t}.{g}");
        for (position, event_id) in self.unsealed.drain(..) {
            self.report.add(Finding::Inserted {
                position: text(position),
                event_id: event_id.to_string(),
            });
        }
        for (seq, position) in self.missing.drain(..) {
            self.report.add(Finding::Deleted {
                seq,
                position: text(position),
            });
        }
    }

    /// Finish with the bundle's checkpoints (name and note text) and the
    /// auditor's key and trusted checkpoint.
    pub fn finish(
        mut self,
        checkpoints: &[(String, String)],
        key: &TrustedKey,
        trusted: Option<&SignedCheckpoint>,
    ) -> Report {
        // Unsealed events at the end are simply not sealed yet.
        self.report.unsealed_tail = self.unsealed.len() as u64;
        let present = self.tree.size() - self.missing.len() as u64;
        let truncated_tail = !self.missing.is_empty();

        let mut opened = Vec::new();
        for (name, note) in checkpoints {
            match key.open(note) {
                Ok(cp) => opened.push(cp),
                Err(e) => self.report.add(Finding::BadSignature {
                    name: name.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        self.report.checkpoints = opened.len() as u64;
        let covered = opened
            .iter()
            .map(|c| c.size)
            .chain(trusted.map(|t| t.size))
            .max()
            .unwrap_or(0);
        if truncated_tail || covered > self.tree.size() {
            self.report.add(Finding::Truncated {
                present,
                covered: covered.max(self.tree.size()),
            });
        }
        let explained = self.report.findings.iter().any(Finding::is_event_level);
        if !explained {
            for cp in &opened {
                if self.tree.root_at(cp.size).is_some_and(|r| r != cp.root) {
                    self.report.add(Finding::RootMismatch { size: cp.size });
                }
            }
            if let Some(t) = trusted {
                match self.tree.root_at(t.size) {
                    Some(r) if r == t.root => {}
                    Some(_) => self
                        .report
                        .add(Finding::InconsistentWithTrusted { size: t.size }),
                    // Inside a partial bundle's prefix: it cannot be checked.
                    None if t.size <= self.tree.size() => self.report.add(Finding::Malformed {
                        line: 0,
                        reason: format!(
                            "the bundle starts after the trusted checkpoint (size {}); export with --from {} or lower",
                            t.size, t.size
                        ),
                    }),
                    None => {}
                }
            }
        }
        self.report.latest = opened.into_iter().max_by_key(|c| c.size);
        self.report
    }
}

/// Why a bundle could not be read at all (as opposed to a finding in it).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// `prefix.json` is not valid.
    #[error("{path}: {reason}")]
    Prefix {
        /// Which file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Lines per batch handed to a worker.
const BATCH: usize = 2048;

/// Read `file`'s lines on one thread, work out their facts on the others
/// (parsing and hashing are nearly all of the work), and feed them to `v` in
/// file order.
fn examine_in_parallel(file: std::fs::File, v: &mut Verifier) -> std::io::Result<()> {
    use std::sync::mpsc::sync_channel;
    use std::sync::{Arc, Mutex};

    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let (work_tx, work_rx) = sync_channel::<(u64, Vec<String>)>(workers * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(u64, Vec<LineFacts>)>(workers * 2);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> std::io::Result<()> {
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
            let (mut batch, mut n) = (Vec::with_capacity(BATCH), 0u64);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    break;
                }
                if line.trim().is_empty() {
                    continue;
                }
                batch.push(line);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if work_tx.send((n, full)).is_err() {
                        return Ok(());
                    }
                    n += 1;
                }
            }
            if !batch.is_empty() {
                let _ = work_tx.send((n, batch));
            }
            Ok(())
        });
        for _ in 0..workers {
            let (rx, tx) = (Arc::clone(&work_rx), done_tx.clone());
            scope.spawn(move || {
                let mut buf = Vec::with_capacity(4096);
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((n, lines)) = job else { return };
                    let facts = lines
                        .iter()
                        .map(|l| LineFacts::of_text(l.trim_end_matches(['\n', '\r']), &mut buf))
                        .collect();
                    if tx.send((n, facts)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        // Batches finish out of order; feed them in order.
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        for (n, facts) in done_rx {
            pending.insert(n, facts);
            while let Some(facts) = pending.remove(&next) {
                for f in facts {
                    v.push_facts(f);
                }
                next += 1;
            }
        }
        reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the bundle reader panicked")))
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The checkpoints of a bundle: (file name, note text), by file name.
pub fn read_checkpoints(dir: &Path) -> Result<Vec<(String, String)>, BundleError> {
    let cps = dir.join(bundle::CHECKPOINTS_DIR);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&cps) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_error(&cps)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_error(&cps))?.path();
        if path.extension().is_some_and(|x| x == "note") {
            let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, text));
        }
    }
    out.sort();
    Ok(out)
}

/// Verify the bundle in `dir` with the auditor's `key`, and their `trusted`
/// checkpoint if they kept one. Reads only files.
pub fn verify_bundle(
    dir: &Path,
    key: &TrustedKey,
    trusted: Option<&SignedCheckpoint>,
) -> Result<Report, BundleError> {
    let prefix_path = dir.join(bundle::PREFIX_FILE);
    let tree = match std::fs::read_to_string(&prefix_path) {
        Ok(text) => {
            let bad = |reason: String| BundleError::Prefix {
                path: prefix_path.display().to_string(),
                reason,
            };
            let p: Prefix = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            MemoryTree::after_prefix(p.size, &p.peaks).map_err(|e| bad(e.to_string()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => MemoryTree::new(),
        Err(e) => return Err(io_error(&prefix_path)(e)),
    };
    let mut v = Verifier::new(tree);
    let events = dir.join(bundle::EVENTS_FILE);
    let file = std::fs::File::open(&events).map_err(io_error(&events))?;
    examine_in_parallel(file, &mut v).map_err(io_error(&events))?;
    let checkpoints = read_checkpoints(dir)?;
    Ok(v.finish(&checkpoints, key, trusted))
}

/// What one line of a bundle says, worked out without the other lines (so
/// lines can be examined in parallel): its position, and for an event its
/// recomputed leaf and which part, if any, differs from what was sealed.
#[derive(Debug, Clone)]
pub enum LineFacts {
    /// A line that is not a bundle line.
    Malformed(String),
    /// A bundle line.
    Line {
        /// Its sequence number, if sealed.
        seq: Option<u64>,
        /// The event's position, or the sealed one when the event is gone.
        position: (u64, i64),
        /// The event, if present.
        event: Option<EventFacts>,
        /// What was sealed, if anything.
        sealed: Option<Sealed>,
    },
}

/// An event's recomputed leaf, against what was sealed.
#[derive(Debug, Clone)]
pub struct EventFacts {
    /// The event id.
    pub event_id: uuid::Uuid,
    /// The leaf recomputed from the envelope.
    pub leaf: Hash,
    /// Which part differs from what was sealed.
    pub differs: Differs,
}

/// Which part of a sealed event differs from what was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Differs {
    /// The leaf matches (or nothing was sealed).
    Nothing,
    /// The payload.
    Payload,
    /// The metadata.
    Metadata,
    /// Another column.
    Other,
}

impl LineFacts {
    /// The facts of a line of text.
    pub fn of_text(text: &str, buf: &mut Vec<u8>) -> Self {
        match serde_json::from_str::<Line<'_>>(text) {
            Ok(line) => Self::of(&line, buf),
            Err(e) => Self::Malformed(e.to_string()),
        }
    }

    /// The facts of a parsed line; `buf` is scratch space for the envelope.
    pub fn of(line: &Line<'_>, buf: &mut Vec<u8>) -> Self {
        let position = match (&line.event, &line.sealed) {
            (Some(e), _) => (e.transaction_id, e.global_position),
            (None, Some(s)) => (s.transaction_id, s.global_position),
            (None, None) => return Self::Malformed("neither an event nor a sealed leaf".into()),
        };
        let event = line.event.as_ref().map(|e| {
            let leaf = e.leaf_hash_with(buf);
            let differs = match &line.sealed {
                Some(s) if s.leaf != leaf => {
                    if text_hash(&e.payload) != s.payload {
                        Differs::Payload
                    } else if text_hash(&e.metadata) != s.metadata {
                        Differs::Metadata
                    } else {
                        Differs::Other
                    }
                }
                _ => Differs::Nothing,
            };
            EventFacts {
                event_id: e.event_id,
                leaf,
                differs,
            }
        });
        Self::Line {
            seq: line.seq,
            position,
            event,
            sealed: line.sealed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use uuid::Uuid;

    use super::*;
    use crate::checkpoint::LedgerKey;
    use crate::Envelope;

    fn event(n: i64) -> Envelope<'static> {
        Envelope {
            global_position: n,
            transaction_id: 100 + n as u64,
            event_id: Uuid::from_u128(n as u128),
            aggregate_type: "Lesson".into(),
            aggregate_id: "l".into(),
            sequence: n,
            event_type: "Happened".into(),
            event_version: "1".into(),
            recorded_at_us: n,
            payload: Cow::Owned(format!("{{\"n\": {n}}}")),
            metadata: "{}".into(),
        }
    }

    /// A pristine bundle of `n` events with checkpoints at `cps`.
    fn bundle(n: i64, cps: &[u64], key: &LedgerKey) -> (Vec<Line<'static>>, Vec<(String, String)>) {
        let mut tree = MemoryTree::new();
        let lines: Vec<Line<'static>> = (1..=n)
            .map(|i| {
                let e = event(i);
                let leaf = e.leaf_hash();
                tree.append(leaf);
                let (payload, metadata) = e.part_hashes();
                Line {
                    seq: Some(i as u64 - 1),
                    sealed: Some(Sealed {
                        transaction_id: e.transaction_id,
                        global_position: e.global_position,
                        leaf,
                        payload,
                        metadata,
                    }),
                    event: Some(e),
                }
            })
            .collect();
        let notes = cps
            .iter()
            .map(|&s| (format!("{s}"), key.sign(s, tree.root_at(s).expect("valid"))))
            .collect();
        (lines, notes)
    }

    fn run(
        lines: Vec<Line<'_>>,
        notes: &[(String, String)],
        key: &LedgerKey,
        trusted: Option<&str>,
    ) -> Report {
        let tk = TrustedKey::parse(key.public_text()).expect("valid");
        let trusted = trusted.map(|t| tk.open(t).expect("valid"));
        let mut v = Verifier::default();
        for l in lines {
            // Through the text form, as from a file.
            v.push_text(&serde_json::to_string(&l).expect("valid"));
        }
        v.finish(notes, &tk, trusted.as_ref())
    }

    fn kinds(r: &Report) -> Vec<&'static str> {
        r.findings.iter().map(Finding::kind).collect()
    }

    #[test]
    fn a_pristine_bundle_verifies() {
        let key = LedgerKey::generate("t/ledger").expect("valid");
        let (lines, notes) = bundle(20, &[5, 16, 20], &key);
        let trusted = notes[0].1.clone();
        let r = run(lines, &notes, &key, Some(&trusted));
        assert!(r.ok(), "{:?}", r.findings);
        assert_eq!((r.sealed, r.checkpoints), (20, 3));
        assert_eq!(r.latest.expect("valid").size, 20);
    }

    #[test]
    fn each_tampering_has_its_own_finding() {
        let key = LedgerKey::generate("t/ledger").expect("valid");
        let (lines, notes) = bundle(20, &[10, 20], &key);

        let mut l = lines.clone();
        l[3].event.as_mut().expect("valid").payload = "{\"n\": 40}".into();
        assert_eq!(kinds(&run(l, &notes, &key, None)), ["payload-edited"]);

        let mut l = lines.clone();
        l[3].event.as_mut().expect("valid").metadata = "{\"x\": 1}".into();
        assert_eq!(kinds(&run(l, &notes, &key, None)), ["metadata-edited"]);

        let mut l = lines.clone();
        l[3].event.as_mut().expect("valid").aggregate_id = "other".into();
        assert_eq!(kinds(&run(l, &notes, &key, None)), ["field-edited"]);

        let mut l = lines.clone();
        let mut extra = event(100);
        extra.transaction_id = 104;
        extra.global_position = 50;
        l.insert(
            4,
            Line {
                seq: None,
                event: Some(extra),
                sealed: None,
            },
        );
        assert_eq!(kinds(&run(l, &notes, &key, None)), ["inserted"]);

        let mut l = lines.clone();
        l[5].event = None;
        assert_eq!(kinds(&run(l, &notes, &key, None)), ["deleted"]);

        // Two events' transactions swapped: each now sorts where the other was.
        let mut l = lines.clone();
        l.swap(2, 7);
        let (a, b) = (
            l[2].event.clone().expect("valid"),
            l[7].event.clone().expect("valid"),
        );
        l[2].event.as_mut().expect("valid").transaction_id = b.transaction_id;
        l[2].event.as_mut().expect("valid").global_position = b.global_position;
        l[7].event.as_mut().expect("valid").transaction_id = a.transaction_id;
        l[7].event.as_mut().expect("valid").global_position = a.global_position;
        assert_eq!(
            kinds(&run(l, &notes, &key, None)),
            ["reordered", "reordered"]
        );

        // The tail's events gone (leaves kept), or everything of it gone.
        let mut l = lines.clone();
        for x in &mut l[17..] {
            x.event = None;
        }
        assert_eq!(kinds(&run(l, &notes, &key, None)), ["truncated"]);
        let l = lines[..15].to_vec();
        assert_eq!(
            kinds(&run(l, &notes[..1], &key, Some(&notes[1].1))),
            ["truncated"]
        );

        let mut bad = notes.clone();
        bad[1].1 = bad[1].1.replacen("\n20\n", "\n21\n", 1);
        assert_eq!(
            kinds(&run(lines.clone(), &bad, &key, None)),
            ["bad-signature"]
        );

        // The leaves recorded along with the edit: only the roots tell.
        let mut l = lines.clone();
        l[3].event.as_mut().expect("valid").payload = "{\"n\": 40}".into();
        let e = l[3].event.clone().expect("valid");
        let (p, m) = e.part_hashes();
        let s = l[3].sealed.as_mut().expect("valid");
        (s.leaf, s.payload, s.metadata) = (e.leaf_hash(), p, m);
        assert_eq!(
            kinds(&run(l, &notes, &key, None)),
            ["root-mismatch", "root-mismatch"]
        );

        // A trusted checkpoint of another history, signed by the same key.
        let fork = key.sign(10, tlog_tiles::record_hash(b"another history"));
        assert_eq!(
            kinds(&run(lines.clone(), &notes, &key, Some(&fork))),
            ["inconsistent-with-trusted"]
        );
    }
}
