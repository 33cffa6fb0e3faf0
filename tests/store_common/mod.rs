//! What both backends of the device store must do alike: tests/store_sqlite.rs and
//! tests/store_postgres.rs run these against a real SQLite file and a real PostgreSQL.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use pushwake::store::{DeviceStore, StoreChange, StoreError, StoredDevice};
use pushwake_core::directory::DeviceParams;
use pushwake_core::messages::{DedupKey, Message, MessageId};

/// Tokens that string-built SQL or a careless encoding would mangle.
pub const WEIRD_TOKENS: &[&str] = &[
    "it's",
    "say \"hi\"",
    "x'; DROP TABLE pushwake_devices;--",
    "100% _wild_ \\ back\\slash",
    "$1 ?1 :name @p",
    "Grüße ü ß",
    "📞☎️ emoji 👩‍👩‍👧",
    "tab\tnew\nline\r\u{1}\u{7f}",
    " leading and trailing spaces ",
    "\u{feff}BOM \u{200b}zero-width",
];

pub fn device(extension: &str, device_id: &str, platform: &str, token: &str) -> StoredDevice {
    StoredDevice {
        extension: extension.into(),
        device_id: device_id.into(),
        platform: platform.into(),
        token: token.into(),
        params: DeviceParams::default(),
        learned: false,
        updated_at: 1_700_000_000,
    }
}

/// A device with settings of every kind, one of them secret.
pub fn device_with_params(extension: &str, device_id: &str, token: &str) -> StoredDevice {
    let mut params = DeviceParams::default();
    params.set("topic", "com.example.phone.voip");
    params.set("environment", "sandbox");
    params.set_secret("alert_token", "alert-'secret'-ü");
    StoredDevice {
        params,
        ..device(extension, device_id, "apns", token)
    }
}

fn keys(devices: &[StoredDevice]) -> Vec<(String, String)> {
    devices
        .iter()
        .map(|d| (d.extension.clone(), d.device_id.clone()))
        .collect()
}

fn pair(extension: &str, device_id: &str) -> (String, String) {
    (extension.to_owned(), device_id.to_owned())
}

