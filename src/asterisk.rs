//! Asterisk as a PBX for the wake logic: maps ARI events to [`PbxEvent`]s and carries
//! out [`PbxCommand`]s through ARI. The only module of this crate that knows Asterisk;
//! the protocol itself lives in the `pushwake-asterisk` crate.

use std::collections::HashSet;

use pushwake_asterisk::{AriClient, AriError, AriEvent, EventFeed, EventsConfig, Originate};
use tokio::sync::mpsc;

use crate::config::AsteriskConfig;
use crate::pbx::{
    AppBridge, BridgeId, CallControl, ChannelId, Contact, HangupReason, ParkedChannel, Party,
    PbxCommand, PbxError, PbxEvent, PbxReply, PbxSnapshot, LEG_MARKER,
};

/// The channel variable the dialplan reads after `Stasis()` returns.
pub const STATUS_VARIABLE: &str = "PUSHWAKE_STATUS";
/// The SIP header that carries the call id in the INVITE to a woken phone.
pub const CALL_ID_HEADER: &str = "X-Pushwake-Call-Id";

/// Asterisk call control through ARI.
#[derive(Debug, Clone)]
pub struct AsteriskPbx {
    client: AriClient,
    /// A second connection pool used only to dial: on the path from a phone's REGISTER
    /// to its INVITE, the dial must find an idle, open connection, not one busy with a
    /// contact listing (a new connection costs a TCP handshake and an Asterisk thread).
    dial_client: AriClient,
    app: String,
}

impl AsteriskPbx {
    /// Call control for the application in `config`.
    pub fn new(config: &AsteriskConfig) -> Result<Self, AriError> {
        Ok(Self {
            client: AriClient::new(&config.url, &config.username, &config.password)?,
            dial_client: AriClient::new(&config.url, &config.username, &config.password)?,
            app: config.app.clone(),
        })
    }

    /// Keeps both REST connection pools warm, forever. Run it in its own task.
    pub async fn keep_warm(self) {
        tokio::join!(self.client.keep_warm(), self.dial_client.keep_warm());
    }

    /// Starts the event WebSocket and returns the translated event stream. On every
    /// (re)connect the stream first yields [`PbxEvent::Connected`] with a snapshot of the
    /// application's channels and bridges.
    pub fn events(&self, config: &AsteriskConfig) -> mpsc::Receiver<PbxEvent> {
        let feed = pushwake_asterisk::spawn_event_pump(EventsConfig {
            url: config.url.clone(),
            username: config.username.clone(),
            password: config.password.clone(),
            app: config.app.clone(),
        });
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(translate(self.clone(), feed, tx));
        rx
    }

    /// Subscribes the application to registrations (every PJSIP endpoint's contact
    /// changes), then reads what the PBX holds. Called on every (re)connect; the
    /// subscription comes first so nothing registering meanwhile is missed (the wake
    /// logic's contact polling covers the moment between connect and subscribe).
    async fn snapshot(&self) -> Result<PbxSnapshot, AriError> {
        self.client.subscribe(&self.app, "endpoint:PJSIP").await?;
        let (channels, bridges) = tokio::try_join!(self.client.channels(), self.client.bridges())?;
        let parked = channels
            .iter()
            .filter_map(|c| {
                c.stasis_args(&self.app).map(|args| ParkedChannel {
                    channel: ChannelId(c.id.clone()),
                    args,
                })
            })
            .collect();
        let bridges = bridges
            .into_iter()
            .filter(|b| b.name == self.app)
            .map(|b| AppBridge {
                bridge: BridgeId(b.id),
                channels: b.channels.into_iter().map(ChannelId).collect(),
            })
            .collect();
        Ok(PbxSnapshot {
            parked,
            bridges,
            all_channels: channels.into_iter().map(|c| ChannelId(c.id)).collect(),
        })
    }

    /// Whether a channel entering Stasis belongs to this application (a guard: events
    /// of other applications' channels must never be acted on).
    fn is_ours(&self, channel: &pushwake_asterisk::Channel) -> bool {
        let data = &channel.dialplan.app_data;
        data.is_empty() || data.split(',').next().map(str::trim) == Some(self.app.as_str())
    }

    /// Lists the extension's contacts in two requests whatever their number: their ids,
    /// then one `EVAL` reading every contact's expiry and URI. This runs every second
    /// per waiting call (to notice silent re-registrations), so it must stay cheap for
    /// Asterisk.
    async fn list_contacts(
        &self,
        channel: &str,
        extension: &str,
    ) -> Result<Vec<Contact>, AriError> {
        // Contact ids, comma separated. Evaluated on the caller's channel: ARI evaluates
        // dialplan functions only there.
        let ids = self
            .client
            .get_variable(channel, &format!("PJSIP_AOR({extension},contact)"))
            .await?;
        let ids: Vec<&str> = ids
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = ids
            .iter()
            .map(|id| {
                format!("${{PJSIP_CONTACT({id},expiration_time)}} ${{PJSIP_CONTACT({id},uri)}}")
            })
            .collect();
        let listing = self
            .client
            .get_variable(channel, &format!("EVAL({})", fields.join(" ")))
            .await?;
        Ok(parse_contact_listing(&listing))
    }

