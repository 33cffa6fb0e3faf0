//! Property tests of the providers' replies: any HTTP status, `Retry-After` and body a
//! provider (or a proxy in front of it) may send gives a verdict, never a panic; the
//! verdict's reason, which goes into the log, is one bounded line and never quotes the
//! device's token, even when the body echoes it. Regressions are in
//! `proptest-regressions/push/reply_props.txt`.

use std::time::Duration;

use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::{apns, fcm, hms, retry_after, retry_starts_in_time, webhook, webpush, Attempt};

/// The longest reason accepted: a provider's fixed words plus 200 characters of its text.
const MAX_REASON_CHARS: usize = 600;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

fn any_status() -> impl Strategy<Value = StatusCode> {
    (100u16..=999).prop_map(|code| StatusCode::from_u16(code).unwrap())
}

/// A device token as the providers issue them (long enough not to occur by chance).
fn any_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9:_-]{16,80}"
}

/// A reply text: arbitrary, or with the token echoed somewhere in it.
fn any_text(token: String) -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,300}",
        (".{0,300}", ".{0,300}").prop_map(move |(a, b)| format!("{a}{token}{b}")),
        // Long texts: a proxy's HTML page, a provider listing many tokens.
        ".{0,40}".prop_map(|t| t.repeat(200)),
    ]
}

fn check(attempt: &Attempt, token: &str) -> Result<(), TestCaseError> {
    let reason = match attempt {
        Attempt::Delivered => return Ok(()),
        Attempt::Rejected { reason, .. } | Attempt::Retry { reason, .. } => reason,
    };
    prop_assert!(!reason.contains(token), "the token is in {reason:?}");
    prop_assert!(
        reason.chars().count() <= MAX_REASON_CHARS,
        "a reason of {} characters",
        reason.chars().count()
    );
    prop_assert!(!reason.contains(['\n', '\r']), "{reason:?} is not one line");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_retry_after_is_read_or_ignored_and_a_retry_is_in_time_or_given_up(
        value in prop_oneof![
            "[0-9]{1,30}",
            " ?[0-9]{1,20} ?",
            "[ -~]{0,40}",
            Just("18446744073709551615".to_owned()),
        ],
        window_ms in 0u64..60_000,
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(RETRY_AFTER, value);
        }
        let now = Instant::now();
        let deadline = now + Duration::from_millis(window_ms);
        if let Some(wait) = retry_after(&headers) {
            let in_time = retry_starts_in_time(now, wait, deadline);
            prop_assert_eq!(in_time, wait < Duration::from_millis(window_ms));
        }
    }

    #[test]
    fn any_apns_reply_gives_a_verdict(
        status in any_status(),
        (token, text) in any_token().prop_flat_map(|t| (Just(t.clone()), any_text(t))),
        as_json in any::<bool>(),
    ) {
        let body = if as_json {
            serde_json::json!({ "reason": text }).to_string()
        } else {
            text
        };
        let reason = apns::reply_reason(body.as_bytes(), &[&token]);
        check(&apns::classify(status, &reason, None), &token)?;
    }

    #[test]
    fn any_fcm_reply_gives_a_verdict(
        status in any_status(),
        (token, text) in any_token().prop_flat_map(|t| (Just(t.clone()), any_text(t))),
        code in prop_oneof![
            Just("UNREGISTERED".to_owned()),
            Just("INVALID_ARGUMENT".to_owned()),
            Just("QUOTA_EXCEEDED".to_owned()),
            ".{0,300}",
        ],
        shape in 0u8..3,
    ) {
        let body = match shape {
            0 => text,
            1 => serde_json::json!({"error": {"code": status.as_u16(), "message": text, "status": code}}).to_string(),
            _ => serde_json::json!({"error": {"message": "x", "status": "NOT_FOUND", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": text},
            ]}}).to_string(),
        };
        let error = fcm::FcmError::parse_scrubbed(&body, &[&token]);
        check(&fcm::classify(status, &error, None), &token)?;
    }

    #[test]
    fn any_hms_reply_gives_a_verdict(
        status in any_status(),
        (token, text) in any_token().prop_flat_map(|t| (Just(t.clone()), any_text(t))),
        code in prop_oneof![Just("80000000".to_owned()), Just("80300007".to_owned()), ".{0,300}"],
        as_json in any::<bool>(),
    ) {
        let body = if as_json {
            serde_json::json!({ "code": code, "msg": text }).to_string()
        } else {
            text
        };
        let (code, msg) = hms::reply_fields(&body, &[&token]);
        check(&hms::classify(status, &code, &msg, None), &token)?;
    }

    #[test]
    fn any_webhook_or_web_push_reply_gives_a_verdict(
        status in any_status(),
        (token, text) in any_token().prop_flat_map(|t| (Just(t.clone()), any_text(t))),
    ) {
        let detail = super::scrubbed_clip(&text, &[&token]);
        check(&webhook::classify(status, None, &detail), &token)?;
        check(&webpush::classify(status, None, &detail), &token)?;
    }
}

/// Found while writing the `Retry-After` property above (reading the retry loop it
/// covers): a `Retry-After` of 2⁶⁴−1 seconds made `Instant::now() + wait` panic there.
#[test]
fn a_retry_after_beyond_the_clock_is_too_late_rather_than_a_panic() {
    let now = Instant::now();
    let deadline = now + Duration::from_secs(20);
    assert!(!retry_starts_in_time(
        now,
        Duration::from_secs(u64::MAX),
        deadline
    ));
    assert!(retry_starts_in_time(now, Duration::from_secs(1), deadline));
}

/// Found by `any_fcm_reply_gives_a_verdict`: an `errorCode` (or `status`) of any length
/// and with line breaks went whole into the verdict's reason, and so into the log.
#[test]
fn an_fcm_error_code_of_any_size_gives_a_one_line_bounded_reason() {
    let code = format!("X\r\nFORGED LOG LINE {}", "A".repeat(10_000));
    let body = serde_json::json!({"error": {"message": "m", "status": code, "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code},
    ]}})
    .to_string();
    let error = fcm::FcmError::parse_scrubbed(&body, &[]);
    let attempt = fcm::classify(StatusCode::BAD_REQUEST, &error, None);
    check(&attempt, "no-token-in-this-case").unwrap();
}
