//! The `pushwake` binary's handling of configuration files: a bad file gets one clear
//! line naming file, line and key, and exit code 2 — for `check-config` and for `run`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pushwake_testkit::keys::{EcKey, RsaKey};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pushwake")
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn key(&self) -> PathBuf {
        self.write("AuthKey.p8", &EcKey::generate().private_pem, 0o600)
    }

    /// The shipped example, with its key path pointed at `key`.
    fn example(&self, key: &Path) -> String {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pushwake.toml"),
        )
        .unwrap();
        example.replace(
            "/etc/pushwake/AuthKey_KEY1234567.p8",
            &key.display().to_string(),
        )
    }

    /// A service-account file (mode 0600) as Google issues it.
    fn service_account(&self) -> PathBuf {
        let path = self.dir.path().join("fcm-service-account.json");
        RsaKey::shared()
            .write_service_account(
                &path,
                "pushwake-test",
                "pushwake@pushwake-test.iam.gserviceaccount.com",
                "https://oauth2.googleapis.com/token",
            )
            .unwrap();
        path
    }

    /// The shipped example with its commented-out `[fcm]` section and Android device
    /// uncommented, the service-account path pointed at `account`.
    fn example_with_fcm(&self, key: &Path, account: &Path) -> String {
        uncomment_fcm(&self.example(key)).replace(
            "/etc/pushwake/fcm-service-account.json",
            &account.display().to_string(),
        )
    }
}

/// Uncomments the example's `[fcm]` section and its Android device, as an operator would.
fn uncomment_fcm(example: &str) -> String {
    const KEYS: [&str; 7] = [
        "[fcm]",
        "service_account_file = ",
        "endpoint = \"https://fcm.googleapis.com\"",
        "[[extension.device]]",
        "platform = \"fcm\"",
        "token = \"",
        "name = \"bob-android\"",
    ];
    uncomment(example, &["[fcm]", "platform = \"fcm\""], &KEYS, "[fcm]")
}

/// Uncomments the example's `[webhook]` section and its webhook device.
fn uncomment_webhook(example: &str) -> String {
    const KEYS: [&str; 7] = [
        "[webhook]",
        "url = ",
        "secret_file = ",
        "timeout = ",
        "[[extension.device]]",
        "platform = \"webhook\"",
        "token = \"",
    ];
    uncomment(
        example,
        &["[webhook]", "platform = \"webhook\""],
        &KEYS,
        "[webhook]",
    )
}

/// Uncomments, in the paragraphs (blocks between blank lines) holding one of the
/// commented `anchors`, the commented lines starting with one of `keys`; each key must
/// be found exactly once.
fn uncomment(example: &str, anchors: &[&str], keys: &[&str], what: &str) -> String {
    let mut uncommented = 0;
    let mut out = Vec::new();
    for paragraph in example.split("\n\n") {
        let anchored = paragraph
            .lines()
            .any(|l| l.strip_prefix("# ").is_some_and(|r| anchors.contains(&r)));
        let lines: Vec<String> = paragraph
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if anchored && keys.iter().any(|k| rest.starts_with(k)) => {
                    uncommented += 1;
                    rest.to_owned()
                }
                _ => line.to_owned(),
            })
            .collect();
        out.push(lines.join("\n"));
    }
    assert_eq!(
        uncommented,
        keys.len(),
        "the example's commented {what} lines"
    );
    out.join("\n\n").trim_end().to_owned() + "\n"
}

/// The 1-based line of the first line starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

/// Runs `pushwake <args> --config <config>`; returns (exit code, stdout, stderr).
fn run(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("PUSHWAKE_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `check-config` and `run` both refuse the file with exit code 2 and one line
/// on stderr containing every `needle`.
fn refused(config: &Path, needles: &[&str]) {
    for args in [&["check-config"][..], &["run"][..]] {
        let (code, _, stderr) = run(args, config);
        assert_eq!(code, 2, "{args:?}: exit code; stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: want one line, got: {stderr}");
        for needle in needles {
            assert!(
                lines[0].contains(needle),
                "{args:?}: {:?} lacks {needle:?}",
                lines[0]
            );
        }
    }
}

#[test]
fn the_shipped_example_is_valid() {
    let files = Files::new();
    let key = files.key();
    let config = files.write("pushwake.toml", &files.example(&key), 0o640);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "ok (1 extension(s), apns configured, fcm not configured, hms not configured, webhook not configured, webpush not configured, http not configured, store sqlite:/var/lib/pushwake/devices.db, metrics not configured, messages not configured)"
        ),
        "{stdout}"
    );
}

