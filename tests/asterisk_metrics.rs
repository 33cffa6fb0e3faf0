//! `/metrics` after one woken call on the real Asterisk 22 (a sipp caller, a sipp phone
//! that registers 300 ms after its push, the local APNs server): the counters and
//! histograms moved — the call handed over and ANSWERED, the push delivered through
//! APNs, the provider request timed, the wake-up (push accepted → REGISTER) timed for
//! the APNs platform, REGISTER → dial timed, the PBX connected — and no label value
//! holds the extension, the device token or the call id (nor does the text at all hold
//! the token or the call id). Slot 38 (TCP port 11 for the metrics listener).

use std::collections::HashMap;
use std::time::Duration;

use pushwake_testkit::config::{TestDevice, TestExtension};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::woken_call::{self, WokenCallPlan};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SLOT: u8 = 38;

/// Every sample of the OpenMetrics text: (name, labels, value).
fn samples(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().expect("a number"))
        })
        .collect()
}

/// The value of the sample `name` with exactly `labels`, if there is one.
fn value(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_call_moves_the_metrics_and_no_label_names_the_call() {
    let mut rig = Rig::asterisk(SLOT, env!("CARGO_BIN_EXE_pushwake")).await;
    let ext = rig.phone_number(1);
    let token = "38".repeat(32);
    let listen = format!("127.0.0.1:{}", rig.slot.port(11));
    let config = rig
        .config()
        .metrics(&listen)
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::apns(&token)));
    rig.start(config).await;
    rig.wait_log("metrics listening", SECS(5)).await;
    let url = format!("http://{listen}/metrics");
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot scrape {url}: {e}"));
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        response.text().await.unwrap()
    };
    let before = samples(&scrape().await);
    assert_eq!(value(&before, "pushwake_pbx_connected", &[]), Some(1.0));
    assert_eq!(
        value(&before, "pushwake_calls_started_total", &[]),
        Some(0.0)
    );

    let plan = WokenCallPlan {
        caller: rig.caller(),
        extension: ext.clone(),
        caller_port: rig.slot.port(0),
        phone_port: rig.slot.contact_port(1, 1),
        register_port: rig.slot.register_port(1, 1),
        token: token.clone(),
        wake_delay: Duration::from_millis(300),
        answer_after: Duration::from_millis(300),
        talk: Duration::from_secs(1),
    };
    let call = woken_call::run(&rig.pbx, &rig.apns_server, &plan).await;
    let call = rig.unwrap(call);
    assert_eq!(call.invite_call_id, call.push_call_id);
    rig.assert_clean().await;

    let text = scrape().await;
    // For the record (`-- --nocapture`): what an operator's scrape shows after one call.
    println!("{text}");
    let after = samples(&text);
    let report = || format!("{text}\nlog:\n{}", rig.logs());
    let expect = |name: &str, labels: &[(&str, &str)], wanted: fn(f64) -> bool| {
        let got = value(&after, name, labels);
        assert!(
            got.is_some_and(wanted),
            "{name}{labels:?} is {got:?}; metrics:\n{}",
            report()
        );
    };
    expect("pushwake_calls_started_total", &[], |v| v == 1.0);
    expect("pushwake_calls_total", &[("outcome", "ANSWERED")], |v| {
        v == 1.0
    });
    expect(
        "pushwake_pushes_total",
        &[
            ("provider", "apns"),
            ("kind", "incoming_call"),
            ("verdict", "delivered"),
        ],
        |v| v == 1.0,
    );
    expect(
        "pushwake_provider_attempts_total",
        &[("provider", "apns"), ("result", "delivered")],
        |v| v >= 1.0,
    );
    expect(
        "pushwake_provider_request_duration_seconds_count",
        &[("provider", "apns")],
        |v| v >= 1.0,
    );
    expect(
        "pushwake_wake_latency_seconds_count",
        &[("platform", "apns")],
        |v| v == 1.0,
    );
    // The phone registered 300 ms after the push was accepted (give or take the
    // machine), never in no time.
    expect(
        "pushwake_wake_latency_seconds_sum",
        &[("platform", "apns")],
        |v| v > 0.2 && v < 10.0,
    );
    expect("pushwake_register_to_dial_seconds_count", &[], |v| v >= 1.0);
    expect("pushwake_register_to_dial_seconds_sum", &[], |v| v < 1.0);
    expect("pushwake_pbx_disconnects_total", &[], |v| v == 0.0);

    // Nothing that names the call, the phone or its token.
    for (name, labels, _) in &after {
        for (key, label) in labels {
            for secret in [ext.as_str(), token.as_str(), call.push_call_id.as_str()] {
                assert!(
                    !label.contains(secret),
                    "{name}{{{key}=\"{label}\"}} holds {secret:?}"
                );
            }
        }
    }
    assert!(!text.contains(&token), "the token is on /metrics:\n{text}");
    assert!(
        !text.contains(&call.push_call_id),
        "the call id is on /metrics:\n{text}"
    );
}
