//! `pushwake devices list|add|remove` on the real binary, against a real SQLite store.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use pushwake::store::{DeviceStore, StoreConfig};
use pushwake_core::directory::DeviceToken;
use pushwake_testkit::config::standalone;

/// Runs `pushwake devices <args> --config <config>` with `stdin`; exit code, stdout,
/// stderr.
fn devices(config: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushwake"))
        .arg("devices")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("PUSHWAKE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[test]
fn an_operator_lists_adds_replaces_and_removes_devices() {
    let dir = tempfile::tempdir().unwrap();
    let config = standalone(dir.path(), "127.0.0.1:0", None).unwrap();

    let (code, out, err) = devices(&config, &["list"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    let (code, out, err) = devices(
        &config,
        &[
            "add",
            "--extension",
            "101",
            "iphone",
            "--platform",
            "apns",
            "--token",
            &token(1),
            "--set",
            "environment=sandbox",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("added device iphone of extension 101"),
        "{out}"
    );
    assert!(!out.contains(&token(1)), "{out}");
    // The token from standard input, kept out of the process list.
    let (code, out, err) = devices(
        &config,
        &[
            "add",
            "--extension",
            "101",
            "iphone",
            "--platform",
            "apns",
            "--token",
            "-",
        ],
        &format!("{}\n", token(2)),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replaced device iphone"), "{out}");
    let (code, out, err) = devices(
        &config,
        &[
            "add",
            "--extension",
            "205",
            "hook",
            "--platform",
            "webhook",
            "--token",
            "backend-id-'quoted'",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added"), "{out}");

    let (code, out, _) = devices(&config, &["list"], "");
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains(&DeviceToken::new(token(2)).to_string()),
        "{out}"
    );
    assert!(
        !out.contains(&token(2)) && !out.contains("backend-id"),
        "{out}"
    );
    let (_, only, _) = devices(&config, &["list", "--extension", "205"], "");
    assert_eq!(only.lines().count(), 2, "{only}");
    assert!(only.contains("205\thook\twebhook"), "{only}");

    // Refused: a bad token names the field, not the token; the same token twice; an
    // unknown setting; a learned device's id; a device that is not there.
    for (args, needle) in [
        (
            vec![
                "add",
                "--extension",
                "101",
                "ipad",
                "--platform",
                "apns",
                "--token",
                "zz-not-hex",
            ],
            "token:",
        ),
        (
            vec![
                "add",
                "--extension",
                "101",
                "ipad",
                "--platform",
                "apns",
                "--token",
                &token(2),
            ],
            "already has this apns token, as device iphone",
        ),
        (
            vec![
                "add",
                "--extension",
                "101",
                "ipad",
                "--platform",
                "apns",
                "--token",
                &token(3),
                "--set",
                "colour=red",
            ],
            "colour:",
        ),
        (
            vec![
                "add",
                "--extension",
                "101",
                "learned-x",
                "--platform",
                "apns",
                "--token",
                &token(3),
            ],
            "device_id:",
        ),
        (
            vec![
                "add",
                "--extension",
                "101",
                "ipad",
                "--platform",
                "hms",
                "--token",
                "t",
            ],
            "[hms] section",
        ),
        (
            vec!["remove", "--extension", "101", "ipad"],
            "has no device ipad",
        ),
    ] {
        let (code, out, err) = devices(&config, &args, "");
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("zz-not-hex"), "{err}");
    }

    let (code, out, err) = devices(&config, &["remove", "--extension", "101", "iphone"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed device iphone of extension 101"),
        "{out}"
    );

    // What is left, read from the store itself.
    let url = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("url = \"sqlite:")
                .map(|u| format!("sqlite:{}", u.trim_end_matches('"')))
        })
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = runtime.block_on(async {
        DeviceStore::open(&StoreConfig { url })
            .await
            .unwrap()
            .load_all()
            .await
            .unwrap()
    });
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].token, "backend-id-'quoted'");
}

#[test]
fn a_store_that_cannot_be_opened_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let url = format!("sqlite:{}", open.join("devices.db").display());
    let config = standalone(dir.path(), "127.0.0.1:0", Some(&url)).unwrap();
    let (code, _, err) = devices(&config, &["list"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("store.url") && err.contains("0777"), "{err}");
}