#[test]
fn the_shipped_example_with_its_fcm_section_uncommented_is_valid() {
    let files = Files::new();
    let (key, account) = (files.key(), files.service_account());
    let text = files.example_with_fcm(&key, &account);
    let config = files.write("pushwake.toml", &text, 0o640);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stderr}\n{text}");
    assert!(
        stdout.contains(
            "ok (1 extension(s), apns configured, fcm configured, hms not configured, webhook not configured, webpush not configured, http not configured, store sqlite:/var/lib/pushwake/devices.db, metrics not configured, messages not configured)"
        ),
        "{stdout}"
    );
}

#[test]
fn the_shipped_example_with_its_webhook_section_uncommented_is_valid() {
    let files = Files::new();
    let key = files.key();
    let secret = files.write(
        "webhook.secret",
        "0123456789abcdef0123456789abcdef\n",
        0o600,
    );
    let text = uncomment_webhook(&files.example(&key)).replace(
        "/etc/pushwake/webhook.secret",
        &secret.display().to_string(),
    );
    let config = files.write("pushwake.toml", &text, 0o640);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stderr}\n{text}");
    assert!(
        stdout.contains(
            "fcm not configured, hms not configured, webhook configured, webpush not configured, http not configured, store sqlite:/var/lib/pushwake/devices.db, metrics not configured, messages not configured)"
        ),
        "{stdout}"
    );

    // Both optional sections at once.
    let account = files.service_account();
    let both = uncomment_webhook(&files.example_with_fcm(&key, &account)).replace(
        "/etc/pushwake/webhook.secret",
        &secret.display().to_string(),
    );
    let config = files.write("pushwake.toml", &both, 0o640);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stderr}\n{both}");
    assert!(
        stdout.contains(
            "fcm configured, hms not configured, webhook configured, webpush not configured, http not configured, store sqlite:/var/lib/pushwake/devices.db, metrics not configured, messages not configured)"
        ),
        "{stdout}"
    );
}

#[test]
fn bad_webhook_sections_are_refused_on_one_line_without_the_secret() {
    let files = Files::new();
    let key = files.key();
    let example = uncomment_webhook(&files.example(&key));
    let check = |secret: &Path, text: &str, needles: &[&str]| {
        let text = text.replace(
            "/etc/pushwake/webhook.secret",
            &secret.display().to_string(),
        );
        let config = files.write("pushwake.toml", &text, 0o600);
        refused(&config, needles);
        let (_, _, stderr) = run(&["check-config"], &config);
        assert!(!stderr.contains("short-secret"), "{stderr}");
    };
    let line = line_of(&example, "secret_file = ");
    let at = format!("pushwake.toml:{line}: webhook.secret_file");

    let short = files.write("short.secret", "short-secret\n", 0o600);
    check(&short, &example, &[&at, "at least 32"]);
    let empty = files.write("empty.secret", "", 0o600);
    check(&empty, &example, &[&at, "empty"]);
    let open = files.write("open.secret", "0123456789abcdef0123456789abcdef", 0o644);
    check(&open, &example, &[&at, "0644", "chmod"]);
    check(
        Path::new("/nonexistent/webhook.secret"),
        &example,
        &[&at, "No such file"],
    );

    let good = files.write("good.secret", "0123456789abcdef0123456789abcdef", 0o600);
    let url_line = line_of(&example, "url = \"https://push.example.com");
    let bad_url = example.replace(
        "url = \"https://push.example.com/pushwake/events\"",
        "url = \"push.example.com/pushwake/events\"",
    );
    check(
        &good,
        &bad_url,
        &[&format!("pushwake.toml:{url_line}: webhook.url")],
    );
    let bad_token = example.replace("token = \"carol-tablet-7f3a\"", "token = \"carol tablet\"");
    let token_line = line_of(&bad_token, "token = \"carol");
    check(
        &good,
        &bad_token,
        &[
            &format!("pushwake.toml:{token_line}:"),
            "a webhook device token is",
        ],
    );
    let no_section = example
        .replace("[webhook]\n", "")
        .replace("url = \"https", "# url = \"https")
        .replace("secret_file = ", "# secret_file = ")
        .replace("timeout = \"5s\"", "# timeout = \"5s\"");
    let device_line = line_of(&no_section, "platform = \"webhook\"");
    check(
        &good,
        &no_section,
        &[
            &format!("pushwake.toml:{device_line}:"),
            "a webhook device needs a [webhook] section",
        ],
    );
}

