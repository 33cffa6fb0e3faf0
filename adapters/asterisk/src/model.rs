//! ARI's JSON objects, as far as pushwake reads them. Unknown fields are ignored, so a
//! newer Asterisk adding fields does not break parsing.

use serde::Deserialize;

/// Caller id as ARI shows it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct CallerId {
    /// Name (may be empty).
    #[serde(default)]
    pub name: String,
    /// Number (may be empty).
    #[serde(default)]
    pub number: String,
}

/// Where a channel is in the dialplan.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct DialplanLocation {
    /// Context.
    #[serde(default)]
    pub context: String,
    /// Extension.
    #[serde(default)]
    pub exten: String,
    /// The application running (`Stasis` for a channel parked in an ARI app).
    #[serde(default)]
    pub app_name: String,
    /// Its argument string (`app,arg1,...` for Stasis).
    #[serde(default)]
    pub app_data: String,
}

/// A channel.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Channel {
    /// Unique id.
    pub id: String,
    /// Name (`PJSIP/101-00000001`).
    #[serde(default)]
    pub name: String,
    /// State (`Ring`, `Ringing`, `Up`, `Down`, …).
    #[serde(default)]
    pub state: String,
    /// Caller id.
    #[serde(default)]
    pub caller: CallerId,
    /// Dialplan location.
    #[serde(default)]
    pub dialplan: DialplanLocation,
}

impl Channel {
    /// The arguments of the Stasis application `app` this channel sits in, if it does.
    pub fn stasis_args(&self, app: &str) -> Option<Vec<String>> {
        if !self.dialplan.app_name.eq_ignore_ascii_case("Stasis") {
            return None;
        }
        let mut parts = self.dialplan.app_data.split(',');
        if parts.next()?.trim() != app {
            return None;
        }
        Some(parts.map(|p| p.trim().to_owned()).collect())
    }
}

/// A bridge.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Bridge {
    /// Unique id.
    pub id: String,
    /// Name given at creation.
    #[serde(default)]
    pub name: String,
    /// Ids of the channels in it.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// An endpoint, as carried by endpoint events.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    /// Technology (`PJSIP`).
    #[serde(default)]
    pub technology: String,
    /// Resource (the endpoint name).
    #[serde(default)]
    pub resource: String,
}

/// A SIP MESSAGE as a `TextMessageReceived` carries it (with `res_pjsip_messaging`
/// loaded, to every application subscribed to the sending endpoint). The body is what
/// people wrote to each other: `Debug` shows its length only.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
pub struct TextMessage {
    /// The sender, as in its From header without the tag (`"Alice" <sip:200@pbx>`).
    #[serde(default)]
    pub from: String,
    /// The destination, Asterisk's way: `pjsip:101@pbx`.
    #[serde(default)]
    pub to: String,
    /// The body. Asterisk 22 hands over an **empty** body for a MESSAGE of 1,024 bytes
    /// or more (measured: its sender still got `202 Accepted`).
    #[serde(default)]
    pub body: String,
    /// The request's headers (`Call-ID`, `CSeq`, `Content-Type`, …) and
    /// `PJSIP_RECVADDR`, `PJSIP_TRANSPORT`.
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for TextMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextMessage")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl TextMessage {
    /// The extension it is for: the user part of [`TextMessage::to`] (`pjsip:101@pbx`,
    /// `sip:101@pbx`, `pjsip:101`), if there is one.
    pub fn recipient(&self) -> Option<&str> {
        let to = self.to.trim();
        let rest = to
            .strip_prefix("pjsip:")
            .unwrap_or(to)
            .trim_start_matches("sip:");
        let user = rest.split(['@', ';', '>']).next().unwrap_or_default();
        (!user.is_empty() && !user.contains([':', '<', ' '])).then_some(user)
    }

    /// The request's Call-ID and CSeq number, which a retransmission repeats.
    pub fn dedup_key(&self) -> Option<(&str, u32)> {
        let call_id = self.variables.get("Call-ID")?.trim();
        let cseq = self.variables.get("CSeq")?.split_whitespace().next()?;
        Some((call_id, cseq.parse().ok()?)).filter(|(id, _)| !id.is_empty())
    }

    /// The body's length as the sender declared it (`Content-Length`), if it did:
    /// Asterisk passes a body of 1,024 bytes or more on empty.
    pub fn declared_len(&self) -> Option<usize> {
        self.variables
            .get("Content-Length")
            .and_then(|l| l.trim().parse().ok())
    }

    /// The body's content type (`text/plain;charset=UTF-8`); `text/plain` when the
    /// request named none (RFC 3428's default).
    pub fn content_type(&self) -> &str {
        self.variables
            .get("Content-Type")
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .unwrap_or("text/plain")
    }
}

/// A contact in a `ContactStatusChange`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ContactInfo {
    /// The contact URI, RFC 8599 parameters included.
    pub uri: String,
    /// `Created`, `Removed`, `Reachable`, `Unreachable`, `NonQualified`, `Updated`, …
    pub contact_status: String,
    /// The AOR it belongs to.
    #[serde(default)]
    pub aor: String,
}