    async fn connect(&self, caller: &str, leg: &str, bridge: &str) -> Result<(), AriError> {
        self.client
            .set_variable(caller, STATUS_VARIABLE, "ANSWERED")
            .await?;
        tokio::try_join!(
            self.client.answer(caller),
            self.client.create_bridge(bridge, "mixing", &self.app)
        )?;
        self.client.add_channels(bridge, &[caller, leg]).await
    }
}

/// Parses `<expiry> <uri> <expiry> <uri> …` as produced by [`AsteriskPbx::list_contacts`].
/// A SIP URI holds no white space, so tokens split cleanly; a contact that expired
/// between the two requests yields empty fields, which simply vanish.
fn parse_contact_listing(listing: &str) -> Vec<Contact> {
    let mut contacts = Vec::new();
    let mut expiry: Option<&str> = None;
    for token in listing.split_whitespace() {
        if token.bytes().all(|b| b.is_ascii_digit()) {
            expiry = Some(token);
        } else {
            contacts.push(Contact {
                uri: token.to_owned(),
                registration: expiry.take().map(str::to_owned),
            });
        }
    }
    contacts
}

fn pbx_error(error: AriError) -> PbxError {
    match error {
        AriError::NotFound(what) => PbxError::Gone(what),
        other => PbxError::Failed(other.to_string()),
    }
}

fn caller_id(party: &Party) -> Option<String> {
    match (party.name.is_empty(), party.number.is_empty()) {
        (true, true) => None,
        (true, false) => Some(format!("<{}>", party.number)),
        (false, _) => Some(format!(
            "\"{}\" <{}>",
            party.name.replace('"', ""),
            party.number
        )),
    }
}

impl CallControl for AsteriskPbx {
    async fn execute(&self, command: PbxCommand) -> Result<PbxReply, PbxError> {
        let c = &self.client;
        let done = match command {
            PbxCommand::Ring { channel } => c.ring(channel.as_str()).await,
            PbxCommand::ListContacts {
                channel, extension, ..
            } => {
                return self
                    .list_contacts(channel.as_str(), &extension)
                    .await
                    .map(PbxReply::Contacts)
                    .map_err(pbx_error)
            }
            PbxCommand::Dial(request) => {
                let originate = Originate {
                    endpoint: format!("PJSIP/{}/{}", request.extension, request.contact_uri),
                    app: self.app.clone(),
                    app_args: vec![LEG_MARKER.to_owned(), request.call.0.clone()],
                    channel_id: request.leg.0.clone(),
                    originator: Some(request.caller_channel.0.clone()),
                    caller_id: caller_id(&request.caller),
                    timeout_secs: request.timeout.as_secs().max(1),
                    variables: vec![(
                        format!("PJSIP_HEADER(add,{CALL_ID_HEADER})"),
                        request.call.0.clone(),
                    )],
                };
                self.dial_client.originate(&originate).await.map(|_| ())
            }
            PbxCommand::Connect {
                caller,
                leg,
                bridge,
                ..
            } => {
                self.connect(caller.as_str(), leg.as_str(), bridge.as_str())
                    .await
            }
            PbxCommand::Hangup { channel, reason } => {
                let reason = match reason {
                    HangupReason::AnsweredElsewhere => "answered_elsewhere",
                    HangupReason::Normal => "normal",
                };
                c.hangup(channel.as_str(), reason).await
            }
            PbxCommand::Continue { channel, status } => {
                match c
                    .set_variable(channel.as_str(), STATUS_VARIABLE, status.as_str())
                    .await
                {
                    Ok(()) => c.continue_in_dialplan(channel.as_str()).await,
                    Err(e) => Err(e),
                }
            }
            PbxCommand::DestroyBridge { bridge } => c.destroy_bridge(bridge.as_str()).await,
        };
        done.map(|()| PbxReply::Done).map_err(pbx_error)
    }
}

