//! FreeSWITCH's events and replies in the engine's vocabulary, and the engine's commands
//! as Event Socket commands: plain functions, no I/O, so every rule is tested on the
//! captured frames alone.
//!
//! The names pushwake gives FreeSWITCH:
//! - [`EXTENSION_VAR`]: set by the dialplan before it hands a call over (`socket`);
//! - [`STATUS_VAR`]: set by pushwake before it gives the call back;
//! - [`CALL_VAR`] and [`CALLER_VAR`]: set on every leg pushwake originates, so that its
//!   events, and a later process after a restart, know whose leg it is.

use pushwake_core::pbx::{
    ChannelId, Contact, DialRequest, DialTarget, HangupReason, IncomingMessage, Party, PbxError,
    PbxEvent, WakeStatus, CALL_ID_HEADER,
};

use crate::frame::{Event, Headers};

/// The channel variable naming the extension a call is handed over for.
pub const EXTENSION_VAR: &str = "pushwake_extension";
/// The channel variable the dialplan reads after the hand-over (`ANSWERED`, `TIMEOUT`, …).
pub const STATUS_VAR: &str = "pushwake_status";
/// The channel variable holding, on a leg pushwake originated, the call's id.
pub const CALL_VAR: &str = "pushwake_call";
/// The channel variable holding, on a leg pushwake originated, the caller's channel.
pub const CALLER_VAR: &str = "pushwake_caller";

/// What `sofia_contact` answers for a user with no registration.
const NOT_REGISTERED: &str = "error/user_not_registered";

