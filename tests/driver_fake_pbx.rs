//! The driver against a fake PBX and a fake push provider, with tokio's clock paused:
//! timers, retries and shutdown are checked in virtual time, without sleeping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushwake::driver::{Control, Driver};
use pushwake::push::{Attempt, AttemptFuture, PushService, Pushkin, WakePush};
use pushwake_core::directory::{Device, DeviceToken, Directory, ExtensionPolicy, Platform};
use pushwake_core::pbx::{
    CallControl, ChannelId, Contact, Party, PbxCommand, PbxError, PbxEvent, PbxReply, PbxSnapshot,
    WakeStatus,
};
use pushwake_core::wake::EngineSettings;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

#[derive(Default)]
struct FakePbx {
    log: Mutex<Vec<(Instant, PbxCommand)>>,
    changed: Notify,
    contacts: Mutex<Vec<Contact>>,
    failing_continues: AtomicU32,
}

impl CallControl for FakePbx {
    async fn execute(&self, command: PbxCommand) -> Result<PbxReply, PbxError> {
        self.log
            .lock()
            .unwrap()
            .push((Instant::now(), command.clone()));
        self.changed.notify_waiters();
        match command {
            PbxCommand::ListContacts { .. } => {
                Ok(PbxReply::Contacts(self.contacts.lock().unwrap().clone()))
            }
            PbxCommand::Return { .. } if self.failing_continues.load(Ordering::SeqCst) > 0 => {
                self.failing_continues.fetch_sub(1, Ordering::SeqCst);
                Err(PbxError::Failed("503 Service Unavailable".into()))
            }
            _ => Ok(PbxReply::Done),
        }
    }

    /// Like Asterisk, this PBX does not announce a phone registering again on the same
    /// contact.
    fn contact_poll(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

impl FakePbx {
    /// Waits (in virtual time) until a command matching `pred` has been executed.
    async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&PbxCommand) -> bool,
    ) -> (Instant, PbxCommand) {
        let give_up = Instant::now() + Duration::from_secs(600);
        loop {
            let notified = self.changed.notified();
            if let Some(found) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|(_, c)| pred(c))
                .cloned()
            {
                return found;
            }
            if tokio::time::timeout_at(give_up, notified).await.is_err() {
                panic!("no {what} command; saw {:?}", self.log.lock().unwrap());
            }
        }
    }

    fn count(&self, pred: impl Fn(&PbxCommand) -> bool) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| pred(c))
            .count()
    }
}

struct AlwaysDelivered;

impl Pushkin for AlwaysDelivered {
    fn platform(&self) -> Platform {
        pushwake::push::apns::PLATFORM
    }
    fn attempt<'a>(&'a self, _: &'a Device, _: &'a WakePush, _: Duration) -> AttemptFuture<'a> {
        Box::pin(async { Attempt::Delivered })
    }
}

struct Setup {
    pbx: Arc<FakePbx>,
    events: mpsc::Sender<PbxEvent>,
    control: mpsc::Sender<Control>,
    driver: tokio::task::JoinHandle<pushwake_core::wake::EngineStats>,
}

fn start() -> Setup {
    start_with(
        Arc::new(AlwaysDelivered),
        EngineSettings::default(),
        None,
        None,
    )
}

fn start_with(
    pushkin: Arc<dyn Pushkin>,
    settings: EngineSettings,
    board: Option<pushwake::status::SharedBoard>,
    metrics: Option<Arc<pushwake::metrics::Metrics>>,
) -> Setup {
    let directory = Directory::new([ExtensionPolicy {
        number: "101".into(),
        ring_timeout: Duration::from_secs(25),
        devices: vec![Device::new(
            pushwake::push::apns::PLATFORM,
            DeviceToken::new("ab".repeat(32)),
            "101/apns#0",
        )],
        fallback: None,
    }]);
    let pbx = Arc::new(FakePbx::default());
    let mut push = PushService::new();
    push.add(pushkin);
    if let Some(metrics) = &metrics {
        push.set_metrics(metrics.clone());
    }
    let (events, events_rx) = mpsc::channel(64);
    let (control, control_rx) = mpsc::channel(4);
    // As the daemon does: the PBX says whether contacts must be polled.
    let settings = EngineSettings {
        contact_poll: pbx.contact_poll(),
        ..settings
    };
    let mut driver = Driver::new(pbx.clone(), push, Arc::new(directory), settings);
    if let Some(board) = board {
        driver = driver.with_status_board(board);
    }
    if let Some(metrics) = metrics {
        driver = driver.with_metrics(metrics);
    }
    let driver = tokio::spawn(driver.run(events_rx, control_rx));
    Setup {
        pbx,
        events,
        control,
        driver,
    }
}

