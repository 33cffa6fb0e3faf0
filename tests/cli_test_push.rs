//! `pushwake test-push`: a real push with the configured credentials to a local APNs
//! server, and the provider's verdict per device.

use std::os::unix::fs::PermissionsExt;

use pushwake_testkit::apns::ApnsServer;
use pushwake_testkit::config::TestApns;

const GOOD: &str = "0a0b0c0d0e0f00000000000000000000000000000000000000000000000000aa";
const DEAD: &str = "0a0b0c0d0e0f00000000000000000000000000000000000000000000000000bb";

fn config(dir: &std::path::Path, apns: &TestApns, endpoint: &str) -> std::path::PathBuf {
    let key = dir.join("AuthKey.p8");
    apns.key.write_private(&key).unwrap();
    let text = format!(
        "[asterisk]\nurl = \"http://127.0.0.1:9\"\nusername = \"u\"\npassword = \"p\"\n\n[apns]\nteam_id = \"{}\"\nkey_id = \"{}\"\nkey_file = \"{}\"\ntopic = \"{}\"\nendpoint = \"{endpoint}\"\n\n[[extension]]\nnumber = \"101\"\n\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"{GOOD}\"\nname = \"alice-iphone\"\n\n[[extension.device]]\nplatform = \"apns\"\ntoken = \"{DEAD}\"\nname = \"old-ipad\"\n",
        apns.team_id,
        apns.key_id,
        key.display(),
        apns.topic
    );
    let path = dir.join("pushwake.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushwake"))
        .args(args)
        .env("PUSHWAKE_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_push_sends_a_real_push_and_prints_each_verdict() {
    let apns = TestApns::generate();
    let server = ApnsServer::start(apns.expectations()).await.unwrap();
    server.script(DEAD, 410, "Unregistered");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &apns, &server.endpoint());
    let config = config.to_str().unwrap();

    let (code, stdout, stderr) = run(&["test-push", "101", "--config", config]).await;
    assert_eq!(
        code, 1,
        "one device failed; stdout: {stdout} stderr: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("alice-iphone (~") && l.ends_with(": delivered")),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("old-ipad (~")
            && l.contains("Unregistered")
            && l.contains("token is dead")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(GOOD) && !stdout.contains(DEAD) && !stderr.contains(GOOD),
        "tokens are never printed"
    );
    let pushed = server.accepted();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].token, GOOD);
    assert_eq!(pushed[0].body["caller_name"], "pushwake test-push");
    assert_eq!(pushed[0].headers["apns-push-type"], "voip");

    // Only device 0, which works: exit 0.
    let (code, stdout, _) = run(&["test-push", "101", "--device", "0", "--config", config]).await;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(server.accepted().len(), 2);

    // A wrong extension or device number is a usage error naming what exists.
    let (code, _, stderr) = run(&["test-push", "999", "--config", config]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("extension 999 is not in the configuration"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["test-push", "101", "--device", "5", "--config", config]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("has 2 device(s)"), "{stderr}");
}
