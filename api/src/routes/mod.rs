//! One route group per file.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod devices;
pub mod health;
pub mod me;
pub mod meta;