async fn caller_enters(setup: &Setup, channel: &str) {
    setup
        .events
        .send(PbxEvent::Connected(PbxSnapshot::default()))
        .await
        .unwrap();
    setup
        .events
        .send(PbxEvent::CallerArrived {
            channel: ChannelId(channel.into()),
            extension: "101".into(),
            caller: Party {
                number: "200".into(),
                name: "Alice".into(),
            },
        })
        .await
        .unwrap();
}

fn is_continue(status: WakeStatus) -> impl Fn(&PbxCommand) -> bool {
    move |c| matches!(c, PbxCommand::Return { status: s, .. } if *s == status)
}

#[tokio::test(start_paused = true)]
async fn the_woken_phone_is_dialled_when_it_registers_and_connected_when_it_answers() {
    let setup = start();
    let start = Instant::now();
    caller_enters(&setup, "caller-1").await;
    setup
        .pbx
        .wait_for("ring", |c| matches!(c, PbxCommand::Ring { .. }))
        .await;

    // The phone wakes 2 s later and registers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    setup
        .events
        .send(PbxEvent::ContactAdded {
            extension: "101".into(),
            uri: "sip:101@127.0.0.1:5070;pn-provider=apns".into(),
        })
        .await
        .unwrap();
    let (at, dial) = setup
        .pbx
        .wait_for("dial", |c| matches!(c, PbxCommand::Dial(_)))
        .await;
    assert!(
        at - start < Duration::from_millis(2100),
        "dialled {:?} after the call started",
        at - start
    );
    let PbxCommand::Dial(dial) = dial else {
        unreachable!()
    };
    assert_eq!(
        dial.target.contact(),
        Some("sip:101@127.0.0.1:5070;pn-provider=apns")
    );
    assert_eq!(dial.caller.name, "Alice");

    setup
        .events
        .send(PbxEvent::LegAnswered {
            leg: dial.leg.clone(),
        })
        .await
        .unwrap();
    setup
        .pbx
        .wait_for(
            "connect",
            |c| matches!(c, PbxCommand::Connect { leg, .. } if *leg == dial.leg),
        )
        .await;

    // Long after the ring window, nothing has returned the bridged caller.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        setup.pbx.count(|c| matches!(c, PbxCommand::Return { .. })),
        0
    );
    drop(setup.control);
    setup.driver.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_returns_with_timeout_after_exactly_the_ring_timeout() {
    let setup = start();
    let start = Instant::now();
    caller_enters(&setup, "caller-1").await;
    let (at, _) = setup
        .pbx
        .wait_for("continue TIMEOUT", is_continue(WakeStatus::Timeout))
        .await;
    let waited = at - start;
    assert!(
        waited >= Duration::from_secs(25) && waited < Duration::from_millis(25_100),
        "{waited:?}"
    );
    // The contacts were polled about once a second meanwhile, for the silent re-REGISTER.
    let polls = setup
        .pbx
        .count(|c| matches!(c, PbxCommand::ListContacts { .. }));
    assert!((20..=26).contains(&polls), "{polls} contact listings");
    drop(setup.control);
    setup.driver.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_continue_is_retried_so_the_caller_is_not_stuck() {
    let setup = start();
    setup.pbx.failing_continues.store(2, Ordering::SeqCst);
    caller_enters(&setup, "caller-1").await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        setup.pbx.count(is_continue(WakeStatus::Timeout)),
        3,
        "two failures, then success"
    );
    drop(setup.control);
    setup.driver.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_return_the_pbx_keeps_refusing_is_tried_for_a_minute_and_then_given_up() {
    let setup = start();
    // Six failures: more than the retries of any other command.
    setup.pbx.failing_continues.store(6, Ordering::SeqCst);
    caller_enters(&setup, "caller-1").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        setup.pbx.count(is_continue(WakeStatus::Timeout)),
        7,
        "six failures, then success"
    );
    // A PBX that never takes it: tried for a minute, then no more.
    setup
        .pbx
        .failing_continues
        .store(u32::MAX, Ordering::SeqCst);
    caller_enters(&setup, "caller-2").await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let tried = setup.pbx.count(is_continue(WakeStatus::Timeout)) - 7;
    assert!((18..=26).contains(&tried), "{tried} tries in two minutes");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        setup.pbx.count(is_continue(WakeStatus::Timeout)) - 7,
        tried,
        "still trying after {tried}"
    );
    drop(setup.control);
    setup.driver.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_waiting_callers_before_the_driver_ends() {
    let setup = start();
    caller_enters(&setup, "caller-1").await;
    setup
        .pbx
        .wait_for("ring", |c| matches!(c, PbxCommand::Ring { .. }))
        .await;
    setup.control.send(Control::Shutdown).await.unwrap();
    let stats = setup.driver.await.unwrap();
    assert_eq!(stats.calls, 1);
    assert_eq!(setup.pbx.count(is_continue(WakeStatus::Shutdown)), 1);
}

