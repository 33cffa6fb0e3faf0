//! Reading extensions' contacts for waiting calls, many calls at once.
//!
//! A phone that refreshes its registration with the very same contact URI is silent in
//! ARI, so every waiting call re-reads its extension's contacts every second (the core's
//! contact poll). Read call by call, that is two `GET /channels/{id}/variable` per waiting
//! call per second: 200 waiting callers cost Asterisk 400 requests a second. The
//! [`ContactLister`] serves all of them together instead ("group commit"): re-listings
//! asked for while a batch is being read, or within [`POLL_SPACING`] of the end of the
//! previous poll batch, are read by one batch, whose `EVAL`s each read many extensions' contact ids
//! (`PJSIP_AOR(<ext>,contact)`), then many contacts' expiry and URI
//! (`PJSIP_CONTACT(<id>,expiration_time|uri)`), as many as fit in one request line.
//! A call's first listing (the call just arrived: reachable phones are rung at once)
//! never waits for the spacing: it goes into the next urgent batch, which starts as soon
//! as the previous urgent one is done.
//!
//! Each call gets exactly what reading its own extension alone gave ([`list_one`]): the
//! same contacts with the same registration markers, parsed by the same
//! [`parse_contact_listing`], in the order Asterisk lists them (which varies from one
//! read to the next anyway; `tests/asterisk_contact_batch.rs` compares the two).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use pushwake_core::pbx::{CallId, Contact};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{AriClient, AriError};
use crate::control::CONTACT_POLL;

/// Shortest time from the end of one poll batch to the start of the next. A little more
/// than the poll interval the adapter declares to the core ([`CONTACT_POLL`]): the calls a
/// batch answered ask again [`CONTACT_POLL`] after their answer, so they are all waiting
/// when the next batch starts and are served together, about once a second. (Measured
/// from the batch's start, they would arrive just after the next batch had started and
/// split into two cohorts each served every other second.)
pub const POLL_SPACING: Duration = CONTACT_POLL.saturating_add(Duration::from_millis(100));

/// How long a poll batch waits for more requests after the first one, so that requests
/// made in the same moment (calls that arrived together) start one batch, not several.
const GATHER: Duration = Duration::from_millis(50);

/// The longest `variable` query value (percent-encoded) one request carries. Asterisk 22
/// refuses a request line longer than 4,096 bytes with `400 Bad Request` (measured on
/// 22.10.1: a 4,087-byte request line passed, 4,097 failed); the rest of the line (method,
/// base path, channel id of up to 150 characters, `HTTP/1.1`) stays well within the 1 KiB
/// left.
const MAX_QUERY_VALUE: usize = 3_000;

/// Requests of one batch stage sent at the same time.
const CONCURRENT_REQUESTS: usize = 4;

/// A call seen this long ago is forgotten: if it asks again it is new (a first listing).
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// One waiting call's request.
struct Request {
    call: CallId,
    channel: String,
    extension: String,
    reply: oneshot::Sender<Result<Vec<Contact>, AriError>>,
}

/// Lists extensions' contacts for waiting calls, batching the calls' requests (see the
/// module's documentation). Cheap to clone: every clone feeds the same batcher.
#[derive(Clone, Debug)]
pub struct ContactLister {
    requests: mpsc::UnboundedSender<Request>,
}

impl ContactLister {
    /// Starts the batcher, which reads through `client`, in a task of its own (call it
    /// within a Tokio runtime). It runs until every clone is dropped.
    pub fn spawn(client: AriClient) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(client, rx));
        Self { requests }
    }

    /// The contacts `extension` has registered now, read on behalf of `call`, whose
    /// caller channel `channel` (or any other waiting caller's) evaluates the dialplan
    /// functions: ARI evaluates them only on a channel.
    pub async fn list(
        &self,
        call: &CallId,
        channel: &str,
        extension: &str,
    ) -> Result<Vec<Contact>, AriError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            call: call.clone(),
            channel: channel.to_owned(),
            extension: extension.to_owned(),
            reply,
        };
        let stopped = || AriError::Transport {
            method: "GET".into(),
            path: "/channels/{id}/variable".into(),
            message: "the contact listing task has stopped".into(),
        };
        self.requests.send(request).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The two kinds of batch, each with at most one batch in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// First listings of calls that just arrived: start at once.
    Urgent,
    /// Re-listings: a batch starts [`POLL_SPACING`] after the previous one ended.
    Poll,
}

