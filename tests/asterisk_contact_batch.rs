//! Batched contact listings on the real Asterisk 22 give every call exactly what
//! listing its extension alone gives: the same contacts with the same registration
//! markers — for extensions with five contacts, with none, asked for at the same moment
//! (first listings) and again (re-listings, the poll lane). Compared in URI order:
//! Asterisk itself lists an AOR's contacts in an order that varies from one read to the
//! next (seen on 22.10.1), whether read alone or in a batch.

use std::collections::BTreeSet;
use std::time::Duration;

use pushwake_asterisk::contacts::{list_one, ContactLister};
use pushwake_asterisk::{spawn_event_pump, AriEvent, EventFeed, EventsConfig};
use pushwake_core::pbx::{CallId, Contact};
use pushwake_testkit::asterisk::TestAsterisk;
use pushwake_testkit::sipp::{CallerEnd, SippRun};
use pushwake_testkit::slot::Slot;

/// Contacts registered per extension: phone `k` of slot 37 gets `CONTACTS[k - 1]`.
const CONTACTS: [u16; 5] = [5, 5, 0, 5, 5];

fn params(k: u8, d: u16) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid=37{k:02}{d:02}")
}

async fn register_all(pbx: &TestAsterisk, slot: Slot, expires: u32) {
    for k in 1..=5u8 {
        for d in 0..CONTACTS[usize::from(k) - 1] {
            SippRun::register_contact(
                &pbx.sip,
                &slot.phone(k),
                slot.port(10 + d),
                slot.port(2 + d),
                expires,
                &params(k, d),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

async fn next(feed: &mut tokio::sync::mpsc::Receiver<EventFeed>) -> EventFeed {
    tokio::time::timeout(Duration::from_secs(15), feed.recv())
        .await
        .expect("no ARI event within 15 s")
        .expect("the event pump stopped")
}

async fn list_all(
    lister: &ContactLister,
    channel: &str,
    slot: Slot,
    round: u8,
) -> Vec<Vec<Contact>> {
    let asks = (1..=5u8).map(|k| {
        let call = CallId(format!("call-{k}"));
        let extension = slot.phone(k);
        async move {
            lister
                .list(&call, channel, &extension)
                .await
                .unwrap_or_else(|e| panic!("round {round}: listing {extension}: {e}"))
        }
    });
    sorted(futures_util::future::join_all(asks).await)
}

/// Each extension's contacts in URI order.
fn sorted(mut listings: Vec<Vec<Contact>>) -> Vec<Vec<Contact>> {
    for contacts in &mut listings {
        contacts.sort_by(|a, b| a.uri.cmp(&b.uri));
    }
    listings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_listings_equal_listing_each_extension_alone() {
    let slot = Slot::new(37);
    let pbx = TestAsterisk::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    register_all(&pbx, slot, 0).await;
    register_all(&pbx, slot, 120).await;

    // A caller parked in the slot's application: ARI evaluates dialplan functions only on
    // a channel, and only on one in an application.
    let mut feed = spawn_event_pump(EventsConfig {
        url: pbx.ari_url.clone(),
        username: pbx.ari_user.clone(),
        password: pbx.ari_password.clone(),
        app: slot.app(),
    });
    assert_eq!(next(&mut feed).await, EventFeed::Connected);
    let mut caller = SippRun::caller(
        &pbx.sip,
        &slot.caller(),
        &slot.phone(3),
        slot.port(0),
        CallerEnd::Refused(404),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let channel = loop {
        if let EventFeed::Event(event) = next(&mut feed).await {
            if let AriEvent::StasisStart { channel, .. } = *event {
                break channel.id;
            }
        }
    };

    let client = pbx.client().clone();
    let lister = ContactLister::spawn(client.clone());
    let mut alone = Vec::new();
    for k in 1..=5u8 {
        let listing = list_one(&client, &channel, &slot.phone(k)).await;
        alone.push(listing.unwrap_or_else(|e| panic!("listing {} alone: {e}", slot.phone(k))));
    }
    for (k, contacts) in (1..=5u8).zip(&alone) {
        let uris: BTreeSet<String> = contacts.iter().map(|c| c.uri.clone()).collect();
        let registered: BTreeSet<String> = (0..CONTACTS[usize::from(k) - 1])
            .map(|d| {
                format!(
                    "sip:{}@127.0.0.1:{}{}",
                    slot.phone(k),
                    slot.port(2 + d),
                    params(k, d)
                )
            })
            .collect();
        assert_eq!(uris, registered, "extension {}", slot.phone(k));
        assert!(
            contacts.iter().all(|c| c.registration.is_some()),
            "every contact has its expiry: {contacts:?}"
        );
    }
    let alone = sorted(alone);
    // First listings, all at once; then the same calls again (re-listings).
    assert_eq!(list_all(&lister, &channel, slot, 1).await, alone);
    assert_eq!(list_all(&lister, &channel, slot, 2).await, alone);

    // The caller goes back to the dialplan (NOPUSH: 404 in the test dialplan).
    client
        .set_variable(&channel, "PUSHWAKE_STATUS", "NOPUSH")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .continue_in_dialplan(&channel)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    caller
        .finish(Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    register_all(&pbx, slot, 0).await;
}
