//! Identity: users with their sessions and devices, and email claims.

pub mod email_claim;
pub mod user;
pub mod values;

pub use email_claim::{Claim, EmailClaim, EmailClaimEvent, EmailTaken};
pub use user::{RevokeReason, User, UserCommand, UserError, UserEvent};
pub use values::{DisplayName, Email, Invalid, Password, Platform, Role};