async fn batcher(client: AriClient, mut requests: mpsc::UnboundedReceiver<Request>) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Lane>();
    let mut urgent: Vec<Request> = Vec::new();
    let mut polls: Vec<Request> = Vec::new();
    let mut first_poll_at: Option<Instant> = None;
    let mut last_poll_end: Option<Instant> = None;
    let (mut urgent_busy, mut poll_busy) = (false, false);
    let mut seen: HashMap<CallId, Instant> = HashMap::new();
    let mut open = true;
    loop {
        let now = Instant::now();
        if !urgent_busy && !urgent.is_empty() {
            urgent_busy = true;
            let batch = std::mem::take(&mut urgent);
            tokio::spawn(run_batch(
                client.clone(),
                batch,
                Lane::Urgent,
                done_tx.clone(),
            ));
        }
        let poll_due = first_poll_at.map(|first| {
            let gathered = first + GATHER;
            last_poll_end.map_or(gathered, |end| gathered.max(end + POLL_SPACING))
        });
        if !poll_busy && poll_due.is_some_and(|due| now >= due) {
            poll_busy = true;
            first_poll_at = None;
            seen.retain(|_, at| now.duration_since(*at) < FORGET_AFTER);
            let batch = std::mem::take(&mut polls);
            tokio::spawn(run_batch(
                client.clone(),
                batch,
                Lane::Poll,
                done_tx.clone(),
            ));
        }
        if !open && !urgent_busy && !poll_busy && urgent.is_empty() && polls.is_empty() {
            return;
        }
        let wake = poll_due.filter(|_| !poll_busy);
        tokio::select! {
            request = requests.recv(), if open => match request {
                Some(request) => {
                    let now = Instant::now();
                    if seen.insert(request.call.clone(), now).is_none() {
                        urgent.push(request);
                    } else {
                        first_poll_at.get_or_insert(now);
                        polls.push(request);
                    }
                }
                None => open = false,
            },
            Some(lane) = done.recv() => match lane {
                Lane::Urgent => urgent_busy = false,
                Lane::Poll => {
                    poll_busy = false;
                    last_poll_end = Some(Instant::now());
                }
            },
            () = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Reads one batch and answers each of its requests.
async fn run_batch(
    client: AriClient,
    batch: Vec<Request>,
    lane: Lane,
    done: mpsc::UnboundedSender<Lane>,
) {
    let calls = batch.len();
    let mut by_extension: HashMap<String, Vec<oneshot::Sender<_>>> = HashMap::new();
    let mut extensions: Vec<String> = Vec::new();
    let mut channels: Vec<String> = Vec::new();
    let mut alone: Vec<Request> = Vec::new();
    for request in batch {
        if !channels.contains(&request.channel) {
            channels.push(request.channel.clone());
        }
        if !is_plain(&request.extension) {
            alone.push(request);
            continue;
        }
        let waiting = by_extension.entry(request.extension.clone()).or_default();
        if waiting.is_empty() {
            extensions.push(request.extension.clone());
        }
        waiting.push(request.reply);
    }
    let pool = ChannelPool(Mutex::new(channels.into()));
    let (listings, requests) = read_listings(&client, &pool, &extensions).await;
    tracing::debug!(
        ?lane,
        calls,
        extensions = extensions.len(),
        requests,
        "contacts listed"
    );
    for (extension, listing) in extensions.into_iter().zip(listings) {
        for reply in by_extension.remove(&extension).unwrap_or_default() {
            let _ = reply.send(listing.clone());
        }
    }
    // Extensions with characters that would change the meaning of a dialplan expression
    // are read on their own, as one expression each.
    for request in alone {
        let listing = list_one(&client, &request.channel, &request.extension).await;
        let _ = request.reply.send(listing);
    }
    let _ = done.send(lane);
}

/// The caller channels a batch may evaluate on; one found gone is dropped for the rest
/// of the batch.
struct ChannelPool(Mutex<VecDeque<String>>);

impl ChannelPool {
    fn first(&self) -> Option<String> {
        self.0.lock().unwrap().front().cloned()
    }

    fn drop_gone(&self, channel: &str) {
        self.0.lock().unwrap().retain(|c| c != channel);
    }
}

/// Evaluates `expression` on a channel of the pool, trying the next one while the
/// channel tried is gone (its caller hung up).
async fn eval(
    client: &AriClient,
    pool: &ChannelPool,
    expression: &str,
) -> Result<String, AriError> {
    loop {
        let Some(channel) = pool.first() else {
            return Err(AriError::NotFound(
                "every caller channel of the contact listing is gone".into(),
            ));
        };
        match client.get_variable(&channel, expression).await {
            Err(AriError::NotFound(_)) => pool.drop_gone(&channel),
            other => return other,
        }
    }
}

/// Every extension's listing (in the order given), and how many requests it took.
async fn read_listings(
    client: &AriClient,
    pool: &ChannelPool,
    extensions: &[String],
) -> (Vec<Result<Vec<Contact>, AriError>>, usize) {
    let mut ids: Vec<Result<Vec<String>, AriError>> = vec![Ok(Vec::new()); extensions.len()];
    let chunks = aor_chunks(extensions);
    let mut requests = chunks.len();
    let replies = run_chunks(client, pool, chunks).await;
    for (members, reply) in replies {
        match reply {
            Ok(text) => {
                let mut groups = split_groups(&text);
                for i in members {
                    ids[i] = Ok(contact_ids(
                        &groups.remove(&i).unwrap_or_default().join(" "),
                    ));
                }
            }
            Err(error) => {
                for i in members {
                    ids[i] = Err(error.clone());
                }
            }
        }
    }
    let mut listings: Vec<Result<Vec<String>, AriError>> = vec![Ok(Vec::new()); extensions.len()];
    let mut wanted: Vec<(usize, &[String])> = Vec::new();
    for (i, found) in ids.iter().enumerate() {
        match found {
            Ok(ids) if ids.iter().all(|id| is_plain_contact_id(id)) => {
                if !ids.is_empty() {
                    wanted.push((i, ids));
                }
            }
            Ok(_) => {
                listings[i] = Err(AriError::Decode {
                    path: "/channels/{id}/variable".into(),
                    message: format!(
                        "a contact id of extension {:?} holds characters pushwake does not put in a dialplan expression",
                        extensions[i]
                    ),
                });
            }
            Err(error) => listings[i] = Err(error.clone()),
        }
    }
    let chunks = contact_chunks(&wanted);
    requests += chunks.len();
    for (members, reply) in run_chunks(client, pool, chunks).await {
        match reply {
            Ok(text) => {
                let mut groups = split_groups(&text);
                for i in members {
                    if let Ok(tokens) = &mut listings[i] {
                        tokens.extend(groups.remove(&i).unwrap_or_default());
                    }
                }
            }
            Err(error) => {
                for i in members {
                    listings[i] = Err(error.clone());
                }
            }
        }
    }
    let listings = listings
        .into_iter()
        .map(|tokens| tokens.map(|tokens| parse_contact_listing(&tokens.join(" "))))
        .collect();
    (listings, requests)
}

/// Sends the chunks' expressions, a few at a time; each reply with its chunk's members.
async fn run_chunks(
    client: &AriClient,
    pool: &ChannelPool,
    chunks: Vec<Chunk>,
) -> Vec<(Vec<usize>, Result<String, AriError>)> {
    stream::iter(chunks)
        .map(|chunk| async move {
            let reply = eval(client, pool, &chunk.expression).await;
            (chunk.members, reply)
        })
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect()
        .await
}

/// Lists one extension's contacts on its own in two requests, the way a batch lists many: its
/// contact ids, then one `EVAL` of every contact's expiry and URI.
pub async fn list_one(
    client: &AriClient,
    channel: &str,
    extension: &str,
) -> Result<Vec<Contact>, AriError> {
    let ids = client
        .get_variable(channel, &format!("PJSIP_AOR({extension},contact)"))
        .await?;
    let ids = contact_ids(&ids);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let fields: Vec<String> = ids.iter().map(|id| contact_fields(id)).collect();
    let listing = client
        .get_variable(channel, &format!("EVAL({})", fields.join(" ")))
        .await?;
    Ok(parse_contact_listing(&listing))
}

/// `PJSIP_AOR(…,contact)`'s comma-separated contact ids.
fn contact_ids(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The expression reading one contact's expiry and URI, separated by a space.
fn contact_fields(id: &str) -> String {
    format!("${{PJSIP_CONTACT({id},expiration_time)}} ${{PJSIP_CONTACT({id},uri)}}")
}

/// Parses `<expiry> <uri> <expiry> <uri> …`, the value of the expressions of
/// [`contact_fields`] joined by spaces. A SIP URI holds no white space, so tokens split
/// cleanly; a contact that expired between the two requests yields empty fields, which
/// simply vanish.
pub(crate) fn parse_contact_listing(listing: &str) -> Vec<Contact> {
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

/// Whether an extension can go into a batch's expression as it is: nothing in it may
/// end a function argument or start a substitution (`,`, `)`, `$`, `{`, white space, …).
fn is_plain(extension: &str) -> bool {
    !extension.is_empty()
        && extension.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'*' | b'#')
        })
}

/// Whether a contact id (`<aor>;@<hash>`) can go into an expression as it is.
fn is_plain_contact_id(id: &str) -> bool {
    id.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-' | b'.' | b'+' | b'*' | b'#' | b';' | b'@')
    })
}

