use std::path::Path;

use super::*;
use crate::config::parse;
use crate::config::testing::*;
use crate::push::apns::{ALERT_TOKEN, ENVIRONMENT, SANDBOX};
use pushwake_core::directory::DeviceParams;

const NOW: i64 = 1_796_000_000;

/// A registry learning for `[apns]` (team TEAM123456, topic com.example.phone.voip,
/// alert topic com.example.phone) and `[fcm]` (project pushwake-test), and what it
/// asks the store to write.
fn registry() -> (
    Registry,
    mpsc::UnboundedReceiver<Persist>,
    Vec<tempfile::TempDir>,
) {
    let (apns_dir, apns) = apns_token_section("alert_topic = \"com.example.phone\"\n");
    let (fcm_dir, fcm) = fcm_section("");
    let config = parse(Path::new("pw.toml"), &format!("{apns}{fcm}{MINIMAL}")).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Registry::new(config.providers.clone(), Some(tx)),
        rx,
        vec![apns_dir, fcm_dir],
    )
}

fn voip(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn generic(port: u16, token: &str) -> String {
    format!("sip:101@10.0.0.9:{port};transport=udp;pn-provider=apns;pn-prid={token};pn-param=TEAM123456.com.example.phone.voip")
}

#[test]
fn a_registration_teaches_a_device_that_is_pushed_for_the_next_call() {
    let (registry, mut writes, _dirs) = registry();
    assert_eq!(
        registry.learn("101", "sip:101@10.0.0.1:5060", NOW),
        Learned::Nothing
    );
    let Learned::New(device) = registry.learn("101", &generic(5070, &voip(1)), NOW) else {
        panic!()
    };
    assert_eq!(device.platform, "apns");
    assert_eq!(device.token, voip(1));
    assert!(device.learned && device.updated_at == NOW);
    assert_eq!(device.device_id, learned_id("apns", &voip(1)));
    assert!(!device.device_id.contains(&voip(1)[..16]));
    assert_eq!(writes.try_recv().unwrap(), Persist::Put(device.clone()));
    let pushed = registry.devices_of("101");
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].platform, crate::push::apns::PLATFORM);
    assert_eq!(pushed[0].token.expose(), voip(1));
    assert_eq!(pushed[0].label, format!("101/{}", device.device_id));
    assert!(registry.devices_of("102").is_empty());

    // Seen again a minute later: nothing new to write.
    assert_eq!(
        registry.learn("101", &generic(5070, &voip(1)), NOW + 60),
        Learned::Known
    );
    // The same phone from another port an hour later: the same device, refreshed.
    let Learned::Again(again) = registry.learn("101", &generic(5999, &voip(1)), NOW + 3600) else {
        panic!()
    };
    assert_eq!(again.device_id, device.device_id);
    assert_eq!(again.updated_at, NOW + 3600);
    assert_eq!(registry.len(), 1);
    assert_eq!(writes.try_recv().unwrap(), Persist::Put(again));
}

#[test]
fn linphone_s_registration_is_one_device_with_its_alert_token() {
    let (registry, _writes, _dirs) = registry();
    let contact = format!(
        "sip:101@127.0.0.1:5161;transport=udp;pn-provider=apns.dev;pn-prid={}:remote&{}:voip;pn-param=TEAM123456.com.example.phone.remote&voip;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-snd=ring.caf",
        voip(7),
        voip(8)
    );
    let Learned::New(device) = registry.learn("101", &contact, NOW) else {
        panic!()
    };
    assert_eq!(device.token, voip(8));
    assert_eq!(device.params.get(ENVIRONMENT), Some(SANDBOX));
    assert_eq!(device.params.get(ALERT_TOKEN), Some(voip(7).as_str()));
    assert!(!format!("{device:?}").contains(&voip(7)), "{device:?}");
    assert!(!format!("{device:?}").contains(&voip(8)), "{device:?}");
}

#[test]
fn refused_registrations_teach_nothing_and_never_quote_the_token() {
    let (registry, mut writes, _dirs) = registry();
    for (contact, needle) in [
        (
            "sip:h;pn-provider=apns;pn-prid=zzsecretzz".to_owned(),
            "needs pn-param",
        ),
        (
            "sip:h;pn-provider=apns;pn-param=OTHERTEAM1.com.example.phone.voip;pn-prid=abcd"
                .to_owned(),
            "another developer's app",
        ),
        (
            "sip:h;pn-provider=fcm;pn-param=not-ours;pn-prid=zzsecretzz".to_owned(),
            "not-ours",
        ),
        (
            "sip:h;pn-provider=hms;pn-prid=zzsecretzz".to_owned(),
            "needs a [hms] section",
        ),
        (
            "sip:h;pn-provider=mqtt;pn-prid=zzsecretzz".to_owned(),
            "not one pushwake pushes through",
        ),
        (
            "sip:h;pn-provider=apns;pn-prid=zz%20secretzz".to_owned(),
            "malformed push parameters",
        ),
    ] {
        let Learned::Refused(reason) = registry.learn("101", &contact, NOW) else {
            panic!("{contact}")
        };
        assert!(reason.contains(needle), "{contact}: {reason}");
        assert!(!reason.contains("zzsecretzz"), "{reason}");
    }
    assert!(registry.is_empty());
    assert!(writes.try_recv().is_err(), "nothing to write");
}

