//! A throwaway PostgreSQL server for tests: Debian's own server binaries
//! (`/usr/lib/postgresql/<version>/bin`, package `postgresql`), a fresh cluster made with
//! `initdb` in a temporary directory, listening on a free port of 127.0.0.1 only, with
//! password (SCRAM) authentication. No mock: the device store's tests talk to this
//! server as pushwake talks to a production one.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI does), the cluster
//! and the server belong to the `postgres` system user that Debian's package creates.
//! Without the package, [`TestPostgres::start`] fails and says what to install;
//! `scripts/test` installs it (`scripts/postgres-prereq`).
//!
//! The server runs under a small `sh` wrapper that holds a pipe from the test process:
//! when the test process ends, however it ends, the pipe closes and the wrapper stops
//! the server and removes its directory. So [`TestPostgres::shared`], one server for a
//! whole test binary, leaves nothing behind either.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The database user the tests connect as.
pub const USER: &str = "pushwake";
/// Its password (SCRAM-SHA-256).
pub const PASSWORD: &str = "pushwake-test-db-secret";

/// Where Debian installs each PostgreSQL version's server binaries.
const PG_LIB: &str = "/usr/lib/postgresql";

/// How long a start may take before it is given up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The wrapper: runs the server; a line `stop` on its standard input stops it (the
/// directory stays, for [`TestPostgres::start_again`]); end of input (the test process
/// is gone) stops it and removes the directory. `$1` is that directory, the rest the
/// server's command line. The server's own standard input is /dev/null.
const WRAPPER: &str = r#"
dir=$1; shift
"$@" </dev/null &
pid=$!
if read -r line && [ "$line" = stop ]; then
    kill -INT "$pid" 2>/dev/null
    wait "$pid"
    exit 0
fi
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

/// A PostgreSQL server of its own, in a temporary directory. Dropping it stops the
/// server and removes the directory.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user and group the server runs as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    /// The wrapper and the write end of its pipe, while the server runs.
    server: Option<(Child, ChildStdin)>,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("running", &self.server.is_some())
            .finish()
    }
}

/// The highest PostgreSQL version's `bin` directory that has a server and `initdb`.
fn find_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(PG_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "PostgreSQL's server is not installed (no {PG_LIB}/<version>/bin/postgres and \
             initdb): install Debian's package, `apt-get install postgresql` (scripts/test \
             does it through scripts/postgres-prereq)"
        )
    })
}

/// The `postgres` system user's ids, when running as root.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam gets a valid C string; the record it returns is read at once,
    // before any other call that could overwrite it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(
            "the tests run as root, which PostgreSQL refuses, and there is no \
                    `postgres` user to run the server as: `apt-get install postgresql` \
                    creates it"
                .into(),
        );
    }
    // SAFETY: entry is a valid passwd record (checked non-null above).
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// A port of 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl TestPostgres {
    /// Makes a new cluster and starts its server; returns once it accepts connections
    /// (about a second).
    pub fn start() -> Result<Self, String> {
        let bin = find_bin()?;
        let run_as = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("pushwake-postgres-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n"))
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        if let Some(ids) = run_as {
            chown(dir.path(), ids)?;
            chown(&pwfile, ids)?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(dir.path().join("data"))
            .args(["--username", USER, "--auth", "scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--encoding", "UTF8", "--locale", "C", "--no-sync"]);
        let out = Self::command(&mut initdb, dir.path(), run_as)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut server = Self {
            dir,
            bin,
            port: 0,
            run_as,
            server: None,
        };
        // A port found free may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) if e.contains("could not bind") || e.contains("could not create") => {
                    last = e
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// One server for the whole test binary, started by the first caller. It is stopped
    /// and removed when the test process ends. Do not stop it: tests share it (use a
    /// database of your own, [`TestPostgres::create_database`]).
    pub fn shared() -> Result<&'static TestPostgres, String> {
        static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(TestPostgres::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database, as pushwake's `[store] url` takes it.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of `database` on this server.
    pub fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a database whose name starts with `prefix` (made unique here) and
    /// returns its URL.
    pub fn create_database(&self, prefix: &str) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--username", USER, "--no-password", &name])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|e| format!("cannot run createdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(self.url_of(&name))
    }

    /// What the server logged so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (a fast shutdown: clients are disconnected, as `systemctl stop
    /// postgresql` does); the cluster stays for [`TestPostgres::start_again`].
    pub fn stop(&mut self) -> Result<(), String> {
        let Some((mut child, mut stdin)) = self.server.take() else {
            return Ok(());
        };
        let _ = stdin.write_all(b"stop\n");
        drop(stdin);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        // It would not stop: kill it, and the server by its pid file.
        let _ = child.kill();
        let _ = child.wait();
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        Err(format!(
            "PostgreSQL did not stop within {STOP_TIMEOUT:?}; killed"
        ))
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.server.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A command with a clean environment (English messages), in `dir`, as the server's
    /// user.
    fn command<'a>(
        command: &'a mut Command,
        dir: &Path,
        run_as: Option<(u32, u32)>,
    ) -> &'a mut Command {
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .env("HOME", dir)
            .current_dir(dir);
        if let Some((uid, gid)) = run_as {
            // std drops root's supplementary groups when it changes the user.
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Starts the server on `self.port` and waits until it accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let from = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("pushwake-test-postgres")
            .arg(self.dir.path())
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            // Speed over durability: the tests never pull the plug on this server.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=100", "-c", "shared_buffers=32MB"]);
        let child = Self::command(&mut command, self.dir.path(), self.run_as)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start PostgreSQL: {e}"))?;
        let mut child = child;
        let stdin = child.stdin.take().expect("piped");
        self.server = Some((child, stdin));

        // Wait for the server's own word that it is ready (a poll of its log, with a
        // deadline: a port that answers may still be "starting up").
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.log();
            let new = text.get(from..).unwrap_or("");
            if new.contains("database system is ready to accept connections") {
                return Ok(());
            }
            // A client turned away while the server starts (the daemon under test
            // reconnecting to its store) is logged as a FATAL too; it is not the server's.
            let failed = new.lines().any(|line| {
                (line.contains("FATAL:") && !line.contains("the database system is starting up"))
                    || line.contains("PANIC:")
            });
            if failed {
                self.abandon();
                return Err(format!("PostgreSQL failed to start: {new}"));
            }
            if Instant::now() >= deadline {
                self.abandon();
                return Err(format!(
                    "PostgreSQL did not become ready within {START_TIMEOUT:?}: {new}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops a server that failed to start, ignoring what that says.
    fn abandon(&mut self) {
        let _ = self.stop();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