/// One request of a batch: the expression to evaluate and whose answers it carries
/// (indices into the batch's extensions).
#[derive(Debug, PartialEq, Eq)]
struct Chunk {
    expression: String,
    members: Vec<usize>,
}

/// The marker token that starts member `i`'s part of a reply. No contact id, expiry or
/// URI starts with `=`, so the markers split a reply unambiguously.
fn marker(i: usize) -> String {
    format!("={i}")
}

/// Packs `parts` (member, expression) into `EVAL(…)` expressions whose percent-encoded
/// length stays within [`MAX_QUERY_VALUE`]; a member's parts may be spread over chunks.
fn pack(parts: impl IntoIterator<Item = (usize, String)>) -> Vec<Chunk> {
    let overhead = encoded_len("EVAL()");
    let mut chunks = Vec::new();
    let mut body = String::new();
    let mut members: Vec<usize> = Vec::new();
    for (member, part) in parts {
        let mark = if members.last() == Some(&member) {
            String::new()
        } else {
            format!("{} ", marker(member))
        };
        let piece = format!("{mark}{part} ");
        // A member continued in a new chunk needs its marker again.
        let fresh = format!("{} {part} ", marker(member));
        if !members.is_empty()
            && overhead + encoded_len(&body) + encoded_len(&piece) > MAX_QUERY_VALUE
        {
            chunks.push(Chunk {
                expression: format!("EVAL({})", body.trim_end()),
                members: std::mem::take(&mut members),
            });
            body.clear();
            body.push_str(&fresh);
        } else {
            body.push_str(&piece);
        }
        if members.last() != Some(&member) {
            members.push(member);
        }
    }
    if !members.is_empty() {
        chunks.push(Chunk {
            expression: format!("EVAL({})", body.trim_end()),
            members,
        });
    }
    chunks
}