#[test]
fn an_fcm_device_without_an_fcm_section_is_refused() {
    let files = Files::new();
    let key = files.key();
    let text = uncomment_fcm(&files.example(&key))
        .replace("[fcm]\n", "")
        .replace("service_account_file = ", "# service_account_file = ")
        .replace(
            "endpoint = \"https://fcm.googleapis.com\"",
            "# endpoint = \"https://fcm.googleapis.com\"",
        );
    let config = files.write("pushwake.toml", &text, 0o600);
    let line = line_of(&text, "platform = \"fcm\"");
    refused(
        &config,
        &[
            &format!("pushwake.toml:{line}:"),
            "an fcm device needs an [fcm] section",
        ],
    );
}

#[test]
fn bad_fcm_service_account_files_are_refused_on_one_line_naming_the_key() {
    let files = Files::new();
    let key = files.key();
    let account = files.service_account();
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&account).unwrap()).unwrap();
    let private_key = good["private_key"].as_str().unwrap().to_owned();
    let check = |account: &Path, needles: &[&str]| {
        let text = files.example_with_fcm(&key, account);
        let config = files.write("pushwake.toml", &text, 0o600);
        let line = line_of(&text, "service_account_file = ");
        let mut all = vec![format!("pushwake.toml:{line}: fcm.service_account_file")];
        all.extend(needles.iter().map(|n| n.to_string()));
        refused(&config, &all.iter().map(String::as_str).collect::<Vec<_>>());
        // The private key never shows, whatever is wrong.
        let (_, _, stderr) = run(&["check-config"], &config);
        assert!(!stderr.contains(&private_key[40..80]), "{stderr}");
    };

    check(
        Path::new("/nonexistent/fcm.json"),
        &["/nonexistent/fcm.json", "No such file"],
    );

    let not_json = files.write("not-json.json", "this is not JSON\n", 0o600);
    check(&not_json, &["not-json.json", "not JSON"]);

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("client_email");
    let missing = files.write("missing.json", &missing.to_string(), 0o600);
    check(&missing, &["\"client_email\" is missing"]);

    let mut wrong_type = good.clone();
    wrong_type["type"] = "authorized_user".into();
    let wrong_type = files.write("user.json", &wrong_type.to_string(), 0o600);
    check(&wrong_type, &["not \"service_account\""]);

    let mut ec_key = good.clone();
    ec_key["private_key"] = EcKey::generate().private_pem.into();
    let ec_key = files.write("ec.json", &ec_key.to_string(), 0o600);
    check(&ec_key, &["private_key", "RSA"]);

    let mut garbage = good.clone();
    garbage["private_key"] = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        &private_key[40..80]
    )
    .into();
    let garbage = files.write("garbage.json", &garbage.to_string(), 0o600);
    check(&garbage, &["private_key", "RSA"]);

    std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o644)).unwrap();
    check(&account, &["0644", "chmod"]);
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let files = Files::new();
    let key = files.key();
    let text = files.example(&key).replace("[defaults]", "[defaults");
    let config = files.write("pushwake.toml", &text, 0o600);
    let line = text.lines().position(|l| l == "[defaults").unwrap() + 1;
    refused(&config, &[&format!("pushwake.toml:{line}:")]);
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let files = Files::new();
    let key = files.key();
    let text = files.example(&key).replace(
        "ring_timeout = \"25s\"",
        "ring_timeout = \"25s\"\nring_timout = \"20s\"",
    );
    let config = files.write("pushwake.toml", &text, 0o600);
    let line = text
        .lines()
        .position(|l| l.starts_with("ring_timout"))
        .unwrap()
        + 1;
    refused(&config, &[&format!("pushwake.toml:{line}:"), "ring_timout"]);
}

#[test]
fn a_missing_key_file_is_named() {
    let files = Files::new();
    let text = files.example(Path::new("/nonexistent/AuthKey_X.p8"));
    let config = files.write("pushwake.toml", &text, 0o600);
    refused(
        &config,
        &["apns.key_file", "/nonexistent/AuthKey_X.p8", "No such file"],
    );
}