/// Translates the ARI feed into PBX events, taking a snapshot on every (re)connect.
async fn translate(
    pbx: AsteriskPbx,
    mut feed: mpsc::Receiver<EventFeed>,
    tx: mpsc::Sender<PbxEvent>,
) {
    while let Some(item) = feed.recv().await {
        let event = match item {
            EventFeed::Connected => {
                let Some((snapshot, early)) = snapshot_while_buffering(&pbx, &mut feed).await
                else {
                    return;
                };
                if tx.send(PbxEvent::Connected(snapshot)).await.is_err() {
                    return;
                }
                for event in early.into_iter().filter_map(|e| pbx_event(&pbx, e)) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            EventFeed::Disconnected => Some(PbxEvent::Disconnected),
            EventFeed::Event(event) => pbx_event(&pbx, *event),
        };
        if let Some(event) = event {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Reads the snapshot while holding back the events that arrive meanwhile. A channel
/// whose `StasisStart` arrives during the snapshot is a new caller, not one left by a
/// previous process, so it is taken out of the snapshot's parked channels.
async fn snapshot_while_buffering(
    pbx: &AsteriskPbx,
    feed: &mut mpsc::Receiver<EventFeed>,
) -> Option<(PbxSnapshot, Vec<AriEvent>)> {
    let mut early = Vec::new();
    let mut attempts = 0u32;
    let taking = pbx.snapshot();
    tokio::pin!(taking);
    let mut snapshot = loop {
        tokio::select! {
            result = &mut taking => match result {
                Ok(snapshot) => break snapshot,
                Err(error) => {
                    attempts += 1;
                    tracing::warn!(%error, attempts, "cannot read Asterisk's channels after connecting; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempts.min(10)))).await;
                    taking.set(pbx.snapshot());
                }
            },
            item = feed.recv() => match item {
                Some(EventFeed::Event(event)) => early.push(*event),
                Some(_) => {}
                None => return None,
            },
        }
    };
    let entered: HashSet<&str> = early
        .iter()
        .filter_map(|e| match e {
            AriEvent::StasisStart { channel, .. } => Some(channel.id.as_str()),
            _ => None,
        })
        .collect();
    snapshot
        .parked
        .retain(|p| !entered.contains(p.channel.as_str()));
    Some((snapshot, early))
}

fn pbx_event(pbx: &AsteriskPbx, event: AriEvent) -> Option<PbxEvent> {
    match event {
        AriEvent::StasisStart { channel, args } => {
            pbx.is_ours(&channel).then(|| PbxEvent::ChannelEntered {
                caller: Party {
                    number: channel.caller.number.clone(),
                    name: channel.caller.name.clone(),
                },
                channel: ChannelId(channel.id),
                args,
            })
        }
        AriEvent::ChannelDestroyed {
            channel,
            cause,
            cause_txt,
        } => Some(PbxEvent::ChannelGone {
            channel: ChannelId(channel.id),
            cause: format!("{cause} {cause_txt}"),
        }),
        AriEvent::Dial { peer, dialstatus } if dialstatus == "RINGING" => {
            Some(PbxEvent::ChannelRinging {
                channel: ChannelId(peer.id),
            })
        }
        AriEvent::ChannelStateChange { channel } if channel.state == "Ringing" => {
            Some(PbxEvent::ChannelRinging {
                channel: ChannelId(channel.id),
            })
        }
        AriEvent::ContactStatusChange {
            endpoint,
            contact_info,
        } => {
            let extension = if contact_info.aor.is_empty() {
                endpoint.resource
            } else {
                contact_info.aor
            };
            match contact_info.contact_status.as_str() {
                "Created" | "NonQualified" | "Reachable" | "Updated" => {
                    Some(PbxEvent::ContactAdded {
                        extension,
                        uri: contact_info.uri,
                    })
                }
                "Removed" => Some(PbxEvent::ContactRemoved {
                    extension,
                    uri: contact_info.uri,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_listings_parse_by_token_whatever_goes_missing() {
        let linphone = "sip:101@127.0.0.1:5161;transport=udp;pn-provider=apns.dev;pn-prid=AB:remote&CD:voip;pn-param=T.org.linphone.phone.remote&voip";
        let listing = format!("1795478387 sip:101@10.0.0.1:5060  1795481387 {linphone}");
        assert_eq!(
            parse_contact_listing(&listing),
            vec![
                Contact {
                    uri: "sip:101@10.0.0.1:5060".into(),
                    registration: Some("1795478387".into())
                },
                Contact {
                    uri: linphone.into(),
                    registration: Some("1795481387".into())
                },
            ]
        );
        // The first contact expired between the two requests: its fields are empty.
        assert_eq!(parse_contact_listing("  1795481387 sip:b").len(), 1);
        assert!(parse_contact_listing("").is_empty());
        // An expiry without a URI (or the other way round) never pairs with a neighbour's.
        assert_eq!(
            parse_contact_listing("sip:a 1795481387 sip:b"),
            vec![
                Contact {
                    uri: "sip:a".into(),
                    registration: None
                },
                Contact {
                    uri: "sip:b".into(),
                    registration: Some("1795481387".into())
                },
            ]
        );
    }
}