/// put, load_all, get, replace, conflict, delete, delete_token, expire_learned.
pub async fn check_semantics(store: &DeviceStore) {
    assert_eq!(store.load_all().await.unwrap(), vec![]);
    store.ping().await.unwrap();

    let a = device_with_params("101", "phone", "tok-a");
    let b = device("101", "tablet", "fcm", "tok-b");
    let c = device("102", "phone", "apns", "tok-a"); // same token, another extension: fine
    for d in [&c, &b, &a] {
        store.put(d).await.unwrap();
    }
    let all = store.load_all().await.unwrap();
    assert_eq!(
        all,
        vec![a.clone(), b.clone(), c.clone()],
        "sorted, settings kept"
    );
    assert!(all[0]
        .params
        .entries()
        .any(|(k, _, secret)| k == "alert_token" && secret));
    assert_eq!(store.get("101", "phone").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("101", "nothing").await.unwrap(), None);

    // Replace: same key, new token, learned, newer; settings dropped.
    let a2 = StoredDevice {
        token: "tok-a2".into(),
        learned: true,
        updated_at: 1_700_000_100,
        ..device("101", "phone", "apns", "")
    };
    store.put(&a2).await.unwrap();
    assert_eq!(store.get("101", "phone").await.unwrap(), Some(a2.clone()));
    // Putting the very same device again is no conflict with itself.
    store.put(&a2).await.unwrap();

    // Conflict: another device id of 101 with tablet's platform and token.
    let thief = device("101", "other", "fcm", "tok-b");
    match store.put(&thief).await {
        Err(StoreError::Conflict {
            extension,
            device_id,
            platform,
        }) => {
            assert_eq!((extension.as_str(), device_id.as_str()), ("101", "tablet"));
            assert_eq!(platform, "fcm");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let shown = store.put(&thief).await.unwrap_err().to_string();
    assert!(!shown.contains("tok-b"), "the token shows: {shown}");
    // The same token on another platform is another token.
    store
        .put(&device("101", "other", "hms", "tok-b"))
        .await
        .unwrap();
    assert!(store.delete("101", "other").await.unwrap());
    assert!(!store.delete("101", "other").await.unwrap(), "already gone");
    assert_eq!(store.get("101", "other").await.unwrap(), None);

    // delete_token: every holder, in any extension; not other platforms' same token.
    store
        .put(&device("103", "x", "apns", "tok-dead"))
        .await
        .unwrap();
    store
        .put(&device("104", "y", "apns", "tok-dead"))
        .await
        .unwrap();
    store
        .put(&device("104", "z", "fcm", "tok-dead"))
        .await
        .unwrap();
    assert_eq!(
        store.delete_token("apns", "tok-dead").await.unwrap(),
        vec![pair("103", "x"), pair("104", "y")]
    );
    assert_eq!(
        store.delete_token("apns", "tok-dead").await.unwrap(),
        vec![]
    );
    assert!(store.get("104", "z").await.unwrap().is_some());

    // expire_learned: only learned devices, only strictly older.
    let learned = |ext: &str, id: &str, at: i64| StoredDevice {
        learned: true,
        updated_at: at,
        ..device(ext, id, "apns", &format!("tok-{ext}-{id}"))
    };
    store.put(&learned("105", "old", 1000)).await.unwrap();
    store.put(&learned("105", "edge", 2000)).await.unwrap();
    store.put(&learned("105", "new", 3000)).await.unwrap();
    store
        .put(&StoredDevice {
            updated_at: 10,
            ..device("105", "api", "apns", "tok-api")
        })
        .await
        .unwrap();
    let mut expired = store.expire_learned(2000).await.unwrap();
    expired.sort();
    assert_eq!(expired, vec![pair("105", "old")]);
    // a2 (learned, 1_700_000_100) is newer than 2000: kept.
    assert_eq!(
        keys(&store.load_all().await.unwrap()),
        vec![
            pair("101", "phone"),
            pair("101", "tablet"),
            pair("102", "phone"),
            pair("104", "z"),
            pair("105", "api"),
            pair("105", "edge"),
            pair("105", "new"),
        ]
    );
    assert_eq!(
        store.expire_learned(1_800_000_000).await.unwrap(),
        vec![
            pair("101", "phone"),
            pair("105", "edge"),
            pair("105", "new")
        ]
    );
}

/// Tokens, keys and settings with quotes, SQL, unicode come back byte for byte; a NUL
/// is refused with a clear error.
pub async fn check_weird_tokens(store: &DeviceStore) {
    let mut expected = Vec::new();
    for (i, token) in WEIRD_TOKENS.iter().enumerate() {
        let mut d = device_with_params("200", &format!("d{i:02}"), token);
        d.params.set_secret("also", *token);
        store.put(&d).await.unwrap();
        expected.push(d);
    }
    // Weird keys too.
    let odd = device("2'0\"1;--ü", "📱 'id'", "webhook", "tok-odd");
    store.put(&odd).await.unwrap();
    expected.insert(0, odd.clone());
    // A long token (a Web Push subscription can be a few hundred bytes; this is far more).
    let long = device(
        "200",
        "long",
        "webpush",
        &"{\"endpoint\":\"https://x/é\"}".repeat(400),
    );
    store.put(&long).await.unwrap();
    expected.push(long.clone());
    expected.sort_by(|a, b| (&a.extension, &a.device_id).cmp(&(&b.extension, &b.device_id)));

    let all = store.load_all().await.unwrap();
    assert_eq!(all.len(), expected.len());
    for (got, want) in all.iter().zip(&expected) {
        assert_eq!(got.token.as_bytes(), want.token.as_bytes());
        assert_eq!(got, want);
    }
    assert_eq!(store.get("2'0\"1;--ü", "📱 'id'").await.unwrap(), Some(odd));
    // Found by the exact token, and only by it.
    assert_eq!(store.delete_token("apns", "it'").await.unwrap(), vec![]);
    assert_eq!(
        store
            .delete_token("apns", "x'; DROP TABLE pushwake_devices;--")
            .await
            .unwrap(),
        vec![pair("200", "d02")]
    );
    assert_eq!(
        store.delete_token("webpush", &long.token).await.unwrap(),
        vec![pair("200", "long")]
    );
    // The conflict check compares exact tokens too.
    match store
        .put(&device_with_params("200", "again", "Grüße ü ß"))
        .await
    {
        Err(StoreError::Conflict { device_id, .. }) => assert_eq!(device_id, "d05"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    store
        .put(&device_with_params("200", "again", "Grüsse ü ß"))
        .await
        .unwrap();

    for bad in [
        device("200", "nul", "apns", "to\0ken"),
        device("2\u{0}1", "nul", "apns", "token"),
        device("200", "", "apns", "token"),
        device("200", "empty-token", "apns", ""),
        device(&"9".repeat(300), "long", "apns", "token"),
    ] {
        match store.put(&bad).await {
            Err(StoreError::Invalid(why)) => {
                assert!(!why.contains("to\0ken"), "{why}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    let nul = store
        .put(&device("200", "nul", "apns", "to\0ken"))
        .await
        .unwrap_err();
    assert_eq!(
        nul.to_string(),
        "the device cannot be stored: the token contains a NUL character"
    );
}

/// The next change from a subscription, within `within`.
pub async fn next_change(
    rx: &mut tokio::sync::mpsc::Receiver<StoreChange>,
    within: Duration,
) -> StoreChange {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(change)) => change,
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no change within {within:?}"),
    }
}

/// Times `f`.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let value = f.await;
    (value, start.elapsed())
}

/// A message for `extension`, with a dedup key unless `cseq` is `None`.
pub fn message(id: &str, extension: &str, at: u64, cseq: Option<u32>) -> Message {
    Message {
        id: MessageId(id.into()),
        extension: extension.into(),
        from: "\"Alice O'Hara\" <sip:200@pbx.example.com>".into(),
        content_type: "text/plain;charset=UTF-8".into(),
        body: format!("hello {id}"),
        received_at: at,
        dedup: cseq.map(|cseq| DedupKey {
            call_id: format!("call-of-{id}@127.0.0.1"),
            cseq,
        }),
    }
}

/// put_message (duplicates by id and by Call-ID and CSeq refused, no key never
/// colliding), load_messages in order, bodies byte for byte, delete_message.
pub async fn check_messages(store: &DeviceStore) {
    assert!(store.load_messages().await.unwrap().is_empty());
    let m1 = message("m1", "101", 300, Some(7));
    let m2 = message("m2", "101", 100, Some(7));
    let m3 = message("m3", "100", 500, None);
    let m4 = message("m4", "100", 500, None);
    for m in [&m1, &m2, &m3, &m4] {
        assert!(store.put_message(m).await.unwrap(), "{m:?}");
    }
    // The same id again, or another id with m1's Call-ID and CSeq: kept once.
    assert!(!store.put_message(&m1).await.unwrap());
    let mut retransmitted = message("m1-again", "101", 301, Some(7));
    retransmitted.dedup = m1.dedup.clone();
    assert!(!store.put_message(&retransmitted).await.unwrap());
    // Bodies and senders that string-built SQL or an encoding would mangle.
    let mut weird = Vec::new();
    for (n, text) in WEIRD_TOKENS.iter().enumerate() {
        let mut m = message(&format!("w{n:02}"), "102", 1_000, Some(n as u32));
        m.body = (*text).to_owned();
        m.from = format!("\"{text}\" <sip:200@pbx>");
        assert!(store.put_message(&m).await.unwrap(), "{text:?}");
        weird.push(m);
    }
    let mut expected = vec![m3.clone(), m4.clone(), m2.clone(), m1.clone()];
    expected.extend(weird.iter().cloned());
    assert_eq!(store.load_messages().await.unwrap(), expected);
    assert!(store.delete_message(&m1.id).await.unwrap());
    assert!(!store.delete_message(&m1.id).await.unwrap());
    // Its key is free again: a new message may reuse it.
    assert!(store.put_message(&retransmitted).await.unwrap());
    let too_long = message(&"x".repeat(300), "101", 1, None);
    assert!(matches!(
        store.put_message(&too_long).await,
        Err(StoreError::Invalid(_))
    ));
    let ids: Vec<String> = store
        .load_messages()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.0)
        .filter(|id| !id.starts_with('w'))
        .collect();
    assert_eq!(ids, ["m3", "m4", "m2", "m1-again"]);
}