/// The requests reading every extension's contact ids.
fn aor_chunks(extensions: &[String]) -> Vec<Chunk> {
    pack(
        extensions
            .iter()
            .enumerate()
            .map(|(i, ext)| (i, format!("${{PJSIP_AOR({ext},contact)}}"))),
    )
}

/// The requests reading the expiry and URI of every contact in `wanted` (member, its
/// contact ids), in order.
fn contact_chunks(wanted: &[(usize, &[String])]) -> Vec<Chunk> {
    pack(
        wanted
            .iter()
            .flat_map(|(i, ids)| ids.iter().map(move |id| (*i, contact_fields(id)))),
    )
}

/// A reply split at its markers: each member's tokens, in order.
fn split_groups(reply: &str) -> HashMap<usize, Vec<String>> {
    let mut groups: HashMap<usize, Vec<String>> = HashMap::new();
    let mut current: Option<usize> = None;
    for token in reply.split_whitespace() {
        if let Some(i) = token.strip_prefix('=').and_then(|i| i.parse().ok()) {
            current = Some(i);
            groups.entry(i).or_default();
        } else if let Some(i) = current {
            groups.entry(i).or_default().push(token.to_owned());
        }
    }
    groups
}

/// The length of `text` as a query value, percent-encoded the way the HTTP client does
/// it (`application/x-www-form-urlencoded`: a space is one `+`, and every byte other
/// than `A-Za-z0-9*-._` three).
fn encoded_len(text: &str) -> usize {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_' | b' ') {
                1
            } else {
                3
            }
        })
        .sum()
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

    fn extensions(n: usize) -> Vec<String> {
        (0..n).map(|i| (7000 + i).to_string()).collect()
    }

    #[test]
    fn aor_chunks_stay_within_the_request_line_and_cover_every_extension_once() {
        let exts = extensions(1_000);
        let chunks = aor_chunks(&exts);
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        // At most a tenth of a request per extension: the whole point.
        assert!(chunks.len() <= 1_000 / 40, "{} chunks", chunks.len());
        let mut seen = Vec::new();
        for chunk in &chunks {
            assert!(encoded_len(&chunk.expression) <= MAX_QUERY_VALUE);
            assert!(chunk.expression.starts_with("EVAL(="));
            assert!(chunk.expression.ends_with(",contact)})"));
            for &i in &chunk.members {
                let part = format!("{} ${{PJSIP_AOR({},contact)}}", marker(i), exts[i]);
                assert!(chunk.expression.contains(&part), "{part} missing");
            }
            seen.extend(chunk.members.iter().copied());
        }
        assert_eq!(seen, (0..1_000).collect::<Vec<_>>());
        assert_eq!(
            aor_chunks(&extensions(2))[0].expression,
            "EVAL(=0 ${PJSIP_AOR(7000,contact)} =1 ${PJSIP_AOR(7001,contact)})"
        );
        assert!(aor_chunks(&[]).is_empty());
    }

    #[test]
    fn contact_chunks_split_an_extension_with_its_marker_repeated() {
        let many: Vec<String> = (0..40).map(|k| format!("7001;@{k:032x}")).collect();
        let one = vec!["7000;@0123456789abcdef0123456789abcdef".to_owned()];
        let wanted: Vec<(usize, &[String])> = vec![(0, &one), (1, &many)];
        let chunks = contact_chunks(&wanted);
        assert!(chunks.len() >= 2, "{chunks:?}");
        assert_eq!(chunks[0].members, [0, 1]);
        for chunk in &chunks[1..] {
            assert_eq!(chunk.members, [1]);
            assert!(chunk
                .expression
                .starts_with("EVAL(=1 ${PJSIP_CONTACT(7001;@"));
        }
        for chunk in &chunks {
            assert!(encoded_len(&chunk.expression) <= MAX_QUERY_VALUE);
        }
        let all: String = chunks.iter().map(|c| c.expression.as_str()).collect();
        for id in many.iter().chain(&one) {
            assert_eq!(all.matches(&format!("PJSIP_CONTACT({id},uri)")).count(), 1);
            assert_eq!(
                all.matches(&format!("PJSIP_CONTACT({id},expiration_time)"))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn replies_split_at_markers_into_what_each_extension_alone_would_get() {
        // What Asterisk makes of `=0 ${…7000…} =1 ${…7001…} =2 ${…7002…}`: the first has
        // two contacts, the second none, the third one (the AOR stage's reply).
        let reply = "=0 7000;@aa,7000;@bb =1  =2 7002;@cc";
        let groups = split_groups(reply);
        assert_eq!(contact_ids(&groups[&0].join(" ")), ["7000;@aa", "7000;@bb"]);
        assert!(contact_ids(&groups[&1].join(" ")).is_empty());
        assert_eq!(contact_ids(&groups[&2].join(" ")), ["7002;@cc"]);
        // The contact stage: an expired contact's fields come back empty.
        let reply = "=0 1795478387 sip:7000@127.0.0.1:5060;pn-prid=x  =2 1795478390 sip:7002@h";
        let groups = split_groups(reply);
        assert_eq!(
            parse_contact_listing(&groups[&0].join(" ")),
            [Contact {
                uri: "sip:7000@127.0.0.1:5060;pn-prid=x".into(),
                registration: Some("1795478387".into())
            }]
        );
        assert_eq!(parse_contact_listing(&groups[&2].join(" ")).len(), 1);
        assert!(!groups.contains_key(&1));
    }

    #[test]
    fn only_plain_names_go_into_a_shared_expression() {
        assert!(is_plain("7000") && is_plain("alice.phone") && is_plain("+4930123"));
        for bad in ["", "70,00", "7000)", "${X}", "a b", "x|y"] {
            assert!(!is_plain(bad), "{bad}");
        }
        assert!(is_plain_contact_id("7000;@0123abcd"));
        assert!(!is_plain_contact_id("7000;@a}b"));
    }

    #[test]
    fn encoded_length_matches_form_encoding() {
        assert_eq!(encoded_len("EVAL(a b)"), 4 + 3 + 1 + 1 + 1 + 3);
        assert_eq!(
            encoded_len("${PJSIP_AOR(7000,contact)}"),
            3 + 3 + 9 + 3 + 4 + 3 + 7 + 3 + 3
        );
    }
}
