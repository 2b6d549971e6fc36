//! One route group per file.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod boards;
pub mod chat;
pub mod devices;
pub mod health;
pub mod lessons;
pub mod me;
pub mod meta;
