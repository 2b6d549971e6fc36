//! The AccessLog aggregate: denied requests and rate-limit hits, and every
//! read of the audit history, one stream per actor (`user:<id>` or
//! `ip:<address>`), so an auditor sees every refusal and who looked at what.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// An actor's refusals and audit reads so far. Holds nothing but counts:
/// neither depends on earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessLog {
    /// Denials recorded on this stream.
    pub denials: u64,
    /// Reads of the audit history recorded on this stream.
    #[serde(default)]
    pub audit_reads: u64,
}

/// What an access log records.
#[derive(Debug, Clone)]
pub enum AccessCommand {
    /// A refusal.
    Deny(RecordDenial),
    /// A read of the audit history.
    AuditRead(RecordAuditRead),
}

impl crate::CommandName for AccessCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Deny(_) => "RecordDenial",
            Self::AuditRead(_) => "RecordAuditRead",
        }
    }
}

/// Record that an auditor or admin read the audit history: who (the
/// event's metadata) looked at what (this).
#[derive(Debug, Clone)]
pub struct RecordAuditRead {
    /// The policy action.
    pub action: String,
    /// The HTTP method.
    pub method: String,
    /// The request path: which feed, stream, proof or checkpoint.
    pub path: String,
    /// The query string: which range, version or time.
    pub query: String,
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
    /// The audit history was read.
    AuditHistoryRead {
        /// The policy action.
        action: String,
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
        /// The query string.
        query: String,
    },
}

impl DomainEvent for AccessEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AccessDenied { .. } => "AccessDenied",
            Self::AuditHistoryRead { .. } => "AuditHistoryRead",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Recording cannot be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreachable")]
pub enum Never {}

impl Aggregate for AccessLog {
    const TYPE: &'static str = "AccessLog";
    type Command = AccessCommand;
    type Event = AccessEvent;
    type Error = Never;
    type Services = ();

    async fn handle(
        &mut self,
        c: AccessCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Never> {
        let event = match c {
            AccessCommand::Deny(c) => AccessEvent::AccessDenied {
                action: c.action,
                reason: c.reason,
                method: c.method,
                path: c.path,
            },
            AccessCommand::AuditRead(c) => AccessEvent::AuditHistoryRead {
                action: c.action,
                method: c.method,
                path: c.path,
                query: c.query,
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, e: AccessEvent) {
        match e {
            AccessEvent::AccessDenied { .. } => self.denials += 1,
            AccessEvent::AuditHistoryRead { .. } => self.audit_reads += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, when};

    #[test]
    fn every_denial_is_recorded() {
        let mut log: AccessLog = given([]);
        let denial = AccessCommand::Deny(RecordDenial {
            action: "lesson.create".into(),
            reason: "forbidden".into(),
            method: "POST".into(),
            path: "/api/v1/lessons".into(),
        });
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

    #[test]
    fn every_audit_read_is_recorded() {
        let mut log: AccessLog = given([]);
        let read = AccessCommand::AuditRead(RecordAuditRead {
            action: "audit.read".into(),
            method: "GET".into(),
            path: "/api/v1/audit/feed".into(),
            query: "after=10".into(),
        });
        assert_eq!(
            when(&mut log, read),
            Ok(vec![AccessEvent::AuditHistoryRead {
                action: "audit.read".into(),
                method: "GET".into(),
                path: "/api/v1/audit/feed".into(),
                query: "after=10".into(),
            }])
        );
        assert_eq!((log.denials, log.audit_reads), (0, 1));
    }
}
