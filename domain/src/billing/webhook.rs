//! A Stripe event as Lectern received it: one stream per Stripe event
//! (`StripeEvent`, its id Stripe's `evt_…`). Receiving it again (Stripe
//! redelivers, and may send the same event many times at once) writes
//! nothing. The event names what Stripe sent, never its payload: that holds
//! customer data and stays in the inbox (see `docs/billing.md`).

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

/// What a verified delivery says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stripe's event id (`evt_…`): the stream's id too.
    pub id: String,
    /// Its type, such as `payment_intent.succeeded`.
    pub event_type: String,
    /// When Stripe created it (Unix seconds): "newest wins" compares these.
    pub created: i64,
    /// The API version its payload is rendered in.
    pub api_version: Option<String>,
    /// The id of the object it is about (`data.object.id`).
    pub object_id: Option<String>,
    /// Live mode or test mode.
    pub livemode: bool,
    /// Not delivered: the reconciliation job fetched it from the Stripe API
    /// because its delivery failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
}

/// A Stripe event's stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StripeEvent {
    /// Received already.
    pub received: bool,
}

/// Record a verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receive(pub Delivery);

impl crate::CommandName for Receive {
    fn name(&self) -> &'static str {
        "ReceiveStripeEvent"
    }
}

/// Events of a Stripe event's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StripeEventEvent {
    /// A delivery passed the signature check and was stored in the inbox.
    StripeEventReceived(Delivery),
}

crate::classroom::domain_event!(StripeEventEvent {
    StripeEventReceived
});

/// Receiving is never refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreachable")]
pub enum StripeEventError {}

impl StripeEvent {
    /// The events `command` causes: one on the first delivery, none after.
    pub fn decide(&self, Receive(delivery): Receive) -> Vec<StripeEventEvent> {
        if self.received {
            Vec::new()
        } else {
            vec![StripeEventEvent::StripeEventReceived(delivery)]
        }
    }
}

impl Aggregate for StripeEvent {
    const TYPE: &'static str = "StripeEvent";
    type Command = Receive;
    type Event = StripeEventEvent;
    type Error = StripeEventError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Receive,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), StripeEventError> {
        for e in self.decide(command) {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: StripeEventEvent) {
        match event {
            StripeEventEvent::StripeEventReceived(_) => self.received = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    fn delivery() -> Delivery {
        Delivery {
            id: "evt_1".into(),
            event_type: "payment_intent.succeeded".into(),
            created: 1_700_000_000,
            api_version: Some("2026-06-24.dahlia".into()),
            object_id: Some("pi_1".into()),
            livemode: false,
            reconciled: false,
        }
    }

    #[test]
    fn the_first_delivery_is_received_and_a_redelivery_changes_nothing() {
        let mut state = StripeEvent::default();
        assert_eq!(
            when(&mut state, Receive(delivery())),
            Ok(vec![StripeEventEvent::StripeEventReceived(delivery())])
        );
        assert!(state.received);
        assert_eq!(when(&mut state, Receive(delivery())), Ok(Vec::new()));
    }

    #[test]
    fn a_stream_that_holds_the_event_writes_nothing() {
        let received: StripeEvent = given([StripeEventEvent::StripeEventReceived(delivery())]);
        assert!(received.decide(Receive(delivery())).is_empty());
    }
}
