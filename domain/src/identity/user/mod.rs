//! The User aggregate: an account with its credentials, its refresh-token
//! sessions and its devices.
//!
//! Sessions and devices live inside the user on purpose: the rules that join
//! them (at most five sessions, one active device, "revoking a device ends its
//! sessions", "deactivation ends every session") are then checked and
//! recorded in one append, so no interleaving of commands can break them.
//!
//! Outside facts arrive in the commands: the time, new ids, password hashes
//! (computed off the runtime) and the hashes of fresh tokens. Nothing secret
//! is ever stored: passwords appear as Argon2id PHC strings, tokens and
//! fingerprints as SHA-256 hashes.
//!
//! - `state.rs`: the account, its sessions and devices, and the limits;
//! - `commands.rs` and `events.rs`: what may be asked and what happened;
//! - `decide.rs`: the rules, from a command to its events;
//! - `aggregate.rs`: the cqrs-es aggregate, and how events change the state;
//! - `tests.rs`: given/when/then tests of every command.

mod aggregate;
mod commands;
mod decide;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use commands::*;
pub use events::*;
pub use state::*;
