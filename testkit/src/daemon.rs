//! The real `pushwake` binary as a child process, with its log captured.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// The driver's line once the PBX's event stream is up and its calls are read (after the
/// adapter's own "connected" line): from it on, `/healthz` says `"pbx": "connected"`.
pub const SERVING: &str = "connected to the PBX, serving calls";

/// A running daemon.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    grew: Arc<Notify>,
    /// Its stderr reached the end (the process exited).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Daemon {
    /// Starts `binary run --config <config>` and waits until it serves calls
    /// ([`SERVING`]: connected to the PBX, its calls read). `$PUSHWAKE_READY_LINE`
    /// replaces that line, for benchmarks comparing a daemon built before it existed
    /// (`PUSHWAKE_BIN=<old daemon> PUSHWAKE_READY_LINE="ARI events connected"`).
    pub async fn start(binary: &Path, config: &Path) -> Result<Self, String> {
        let ready = std::env::var("PUSHWAKE_READY_LINE").unwrap_or_else(|_| SERVING.into());
        Self::start_until(binary, config, &ready).await
    }

    /// Starts `binary run --config <config>` and waits for a log line containing
    /// `ready` (for a daemon with no PBX to reach, say `pushwake starting`).
    pub async fn start_until(binary: &Path, config: &Path, ready: &str) -> Result<Self, String> {
        Self::start_with_env(binary, config, ready, &[]).await
    }

    /// Like [`Daemon::start_until`], with these environment variables set besides
    /// (e.g. systemd's `NOTIFY_SOCKET` and `WATCHDOG_USEC`, or a `PUSHWAKE_LOG` of
    /// their own instead of `PUSHWAKE_TEST_LOG`'s).
    pub async fn start_with_env(
        binary: &Path,
        config: &Path,
        ready: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(
                "PUSHWAKE_LOG",
                std::env::var("PUSHWAKE_TEST_LOG").unwrap_or_else(|_| "info,pushwake=debug".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let grew = Arc::new(Notify::new());
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, notify, ended) = (log.clone(), grew.clone(), closed.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var_os("PUSHWAKE_TEST_ECHO").is_some() {
                    eprintln!("[pushwake] {line}");
                }
                sink.lock().unwrap().push(line);
                notify.notify_waiters();
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
            notify.notify_waiters();
        });
        let daemon = Self {
            child,
            log,
            grew,
            closed,
        };
        daemon.wait_log(ready, Duration::from_secs(30)).await?;
        Ok(daemon)
    }

    /// Waits for a log line containing `needle`; returns it.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_log_after(0, needle, timeout).await
    }

    /// Like [`Daemon::wait_log`], looking only at lines after the first `skip`.
    pub async fn wait_log_after(
        &self,
        skip: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grew = self.grew.notified();
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return Ok(line.clone());
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return Err(format!(
                    "pushwake never logged {needle:?} within {timeout:?}; its log:\n{}",
                    self.logs()
                ));
            }
        }
    }

    /// Waits until `count` log lines hold `needle`.
    pub async fn wait_log_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grew = self.grew.notified();
            let seen = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if seen >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return Err(format!(
                    "pushwake logged {needle:?} {seen} time(s) within {timeout:?}, not {count}; its log:\n{}",
                    self.logs()
                ));
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Number of log lines so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The log lines after the first `skip` (see [`Daemon::log_len`]), joined.
    pub fn logs_after(&self, skip: usize) -> String {
        let log = self.log.lock().unwrap();
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The whole log so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Kills it with SIGKILL (a crash) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for it to exit by itself (a daemon that refuses to start).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                format!(
                    "pushwake did not exit within {timeout:?}; its log:\n{}",
                    self.logs()
                )
            })?
            .map_err(|e| e.to_string())?;
        // The last lines reach the log once the pipe is closed.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let grew = self.grew.notified();
                if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                grew.await;
            }
        })
        .await;
        Ok(status)
    }

    /// Sends SIGTERM and waits for it to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let pid = self.child.id().ok_or("already exited")?;
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                format!(
                    "pushwake did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                    self.logs()
                )
            })?
            .map_err(|e| e.to_string())
    }
}