#[test]
fn a_key_file_that_is_not_a_p256_key_is_refused() {
    let files = Files::new();
    let key = files.write(
        "AuthKey.p8",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        0o600,
    );
    let config = files.write("pushwake.toml", &files.example(&key), 0o600);
    refused(&config, &["apns.key_file", "P-256"]);
}

#[test]
fn secret_files_readable_by_others_are_refused() {
    let files = Files::new();
    let key = files.key();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = files.write("pushwake.toml", &files.example(&key), 0o600);
    refused(&config, &["apns.key_file", "0644", "chmod"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&config, &["pushwake.toml", "0644", "chmod"]);
}

#[test]
fn a_bad_duration_names_the_key_and_line() {
    let files = Files::new();
    let key = files.key();
    let text = files
        .example(&key)
        .replace("ring_timeout = \"25s\"", "ring_timeout = \"twenty\"");
    let config = files.write("pushwake.toml", &text, 0o600);
    let line = text.lines().position(|l| l.contains("\"twenty\"")).unwrap() + 1;
    refused(
        &config,
        &[
            &format!("pushwake.toml:{line}:"),
            "extension.ring_timeout",
            "twenty",
        ],
    );
}

#[test]
fn an_unreadable_config_file_is_named() {
    let files = Files::new();
    refused(
        &files.dir.path().join("absent.toml"),
        &["absent.toml", "cannot read"],
    );
}

#[test]
fn errors_never_show_the_device_token_or_password() {
    let files = Files::new();
    let key = files.key();
    let text = files
        .example(&key)
        .replace(
            "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0",
            "00fc13adff785122b4ad28809a34209823412414213480978zz",
        )
        .replace("password = \"change-me\"", "password = \"hunter2-secret\"");
    let config = files.write("pushwake.toml", &text, 0o600);
    let (code, _, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("device token must be hexadecimal"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("00fc13ad") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// The shipped example plus a `[webpush]` section (key at `vapid`) and one browser device
/// with `subscription` as its token, as the README shows it.
fn with_webpush(example: &str, vapid: &Path, subscription: &str) -> String {
    format!(
        "{example}\n[webpush]\nvapid_key_file = \"{}\"\nsubject = \"mailto:ops@example.com\"\n\n[[extension.device]]\nplatform = \"webpush\"\ntoken = '''{subscription}'''\n",
        vapid.display()
    )
}

#[test]
fn bad_webpush_settings_are_refused_on_one_line_without_the_subscription() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING};
    use pushwake_testkit::webpush::pkcs8_pem;
    let files = Files::new();
    let example = files.example(&files.key());
    let vapid = files.write(
        "vapid.pem",
        &pkcs8_pem(&ECDSA_P256_SHA256_FIXED_SIGNING),
        0o600,
    );
    let p256dh =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    let endpoint = "https://push.example.net/wpush/v2/gAAAAABSECRETSUBSCRIPTION";
    let subscription = |endpoint: &str, p256dh: &str, auth: &str| {
        format!(
            r#"{{"endpoint":"{endpoint}","expirationTime":null,"keys":{{"p256dh":"{p256dh}","auth":"{auth}"}}}}"#
        )
    };
    let good = subscription(endpoint, p256dh, "BTBZMqHH6r4Tts7J_aSIgg");

    let config = files.write(
        "pushwake.toml",
        &with_webpush(&example, &vapid, &good),
        0o600,
    );
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let check = |vapid: &Path, subscription: &str, needles: &[&str]| {
        let text = with_webpush(&example, vapid, subscription);
        let config = files.write("pushwake.toml", &text, 0o600);
        refused(&config, needles);
        let (_, _, stderr) = run(&["check-config"], &config);
        for secret in ["SECRETSUBSCRIPTION", "BTBZMqHH", "BCVxsr7N"] {
            assert!(!stderr.contains(secret), "{stderr}");
        }
    };
    let text = with_webpush(&example, &vapid, &good);
    let key_at = format!(
        "pushwake.toml:{}: webpush.vapid_key_file",
        line_of(&text, "vapid_key_file = ")
    );
    let token_at = format!("pushwake.toml:{}:", line_of(&text, "token = '''"));

    check(
        Path::new("/nonexistent/vapid.pem"),
        &good,
        &[&key_at, "No such file"],
    );
    let p384 = files.write(
        "p384.pem",
        &pkcs8_pem(&ECDSA_P384_SHA384_FIXED_SIGNING),
        0o600,
    );
    check(&p384, &good, &[&key_at, "P-256"]);
    let open = files.write(
        "open.pem",
        &pkcs8_pem(&ECDSA_P256_SHA256_FIXED_SIGNING),
        0o644,
    );
    check(&open, &good, &[&key_at, "0644", "chmod"]);

    for (bad, why) in [
        (good.replace("}}", "}"), "not JSON"),
        (
            subscription(
                "push.example.net/wpush/SECRETSUBSCRIPTION",
                p256dh,
                "BTBZMqHH6r4Tts7J_aSIgg",
            ),
            "\"endpoint\"",
        ),
        (
            subscription(endpoint, &p256dh[..60], "BTBZMqHH6r4Tts7J_aSIgg"),
            "keys.p256dh",
        ),
        (subscription(endpoint, p256dh, "BTBZMqHH6r4T"), "keys.auth"),
    ] {
        check(
            &vapid,
            &bad,
            &[&token_at, "a webpush device token must be", why],
        );
    }

    let bad_subject = with_webpush(&example, &vapid, &good).replace("mailto:ops@", "ops@");
    let config = files.write("pushwake.toml", &bad_subject, 0o600);
    refused(
        &config,
        &[&format!(
            "pushwake.toml:{}: webpush.subject",
            line_of(&bad_subject, "subject = ")
        )],
    );

    let no_section = with_webpush(&example, &vapid, &good)
        .replace("[webpush]\n", "")
        .replace("vapid_key_file = ", "# vapid_key_file = ")
        .replace("subject = \"mailto", "# subject = \"mailto");
    let config = files.write("pushwake.toml", &no_section, 0o600);
    refused(
        &config,
        &[
            &format!(
                "pushwake.toml:{}:",
                line_of(&no_section, "platform = \"webpush\"")
            ),
            "a webpush device needs a [webpush] section",
        ],
    );
}

#[test]
fn the_shipped_example_with_its_webpush_section_uncommented_is_valid() {
    use aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    const KEYS: [&str; 7] = [
        "[webpush]",
        "vapid_key_file = ",
        "subject = ",
        "[[extension.device]]",
        "platform = \"webpush\"",
        "token = '''",
        "name = \"dave-browser\"",
    ];
    let files = Files::new();
    let example = files.example(&files.key());
    let vapid = files.write(
        "vapid.pem",
        &pushwake_testkit::webpush::pkcs8_pem(&ECDSA_P256_SHA256_FIXED_SIGNING),
        0o600,
    );
    let text = uncomment(
        &example,
        &["[webpush]", "platform = \"webpush\""],
        &KEYS,
        "[webpush]",
    )
    .replace("/etc/pushwake/vapid.pem", &vapid.display().to_string());
    let config = files.write("pushwake.toml", &text, 0o600);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("APA91bExample"), "{stdout}");
}

#[test]
fn the_shipped_example_with_its_apns_options_uncommented_is_valid() {
    let files = Files::new();
    let key = files.key();
    let uncomment = |text: &str, keys: &[&str]| {
        let mut text = text.to_owned();
        for key in keys {
            let commented = format!("\n# {key} = ");
            assert!(text.contains(&commented), "the example has no `{key}`");
            text = text.replace(&commented, &format!("\n{key} = "));
        }
        text
    };
    let options = [
        "alert_topic",
        "sandbox_endpoint",
        "environment",
        "topic",
        "alert_token",
    ];
    let text = uncomment(&files.example(&key), &options);
    let config = files.write("pushwake.toml", &text, 0o640);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stderr}\n{text}");
    assert!(stdout.contains("apns configured"), "{stdout}");

    // Certificate authentication instead of the signing key.
    let certificate =
        pushwake_testkit::tls::TestClientCertificate::generate("com.example.phone").unwrap();
    let pem = files.write(
        "voip-services.pem",
        &format!("{}{}", certificate.certificate_pem, certificate.key_pem),
        0o640,
    );
    let mut text = uncomment(&text, &["certificate_file"]).replace(
        "/etc/pushwake/voip-services.p12\"",
        &format!("{}\"", pem.display()),
    );
    for token_key in ["team_id", "key_id", "key_file"] {
        text = text.replace(&format!("\n{token_key} = "), &format!("\n# {token_key} = "));
    }
    let config = files.write("pushwake.toml", &text, 0o640);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stderr}\n{text}");
    assert!(stdout.contains("apns configured"), "{stdout}");
    // The same file left readable by others is refused, naming the key and its line.
    let open = files.write(
        "voip-services.pem",
        &format!("{}{}", certificate.certificate_pem, certificate.key_pem),
        0o644,
    );
    assert_eq!(open, pem);
    let (code, _, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 2);
    assert!(stderr.contains(": apns.certificate_file: "), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

#[test]
fn the_shipped_example_with_its_messages_section_uncommented_is_valid() {
    let files = Files::new();
    let example = files.example(&files.key());
    let text = uncomment(
        &example,
        &["[messages]"],
        &[
            "[messages]",
            "max_per_extension = ",
            "max_age = ",
            "max_body_bytes = ",
            "preview = ",
            "confirmation = ",
            "confirm_within = ",
        ],
        "[messages]",
    );
    let config = files.write("pushwake.toml", &text, 0o600);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("metrics not configured, messages kept (confirmed by the pbx))"),
        "{stdout}"
    );
    let bad = text.replace("confirmation = \"pbx\"", "confirmation = \"phone\"");
    let config = files.write("pushwake.toml", &bad, 0o600);
    let (code, _, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 2);
    let line = line_of(&bad, "confirmation = \"phone\"");
    assert!(
        stderr.contains(&format!(
            ":{line}: messages.confirmation: `phone` is neither"
        )),
        "{stderr}"
    );
}

