//! Billing: payments through Stripe. A webhook Stripe delivers is a
//! [`webhook::StripeEvent`] stream of its own, keyed by Stripe's event id,
//! so a redelivery is recognised by its stream and changes nothing.

pub mod invoice;
pub mod webhook;