/// Delivers every push and keeps a copy, with what the status board said about the
/// push's call at the moment it was sent.
#[derive(Default)]
struct Recording {
    board: Option<pushwake::status::SharedBoard>,
    pushes: Mutex<Vec<(WakePush, Option<pushwake::status::CallStatus>)>>,
    arrived: Notify,
}

impl Pushkin for Recording {
    fn platform(&self) -> Platform {
        pushwake::push::apns::PLATFORM
    }
    fn attempt<'a>(&'a self, _: &'a Device, push: &'a WakePush, _: Duration) -> AttemptFuture<'a> {
        let status = self
            .board
            .as_ref()
            .zip(push.status.as_ref())
            .and_then(|(board, link)| {
                board.lock().unwrap().lookup(
                    Instant::now().into_std(),
                    push.call_id.as_str(),
                    link.token.expose(),
                )
            });
        self.pushes.lock().unwrap().push((push.clone(), status));
        self.arrived.notify_waiters();
        Box::pin(async { Attempt::Delivered })
    }
}

#[tokio::test(start_paused = true)]
async fn the_board_knows_the_call_before_its_push_leaves_and_learns_how_it_ended() {
    use pushwake::push::EndReason;
    use pushwake::status::{CallStatus, StatusBoard};
    let board = StatusBoard::shared();
    let recording = Arc::new(Recording {
        board: Some(board.clone()),
        ..Recording::default()
    });
    let settings = EngineSettings {
        status_base_url: Some("https://pbx.example.com/pw".into()),
        ..EngineSettings::default()
    };
    let setup = start_with(recording.clone(), settings, Some(board.clone()), None);
    let arrived = recording.arrived.notified();
    caller_enters(&setup, "caller-1").await;
    arrived.await;
    let (push, status_when_sent) = recording.pushes.lock().unwrap()[0].clone();
    assert_eq!(status_when_sent, Some(CallStatus::Ringing));
    let link = push.status.expect("the push carries the status link");
    assert_eq!(
        link.url,
        format!("https://pbx.example.com/pw/v1/calls/{}", push.call_id)
    );
    let ask = |board: &pushwake::status::SharedBoard, token: &str| {
        board
            .lock()
            .unwrap()
            .lookup(Instant::now().into_std(), push.call_id.as_str(), token)
    };
    assert_eq!(ask(&board, link.token.expose()), Some(CallStatus::Ringing));
    assert_eq!(ask(&board, "0".repeat(64).as_str()), None);

    setup
        .pbx
        .wait_for("continue TIMEOUT", is_continue(WakeStatus::Timeout))
        .await;
    assert_eq!(
        ask(&board, link.token.expose()),
        Some(CallStatus::Ended(EndReason::Timeout))
    );
    // Forgotten after the retention: the endpoint then answers 404.
    tokio::time::sleep(pushwake::status::RETENTION).await;
    assert_eq!(ask(&board, link.token.expose()), None);
    drop(setup.control);
    setup.driver.await.unwrap();
}

