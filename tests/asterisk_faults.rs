//! Faults on the real Asterisk 22 (started by `scripts/asterisk-up`), with sipp callers
//! and phones and the real `pushwake` binary: a crash with many callers waiting, push
//! providers that hang, refuse or answer late, a second daemon on the same application,
//! reloads under load and a device store that fails. The promise under test: every
//! parked caller gets an outcome within its ring window, whatever fails.
//!
//! Test slots 10–14 (shared with other test files: cargo runs test binaries one after
//! another), one per test, so this file's tests run in parallel with each other.

use std::time::Duration;

use pushwake_asterisk::{spawn_event_pump, EventsConfig};
use pushwake_testkit::config::{ConfigBuilder, TestDevice, TestExtension, TestFcm, API_ADMIN};
use pushwake_testkit::daemon::Daemon;
use pushwake_testkit::disk::SmallDisk;
use pushwake_testkit::fcm::{FcmReply, FcmServer};
use pushwake_testkit::rig::Rig;
use pushwake_testkit::sipp::{CallerEnd, Phone, SippRun};
use pushwake_testkit::slot::Slot;
use pushwake_testkit::webhook::generate_secret;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn token(slot: Slot, device: u8) -> String {
    format!("{:02x}{device:02x}", slot.0).repeat(16)
}

/// A rig for `slot` whose phones 1..=3 are unregistered (asleep), no daemon yet.
async fn asleep(slot: u8) -> Rig {
    let rig = Rig::asterisk(slot, env!("CARGO_BIN_EXE_pushwake")).await;
    for k in 1..=3u8 {
        for device in 1..=2u8 {
            rig.register(k, device, 0, &token(rig.slot, device)).await;
        }
    }
    rig
}

