//! Integration tests against a real PostgreSQL. One binary, so the test
//! cluster starts once per run.

mod api;
mod authz;
mod billing;
mod classroom;
mod drills;
mod edges;
mod identity;
mod ledger;
mod outage;
mod presence;
mod projections;
mod reactions;
mod realtime;
mod replica;
mod roundtrips;
mod store;
mod support;
mod throttles;
mod video;
