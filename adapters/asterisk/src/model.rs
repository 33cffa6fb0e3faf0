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
