use super::*;
use crate::devices::fields::{valid_id, MAX_ID_LEN};

#[test]
fn paths_name_an_extension_and_maybe_a_device() {
    assert_eq!(
        parse_path("/v1/extensions/101/devices"),
        Some(("101", None))
    );
    assert_eq!(
        parse_path("/v1/extensions/101/devices/"),
        Some(("101", None))
    );
    assert_eq!(
        parse_path("/v1/extensions/101/devices/iphone"),
        Some(("101", Some("iphone")))
    );
    for other in [
        "/v1/extensions/101",
        "/v1/extensions/101/",
        "/v1/extensions/101/phones",
        "/v1/extensions/101/devicesx",
        "/v1/extensions/101/devices/a/b",
        "/v1/extensions/",
    ] {
        assert_eq!(parse_path(other), None, "{other}");
    }
}

#[test]
fn ids_need_no_quoting_anywhere() {
    for good in ["101", "+15551234567", "alice@example.com", "ios_1.2-b"] {
        assert!(valid_id(good), "{good}");
    }
    for bad in [
        "",
        "a b",
        "a'b",
        "a%20b",
        "2*",
        "a/b",
        "ü",
        &"1".repeat(MAX_ID_LEN + 1),
    ] {
        assert!(!valid_id(bad), "{bad}");
    }
}

#[test]
fn a_device_is_shown_with_fingerprints_for_its_secrets() {
    let mut params = pushwake_core::directory::DeviceParams::default();
    params.set("topic", "com.example.app.voip");
    params.set_secret("alert_token", "cafe".repeat(16));
    let device = StoredDevice {
        extension: "101".into(),
        device_id: "iphone".into(),
        platform: "apns".into(),
        token: "ab".repeat(32),
        params,
        learned: true,
        updated_at: 1_796_000_000,
    };
    let shown = view(&device);
    let text = shown.to_string();
    assert!(
        !text.contains(&"ab".repeat(32)) && !text.contains(&"cafe".repeat(16)),
        "{text}"
    );
    assert_eq!(
        shown["token"],
        DeviceToken::new("ab".repeat(32)).to_string()
    );
    assert_eq!(shown["settings"]["topic"], "com.example.app.voip");
    assert_eq!(
        shown["settings"]["alert_token"],
        DeviceToken::new("cafe".repeat(16)).to_string()
    );
    assert_eq!(shown["learned"], true);
}
