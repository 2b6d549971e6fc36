//! Lectern's benchmarks and drills, as a library: `lectern-bench` runs them
//! from the command line (`scripts/bench`, `scripts/drill`), and the test
//! suite runs short drills through the same code.
#![forbid(unsafe_code)]

pub mod drill;
pub mod stats;