#[test]
fn the_shipped_example_with_its_metrics_section_uncommented_is_valid() {
    let files = Files::new();
    let example = files.example(&files.key());
    let text = uncomment(
        &example,
        &["[metrics]"],
        &["[metrics]", "listen = "],
        "[metrics]",
    );
    let config = files.write("pushwake.toml", &text, 0o600);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("store sqlite:/var/lib/pushwake/devices.db, metrics on 127.0.0.1:9464, messages not configured)"),
        "{stdout}"
    );
    let bad = text.replace("listen = \"127.0.0.1:9464\"", "listen = \"localhost:9464\"");
    let config = files.write("pushwake.toml", &bad, 0o600);
    let (code, _, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 2);
    let line = line_of(&bad, "listen = \"localhost:9464\"");
    assert!(
        stderr.contains(&format!(
            ":{line}: metrics.listen: `localhost:9464` is not an address and port"
        )),
        "{stderr}"
    );
}

#[test]
fn the_shipped_example_with_its_http_section_uncommented_is_valid() {
    let files = Files::new();
    let example = files.example(&files.key());
    let text = uncomment(
        &example,
        &["[http]"],
        &["[http]", "listen = ", "public_url = "],
        "[http]",
    );
    let config = files.write("pushwake.toml", &text, 0o600);
    let (code, stdout, stderr) = run(&["check-config"], &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("webpush not configured, http configured on 127.0.0.1:8089, store sqlite:/var/lib/pushwake/devices.db, metrics not configured, messages not configured)"),
        "{stdout}"
    );

    let bad = text.replace("listen = \"127.0.0.1:8089\"", "listen = \"pbx:8089\"");
    let config = files.write("pushwake.toml", &bad, 0o600);
    refused(
        &config,
        &[
            &format!("pushwake.toml:{}: http.listen", line_of(&bad, "listen = ")),
            "`pbx:8089` is not an address and port",
        ],
    );
    let bad = text.replace("https://pbx.example.com/pushwake", "pbx.example.com");
    let config = files.write("pushwake.toml", &bad, 0o600);
    refused(
        &config,
        &[&format!(
            "pushwake.toml:{}: http.public_url",
            line_of(&bad, "public_url = ")
        )],
    );
}

#[test]
fn an_http_listen_address_in_use_stops_run_with_one_line_naming_it() {
    let files = Files::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = uncomment(
        &files.example(&files.key()),
        &["[http]"],
        &["[http]", "listen = ", "public_url = "],
        "[http]",
    )
    .replace("127.0.0.1:8089", &addr.to_string());
    let config = files.write("pushwake.toml", &text, 0o600);
    let (code, _, stderr) = run(&["run"], &config);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pushwake: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("http.listen: cannot listen on {addr}")),
        "{stderr}"
    );
}
