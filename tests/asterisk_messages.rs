//! SIP MESSAGE through ARI on the real Asterisk, for the messages issue: what pushwake's
//! ARI client can and cannot learn when it sends one (`AriClient::send_message`, with
//! `res_pjsip_messaging` loaded in the test PBX).
//!
//! - A registered phone gets the MESSAGE with the given From, body and extra header.
//! - Asterisk reports a phone's 500 as success. It sends the MESSAGE without a
//!   response callback (res_pjsip_messaging.c), so no answer of the phone ever reaches
//!   ARI. This is why the messages design cannot rest on Asterisk for "kept until the
//!   phone's 2xx" (docs/design.md). If a later Asterisk reports the answer, this test
//!   fails and says so.
//! - An endpoint without a contact is refused at once (404).
//!
//! Slot 30's phones 1 and 2.

use std::collections::BTreeMap;
use std::time::Duration;

use pushwake_asterisk::client::AriError;
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::Phone;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 30;

fn headers(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("X-Pushwake-Message-Id".to_owned(), id.to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_phone_gets_the_message_and_its_answer_never_reaches_ari() {
    let rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    let client = rig.pbx.client();
    let from = format!("\"Alice Example\" <sip:{}@127.0.0.1>", rig.caller());
    for (k, answer) in [(1, 200), (2, 500)] {
        let mut phone = rig.phone(k, 1, Phone::TakesMessage { answer }).await;
        rig.register_contact(k, 1, 120, "").await;
        let id = format!("m-{k}-{answer}");
        client
            .send_message(
                &rig.phone_number(k),
                &from,
                &format!("hello phone {k}"),
                &headers(&id),
            )
            .await
            .unwrap_or_else(|e| panic!("phone {k} answering {answer}: {e}"));
        rig.finish(&mut phone, SECS(15)).await;
        assert!(
            phone.messages().contains(&format!("SIP/2.0 {answer} ")),
            "the phone answered {answer}:\n{}",
            phone.messages()
        );
        assert_eq!(
            phone.logged("Body").as_deref(),
            Some(format!("hello phone {k}").as_str()),
            "{}",
            phone.log()
        );
        let got_from = phone.logged("From").unwrap_or_default();
        assert!(
            got_from.contains("Alice Example") && got_from.contains(&rig.caller()),
            "From as given: {got_from}"
        );
        assert_eq!(phone.logged("X-Pushwake-Message-Id"), Some(id));
        assert!(
            phone
                .logged("Content-Type")
                .unwrap_or_default()
                .starts_with("text/plain"),
            "{}",
            phone.log()
        );
        rig.register_contact(k, 1, 0, "").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_a_contact_is_refused_at_once() {
    let rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    rig.register_contact(3, 1, 0, "").await;
    let sent = rig
        .pbx
        .client()
        .send_message(
            &rig.phone_number(3),
            "sip:nobody@127.0.0.1",
            "hi",
            &headers("x"),
        )
        .await;
    assert!(matches!(sent, Err(AriError::NotFound(_))), "{sent:?}");
}