/// The value of the metric line starting with `series ` in `metrics`' text.
fn metric(metrics: &pushwake::metrics::Metrics, series: &str) -> f64 {
    let text = metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_metrics_count_each_outcome_and_time_the_wake_up() {
    let metrics = Arc::new(pushwake::metrics::Metrics::new());
    let setup = start_with(
        Arc::new(AlwaysDelivered),
        EngineSettings::default(),
        None,
        Some(metrics.clone()),
    );
    let arrives = |channel: &str, extension: &str| PbxEvent::CallerArrived {
        channel: ChannelId(channel.into()),
        extension: extension.into(),
        caller: Party::default(),
    };
    // 1. The phone registers 2 s after its push was accepted, naming its token; it
    //    answers.
    caller_enters(&setup, "caller-1").await;
    setup
        .pbx
        .wait_for("ring", |c| matches!(c, PbxCommand::Ring { .. }))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let contact = format!(
        "sip:101@127.0.0.1:5070;pn-provider=apns;pn-prid={}",
        "ab".repeat(32)
    );
    setup
        .events
        .send(PbxEvent::ContactAdded {
            extension: "101".into(),
            uri: contact,
        })
        .await
        .unwrap();
    let (_, dial) = setup
        .pbx
        .wait_for("dial", |c| matches!(c, PbxCommand::Dial(_)))
        .await;
    let PbxCommand::Dial(dial) = dial else {
        unreachable!()
    };
    setup
        .events
        .send(PbxEvent::LegAnswered { leg: dial.leg })
        .await
        .unwrap();
    setup
        .pbx
        .wait_for("connect", |c| matches!(c, PbxCommand::Connect { .. }))
        .await;
    // 2. An extension without devices: NOPUSH at once.
    setup.events.send(arrives("caller-2", "999")).await.unwrap();
    setup
        .pbx
        .wait_for("continue NOPUSH", is_continue(WakeStatus::NoPush))
        .await;
    // 3. A caller who hangs up while waiting.
    setup.events.send(arrives("caller-3", "101")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    setup
        .events
        .send(PbxEvent::ChannelGone {
            channel: ChannelId("caller-3".into()),
            cause: "normal".into(),
            answered_elsewhere: false,
        })
        .await
        .unwrap();
    // 4. Nobody answers: TIMEOUT after the ring timeout.
    setup.events.send(arrives("caller-4", "101")).await.unwrap();
    setup
        .pbx
        .wait_for("continue TIMEOUT", is_continue(WakeStatus::Timeout))
        .await;
    // The gauges are refreshed within a second.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(metric(&metrics, "pushwake_calls_started_total"), 4.0);
    for (outcome, count) in [
        ("ANSWERED", 1.0),
        ("NOPUSH", 1.0),
        ("CALLER_HUNG_UP", 1.0),
        ("TIMEOUT", 1.0),
    ] {
        let series = format!("pushwake_calls_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric(&metrics, &series), count, "{series}");
    }
    let pushed = metric(
        &metrics,
        "pushwake_pushes_total{provider=\"apns\",kind=\"incoming_call\",verdict=\"delivered\"}",
    );
    assert_eq!(pushed, 3.0);
    assert_eq!(
        metric(
            &metrics,
            "pushwake_provider_attempts_total{provider=\"apns\",result=\"delivered\"}"
        ),
        metric(
            &metrics,
            "pushwake_provider_request_duration_seconds_count{provider=\"apns\"}"
        ),
    );
    // In the driver's (paused) clock: registered exactly 2 s after the push.
    assert_eq!(
        metric(
            &metrics,
            "pushwake_wake_latency_seconds_count{platform=\"apns\"}"
        ),
        1.0
    );
    let woke = metric(
        &metrics,
        "pushwake_wake_latency_seconds_sum{platform=\"apns\"}",
    );
    assert!((2.0..2.1).contains(&woke), "{woke}");
    assert_eq!(
        metric(&metrics, "pushwake_register_to_dial_seconds_count"),
        1.0
    );
    assert_eq!(metric(&metrics, "pushwake_pbx_connected"), 1.0);
    // Caller 1 still talks; nobody waits.
    assert_eq!(metric(&metrics, "pushwake_waiting_calls"), 0.0);
    assert_eq!(metric(&metrics, "pushwake_active_calls"), 1.0);
    drop(setup.control);
    setup.driver.await.unwrap();
}
