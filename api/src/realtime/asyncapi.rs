//! The AsyncAPI 3 document of the realtime socket, served at
//! `/asyncapi.json`. Each frame has a summary and an example; its payload
//! schema is derived from the example. A test checks that every frame type
//! the code handles is here.

use serde_json::{json, Map, Value};

/// `(type, sent by, summary, example)` for every frame.
fn frames() -> Vec<(&'static str, Direction, &'static str, Value)> {
    use Direction::{FromClient, FromServer};
    let lesson = "7f0c1c52-5a7e-4c38-9a55-0d5c4b1f7a10";
    vec![
        ("connect", FromClient, "The first frame, within 15 s: authenticate with an access token.",
            json!({"type": "connect", "id": 1, "token": "<access token>", "device": "laptop-7"})),
        ("refresh", FromClient, "Swap in a new access token for the same user before `expires_at`.",
            json!({"type": "refresh", "id": 2, "token": "<new access token>"})),
        ("sub", FromClient, "Subscribe to a channel; with `since`, resume after that offset.",
            json!({"type": "sub", "id": 3, "channel": format!("board:{lesson}"), "since": {"epoch": "9c1d0e7a5b3f2a11", "offset": 41}, "presence": "full"})),
        ("unsub", FromClient, "Stop receiving a channel.",
            json!({"type": "unsub", "id": 4, "channel": format!("board:{lesson}")})),
        ("cmd", FromClient, "Run a command as its HTTP route would: `chat.send` (body of POST /api/v1/lessons/{id}/messages), `board.ops` (body of POST /api/v1/boards/{id}/ops/batch) or `video.heartbeat` (`{session_id, position_ms}`, no channel).",
            json!({"type": "cmd", "id": 5, "op": "chat.send", "channel": format!("chat:{lesson}"), "data": {"client_message_id": "m-1", "text": "Hello"}})),
        ("ack", FromClient, "Cumulative delivery marks by message `seq`: received up to `recv`, read up to `read`. Written at most once per second per recipient and chat.",
            json!({"type": "ack", "channel": format!("chat:{lesson}"), "recv": 12, "read": 10})),
        ("status", FromClient, "Choose one's presence status: online, away or busy (on every connection; remembered for the reconnect window).",
            json!({"type": "status", "id": 6, "status": "away"})),
        ("cursor", FromClient, "A pointer position on a board: relayed to the board's other subscribers on the same server process, throttled, never stored.",
            json!({"type": "cursor", "channel": format!("board:{lesson}"), "x": 120.5, "y": 88.0})),
        ("connected", FromServer, "The answer to `connect`.",
            json!({"type": "connected", "id": 1, "client": "lectern/4242/1a2b/7", "node": "lectern/4242/1a2b", "user_id": "0b8f3c9e-2d4a-4e61-9f3b-6c1d2e3f4a5b", "epoch": "9c1d0e7a5b3f2a11", "expires_at": 1796112000, "ping": 25, "pong_timeout": 10})),
        ("refreshed", FromServer, "The answer to `refresh`.",
            json!({"type": "refreshed", "id": 2, "expires_at": 1796112900})),
        ("subscribed", FromServer, "The answer to `sub`: the channel's `top` offset and, for a resume, whether every missed event is in `pubs`.",
            json!({"type": "subscribed", "id": 3, "channel": format!("board:{lesson}"), "epoch": "9c1d0e7a5b3f2a11", "top": 43, "recovered": true,
                   "pubs": [{"type": "pub", "channel": format!("board:{lesson}"), "offset": 42, "event": "OpApplied", "at": "2026-12-01T10:00:00.000000Z", "data": {"op_id": "o-9"}},
                            {"type": "pub", "channel": format!("board:{lesson}"), "offset": 43, "skip": true}]})),
        ("unsubscribed", FromServer, "The answer to `unsub`.",
            json!({"type": "unsubscribed", "id": 4, "channel": format!("board:{lesson}")})),
        ("pub", FromServer, "An event of a subscribed channel, at its offset; `skip: true` and no `data` for one the subscriber may not see.",
            json!({"type": "pub", "channel": format!("chat:{lesson}"), "offset": 7, "event": "MessageSent", "at": "2026-12-01T10:00:00.000000Z", "data": {"seq": 5, "text": "Hello"}})),
        ("unsub", FromServer, "The server ended a subscription: access was lost (`reason` is the problem code).",
            json!({"type": "unsub", "channel": format!("board:{lesson}"), "reason": "not_participant"})),
        ("reply", FromServer, "The answer to `cmd`: the HTTP status and body, or `error`, an RFC 9457 problem.",
            json!({"type": "reply", "id": 5, "status": 201, "data": {"id": "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b", "seq": 5, "duplicate": false, "version": 7, "position": "812:1904"}})),
        ("cursor", FromServer, "Another subscriber's pointer position.",
            json!({"type": "cursor", "channel": format!("board:{lesson}"), "user_id": "0b8f3c9e-2d4a-4e61-9f3b-6c1d2e3f4a5b", "x": 120.5, "y": 88.0})),
        ("status", FromServer, "The answer to `status`: the caller's presence status now.",
            json!({"type": "status", "id": 6, "status": "away"})),
        ("presence", FromServer, "Presence changes of a lesson's participants, batched (at most one frame per channel every 1.5 s): `diff` by user id, or `counts` per status for a subscription with `presence: counts`.",
            json!({"type": "presence", "channel": format!("lesson:{lesson}"), "diff": {"0b8f3c9e-2d4a-4e61-9f3b-6c1d2e3f4a5b": "reconnecting"}})),
        ("video.stop", FromServer, "On a `user:` channel: stop playing session `session_id` on device `device_id` (`reason`: taken_over or expired).",
            json!({"type": "video.stop", "channel": "user:0b8f3c9e-2d4a-4e61-9f3b-6c1d2e3f4a5b", "session_id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", "device_id": "phone", "reason": "taken_over"})),
        ("error", FromServer, "A request failed (`id` names it) or a frame could not be read: `error` is an RFC 9457 problem.",
            json!({"type": "error", "id": 3, "channel": format!("board:{lesson}"), "error": {"type": "urn:lectern:problem:not_participant", "title": "Forbidden", "status": 403, "detail": "only the lesson's tutor and enrolled students take part", "code": "not_participant"}})),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    FromClient,
    FromServer,
}

fn schema_of(example: &Value) -> Value {
    match example {
        Value::Object(members) => {
            let properties: Map<String, Value> = members
                .iter()
                .map(|(k, v)| {
                    let s = if k == "type" {
                        json!({"type": "string", "const": v})
                    } else {
                        schema_of(v)
                    };
                    (k.clone(), s)
                })
                .collect();
            json!({"type": "object", "required": ["type"], "properties": properties})
        }
        Value::Array(items) => match items.first() {
            Some(first) => json!({"type": "array", "items": schema_of(first)}),
            None => json!({"type": "array"}),
        },
        Value::String(_) => json!({"type": "string"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Null => json!({}),
    }
}

/// The document.
pub fn document() -> Value {
    let mut messages = Map::new();
    let mut refs = Map::new();
    let mut operations = Map::new();
    for (name, direction, summary, example) in frames() {
        let side = if direction == Direction::FromClient {
            "client"
        } else {
            "server"
        };
        let key = format!("{side}.{name}");
        let mut schema = schema_of(&example);
        if name == "pub" {
            schema["properties"]["skip"] = json!({"type": "boolean"});
        }
        messages.insert(
            key.clone(),
            json!({
                "name": name,
                "title": format!("{name} ({side} to {})", if side == "client" { "server" } else { "client" }),
                "summary": summary,
                "contentType": "application/json",
                "payload": schema,
                "examples": [{"payload": example}],
            }),
        );
        refs.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
        let action = if direction == Direction::FromClient {
            "receive"
        } else {
            "send"
        };
        operations.insert(
            format!("{side}_{name}"),
            json!({
                "action": action,
                "channel": {"$ref": "#/channels/realtime"},
                "messages": [{"$ref": format!("#/channels/realtime/messages/{key}")}],
            }),
        );
    }
    let close_codes: Vec<Value> = super::protocol::close::ALL
        .iter()
        .map(|(code, reason, reconnect)| json!({"code": code, "reason": reason, "reconnect": reconnect}))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Lectern realtime gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A WebSocket of JSON text frames, one object each, told apart by `type`. Channels are event streams: `board:{lesson_id}`, `chat:{lesson_id}`, `lesson:{id}`, `user:{id}`; a channel's offset is its stream's sequence, contiguous. Close codes 4000-4499 ask the client to reconnect, 4500 and up not to (see x-close-codes). docs/realtime.md has the whole protocol.",
            "x-close-codes": close_codes,
        },
        "servers": {
            "lectern": {"host": "localhost:8080", "protocol": "ws", "pathname": "/api/v1/realtime",
                        "description": "The API's own address, over ws:// (or wss:// behind TLS)."}
        },
        "defaultContentType": "application/json",
        "channels": {
            "realtime": {"address": "/api/v1/realtime", "messages": refs}
        },
        "operations": operations,
        "components": {"messages": messages},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::protocol::{ClientFrame, SERVER_TYPES};

    /// The client frame types the code parses, from serde's own list.
    fn parsed_types() -> Vec<String> {
        let err = serde_json::from_str::<ClientFrame>(r#"{"type":"no-such-type"}"#)
            .expect_err("an unknown type is refused")
            .to_string();
        let list = err
            .split("expected one of")
            .nth(1)
            .expect("serde lists the variants");
        // The names are the odd pieces between backticks.
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_frame_type_is_documented() {
        let parsed = parsed_types();
        assert_eq!(parsed.len(), ClientFrame::TYPES.len(), "{parsed:?}");
        for t in &parsed {
            assert!(
                ClientFrame::TYPES.contains(&t.as_str()),
                "{t} is parsed but not listed"
            );
        }
        let doc = document();
        let messages = doc["components"]["messages"].as_object().expect("messages");
        let docs = include_str!("../../../docs/realtime.md");
        for t in ClientFrame::TYPES {
            assert!(
                messages.contains_key(&format!("client.{t}")),
                "client frame {t} missing from the AsyncAPI document"
            );
            assert!(
                docs.contains(&format!("\"type\": \"{t}\"")),
                "client frame {t} missing from docs/realtime.md"
            );
        }
        for t in SERVER_TYPES {
            assert!(
                messages.contains_key(&format!("server.{t}")),
                "server frame {t} missing from the AsyncAPI document"
            );
            assert!(
                docs.contains(&format!("\"type\": \"{t}\"")),
                "server frame {t} missing from docs/realtime.md"
            );
        }
        assert_eq!(
            messages.len(),
            ClientFrame::TYPES.len() + SERVER_TYPES.len()
        );
    }

    #[test]
    fn examples_parse_as_the_code_reads_them() {
        for (name, direction, _, example) in frames() {
            if direction == Direction::FromClient {
                let parsed: Result<ClientFrame, _> = serde_json::from_value(example.clone());
                assert!(
                    parsed.is_ok(),
                    "the {name} example does not parse: {parsed:?}"
                );
            }
        }
    }
}
