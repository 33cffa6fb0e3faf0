//! `SIGHUP` on the real binary: the extensions are reloaded, and every other section
//! that changed is named in a warning, because it takes effect only after a restart.
//! The regression: `[hms]`, `[webhook]` and `[webpush]` changes used to be ignored
//! without a word. ARI is not reachable here (pushwake keeps trying, which does not
//! stop it from answering signals), so no PBX is needed.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn private(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The daemon with its log read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushwake"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("PUSHWAKE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` (after the lines already waited past).
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "pushwake never logged {needle:?}; its log:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_reload_reloads_the_extensions_and_names_every_section_that_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let webhook_secret = private(dir.path(), "webhook.secret", &"ab".repeat(16));
    let hms_secret = private(dir.path(), "hms.secret", "0a1b2c3d4e5f0a1b2c3d4e5f\n");
    let vapid = private(
        dir.path(),
        "vapid.pem",
        &pushwake_testkit::keys::EcKey::generate().private_pem,
    );
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let store = state.join("devices.db");
    let write = |webhook_url: &str, hms_app: &str, subject: &str, extensions: &[&str]| {
        let mut text = format!(
            "[asterisk]\nurl = \"http://127.0.0.1:9\"\nusername = \"pushwake\"\npassword = \"pw\"\n\n\
             [store]\nurl = \"sqlite:{}\"\n\n\
             [webhook]\nurl = \"{webhook_url}\"\nsecret_file = \"{}\"\n\n\
             [hms]\napp_id = \"{hms_app}\"\nclient_secret_file = \"{}\"\n\n\
             [webpush]\nvapid_key_file = \"{}\"\nsubject = \"{subject}\"\n",
            store.display(),
            webhook_secret.display(),
            hms_secret.display(),
            vapid.display()
        );
        for number in extensions {
            text.push_str(&format!("\n[[extension]]\nnumber = \"{number}\"\n"));
        }
        private(dir.path(), "pushwake.toml", &text)
    };
    let config = write(
        "https://push.example.com/events",
        "107654321",
        "mailto:ops@example.com",
        &["101"],
    );
    let mut daemon = Running::start(&config);
    daemon.wait_for("pushwake starting");

    // Only an extension added: reloaded, nothing to warn about.
    write(
        "https://push.example.com/events",
        "107654321",
        "mailto:ops@example.com",
        &["101", "102"],
    );
    daemon.signal("HUP");
    let reloaded = daemon.wait_for("configuration reloaded");
    assert!(reloaded.contains("extensions=2"), "{reloaded}");
    assert!(
        !daemon
            .seen
            .iter()
            .any(|l| l.contains("only after a restart")),
        "{}",
        daemon.seen.join("\n")
    );

    // All three push sections changed, and another extension: each section is named.
    write(
        "https://hooks.example.com/events",
        "107654322",
        "mailto:noc@example.com",
        &["101", "102", "103"],
    );
    daemon.signal("HUP");
    let warning = daemon.wait_for("only after a restart");
    assert!(
        warning.contains("WARN") && warning.contains("[hms], [webhook], [webpush]"),
        "{warning}"
    );
    assert!(!warning.contains("[asterisk]"), "{warning}");
    let reloaded = daemon.wait_for("configuration reloaded");
    assert!(reloaded.contains("extensions=3"), "{reloaded}");

    daemon.signal("TERM");
    daemon.wait_for("pushwake stopped");
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