/// The caller the `connect` of an outbound `socket` hand-over describes (its reply
/// carries the whole channel): its channel, the extension the dialplan named, its
/// caller id.
pub fn caller_arrived(channel: &Headers) -> Result<PbxEvent, String> {
    let id = channel
        .get("Unique-ID")
        .filter(|id| valid_uuid(id))
        .ok_or("the hand-over names no channel (Unique-ID)")?;
    let extension = channel
        .get(&format!("variable_{EXTENSION_VAR}"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(PbxEvent::CallerArrived {
        channel: id.into(),
        extension,
        caller: Party {
            number: channel
                .get("Caller-Caller-ID-Number")
                .unwrap_or_default()
                .to_owned(),
            name: channel
                .get("Caller-Caller-ID-Name")
                .unwrap_or_default()
                .to_owned(),
        },
    })
}

/// The engine's event for one FreeSWITCH event, if it is one the engine cares about.
/// `ours` tells whether a channel is a leg pushwake originated and has not seen end (its
/// events carry [`CALL_VAR`] too; this covers events that do not list variables).
pub fn translate(event: &Event, ours: impl Fn(&str) -> bool) -> Option<PbxEvent> {
    let leg = |event: &Event| {
        let id = event.unique_id()?;
        let marked = event.header(&format!("variable_{CALL_VAR}")).is_some();
        (marked || ours(id)).then(|| id.to_owned())
    };
    match (event.name(), event.subclass()) {
        ("CHANNEL_HANGUP_COMPLETE", _) => {
            let cause = event.header("Hangup-Cause").unwrap_or("UNKNOWN");
            Some(PbxEvent::ChannelGone {
                channel: event.unique_id()?.into(),
                // FreeSWITCH hangs up the losers of a multi-leg originate (a ring group
                // of `loopback/` members) with LOSE_RACE.
                answered_elsewhere: cause == "LOSE_RACE",
                cause: cause.to_owned(),
            })
        }
        ("CHANNEL_ANSWER", _) => leg(event).map(|leg| PbxEvent::LegAnswered {
            leg: ChannelId(leg),
        }),
        ("CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA", _) => {
            leg(event).map(|leg| PbxEvent::LegRinging {
                leg: ChannelId(leg),
            })
        }
        ("CUSTOM", Some("sofia::register")) => Some(PbxEvent::ContactAdded {
            extension: event.header("from-user")?.to_owned(),
            uri: contact_uri(event.header("contact")?)?,
        }),
        ("CUSTOM", Some("sofia::unregister")) => Some(PbxEvent::ContactRemoved {
            extension: event.header("from-user")?.to_owned(),
            uri: contact_uri(event.header("contact")?)?,
        }),
        // Other headers than sofia::register's: `user`, not `from-user`.
        ("CUSTOM", Some("sofia::expire")) => Some(PbxEvent::ContactRemoved {
            extension: event.header("user")?.to_owned(),
            uri: contact_uri(event.header("contact")?)?,
        }),
        ("MESSAGE", _) => message_received(event).map(PbxEvent::MessageReceived),
        _ => None,
    }
}

/// The header pushwake puts on the `SMS::SEND_MESSAGE` of a message it sends, which
/// mod_sms copies into its `SMS::DELIVERY_REPORT`: what the report is matched by.
pub const MESSAGE_ID_VAR: &str = "pushwake_message_id";

/// The SIP MESSAGE a `MESSAGE` event announces (sofia_presence.c,
/// `sofia_presence_handle_sip_i_message`: `to_user`, `from_full`, `type`, the body),
/// if it is one a phone sent to an extension. Not a message within a call (it has a
/// `Unique-ID`: the phone is awake and in a call), nor one a `chat` API sent (its
/// `proto` is not `sip`). FreeSWITCH gives no Call-ID or CSeq: sofia absorbs a
/// retransmission itself.
pub fn message_received(event: &Event) -> Option<IncomingMessage> {
    if event.header("proto") != Some("sip") || event.unique_id().is_some() {
        return None;
    }
    let extension = event
        .header("to_user")
        .map(str::trim)
        .filter(|u| !u.is_empty())?;
    let from = match event.header("from_full") {
        Some(full) if !full.trim().is_empty() => full.trim().to_owned(),
        _ => format!("<sip:{}>", event.header("from")?),
    };
    Some(IncomingMessage {
        extension: extension.to_owned(),
        from,
        content_type: event
            .header("type")
            .filter(|t| !t.trim().is_empty())
            .unwrap_or("text/plain")
            .to_owned(),
        body: event.body.clone().unwrap_or_default(),
        dedup: None,
        declared_len: None,
    })
}

/// What a `SMS::DELIVERY_REPORT` says of the message pushwake sent, and which message
/// that was (its [`MESSAGE_ID_VAR`]): mod_sms's `Status` (`Success` only for the
/// phone's 2xx) and sofia's `Delivery-Result-Code` (the phone's answer, 0 when none
/// came or nobody was registered).
pub fn delivery_report(event: &Event) -> Option<(String, Result<(), PbxError>)> {
    if event.subclass() != Some("SMS::DELIVERY_REPORT") {
        return None;
    }
    let id = event.header(MESSAGE_ID_VAR)?.to_owned();
    let code = event
        .header("Delivery-Result-Code")
        .and_then(|c| c.trim().parse::<u16>().ok())
        .unwrap_or(0);
    let result = match event.header("Status") {
        Some("Success") => Ok(()),
        _ if code == 0 => Err(PbxError::Gone(
            "no registered phone took the message".to_owned(),
        )),
        _ => Err(PbxError::Failed(format!("the phone answered {code}"))),
    };
    Some((id, result))
}

/// `user@host` of a sender as a MESSAGE's From names it (`"Alice" <sip:200@pbx>;tag=x`),
/// the form mod_sms's `from` takes.
pub fn sender_address(from: &str) -> Option<String> {
    let uri = match (from.find('<'), from.find('>')) {
        (Some(open), Some(close)) if open < close => &from[open + 1..close],
        _ => from.split(';').next().unwrap_or_default(),
    };
    let address = uri
        .trim()
        .trim_start_matches("sips:")
        .trim_start_matches("sip:");
    let address = address.split([';', '?']).next().unwrap_or_default();
    (address.contains('@') && !address.contains(char::is_whitespace)).then(|| address.to_owned())
}

/// The URI of a `contact` header as sofia writes it (`"" <sip:101@host;pn-…>`, or a
/// bare URI), if it is one pushwake can dial safely (see [`dialable`]).
pub fn contact_uri(contact: &str) -> Option<String> {
    let contact = contact.trim();
    let uri = match (contact.find('<'), contact.rfind('>')) {
        (Some(open), Some(close)) if open < close => &contact[open + 1..close],
        _ => contact,
    };
    dialable(uri).then(|| uri.to_owned())
}

/// Whether `uri` can go into an `originate` dial string as it is: a `sip:`/`sips:` URI
/// with none of the characters that mean something to FreeSWITCH's dial strings (`,` and
/// `|` separate destinations, braces and brackets hold variables, a space ends the dial
/// string). A phone registers its own contact: this is what keeps a crafted one from
/// adding destinations or variables to pushwake's originate.
pub fn dialable(uri: &str) -> bool {
    (uri.starts_with("sip:") || uri.starts_with("sips:")) && safe_to_dial(uri)
}

/// Whether a leg's target can be put into an `originate` as it is: a contact as
/// [`dialable`] says, or a fallback dial string of one endpoint
/// (`sofia/gateway/gw/+15551234567`, `loopback/+15551234567/default`) with nothing that
/// could start a second one or a variable block.
pub fn dialable_target(target: &DialTarget) -> bool {
    match target {
        DialTarget::Contact(uri) => dialable(uri),
        DialTarget::Fallback(dial) => !dial.is_empty() && safe_to_dial(dial),
    }
}

fn safe_to_dial(s: &str) -> bool {
    s.len() <= 2048
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b",|{}[]<>^'\"\\".contains(&b))
}

/// The contacts in the answer to `sofia_contact <ext>@<domain>`:
/// `sofia/<profile>/<uri>`, several separated by commas, or
/// `error/user_not_registered` for none. Each contact's URI as
/// [`ContactAdded`](PbxEvent::ContactAdded) names it, and its profile.
pub fn contacts(answer: &str) -> Result<Vec<(Contact, String)>, PbxError> {
    let answer = answer.trim();
    if answer.is_empty() || answer == NOT_REGISTERED {
        return Ok(Vec::new());
    }
    if answer.starts_with("-ERR") || answer.starts_with("error/") {
        return Err(PbxError::Failed(format!("sofia_contact: {answer}")));
    }
    let mut found = Vec::new();
    for entry in answer.split(',') {
        let Some(rest) = entry.trim().strip_prefix("sofia/") else {
            continue;
        };
        let Some((profile, uri)) = rest.split_once('/') else {
            continue;
        };
        if dialable(uri) {
            found.push((
                Contact {
                    uri: uri.to_owned(),
                    // Every REGISTER is a sofia::register event, refreshes included.
                    registration: None,
                },
                profile.to_owned(),
            ));
        }
    }
    Ok(found)
}

/// The `originate` of a leg: `bgapi` it. The leg gets the engine's id as its UUID, the
/// call's id as [`CALL_VAR`], the caller's channel as [`CALLER_VAR`], the caller's id, a
/// ring timeout, and, towards a contact, `X-Pushwake-Call-Id` and the extension's
/// `presence_id` in `domain`; once answered it parks, until pushwake bridges it to the
/// caller.
pub fn originate(request: &DialRequest, profile: &str, domain: &str) -> String {
    // A fallback number is a stranger's phone: it is not told pushwake's call id, and its
    // leg is not the extension's for the lamps.
    let (header, presence) = match request.target {
        DialTarget::Contact(_) => (
            safe(request.call.as_str()),
            format!("{}@{}", safe(&request.extension), safe(domain)),
        ),
        DialTarget::Fallback(_) => (String::new(), String::new()),
    };
    let vars = [
        ("origination_uuid", safe(request.leg.as_str())),
        (CALL_VAR, safe(request.call.as_str())),
        (CALLER_VAR, safe(request.caller_channel.as_str())),
        (&format!("sip_h_{CALL_ID_HEADER}") as &str, header),
        // What `user/<extension>` sets by itself: the leg shows on the extension's BLF
        // lamps (ringing, in use) as a call dialled to the user would.
        ("presence_id", presence),
        ("origination_caller_id_number", safe(&request.caller.number)),
        ("origination_caller_id_name", safe(&request.caller.name)),
        (
            "originate_timeout",
            request.timeout.as_secs().max(1).to_string(),
        ),
    ];
    let vars: Vec<String> = vars
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| {
            if value.contains(' ') {
                format!("{name}='{value}'")
            } else {
                format!("{name}={value}")
            }
        })
        .collect();
    let endpoint = match &request.target {
        DialTarget::Contact(uri) => format!("sofia/{}/{uri}", safe(profile)),
        DialTarget::Fallback(dial) => dial.clone(),
    };
    format!("originate {{{}}}{endpoint} &park()", vars.join(","))
}

