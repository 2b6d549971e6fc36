//! One route group per file.

pub mod health;
pub mod meta;
