//! The RFC 6962 tree, stored as Go's `sumdb/tlog` stores it: every leaf adds
//! its "stored hashes" (the leaf and the roots of the complete subtrees it
//! closes) at consecutive indexes, so the store is append-only. The hashing
//! and the proofs are `tlog_tiles`'s; this module only keeps hashes.
//!
//! - [`Frontier`]: the sealer's state, the roots of the complete subtrees of
//!   the tree so far (at most 64), enough to append and to compute the root.
//! - [`MemoryTree`]: every stored hash, for the offline verifier.
//! - [`needed`] and [`MapReader`]: `tlog_tiles` reads hashes through a
//!   synchronous trait; a database reader first asks which indexes an
//!   operation reads (they depend only on the sizes), fetches them, then runs
//!   it over the fetched map.

use std::cell::RefCell;
use std::collections::HashMap;

pub use tlog_tiles::{prove_record, prove_tree, HashReader};
use tlog_tiles::{stored_hash_index, stored_hashes_for_record_hash, sub_tree_index, tree_hash};

use crate::Hash;

/// A `tlog_tiles` error.
pub type TreeError = tlog_tiles::tlog::Error;

/// The stored-hash indexes of the roots of the complete subtrees that make up
/// a tree of `size` leaves (its "peaks"), in the order `tree_hash` reads them.
pub fn peak_indexes(size: u64) -> Vec<u64> {
    if size == 0 {
        return Vec::new();
    }
    sub_tree_index(0, size, Vec::new())
}

/// The first stored-hash index written by leaf `n`.
pub fn first_stored_index(n: u64) -> u64 {
    stored_hash_index(0, n)
}

/// The append-only state of the sealer: the tree's size and its peaks.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    peaks: HashMap<u64, Hash>,
}

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TreeError> {
        indexes
            .iter()
            .map(|i| {
                self.peaks
                    .get(i)
                    .copied()
                    .ok_or(TreeError::IndexesNotInTree)
            })
            .collect()
    }
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of `size` leaves from its peaks (the hashes at
    /// [`peak_indexes`]`(size)`, in that order).
    pub fn from_peaks(size: u64, peaks: &[Hash]) -> Result<Self, TreeError> {
        let indexes = peak_indexes(size);
        if indexes.len() != peaks.len() {
            return Err(TreeError::InvalidInput(format!(
                "a tree of {size} leaves has {} peaks, not {}",
                indexes.len(),
                peaks.len()
            )));
        }
        Ok(Self {
            size,
            peaks: indexes.into_iter().zip(peaks.iter().copied()).collect(),
        })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf; returns the hashes to store from
    /// [`first_stored_index`]`(old size)` on.
    pub fn append(&mut self, leaf: Hash) -> Vec<Hash> {
        let n = self.size;
        let hashes = stored_hashes_for_record_hash(n, leaf, self)
            .expect("the frontier holds every hash an append reads");
        // The hashes it read are now inside a larger complete subtree.
        let closed = (n + 1).trailing_zeros();
        for level in 0..closed {
            self.peaks
                .remove(&stored_hash_index(level as u8, (n >> level) - 1));
        }
        let top = *hashes.last().expect("an append stores the leaf at least");
        self.peaks
            .insert(stored_hash_index(closed as u8, n >> closed), top);
        self.size = n + 1;
        hashes
    }

    /// The root hash of the tree (RFC 6962 MTH).
    pub fn root(&self) -> Hash {
        tree_hash(self.size, self).expect("the frontier holds every peak")
    }
}

/// Every stored hash of a tree, in memory, optionally after a prefix known
/// only by its peaks (a bundle exported from a sequence number on).
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    size: u64,
    start: u64,
    base: u64,
    prefix: HashMap<u64, Hash>,
    stored: Vec<Hash>,
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TreeError> {
        indexes
            .iter()
            .map(|&i| {
                if i >= self.base {
                    usize::try_from(i - self.base)
                        .ok()
                        .and_then(|k| self.stored.get(k))
                        .copied()
                        .ok_or(TreeError::IndexesNotInTree)
                } else {
                    self.prefix
                        .get(&i)
                        .copied()
                        .ok_or(TreeError::IndexesNotInTree)
                }
            })
            .collect()
    }
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree whose first `size` leaves are known only by their peaks.
    pub fn after_prefix(size: u64, peaks: &[Hash]) -> Result<Self, TreeError> {
        let f = Frontier::from_peaks(size, peaks)?;
        Ok(Self {
            size,
            start: size,
            base: first_stored_index(size),
            prefix: f.peaks,
            stored: Vec::new(),
        })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first leaf held whole (0 unless the tree starts after a prefix).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Append a leaf.
    pub fn append(&mut self, leaf: Hash) {
        let hashes = stored_hashes_for_record_hash(self.size, leaf, self)
            .expect("a memory tree holds every hash an append reads");
        self.stored.extend(hashes);
        self.size += 1;
    }

    /// The root hash of the first `size` leaves; `None` beyond the tree or
    /// inside the prefix (other than at its end).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        if size > self.size || (size < self.start && size != 0) {
            return None;
        }
        tree_hash(size, self).ok()
    }

    /// The leaf hash at `n`, if held.
    pub fn leaf(&self, n: u64) -> Option<Hash> {
        self.read_hashes(&[stored_hash_index(0, n)])
            .ok()
            .map(|v| v[0])
    }

    /// An inclusion proof of leaf `n` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, n: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        prove_record(size, n, self)
    }

    /// A consistency proof from `old` leaves to `size` leaves.
    pub fn consistency_proof(&self, old: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        prove_tree(size, old, self)
    }
}

