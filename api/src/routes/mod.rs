//! The HTTP routes: one directory per context (`identity/`, `classroom/`),
//! one route group per file.

pub mod audit;
pub mod classroom;
pub mod health;
pub mod identity;
pub mod meta;
pub mod projections;
