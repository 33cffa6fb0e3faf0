//! Property tests of the device API's bodies (and the command line's fields, which are
//! read the same way): any JSON object, with any extension and device id, gives a device
//! or an error naming a field, never a panic, and no error quotes a token; valid bodies
//! of every platform (PortSIP's `X-Push` fields too) read back as given; one field of
//! the wrong type is refused naming that field.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use pushwake::devices::fields::device_from_fields;
use pushwake::push::provider::ProviderSettings;
use pushwake_testkit::config::standalone;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

/// A token that must never appear in an error.
const TOKEN: &str = "5ecre7T0kenNeverQuoted0123456789abcdef";

/// Every provider configured (`standalone`'s sections, and `[hms]`).
fn providers() -> &'static [Arc<dyn ProviderSettings>] {
    static PROVIDERS: OnceLock<(tempfile::TempDir, Vec<Arc<dyn ProviderSettings>>)> =
        OnceLock::new();
    &PROVIDERS
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let path = standalone(dir.path(), "127.0.0.1:0", None).unwrap();
            let secret = dir.path().join("hms.secret");
            std::fs::write(&secret, "0a1b2c3d4e5f0a1b2c3d4e5f").unwrap();
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap()
                + &format!(
                    "\n[hms]\napp_id = \"107654321\"\nclient_secret_file = \"{}\"\n",
                    secret.display()
                );
            std::fs::write(&path, text).unwrap();
            let config = pushwake::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            (dir, config.providers)
        })
        .1
}

const FIELDS: &[&str] = &[
    "platform",
    "token",
    "subscription",
    "device-os",
    "device-uid",
    "app-id",
    "allow-call-push",
    "allow-message-push",
    "topic",
    "environment",
    "alert_token",
];

/// The fields that carry a token (a Web Push subscription is one).
const TOKEN_FIELDS: &[&str] = &["token", "subscription", "device-uid", "alert_token"];

/// Any JSON value, strings often carrying the token.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(vec![
            "apns",
            "fcm",
            "hms",
            "webhook",
            "webpush",
            "ios",
            "android",
            "sandbox",
            "production",
            "true",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(|s| Value::from(format!("{s}{TOKEN}"))),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(vec!["endpoint", "keys", "p256dh", "auth"])
                        .prop_map(str::to_owned),
                    "[a-z]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_body() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        prop_oneof![
            4 => proptest::sample::select(FIELDS).prop_map(str::to_owned),
            1 => "[a-z_-]{1,12}",
        ],
        any_json(),
        0..6,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9._+@-]{1,20}",
        1 => Just("learned-1".to_owned()),
        1 => ".{0,140}",
    ]
}

fn read(extension: &str, device_id: &str, body: &Map<String, Value>) -> Result<(), String> {
    device_from_fields(providers(), extension, device_id, body, 1_800_000_000)
        .map(|_| ())
        .map_err(|e| format!("{}\u{0}{}", e.field, e.message))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_body_gives_a_device_or_an_error_naming_a_field(
        extension in any_id(),
        device_id in any_id(),
        body in any_body(),
    ) {
        let Err(error) = device_from_fields(providers(), &extension, &device_id, &body, 0) else {
            return Ok(());
        };
        let named_ok = ["extension", "device_id"].contains(&error.field.as_str())
            || FIELDS.contains(&error.field.as_str())
            || body.contains_key(&error.field);
        prop_assert!(named_ok, "{error} names no field of the request");
        prop_assert!(!error.message.trim().is_empty());
        // The token must not be quoted where it is given as a token; a field that names
        // no secret (a `platform` of that text) may well be quoted.
        let elsewhere = body
            .iter()
            .any(|(k, v)| !TOKEN_FIELDS.contains(&k.as_str()) && v.to_string().contains(TOKEN));
        if !elsewhere {
            prop_assert!(!error.to_string().contains(TOKEN), "{error} quotes the token");
        }
    }

    #[test]
    fn valid_bodies_of_every_platform_read_back(
        hex in "[0-9a-f]{64}",
        fcm in "[A-Za-z0-9_:-]{20,160}",
        sandbox in any::<bool>(),
        app in "[a-z]{2,10}\\.[a-z]{2,10}",
    ) {
        let env = if sandbox { "sandbox" } else { "production" };
        let cases = [
            (json!({"platform": "apns", "token": hex, "environment": env}), "apns", hex.clone()),
            (json!({"platform": "fcm", "token": fcm}), "fcm", fcm.clone()),
            (json!({"platform": "hms", "token": fcm}), "hms", fcm.clone()),
            (json!({"platform": "webhook", "token": "desk-1"}), "webhook", "desk-1".to_owned()),
            (json!({"device-os": "ios", "device-uid": hex, "app-id": app}), "apns", hex.clone()),
            (json!({"device-os": "android", "device-uid": fcm}), "fcm", fcm.clone()),
        ];
        for (body, platform, token) in cases {
            let Value::Object(body) = body else { unreachable!() };
            let device = device_from_fields(providers(), "101", "phone", &body, 7)
                .map_err(|e| TestCaseError::fail(format!("{body:?}: {e}")))?;
            prop_assert_eq!(&device.platform, platform);
            prop_assert_eq!(&device.token, &token);
            prop_assert_eq!((device.extension.as_str(), device.device_id.as_str()), ("101", "phone"));
            prop_assert!(!device.learned);
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named(
        field in proptest::sample::select(vec!["platform", "token", "environment", "allow-call-push"]),
        value in prop_oneof![Just(json!(5)), Just(json!([TOKEN])), Just(json!({"x": TOKEN}))],
    ) {
        let mut body = json!({"platform": "apns", "token": "ab".repeat(32), "environment": "sandbox", "allow-call-push": true});
        body[field] = value;
        let Value::Object(body) = body else { unreachable!() };
        let result = read("101", "phone", &body);
        let error = result.expect_err("a wrong type is refused");
        let (named, message) = error.split_once('\u{0}').unwrap();
        prop_assert_eq!(named, field, "{}", message);
        prop_assert!(!message.contains(TOKEN));
    }
}
