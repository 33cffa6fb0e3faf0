//! Device store benchmark (`cargo bench --bench device_store`): the figures for
//! 100,000 stored devices — a call's device lookup under 10 µs at p99, and the daemon's
//! resident memory under 64 MiB.
//!
//! 1. Lookup: a [`Registry`] is loaded with 100,000 devices over some 33,000 extensions
//!    (1 to 5 devices each; APNs tokens of 64 hex digits, some with their own topic,
//!    environment or alert token; FCM tokens of 163 characters; learned and API device
//!    ids), then `devices_of` is called for random extensions (90 % existing, 10 %
//!    missing), each call timed on its own. The same for a registry of 100 devices, as a
//!    baseline. `Registry::load` of the 100,000 is timed too.
//! 2. Daemon memory: a SQLite store is filled with the same 100,000 devices, the
//!    daemon binary (`pushwake run`) is started on it (with an unreachable PBX, which it
//!    keeps retrying), and once it logged `device store opened` with `devices=100000` its
//!    VmRSS and VmHWM are read from `/proc/<pid>/status` after a short settle; the same for
//!    a daemon with an empty store, as a baseline.
//!
//! Prints a table and exits with 1 when a target is missed. Not a test: CI does not run
//! it, and figures on a shared machine vary. Run without `--bench` (as `cargo test
//! --benches` does) it only checks itself quickly on 1,000 devices, with no targets.

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pushwake::devices::{learned_id, Registry, StoredDevice};
use pushwake::store::{DeviceStore, StoreConfig};
use pushwake_core::directory::{DeviceParams, DeviceSource};
use pushwake_testkit::figures::figure;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const LOOKUP_P99_TARGET_US: f64 = 10.0;
const RSS_TARGET_MIB: f64 = 64.0;
/// How long the daemon may take to log `device store opened`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after that line the memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// Devices of the baseline registry.
const BASELINE_DEVICES: usize = 100;
/// Of the lookups, the share (%) for extensions that exist.
const HIT_PERCENT: u64 = 90;

/// How big a run is.
struct Scale {
    devices: usize,
    lookups: usize,
    /// Devices written through `DeviceStore::put` one by one (the rest directly).
    puts: usize,
    /// Whether missing a target fails the run.
    targets: bool,
}

const FULL: Scale = Scale {
    devices: 100_000,
    lookups: 200_000,
    puts: 1_000,
    targets: true,
};

/// Without `--bench` (`cargo test --benches`, `cargo test --all-targets`): a quick check
/// that the benchmark works.
const SMOKE: Scale = Scale {
    devices: 1_000,
    lookups: 5_000,
    puts: 20,
    targets: false,
};

fn main() {
    let scale = if std::env::args().any(|a| a == "--bench") {
        FULL
    } else {
        SMOKE
    };
    match bench(&scale) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("device_store: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// SplitMix64: deterministic, so every run looks up the same devices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }

    fn chars(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.below(alphabet.len() as u64) as usize]))
            .collect()
    }

    fn hex(&mut self, len: usize) -> String {
        self.chars(b"0123456789abcdef", len)
    }

    fn base64url(&mut self, len: usize) -> String {
        self.chars(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            len,
        )
    }
}

