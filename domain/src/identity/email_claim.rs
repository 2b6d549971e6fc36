//! The EmailClaim aggregate: one stream per normalised email address, keyed by
//! its SHA-256, that records which user owns the address.
//!
//! Two registrations with one email race on this stream's first sequence
//! number, so the primary key of `events` lets exactly one of them win, in
//! one process or across many. The claim is written before the user; if the
//! process dies between the two, the claim points at a user with no events,
//! and a later registration may take it over.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who holds an email address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailClaim {
    /// The account that holds the address.
    pub owner: Option<Uuid>,
    /// When it was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
}

/// Claim the address for `user_id`. `orphan` names a previous owner known to
/// have no account, whose claim may be taken over.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The user.
    pub user_id: Uuid,
    /// A claim left by an unfinished registration.
    pub orphan: Option<Uuid>,
    /// The time the command was sent.
    pub now: DateTime<Utc>,
}

impl crate::CommandName for Claim {
    fn name(&self) -> &'static str {
        "ClaimEmail"
    }
}

/// Events of an email claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmailClaimEvent {
    /// Email claimed.
    EmailClaimed {
        /// The account that claimed it.
        user_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for EmailClaimEvent {
    fn event_type(&self) -> String {
        "EmailClaimed".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// The address belongs to someone else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the email address is taken by user {0}")]
pub struct EmailTaken(pub Uuid);

impl Aggregate for EmailClaim {
    const TYPE: &'static str = "EmailClaim";
    type Command = Claim;
    type Event = EmailClaimEvent;
    type Error = EmailTaken;
    type Services = ();

    async fn handle(&mut self, c: Claim, _: &(), sink: &EventSink<Self>) -> Result<(), EmailTaken> {
        match self.owner {
            Some(owner) if owner == c.user_id => Ok(()),
            Some(owner) if Some(owner) != c.orphan => Err(EmailTaken(owner)),
            _ => {
                sink.write(
                    EmailClaimEvent::EmailClaimed {
                        user_id: c.user_id,
                        at: c.now,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: EmailClaimEvent) {
        let EmailClaimEvent::EmailClaimed { user_id, at } = event;
        self.owner = Some(user_id);
        self.claimed_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    const ANNA: Uuid = Uuid::from_u128(1);
    const BEN: Uuid = Uuid::from_u128(2);

    fn at() -> DateTime<Utc> {
        "2029-06-01T10:00:00Z".parse().expect("a time")
    }

    fn claim(user_id: Uuid, orphan: Option<Uuid>) -> Claim {
        Claim {
            user_id,
            orphan,
            now: at(),
        }
    }

    #[test]
    fn the_first_claim_wins_and_a_repeat_by_the_owner_changes_nothing() {
        let mut address: EmailClaim = given([]);
        assert_eq!(
            when(&mut address, claim(ANNA, None)),
            Ok(vec![EmailClaimEvent::EmailClaimed {
                user_id: ANNA,
                at: at()
            }])
        );
        assert_eq!(when(&mut address, claim(ANNA, None)), Ok(vec![]));
        assert_eq!(when(&mut address, claim(BEN, None)), Err(EmailTaken(ANNA)));
        assert_eq!(address.owner, Some(ANNA));
    }

    #[test]
    fn an_orphaned_claim_can_be_taken_over() {
        let mut address: EmailClaim = given([EmailClaimEvent::EmailClaimed {
            user_id: ANNA,
            at: at(),
        }]);
        assert_eq!(
            when(&mut address, claim(BEN, Some(ANNA))),
            Ok(vec![EmailClaimEvent::EmailClaimed {
                user_id: BEN,
                at: at()
            }])
        );
        assert_eq!(address.owner, Some(BEN));
    }
}
