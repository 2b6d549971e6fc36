//! The classroom over HTTP, one behaviour per test; the helpers they share
//! are in `lectern_tests::classroom`.

mod boards;
mod bulk;
mod chat;
mod lessons;