/// `count` devices as phones and app backends leave them: 1 to 5 per extension
/// (extensions numbered from 100000), 55 % APNs and 45 % FCM, 70 % learned from a
/// REGISTER, registered within the last week. Returns them with the extensions.
fn population(count: usize, rng: &mut Rng) -> (Vec<StoredDevice>, Vec<String>) {
    let now = 1_796_000_000;
    let mut devices = Vec::with_capacity(count);
    let mut extensions = Vec::new();
    while devices.len() < count {
        let extension = (100_000 + extensions.len()).to_string();
        let here = (1 + rng.below(5) as usize).min(count - devices.len());
        for _ in 0..here {
            let mut params = DeviceParams::default();
            let (platform, token) = if rng.percent(55) {
                if rng.percent(25) {
                    let topic = rng.pick(&[
                        "com.example.phone.voip",
                        "com.example.pro.voip",
                        "net.acme.softphone.voip",
                    ]);
                    params.set("topic", topic);
                }
                if rng.percent(10) {
                    params.set("environment", "sandbox");
                }
                if rng.percent(30) {
                    params.set_secret("alert_token", rng.hex(64));
                }
                ("apns", rng.hex(64))
            } else {
                // An FCM registration token: 22 characters, `:APA91b`, 134 more.
                let token = format!("{}:APA91b{}", rng.base64url(22), rng.base64url(134));
                ("fcm", token)
            };
            let learned = rng.percent(70);
            let device_id = if learned {
                learned_id(platform, &token)
            } else {
                let kind = rng.pick(&["iphone", "ipad", "android", "tablet"]);
                format!("{kind}-{}", rng.hex(8))
            };
            devices.push(StoredDevice {
                extension: extension.clone(),
                device_id,
                platform: platform.to_owned(),
                token,
                params,
                learned,
                updated_at: now - rng.below(7 * 24 * 3600) as i64,
            });
        }
        extensions.push(extension);
    }
    (devices, extensions)
}

/// Nearest-rank percentiles of durations, in µs.
struct Stats {
    count: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        let pct = |p: f64| {
            let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n);
            us(samples[rank - 1])
        };
        Self {
            count: n,
            p50: pct(50.0),
            p99: pct(99.0),
            p999: pct(99.9),
            max: us(samples[n - 1]),
        }
    }

    fn row(&self, name: &str) -> String {
        format!(
            "  {name:<30} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>9.2}",
            thousands(self.count),
            self.p50,
            self.p99,
            self.p999,
            self.max
        )
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The lookups of one registry: for hits and misses apart, and all together.
struct Lookups {
    hits: Stats,
    misses: Stats,
    all: Stats,
    /// Devices returned per hit, on average.
    per_hit: f64,
}

/// Times `lookups` calls of `devices_of`, each on its own, for random extensions of
/// `extensions` and ([`HIT_PERCENT`] aside) extensions the registry does not have.
fn time_lookups(
    registry: &Registry,
    extensions: &[String],
    lookups: usize,
    rng: &mut Rng,
) -> Result<Lookups, String> {
    let missing: Vec<String> = (0..1000).map(|n| (900_000 + n).to_string()).collect();
    let queries: Vec<(&str, bool)> = (0..lookups)
        .map(|_| {
            if rng.percent(HIT_PERCENT) {
                (
                    extensions[rng.below(extensions.len() as u64) as usize].as_str(),
                    true,
                )
            } else {
                (
                    missing[rng.below(missing.len() as u64) as usize].as_str(),
                    false,
                )
            }
        })
        .collect();
    // Warm up: caches, the allocator's free lists, the CPU's frequency.
    for (extension, _) in queries.iter().take(lookups / 10) {
        black_box(registry.devices_of(black_box(extension)));
    }
    let mut hits = Vec::with_capacity(lookups);
    let mut misses = Vec::with_capacity(lookups / 5);
    let mut found = 0usize;
    for &(extension, hit) in &queries {
        let start = Instant::now();
        let devices = registry.devices_of(black_box(extension));
        let took = start.elapsed();
        let devices = black_box(devices);
        if hit {
            if devices.is_empty() {
                return Err(format!("extension {extension} has no devices"));
            }
            found += devices.len();
            hits.push(took);
        } else {
            if !devices.is_empty() {
                return Err(format!("extension {extension} should have no devices"));
            }
            misses.push(took);
        }
    }
    let per_hit = found as f64 / hits.len() as f64;
    let all: Vec<Duration> = hits.iter().chain(&misses).copied().collect();
    Ok(Lookups {
        hits: Stats::of(hits),
        misses: Stats::of(misses),
        all: Stats::of(all),
        per_hit,
    })
}

/// What it costs to time nothing.
fn timer_overhead(samples: usize) -> Stats {
    let mut taken = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        taken.push(black_box(start).elapsed());
    }
    Stats::of(taken)
}

