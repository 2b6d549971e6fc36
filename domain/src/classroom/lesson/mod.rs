//! The Lesson aggregate: a tutor's scheduled lesson, its lifecycle and its
//! enrolments. Capacity is checked here, so concurrent enrolments (which the
//! store serialises per aggregate) can never overfill a lesson.
//!
//! - `details.rs`: what a tutor says about a lesson, parsed from a draft;
//! - `aggregate.rs`: the aggregate, its commands, events, errors and rules;
//! - `tests.rs`: given/when/then tests of every command.

mod aggregate;
mod details;
#[cfg(test)]
mod tests;

pub use aggregate::*;
pub use details::*;