/// A value for an originate variable: only what needs no escaping (letters, digits,
/// space and `+-._@#*()`); anything else is dropped. Caller ids lose punctuation they
/// rarely have; nothing a caller sends can end the variable block.
fn safe(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_alphanumeric() || " +-._@#*()".contains(*c))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Whether `id` looks like a FreeSWITCH channel UUID (what goes into `uuid_*` commands).
pub fn valid_uuid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The `api` command hanging `channel` up: `LOSE_RACE` (the phone is told "call
/// completed elsewhere") when another device answered, `NORMAL_CLEARING` otherwise.
pub fn hangup(channel: &str, reason: HangupReason) -> String {
    let cause = match reason {
        HangupReason::AnsweredElsewhere => "LOSE_RACE",
        HangupReason::Normal => "NORMAL_CLEARING",
    };
    format!("uuid_kill {} {cause}", safe(channel))
}

/// The `api` commands joining the caller with the leg that answered, in order: the
/// status first (for when the conversation ends), the caller answered (FreeSWITCH's
/// `uuid_bridge` of a parked leg that was never answered replies `+OK` and then fails:
/// measured), then the bridge.
pub fn connect(caller: &str, leg: &str, status: WakeStatus) -> [String; 3] {
    let (caller, leg) = (safe(caller), safe(leg));
    [
        format!("uuid_setvar {caller} {STATUS_VAR} {status}"),
        format!("uuid_answer {caller}"),
        format!("uuid_bridge {caller} {leg}"),
    ]
}

/// Whether an `api` answer is a failure (`-ERR …`, FreeSWITCH's form for every command
/// that fails), and which: a channel that is gone, or another failure.
pub fn api_result(command: &str, answer: &str) -> Result<(), PbxError> {
    let answer = answer.trim();
    match answer.strip_prefix("-ERR") {
        None => Ok(()),
        Some(why) if why.contains("No such channel") || why.contains("Invalid uuid") => {
            Err(PbxError::Gone(format!("{command}: {}", why.trim())))
        }
        Some(why) => Err(PbxError::Failed(format!("{command}: {}", why.trim()))),
    }
}

#[cfg(test)]
mod tests;