#[test]
fn a_dead_token_and_an_old_registration_are_forgotten_an_api_device_is_not_expired() {
    let (registry, mut writes, _dirs) = registry();
    registry.learn("101", &generic(5070, &voip(1)), NOW);
    registry.learn("102", &generic(5071, &voip(2)), NOW - 40 * 86_400);
    registry.put(StoredDevice {
        extension: "103".into(),
        device_id: "backend-42".into(),
        platform: "fcm".into(),
        token: "fcm-token".into(),
        params: DeviceParams::default(),
        learned: false,
        updated_at: NOW - 400 * 86_400,
    });
    while writes.try_recv().is_ok() {}
    assert_eq!(
        registry.expire(NOW - 30 * 86_400),
        vec![("102".to_owned(), learned_id("apns", &voip(2)))]
    );
    assert_eq!(registry.len(), 2, "the API's device stays");
    assert_eq!(
        registry.forget_token("apns", &voip(1)),
        vec![("101".to_owned(), learned_id("apns", &voip(1)))]
    );
    assert_eq!(
        writes.try_recv().unwrap(),
        Persist::DeleteToken {
            platform: "apns".into(),
            token: voip(1)
        }
    );
    assert!(registry.forget_token("apns", &voip(1)).is_empty());
    assert!(writes.try_recv().is_err(), "nothing more to delete");
    assert!(registry.devices_of("101").is_empty());
}

#[test]
fn a_registration_of_a_token_the_api_registered_keeps_the_api_s_device() {
    let (registry, mut writes, _dirs) = registry();
    let api = StoredDevice {
        extension: "101".into(),
        device_id: "backend-7".into(),
        platform: "apns".into(),
        token: voip(3),
        params: DeviceParams::default(),
        learned: false,
        updated_at: NOW,
    };
    registry.put(api.clone());
    assert_eq!(
        registry.learn("101", &generic(5070, &voip(3)), NOW + 5),
        Learned::Known
    );
    assert_eq!(registry.list("101"), vec![api]);
    assert_eq!(registry.len(), 1);
    assert!(
        writes.try_recv().is_err(),
        "the API's device is the API's business"
    );
}

#[test]
fn a_device_that_refuses_call_pushes_is_kept_but_not_woken() {
    let (registry, _writes, _dirs) = registry();
    let mut params = DeviceParams::default();
    params.set(ALLOW_CALL_PUSH, "false");
    registry.put(StoredDevice {
        extension: "101".into(),
        device_id: "portsip-1".into(),
        platform: "fcm".into(),
        token: "fcm-token".into(),
        params,
        learned: false,
        updated_at: NOW,
    });
    assert_eq!(registry.list("101").len(), 1);
    assert!(registry.devices_of("101").is_empty());
}

fn api_device(extension: &str, id: &str, token: &str, updated_at: i64) -> StoredDevice {
    let mut params = DeviceParams::default();
    params.set("topic", "com.example.phone.voip");
    params.set_secret(ALERT_TOKEN, voip(9));
    StoredDevice {
        extension: extension.into(),
        device_id: id.into(),
        platform: "apns".into(),
        token: token.into(),
        params,
        learned: false,
        updated_at,
    }
}

#[tokio::test]
async fn a_resync_leaves_the_registry_holding_exactly_the_store_s_devices() {
    let (registry, _writes, _dirs) = registry();
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let store = crate::store::DeviceStore::open(&crate::store::StoreConfig {
        url: format!("sqlite:{}", dir.path().join("devices.db").display()),
    })
    .await
    .unwrap();
    let (a, b) = (
        api_device("101", "a", &voip(1), NOW),
        api_device("101", "b", &voip(2), NOW),
    );
    let c = api_device("102", "c", &voip(3), NOW);
    for d in [&a, &b, &c] {
        store.put(d).await.unwrap();
    }
    assert_eq!(registry.load_from(&store).await.unwrap(), 3);
    assert_eq!(registry.list("101"), vec![a.clone(), b.clone()]);
    // Behind the registry's back: b changed (its settings), c is gone, d is new, a is
    // the same.
    let mut b2 = b.clone();
    b2.params.set(ENVIRONMENT, SANDBOX);
    b2.updated_at = NOW + 5;
    let d = api_device("103", "d", &voip(4), NOW);
    store.put(&b2).await.unwrap();
    store.delete("102", "c").await.unwrap();
    store.put(&d).await.unwrap();
    assert_eq!(registry.resync_from(&store).await.unwrap(), 3);
    assert_eq!(registry.list("101"), vec![a, b2]);
    assert!(registry.list("102").is_empty());
    assert_eq!(registry.get("103", "d"), Some(d));
    assert_eq!(registry.len(), 3);
    assert_eq!(registry.devices_of("101").len(), 2);
}

#[tokio::test]
async fn a_resync_keeps_a_device_whose_write_is_still_queued() {
    let (registry, mut writes, _dirs) = registry();
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let store = crate::store::DeviceStore::open(&crate::store::StoreConfig {
        url: format!("sqlite:{}", dir.path().join("devices.db").display()),
    })
    .await
    .unwrap();
    let kept = api_device("101", "a", &voip(1), NOW);
    store.put(&kept).await.unwrap();
    assert_eq!(registry.load_from(&store).await.unwrap(), 1);
    // A phone registers just before a resync: learned in memory, its write queued.
    let Learned::New(learned) = registry.learn("102", &generic(5070, &voip(2)), NOW) else {
        panic!("learned")
    };
    assert_eq!(registry.resync_from(&store).await.unwrap(), 1);
    assert_eq!(
        registry.get("102", &learned.device_id),
        Some(learned.clone()),
        "a device whose write is on its way is not dropped"
    );
    assert_eq!(registry.get("101", "a"), Some(kept.clone()));
    // Once the writer is done with it (here: it never reached the store), the store is
    // what a resync goes by again.
    match writes.try_recv().unwrap() {
        Persist::Put(device) => registry.saved(&device),
        other => panic!("a put, not {other:?}"),
    }
    registry.resync_from(&store).await.unwrap();
    assert_eq!(registry.get("102", &learned.device_id), None);
    assert_eq!(registry.get("101", "a"), Some(kept));
}
