//! The AccessLog aggregate: denied requests and rate-limit hits, one stream per
//! actor (`user:<id>` or `ip:<address>`), so an auditor sees every refusal.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// An actor's refusals so far. Holds nothing but a count: denials never
/// depend on earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessLog {
    /// Denials recorded on this stream.
    pub denials: u64,
}

/// Record one refusal.
#[derive(Debug, Clone)]
pub struct RecordDenial {
    /// The policy action.
    pub action: String,
    /// Why.
    pub reason: String,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
}

impl crate::CommandName for RecordDenial {
    fn name(&self) -> &'static str {
        "RecordDenial"
    }
}

/// Events of an access log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccessEvent {
    /// Access denied.
    AccessDenied {
        /// The policy action.
        action: String,
        /// Why.
        reason: String,
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
    },
}

impl DomainEvent for AccessEvent {
    fn event_type(&self) -> String {
        "AccessDenied".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Recording a denial cannot be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreachable")]
pub enum Never {}

impl Aggregate for AccessLog {
    const TYPE: &'static str = "AccessLog";
    type Command = RecordDenial;
    type Event = AccessEvent;
    type Error = Never;
    type Services = ();

    async fn handle(
        &mut self,
        c: RecordDenial,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Never> {
        sink.write(
            AccessEvent::AccessDenied {
                action: c.action,
                reason: c.reason,
                method: c.method,
                path: c.path,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, _: AccessEvent) {
        self.denials += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    #[test]
    fn every_denial_is_recorded() {
        let mut log: AccessLog = given([]);
        let denial = RecordDenial {
            action: "lesson.create".into(),
            reason: "forbidden".into(),
            method: "POST".into(),
            path: "/api/v1/lessons".into(),
        };
        for n in 1..=2 {
            assert_eq!(
                when(&mut log, denial.clone()),
                Ok(vec![AccessEvent::AccessDenied {
                    action: "lesson.create".into(),
                    reason: "forbidden".into(),
                    method: "POST".into(),
                    path: "/api/v1/lessons".into(),
                }])
            );
            assert_eq!(log.denials, n);
        }
    }
}
