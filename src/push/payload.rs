//! The push payload contract: what an app receives in a wake-up push.
//!
//! Kept in one place so every provider sends the same fields and the contract in
//! docs/app-developers.md (and its test) has one source. Field names are part of the public contract with app
//! developers: add fields, never rename or remove one.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{MessagePush, PushKind, WakePush};

/// Version of the payload contract; bumped only for an incompatible change.
pub const PAYLOAD_VERSION: u32 = 1;

/// The JSON object announcing an incoming call.
///
/// `expires_at` is the Unix time (seconds) at which the call stops ringing: an app woken
/// after it should report the call as ended at once instead of ringing. When the call
/// status endpoint is configured (`[http]`), `status_url` and `status_token` tell the app
/// where to ask whether the call still rings (`GET status_url` with
/// `Authorization: Bearer <status_token>`); without it they are absent.
pub fn incoming_call(push: &WakePush, expires_at: u64) -> Value {
    let mut value = json!({
        "type": "incoming_call",
        "version": PAYLOAD_VERSION,
        "call_id": push.call_id.as_str(),
        "extension": push.extension,
        "caller_number": push.caller.number,
        "caller_name": push.caller.name,
        "expires_at": expires_at,
    });
    if let (Some(status), Value::Object(fields)) = (&push.status, &mut value) {
        fields.insert("status_url".into(), json!(status.url));
        fields.insert("status_token".into(), json!(status.token.expose()));
    }
    if let (Some(node), Value::Object(fields)) = (&push.node, &mut value) {
        fields.insert("node".into(), json!(node));
    }
    value
}

/// The JSON object of any push: [`incoming_call`] for an incoming call; for a call that
/// ended, the same fields with `"type": "call_cancelled"` and a `reason`
/// (`caller_hung_up`, `answered_elsewhere`, `timeout`, `ended`), so an app that showed
/// the call can end it. Both carry `status_url` and `status_token` when configured.
pub fn for_push(push: &WakePush, expires_at: u64) -> Value {
    let mut value = incoming_call(push, expires_at);
    if let (PushKind::CallEnded(reason), Value::Object(fields)) = (push.kind, &mut value) {
        fields.insert("type".into(), json!("call_cancelled"));
        fields.insert("reason".into(), json!(reason.as_str()));
    }
    value
}

/// The same as [`for_push`], as a map of strings: the form of a data message (FCM and
/// similar services accept only string values). Numbers are written in decimal
/// (`"version": "1"`, `"expires_at": "1800000000"`).
pub fn data(push: &WakePush, expires_at: u64) -> BTreeMap<String, String> {
    strings(for_push(push, expires_at))
}

/// The JSON object announcing a message kept for the device's app: register to receive
/// it. `preview` (the body's beginning) is there only when the operator lets pushes
/// carry it (`[messages] preview`); `expires_at` is when pushwake stops keeping it.
pub fn message_received(push: &MessagePush) -> Value {
    let mut value = json!({
        "type": "message_received",
        "version": PAYLOAD_VERSION,
        "message_id": push.message_id.0,
        "extension": push.extension,
        "sender_number": push.sender.number,
        "sender_name": push.sender.name,
        "received_at": push.received_at,
        "expires_at": push.expires_at,
    });
    if let Value::Object(fields) = &mut value {
        if let Some(preview) = &push.preview {
            fields.insert("preview".into(), json!(preview));
        }
        if let Some(node) = &push.node {
            fields.insert("node".into(), json!(node));
        }
    }
    value
}

/// [`message_received`] as a map of strings (the form of a data message).
pub fn message_data(push: &MessagePush) -> BTreeMap<String, String> {
    strings(message_received(push))
}

/// A JSON object's fields as strings: strings as they are, anything else in JSON.
fn strings(value: Value) -> BTreeMap<String, String> {
    let Value::Object(fields) = value else {
        unreachable!("the payloads are objects")
    };
    fields
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (key, text)
        })
        .collect()
}