/// How the SQLite store was filled.
struct Fill {
    puts: usize,
    put_time: Duration,
    direct: usize,
    direct_time: Duration,
    load_all_time: Duration,
    file_bytes: u64,
}

/// Fills a new SQLite store at `path` with `devices`: the first `puts` through
/// [`DeviceStore::put`] (each its own durable transaction, `synchronous=FULL`), the rest
/// with sqlx in one transaction, into the table [`DeviceStore::open`] created, as the
/// store writes it. Then checks that [`DeviceStore::load_all`] gives every device back
/// exactly.
async fn fill(path: &Path, devices: &[StoredDevice], puts: usize) -> Result<Fill, String> {
    let config = StoreConfig {
        url: format!("sqlite:{}", path.display()),
    };
    let store = DeviceStore::open(&config)
        .await
        .map_err(|e| format!("opening the store: {e}"))?;
    let puts = puts.min(devices.len());
    let start = Instant::now();
    for device in &devices[..puts] {
        store
            .put(device)
            .await
            .map_err(|e| format!("DeviceStore::put: {e}"))?;
    }
    let put_time = start.elapsed();

    let start = Instant::now();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .map_err(|e| format!("opening the store with sqlx: {e}"))?;
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    for device in &devices[puts..] {
        let params: Vec<(&str, &str, bool)> = device.params.entries().collect();
        let params = serde_json::to_string(&params).map_err(|e| e.to_string())?;
        // As the store's own put writes a device.
        sqlx::query(
            "INSERT INTO pushwake_devices
                 (extension, device_id, platform, token, params, learned, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&device.extension)
        .bind(&device.device_id)
        .bind(&device.platform)
        .bind(&device.token)
        .bind(params)
        .bind(device.learned)
        .bind(device.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| format!("inserting a device: {e}"))?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    pool.close().await;
    let direct_time = start.elapsed();

    let start = Instant::now();
    let loaded = store
        .load_all()
        .await
        .map_err(|e| format!("DeviceStore::load_all: {e}"))?;
    let load_all_time = start.elapsed();
    let mut expected = devices.to_vec();
    expected.sort_by(|a, b| (&a.extension, &a.device_id).cmp(&(&b.extension, &b.device_id)));
    if loaded != expected {
        return Err(format!(
            "the store gave back {} devices, not the {} written, or not as written",
            loaded.len(),
            expected.len()
        ));
    }
    drop(store);
    let file_bytes = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    Ok(Fill {
        puts,
        put_time,
        direct: devices.len() - puts,
        direct_time,
        load_all_time,
        file_bytes,
    })
}

/// A running `pushwake run`, killed when dropped (a panic included).
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    started: Instant,
}

impl Daemon {
    fn start(config: &Path) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushwake"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("PUSHWAKE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", env!("CARGO_BIN_EXE_pushwake")))?;
        let started = Instant::now();
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            log: Vec::new(),
            started,
        })
    }

    /// Waits for `device store opened` and checks its `devices=`; returns how long after
    /// the start it came.
    fn wait_opened(&mut self, expected: usize) -> Result<Duration, String> {
        let deadline = self.started + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "pushwake did not log `device store opened` within {} s; its log:\n{}",
                        READY_TIMEOUT.as_secs(),
                        self.log.join("\n")
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "pushwake ended ({status}) before `device store opened`; its log:\n{}",
                        self.log.join("\n")
                    ));
                }
            };
            self.log.push(line.clone());
            if !line.contains("device store opened") {
                continue;
            }
            let devices = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("devices="))
                .and_then(|n| n.parse::<usize>().ok());
            return match devices {
                Some(n) if n == expected => Ok(self.started.elapsed()),
                _ => Err(format!(
                    "pushwake opened its store with other than devices={expected}: {line}"
                )),
            };
        }
    }

    /// VmRSS and VmHWM, in KiB.
    fn memory(&mut self) -> Result<(u64, u64), String> {
        if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "pushwake ended ({status}); its log:\n{}",
                self.log.join("\n")
            ));
        }
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| -> Result<u64, String> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("{path} has no {name}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One daemon's figures.
struct Memory {
    devices: usize,
    ready: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

fn private_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The daemon's configuration, with the store at `store` and a PBX that never answers.
fn write_config(dir: &Path, store: &Path) -> Result<PathBuf, String> {
    let path = dir.join("pushwake.toml");
    let text = format!(
        "[asterisk]\nurl = \"http://127.0.0.1:9\"\nusername = \"pushwake\"\npassword = \"pw\"\n\n\
         [store]\nurl = \"sqlite:{}\"\n\n\
         [[extension]]\nnumber = \"100000\"\n",
        store.display()
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Starts the daemon on the store at `store` (which holds `devices`), waits for it to
/// open it, and reads its memory [`SETTLE`] later.
fn measure_daemon(dir: &Path, store: &Path, devices: usize) -> Result<Memory, String> {
    let config = write_config(dir, store)?;
    let mut daemon = Daemon::start(&config)?;
    let ready = daemon.wait_opened(devices)?;
    std::thread::sleep(SETTLE);
    let (rss_kib, hwm_kib) = daemon.memory()?;
    Ok(Memory {
        devices,
        ready,
        rss_kib,
        hwm_kib,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs everything and prints the table; `Ok(false)` when a target is missed.
fn bench(scale: &Scale) -> Result<bool, String> {
    let mut rng = Rng(0x7075_7368_7761_6b65);
    let (devices, extensions) = population(scale.devices, &mut rng);
    let (baseline_devices, baseline_extensions) = population(BASELINE_DEVICES, &mut rng);
    let apns = devices.iter().filter(|d| d.platform == "apns").count();
    let with_params = devices.iter().filter(|d| !d.params.is_empty()).count();
    let learned = devices.iter().filter(|d| d.learned).count();

    // 1. Lookups.
    let mut loads = Vec::new();
    let mut registry = None;
    for _ in 0..3 {
        let fresh = Registry::new(Vec::new(), None);
        let copy = devices.clone();
        let start = Instant::now();
        fresh.load(copy);
        loads.push(start.elapsed());
        registry = Some(fresh);
    }
    let registry = registry.expect("loaded three times");
    if registry.len() != devices.len() {
        return Err(format!(
            "the registry holds {} devices, not {}",
            registry.len(),
            devices.len()
        ));
    }
    let baseline = Registry::new(Vec::new(), None);
    baseline.load(baseline_devices);
    let big = time_lookups(&registry, &extensions, scale.lookups, &mut rng)?;
    let small = time_lookups(&baseline, &baseline_extensions, scale.lookups, &mut rng)?;
    let timer = timer_overhead(scale.lookups);
    drop(registry);

    // 2. The daemon's memory.
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let full_dir = dir.path().join("full");
    let empty_dir = dir.path().join("empty");
    for d in [&full_dir, &empty_dir] {
        private_dir(d)?;
        private_dir(&d.join("state"))?;
    }
    let full_store = full_dir.join("state").join("devices.db");
    let empty_store = empty_dir.join("state").join("devices.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let filled = runtime.block_on(fill(&full_store, &devices, scale.puts))?;
    drop(runtime);
    let empty = measure_daemon(&empty_dir, &empty_store, 0)?;
    let full = measure_daemon(&full_dir, &full_store, devices.len())?;

    // The table.
    let n = thousands(devices.len());
    println!(
        "device_store: {n} devices over {} extensions (1-5 each): {} apns (64 hex digits), \
         {} fcm (163 characters); {} with settings of their own, {} learned",
        thousands(extensions.len()),
        thousands(apns),
        thousands(devices.len() - apns),
        thousands(with_params),
        thousands(learned),
    );
    if !scale.targets {
        println!("  (a quick check, without --bench: no targets)");
    }
    println!();
    println!(
        "Registry::load of {n} devices: {:.1} ms, {:.1} ms, {:.1} ms",
        ms(loads[0]),
        ms(loads[1]),
        ms(loads[2])
    );
    println!();
    println!(
        "devices_of(extension), each call timed alone ({HIT_PERCENT} % existing extensions), µs:"
    );
    println!(
        "  {:<30} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "registry / extensions", "lookups", "p50", "p99", "p99.9", "max"
    );
    let label = |size: &str, what: &str| format!("{size} / {what}");
    let small_n = thousands(BASELINE_DEVICES);
    for (size, lookups) in [(&n, &big), (&small_n, &small)] {
        println!(
            "{}",
            lookups.hits.row(&label(
                size,
                &format!("existing ({:.1} dev)", lookups.per_hit)
            ))
        );
        println!("{}", lookups.misses.row(&label(size, "missing")));
        println!("{}", lookups.all.row(&label(size, "all")));
    }
    println!("{}", timer.row("Instant::now() alone"));
    println!();
    println!(
        "store: {} devices through DeviceStore::put one by one in {:.2} s ({:.2} ms each: \
         {n} would take {:.0} s); {} inserted with sqlx in one transaction in {:.2} s; \
         DeviceStore::load_all gave all {n} back as written in {:.2} s; file {:.1} MiB",
        thousands(filled.puts),
        filled.put_time.as_secs_f64(),
        ms(filled.put_time) / filled.puts.max(1) as f64,
        filled.put_time.as_secs_f64() / filled.puts.max(1) as f64 * devices.len() as f64,
        thousands(filled.direct),
        filled.direct_time.as_secs_f64(),
        filled.load_all_time.as_secs_f64(),
        filled.file_bytes as f64 / 1024.0 / 1024.0,
    );
    println!();
    println!(
        "daemon memory (pushwake run, SQLite store, {} s after `device store opened`), MiB:",
        SETTLE.as_secs()
    );
    println!(
        "  {:<30} {:>9} {:>11} {:>8} {:>8}",
        "store", "devices", "opened at", "VmRSS", "VmHWM"
    );
    for (name, m) in [("empty", &empty), ("filled", &full)] {
        println!(
            "  {name:<30} {:>9} {:>9.2} s {:>8.1} {:>8.1}",
            thousands(m.devices),
            m.ready.as_secs_f64(),
            mib(m.rss_kib),
            mib(m.hwm_kib)
        );
    }
    println!(
        "  {:<30} {:>9} {:>11} {:>8.1} {:>8.1}",
        "filled - empty",
        "",
        "",
        mib(full.rss_kib) - mib(empty.rss_kib),
        mib(full.hwm_kib) - mib(empty.hwm_kib)
    );
    println!();

    if !scale.targets {
        return Ok(true);
    }
    let p99 = big.hits.p99.max(big.all.p99);
    let rss = mib(full.rss_kib);
    let lookup_ok = p99 < LOOKUP_P99_TARGET_US;
    let peak = mib(full.hwm_kib);
    // The peak counts too: an operator's MemoryMax= would stop the daemon at its peak,
    // not at its resting size.
    let rss_ok = rss < RSS_TARGET_MIB && peak < RSS_TARGET_MIB;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target: lookup p99 < {LOOKUP_P99_TARGET_US} µs with {n} devices: {} ({p99:.2} µs)",
        verdict(lookup_ok)
    );
    println!(
        "target: daemon VmRSS and its peak VmHWM < {RSS_TARGET_MIB} MiB with {n} devices: {} \
         ({rss:.1} MiB; peak {peak:.1} MiB)",
        verdict(rss_ok)
    );
    figure(
        &format!("device lookup p99, {n} devices"),
        &format!("{p99:.2} µs"),
        &format!("< {LOOKUP_P99_TARGET_US} µs"),
        lookup_ok,
    );
    figure(
        &format!("daemon RSS / peak with {n} devices"),
        &format!("{rss:.1} / {peak:.1} MiB"),
        &format!("< {RSS_TARGET_MIB} MiB"),
        rss_ok,
    );
    Ok(lookup_ok && rss_ok)
}