/// Records the indexes an operation reads, answering with zero hashes.
pub struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TreeError> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash([0; 32]); indexes.len()])
    }
}

/// The stored-hash indexes that `op` reads. They depend only on the sizes
/// involved, so a dry run with zero hashes finds them.
pub fn needed<T>(
    op: impl FnOnce(&Recorder) -> Result<T, TreeError>,
) -> Result<Vec<u64>, TreeError> {
    let r = Recorder(RefCell::new(Vec::new()));
    op(&r)?;
    let mut v = r.0.into_inner();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Hashes fetched by index (from the database).
#[derive(Debug, Default)]
pub struct MapReader(pub HashMap<u64, Hash>);

impl HashReader for MapReader {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TreeError> {
        indexes
            .iter()
            .map(|i| self.0.get(i).copied().ok_or(TreeError::IndexesNotInTree))
            .collect()
    }
}

/// Check an inclusion proof (RFC 9162 §2.1.3.2) with `tlog_tiles`.
pub fn check_inclusion(proof: &[Hash], size: u64, root: Hash, n: u64, leaf: Hash) -> bool {
    tlog_tiles::check_record(&proof.to_vec(), size, root, n, leaf).is_ok()
}

/// Check a consistency proof (RFC 9162 §2.1.4.2) with `tlog_tiles`.
pub fn check_consistency(proof: &[Hash], size: u64, root: Hash, old: u64, old_root: Hash) -> bool {
    tlog_tiles::check_tree(&proof.to_vec(), size, root, old, old_root).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The certificate-transparency test vectors (RFC 6962): the leaves, the
    // roots of their prefixes, and proofs (google/certificate-transparency
    // `merkle_tree_test.cc`; transparency-dev/merkle `testonly/constants.go`).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn h(s: &str) -> Hash {
        Hash(hex::decode(s).expect("valid").try_into().expect("valid"))
    }

    fn leaves() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| tlog_tiles::record_hash(&hex::decode(l).expect("valid")))
            .collect()
    }

    fn memory() -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in leaves() {
            t.append(l);
        }
        t
    }

    #[test]
    fn roots_match_the_rfc_vectors() {
        let mut f = Frontier::new();
        assert_eq!(f.root(), h(ROOTS[0]));
        let t = memory();
        for (i, l) in leaves().into_iter().enumerate() {
            f.append(l);
            assert_eq!(f.root(), h(ROOTS[i + 1]), "frontier root at {}", i + 1);
            assert_eq!(t.root_at(i as u64 + 1), Some(h(ROOTS[i + 1])));
        }
        // The frontier keeps only the peaks: one per set bit of the size.
        assert_eq!(f.peaks.len(), 1);
        let seven = Frontier::from_peaks(7, &t.read_hashes(&peak_indexes(7)).expect("valid"))
            .expect("valid");
        assert_eq!(seven.root(), h(ROOTS[7]));
    }

    #[test]
    fn inclusion_proofs_match_the_rfc_vectors() {
        let t = memory();
        let cases: [(u64, u64, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (0, 1, &[]),
        ];
        for (n, size, want) in cases {
            let proof = t.inclusion_proof(n, size).expect("valid");
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof, want, "inclusion proof of {n} in {size}");
            let leaf = t.leaf(n).expect("valid");
            assert!(check_inclusion(
                &proof,
                size,
                h(ROOTS[size as usize]),
                n,
                leaf
            ));
            // A flipped byte anywhere fails.
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k].0[0] ^= 1;
                assert!(!check_inclusion(
                    &bad,
                    size,
                    h(ROOTS[size as usize]),
                    n,
                    leaf
                ));
            }
        }
    }

    #[test]
    fn consistency_proofs_match_the_rfc_vectors() {
        let t = memory();
        let cases: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, size, want) in cases {
            let proof = t.consistency_proof(old, size).expect("valid");
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof, want, "consistency proof {old} → {size}");
            let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[size as usize]));
            assert!(check_consistency(&proof, size, r2, old, r1));
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k].0[31] ^= 0x80;
                assert!(!check_consistency(&bad, size, r2, old, r1));
            }
        }
    }

    #[test]
    fn a_database_reader_reads_exactly_what_the_dry_run_names() {
        let t = memory();
        for size in 1..=8u64 {
            for n in 0..size {
                let idx = needed(|r| prove_record(size, n, r)).expect("valid");
                let map = MapReader(
                    idx.iter()
                        .map(|&i| (i, t.read_hashes(&[i]).expect("valid")[0]))
                        .collect(),
                );
                assert_eq!(
                    prove_record(size, n, &map).expect("valid"),
                    t.inclusion_proof(n, size).expect("valid")
                );
            }
            for old in 1..=size {
                let idx = needed(|r| prove_tree(size, old, r)).expect("valid");
                let map = MapReader(
                    idx.iter()
                        .map(|&i| (i, t.read_hashes(&[i]).expect("valid")[0]))
                        .collect(),
                );
                assert_eq!(
                    prove_tree(size, old, &map).expect("valid"),
                    t.consistency_proof(old, size).expect("valid")
                );
            }
        }
    }

    #[test]
    fn a_tree_after_a_prefix_has_the_same_roots() {
        let full = memory();
        for start in 0..=8u64 {
            let peaks = full.read_hashes(&peak_indexes(start)).expect("valid");
            let mut t = MemoryTree::after_prefix(start, &peaks).expect("valid");
            for l in &leaves()[start as usize..] {
                t.append(*l);
            }
            for size in start..=8 {
                assert_eq!(t.root_at(size), Some(h(ROOTS[size as usize])));
            }
        }
    }
}