/// A message push for the providers' tests: message `m-1` for 101 from Alice (3900),
/// received at 1,800,000,000, kept a week.
#[cfg(test)]
pub(crate) fn a_message_push(preview: Option<&str>) -> MessagePush {
    MessagePush {
        message_id: pushwake_core::messages::MessageId("m-1".into()),
        extension: "101".into(),
        sender: pushwake_core::pbx::Party {
            number: "3900".into(),
            name: "Alice".into(),
        },
        preview: preview.map(str::to_owned),
        received_at: 1_800_000_000,
        expires_at: 1_800_604_800,
        node: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushwake_core::pbx::{CallId, Party};

    #[test]
    fn carries_every_documented_field() {
        let push = WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
            kind: PushKind::IncomingCall,
            status: None,
            node: None,
        };
        let value = incoming_call(&push, 1_800_000_000);
        assert_eq!(
            value,
            json!({
                "type": "incoming_call",
                "version": 1,
                "call_id": "5d7d1c1e-0000-4000-8000-000000000001",
                "extension": "101",
                "caller_number": "200",
                "caller_name": "Alice",
                "expires_at": 1_800_000_000u64,
            })
        );
    }

    #[test]
    fn the_data_form_has_the_same_fields_as_strings() {
        let push = WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice \"A\" Smith".into(),
            },
            kind: PushKind::IncomingCall,
            status: None,
            node: None,
        };
        let data = data(&push, 1_800_000_000);
        let expected: BTreeMap<String, String> = [
            ("type", "incoming_call"),
            ("version", "1"),
            ("call_id", "5d7d1c1e-0000-4000-8000-000000000001"),
            ("extension", "101"),
            ("caller_number", "200"),
            ("caller_name", "Alice \"A\" Smith"),
            ("expires_at", "1800000000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(data, expected);
        let Value::Object(json_form) = incoming_call(&push, 1_800_000_000) else {
            panic!("not an object")
        };
        let json_keys: std::collections::BTreeSet<&String> = json_form.keys().collect();
        let data_keys: std::collections::BTreeSet<&String> = data.keys().collect();
        assert_eq!(json_keys, data_keys, "same fields in both forms");
    }

    fn with_status() -> WakePush {
        WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
            kind: PushKind::IncomingCall,
            status: Some(crate::push::StatusLink {
                url:
                    "https://pbx.example.com/pushwake/v1/calls/5d7d1c1e-0000-4000-8000-000000000001"
                        .into(),
                token: crate::status::fresh_secret(),
            }),
            node: None,
        }
    }

    #[test]
    fn the_node_travels_in_every_form_only_when_configured() {
        let single = with_status();
        assert!(for_push(&single, 1).get("node").is_none());
        assert!(!data(&single, 1).contains_key("node"));
        let mut push = with_status();
        push.node = Some("pbx-b.example.com".into());
        assert_eq!(incoming_call(&push, 1)["node"], "pbx-b.example.com");
        push.kind = PushKind::CallEnded(crate::push::EndReason::Timeout);
        assert_eq!(for_push(&push, 1)["node"], "pbx-b.example.com");
        assert_eq!(data(&push, 1)["node"], "pbx-b.example.com");
    }

    #[test]
    fn the_status_link_travels_in_every_form_of_every_push() {
        let push = with_status();
        let token = push.status.as_ref().unwrap().token.expose().to_owned();
        let url = "https://pbx.example.com/pushwake/v1/calls/5d7d1c1e-0000-4000-8000-000000000001";
        let value = incoming_call(&push, 1_800_000_000);
        assert_eq!(
            value,
            json!({
                "type": "incoming_call",
                "version": 1,
                "call_id": "5d7d1c1e-0000-4000-8000-000000000001",
                "extension": "101",
                "caller_number": "200",
                "caller_name": "Alice",
                "expires_at": 1_800_000_000u64,
                "status_url": url,
                "status_token": token,
            })
        );
        let ended = WakePush {
            kind: PushKind::CallEnded(crate::push::EndReason::CallerHungUp),
            ..push.clone()
        };
        for push in [&push, &ended] {
            let value = for_push(push, 1_800_000_000);
            assert_eq!(value["status_url"], url);
            assert_eq!(value["status_token"], token.as_str());
            let data = data(push, 1_800_000_000);
            assert_eq!(data["status_url"], url);
            assert_eq!(data["status_token"], token);
        }
        // The token is in the payload, never in the push's Debug form (logs).
        let shown = format!("{push:?}");
        assert!(!shown.contains(&token) && shown.contains(url), "{shown}");
    }

    #[test]
    fn without_a_status_endpoint_there_are_no_status_fields() {
        let push = WakePush {
            status: None,
            ..with_status()
        };
        for value in [
            incoming_call(&push, 1),
            for_push(
                &WakePush {
                    kind: PushKind::CallEnded(crate::push::EndReason::Timeout),
                    ..push.clone()
                },
                1,
            ),
        ] {
            assert!(value.get("status_url").is_none(), "{value}");
            assert!(value.get("status_token").is_none(), "{value}");
        }
        assert!(!data(&push, 1).contains_key("status_url"));
    }

    #[test]
    fn an_ended_call_keeps_the_fields_and_says_why() {
        let push = WakePush {
            call_id: CallId("5d7d1c1e-0000-4000-8000-000000000001".into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
            kind: PushKind::CallEnded(crate::push::EndReason::AnsweredElsewhere),
            status: None,
            node: None,
        };
        let value = for_push(&push, 1_800_000_000);
        assert_eq!(value["type"], "call_cancelled");
        assert_eq!(value["reason"], "answered_elsewhere");
        assert_eq!(value["call_id"], "5d7d1c1e-0000-4000-8000-000000000001");
        let data = data(&push, 1_800_000_000);
        assert_eq!(data["type"], "call_cancelled");
        assert_eq!(data["reason"], "answered_elsewhere");
        let incoming = WakePush {
            kind: PushKind::IncomingCall,
            ..push
        };
        assert!(for_push(&incoming, 1).get("reason").is_none());
    }

    use super::a_message_push;

    #[test]
    fn a_message_push_carries_the_documented_fields_and_the_preview_only_when_on() {
        assert_eq!(
            message_received(&a_message_push(Some("Hi there"))),
            json!({
                "type": "message_received",
                "version": 1,
                "message_id": "m-1",
                "extension": "101",
                "sender_number": "3900",
                "sender_name": "Alice",
                "received_at": 1_800_000_000u64,
                "expires_at": 1_800_604_800u64,
                "preview": "Hi there",
            })
        );
        let quiet = message_received(&a_message_push(None));
        assert!(quiet.get("preview").is_none(), "{quiet}");
        let data = message_data(&a_message_push(None));
        assert_eq!(data["type"], "message_received");
        assert_eq!(data["received_at"], "1800000000");
        assert!(!data.contains_key("preview"));
    }
}