/// `count` callers from the slot's extra ports, all dialling `to`, each to end as `end`.
fn callers(rig: &Rig, count: u16, to: &str, end: CallerEnd) -> Vec<SippRun> {
    (0..count)
        .map(|n| rig.call_from(rig.slot.extra_port(n), to, end))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_callers_waiting_through_a_kill_9_all_come_back_recovered() {
    let mut rig = asleep(10).await;
    let ext = rig.phone_number(1);
    let config = rig
        .config()
        .extension(TestExtension::new(&ext, "60s").device(TestDevice::apns(token(rig.slot, 1))));
    rig.start(config).await;
    // The test dialplan answers RECOVERED with 410.
    let mut calls = callers(&rig, 20, &ext, CallerEnd::Refused(410));
    // All twenty are in pushwake's hands once each was pushed.
    rig.unwrap(rig.apns_server.wait_for(20, SECS(30)).await);
    rig.daemon_mut().kill().await;
    let parked = rig.pbx.channels_of(rig.slot).await.unwrap();
    assert_eq!(parked.len(), 20, "{parked:?}");
    assert!(parked.iter().all(|c| c.dialplan.app_name == "Stasis"));

    let restarted = tokio::time::Instant::now();
    rig.restart().await;
    for call in &mut calls {
        rig.finish(call, SECS(30)).await;
    }
    let took = restarted.elapsed();
    assert!(
        took < SECS(15),
        "the callers came back {took:?} after the restart"
    );
    eprintln!("twenty callers RECOVERED {took:?} after the restart began");
    let recovered = rig.logs().matches("RECOVERED").count();
    assert!(
        recovered >= 20,
        "{recovered} RECOVERED lines:\n{}",
        rig.logs()
    );
    rig.assert_clean().await;
}

/// The daemon's resident memory now, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(rig: &Rig) -> u64 {
    let pid = rig.daemon().pid().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A loopback TCP port nothing listens on: connections to it are refused.
fn refusing_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits for `run` and says how long it took since `since`.
async fn finish_timed(rig: &Rig, run: &mut SippRun, since: tokio::time::Instant) -> Duration {
    rig.finish(run, SECS(40)).await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_refusing_and_late_providers_delay_no_other_push_nor_any_dial() {
    let mut rig = asleep(11).await;
    let fcm = TestFcm::generate();
    let fcm_server = FcmServer::start(fcm.expectations(SECS(20))).await.unwrap();
    let fcm_token = |k: u8| format!("e{k}Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZFB-slot11-{k}");
    let (ext1, ext2, ext3, ext4, ext5) = (
        rig.phone_number(1),
        rig.phone_number(2),
        rig.phone_number(3),
        rig.phone_number(4),
        rig.phone_number(5),
    );
    let apns = |d: u8| TestDevice::apns(token(rig.slot, d));
    let config = rig
        .config()
        .fcm(&fcm, &fcm_server.endpoint(), &fcm_server.token_uri())
        // The webhook backend refuses every connection.
        .webhook(
            &format!("http://127.0.0.1:{}/wake", refusing_port()),
            &generate_secret(),
        )
        // Every provider at once: APNs hangs, FCM answers, the webhook refuses.
        .extension(
            TestExtension::new(&ext1, "20s")
                .device(apns(1))
                .device(TestDevice::fcm(fcm_token(1)))
                .device(TestDevice::webhook("backend-device-1")),
        )
        // Nothing but the hung APNs: falls through at its deadline.
        .extension(TestExtension::new(&ext2, "8s").device(apns(2)))
        // A phone already registered: rung at once, whatever APNs does.
        .extension(TestExtension::new(&ext3, "20s").device(apns(3)))
        // Nothing but the refusing webhook.
        .extension(TestExtension::new(&ext4, "8s").device(TestDevice::webhook("backend-device-4")))
        // Nothing but a dead FCM token: FAILED at once.
        .extension(TestExtension::new(&ext5, "20s").device(TestDevice::fcm(fcm_token(5))));
    rig.start(config).await;
    fcm_server.script(&fcm_token(5), FcmReply::unregistered());
    rig.register(3, 1, 120, &token(rig.slot, 3)).await;
    let mut phone3 = rig
        .phone(
            3,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut phone1 = rig
        .phone(
            1,
            2,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;

    // APNs accepts the connection and the request, and never answers.
    rig.apns_server.set_delay(SECS(3600));
    let started = tokio::time::Instant::now();
    let port = |n| rig.slot.extra_port(n);
    let mut call1 = rig.call_from(
        port(30),
        &ext1,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 500 },
    );
    let mut call2 = rig.call_from(port(31), &ext2, CallerEnd::Refused(480));
    let mut call3 = rig.call_from(
        port(32),
        &ext3,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 500 },
    );
    let mut call4 = rig.call_from(port(33), &ext4, CallerEnd::Refused(503));
    let mut call5 = rig.call_from(port(34), &ext5, CallerEnd::Refused(503));

    // The FCM device of ext1 is pushed at once, wakes, registers and is dialled.
    rig.unwrap(fcm_server.wait_for(1, SECS(5)).await);
    rig.register(1, 2, 120, &fcm_token(1)).await;
    let answered1 = finish_timed(&rig, &mut call1, started).await;
    rig.finish(&mut phone1, SECS(10)).await;
    let answered3 = finish_timed(&rig, &mut call3, started).await;
    rig.finish(&mut phone3, SECS(10)).await;
    let failed5 = finish_timed(&rig, &mut call5, started).await;
    let failed4 = finish_timed(&rig, &mut call4, started).await;
    let timeout2 = finish_timed(&rig, &mut call2, started).await;
    let took = format!(
        "ext1 answered {answered1:?}, ext3 answered {answered3:?}, ext5 FAILED {failed5:?}, \
         ext4 FAILED {failed4:?}, ext2 TIMEOUT {timeout2:?}"
    );
    assert!(answered1 < SECS(8) && answered3 < SECS(5), "{took}");
    assert!(failed5 < SECS(5), "{took}");
    assert!(
        failed4 <= SECS(9) && timeout2 >= SECS(7) && timeout2 < SECS(12),
        "{took}"
    );

    // The log says which provider did not answer, and for how long.
    let logs = rig.logs();
    let hung = rig
        .wait_log("push provider has not answered yet", SECS(5))
        .await;
    assert!(
        hung.contains("provider=apns") && hung.contains("waited=2."),
        "{hung}"
    );
    let ended = rig.wait_log("slow push provider", SECS(5)).await;
    assert!(ended.contains("provider=apns"), "{ended}");
    let refused = logs
        .lines()
        .find(|l| {
            l.contains("WARN")
                && l.contains("provider=webhook")
                && l.contains("push failed; retrying")
        })
        .unwrap_or_else(|| panic!("no warning names the refusing webhook:\n{logs}"));
    assert!(
        refused.to_lowercase().contains("connection refused"),
        "{refused}"
    );

    // A provider that answers after 5.5 s: delivered late, said so; the call still goes
    // back at its deadline.
    rig.apns_server.set_delay(Duration::from_millis(5500));
    let skip = rig.daemon().log_len();
    let late = tokio::time::Instant::now();
    let mut call2 = rig.call_from(port(31), &ext2, CallerEnd::Refused(480));
    rig.unwrap(rig.apns_server.wait_for(1, SECS(10)).await);
    let line = rig.unwrap(
        rig.daemon()
            .wait_log_after(skip, "answered late: delivered", SECS(5))
            .await,
    );
    assert!(
        line.contains("provider=apns") && line.contains("waited=5."),
        "{line}"
    );
    let timeout2 = finish_timed(&rig, &mut call2, late).await;
    assert!(
        timeout2 >= SECS(7) && timeout2 < SECS(12),
        "TIMEOUT after {timeout2:?}"
    );

    // Memory stays flat over many calls to the hung provider.
    rig.apns_server.set_delay(SECS(3600));
    let mut rss = Vec::new();
    for _round in 0..3 {
        let mut calls = callers(&rig, 15, &ext2, CallerEnd::Refused(480));
        for call in &mut calls {
            rig.finish(call, SECS(30)).await;
        }
        rss.push(rss_kib(&rig));
    }
    assert!(
        rss[2] <= rss[0] + 4096,
        "resident memory grew over 45 calls: {rss:?} KiB after each 15"
    );
    eprintln!("{took}; late APNs: TIMEOUT after {timeout2:?}; RSS after each 15 calls {rss:?} KiB");

    let logs = rig.logs();
    for secret in [
        token(rig.slot, 1),
        token(rig.slot, 2),
        fcm_token(1),
        fcm_token(5),
    ] {
        assert!(!logs.contains(&secret), "{secret} in the log:\n{logs}");
    }
    rig.assert_clean().await;
    rig.register(1, 2, 0, &fcm_token(1)).await;
    rig.register(3, 1, 0, &token(rig.slot, 3)).await;
}

/// A call to phone 1 of `rig` whose device 1 is asleep: pushed, wakes, registers,
/// answers; unregistered again afterwards (the caller must check what is left).
async fn woken_call(rig: &Rig, port: u16) {
    let ext = rig.phone_number(1);
    let pushed = rig.apns_server.accepted().len();
    let mut phone = rig
        .phone(
            1,
            1,
            Phone::Answer {
                answer_after_ms: 200,
            },
        )
        .await;
    let mut call = rig.call_from(
        port,
        &ext,
        CallerEnd::AnsweredCallerHangsUp { talk_ms: 500 },
    );
    rig.unwrap(rig.apns_server.wait_for(pushed + 1, SECS(15)).await);
    rig.register(1, 1, 120, &token(rig.slot, 1)).await;
    rig.finish(&mut call, SECS(30)).await;
    rig.finish(&mut phone, SECS(30)).await;
    rig.register(1, 1, 0, &token(rig.slot, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pushwake_on_the_same_application_is_refused_and_the_first_keeps_serving() {
    let mut rig = asleep(12).await;
    let ext = rig.phone_number(1);
    let config = rig
        .config()
        .extension(TestExtension::new(&ext, "20s").device(TestDevice::apns(token(rig.slot, 1))));
    rig.start(config).await;
    woken_call(&rig, rig.slot.extra_port(0)).await;
    rig.assert_clean().await;

    // A second daemon on the same configuration (the same application) refuses to start.
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_pushwake"));
    let mut second = Daemon::start_until(binary, rig.config_path(), "pushwake starting")
        .await
        .unwrap();
    let status = second.wait_exit(SECS(15)).await.unwrap();
    assert!(
        !status.success(),
        "the second pushwake exited with {status}"
    );
    let refusal = format!(
        "another pushwake (or ARI client) is serving application \"{}\"",
        rig.app()
    );
    assert!(second.logs().contains(&refusal), "{}", second.logs());
    assert!(
        !second.logs().contains("ARI events connected"),
        "{}",
        second.logs()
    );
    rig.wait_log("another client probed application", SECS(5))
        .await;

    // The first still serves.
    woken_call(&rig, rig.slot.extra_port(1)).await;
    rig.assert_clean().await;

    // Killed with a caller waiting, the application lingers in Asterisk; the next
    // daemon still starts (nobody answers the probe) and returns the caller.
    let mut waiting = rig.call_from(rig.slot.extra_port(2), &ext, CallerEnd::Refused(410));
    rig.unwrap(rig.apns_server.wait_for(3, SECS(15)).await);
    rig.daemon_mut().kill().await;
    rig.restart().await;
    rig.finish(&mut waiting, SECS(30)).await;
    rig.assert_clean().await;

    // A client that takes the application anyway (connecting without asking) is noticed.
    let skip = rig.daemon().log_len();
    let rival = spawn_event_pump(EventsConfig {
        url: rig.pbx.ari_url.clone(),
        username: rig.pbx.ari_user.clone(),
        password: rig.pbx.ari_password.clone(),
        app: rig.app(),
    });
    let line = rig.unwrap(
        rig.daemon()
            .wait_log_after(skip, "took over its events (ApplicationReplaced)", SECS(10))
            .await,
    );
    assert!(line.contains("ERROR"), "{line}");
    // Once it is gone, pushwake takes its application back and serves again.
    drop(rival);
    rig.unwrap(
        rig.daemon()
            .wait_log_after(skip, "ARI events connected", SECS(45))
            .await,
    );
    woken_call(&rig, rig.slot.extra_port(3)).await;
    rig.assert_clean().await;
}

/// Sends `signal` to the rig's daemon.
fn signal(rig: &Rig, signal: libc::c_int) {
    let pid = rig.daemon().pid().expect("the daemon runs");
    // SAFETY: kill(2) on a child process we own; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// The reload test's configuration: phones 1 and 2 never change; phone 3 comes and goes.
fn reload_config(rig: &Rig, with_ext3: bool) -> ConfigBuilder {
    let apns = |d: u8| TestDevice::apns(token(rig.slot, d));
    let mut config = rig
        .config()
        .extension(TestExtension::new(rig.phone_number(1), "20s").device(apns(1)))
        .extension(TestExtension::new(rig.phone_number(2), "12s").device(apns(2)));
    if with_ext3 {
        config = config.extension(TestExtension::new(rig.phone_number(3), "3s").device(apns(3)));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_a_burst_of_waiting_calls_drop_none_and_a_bad_file_keeps_the_old_config() {
    let mut rig = asleep(13).await;
    let (ext2, ext3) = (rig.phone_number(2), rig.phone_number(3));
    rig.start(reload_config(&rig, false)).await;

    // A burst of callers waiting, nothing wakes: each must come back TIMEOUT (480) at its
    // deadline, whatever the reloads meanwhile.
    let started = tokio::time::Instant::now();
    let mut burst = callers(&rig, 15, &ext2, CallerEnd::Refused(480));
    rig.unwrap(rig.apns_server.wait_for(15, SECS(15)).await);
    for round in 0..10 {
        let skip = rig.daemon().log_len();
        let written = reload_config(&rig, round % 2 == 1).write();
        rig.unwrap(written.map_err(|e| e.to_string()));
        signal(&rig, libc::SIGHUP);
        rig.unwrap(
            rig.daemon()
                .wait_log_after(skip, "configuration reloaded", SECS(10))
                .await,
        );
    }
    // The last good configuration has ext3; then a broken file.
    let skip = rig.daemon().log_len();
    std::fs::write(
        rig.config_path(),
        "[[extension]]\nnumber = \"1303\"\nring_timeout = \n",
    )
    .unwrap();
    signal(&rig, libc::SIGHUP);
    let refused = rig.unwrap(
        rig.daemon()
            .wait_log_after(
                skip,
                "configuration not reloaded; keeping the running one",
                SECS(10),
            )
            .await,
    );
    let file = rig.config_path().display().to_string();
    assert!(
        refused.contains("ERROR") && refused.contains(&file),
        "{refused}"
    );
    // A woken call while the burst still waits.
    woken_call(&rig, rig.slot.extra_port(20)).await;
    // ext3 is still served as the last good file says: pushed, then TIMEOUT after 3 s.
    let pushed = rig.apns_server.accepted().len();
    let mut call3 = rig.call_from(rig.slot.extra_port(21), &ext3, CallerEnd::Refused(480));
    let pushes = rig.unwrap(rig.apns_server.wait_for(pushed + 1, SECS(15)).await);
    assert_eq!(pushes[pushed].token, token(rig.slot, 3));
    rig.finish(&mut call3, SECS(20)).await;

    for call in &mut burst {
        rig.finish(call, SECS(30)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= SECS(11),
        "the burst came back after {took:?}, before its 12 s"
    );
    let logs = rig.logs();
    assert_eq!(logs.matches("configuration reloaded").count(), 10, "{logs}");
    rig.assert_clean().await;
}

/// The device API of a daemon on `addr`.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn put(&self, extension: &str, id: &str, token: &str) -> reqwest::Response {
        self.client
            .put(format!(
                "{}/v1/extensions/{extension}/devices/{id}",
                self.base
            ))
            .bearer_auth(API_ADMIN)
            .json(&serde_json::json!({"platform": "apns", "token": token}))
            .send()
            .await
            .unwrap()
    }

    async fn device_ids(&self, extension: &str) -> Vec<String> {
        let body: serde_json::Value = self
            .client
            .get(format!("{}/v1/extensions/{extension}/devices", self.base))
            .bearer_auth(API_ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut ids: Vec<String> = body["devices"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|d| d["device_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_disk_refuses_api_writes_with_503_serves_calls_and_loses_nothing() {
    let mut rig = asleep(14).await;
    let ext1 = rig.phone_number(1);
    let ext2 = rig.phone_number(2);
    let disk = SmallDisk::mount(rig.dir().join("state"), "1m");
    let listen = format!("127.0.0.1:{}", rig.slot.port(1));
    let config = rig
        .config()
        .store(&format!(
            "sqlite:{}",
            disk.path.join("devices.db").display()
        ))
        .http(&listen, "https://pbx.example.com")
        .api_tokens(&format!("{API_ADMIN}\n"));
    rig.start(config).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: format!("http://{listen}"),
    };
    let created = api.put(&ext1, "iphone", &token(rig.slot, 1)).await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);

    // The disk fills up. The next write must grow SQLite's -wal file (it only shrinks at
    // a checkpoint, after 1,000 pages): it fails, and the API refuses the device with 503
    // and Retry-After instead of acknowledging it (or answering 500, "broken").
    disk.fill();
    let refused = api.put(&ext1, "ipad", &token(rig.slot, 2)).await;
    assert_eq!(refused.status(), 503);
    assert!(
        refused.headers().contains_key("retry-after"),
        "{:?}",
        refused.headers()
    );
    let text = refused.text().await.unwrap();
    assert!(text.contains("device store"), "{text}");
    assert_eq!(
        api.device_ids(&ext1).await,
        ["iphone"],
        "a refused device is not served"
    );

    // Calls to the known device still wake it.
    woken_call(&rig, rig.slot.extra_port(0)).await;
    rig.assert_clean().await;
    // A phone that teaches its token meanwhile is served from memory at once. Its write
    // either found room in what the failed write left allocated, or waits for room.
    let skip = rig.daemon().log_len();
    let learned = token(rig.slot, 3);
    let params = format!(";transport=udp;pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={learned}");
    rig.register_contact(2, 1, 0, &params).await;
    rig.register_contact(2, 1, 120, &params).await;
    rig.wait_log("learned a device from its registration", SECS(10))
        .await;
    assert_eq!(api.device_ids(&ext2).await.len(), 1);

    // Room again: whatever waited goes through (within the writer's 3 s retry), and so
    // do the API's writes. The learned device's write is waited for by its own log line:
    // whether it had to wait for room is not known until it is tried.
    disk.free();
    rig.wait_log(&format!("device written extension={ext2}"), SECS(15))
        .await;
    let waited = rig
        .daemon()
        .logs_after(skip)
        .contains("the device store is unavailable");
    let created = api.put(&ext1, "ipad", &token(rig.slot, 2)).await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    eprintln!("the learned device's write waited for room: {waited}");

    // Nothing acknowledged is lost: all of it is there after a kill -9.
    let before_kill = rig.logs();
    rig.daemon_mut().kill().await;
    rig.restart().await;
    assert_eq!(api.device_ids(&ext1).await, ["ipad", "iphone"]);
    let learned_ids = api.device_ids(&ext2).await;
    assert_eq!(
        learned_ids.len(),
        1,
        "the learned device; the log before the kill:\n{before_kill}\nafter:\n{}",
        rig.logs()
    );
    rig.register_contact(2, 1, 0, &params).await;
    drop(disk);
}
