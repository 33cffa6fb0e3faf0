//! Property tests of the configuration file: arbitrary text, and a complete valid file
//! (every section, a device of every platform) mutated line by line — a line deleted,
//! doubled, moved, a key renamed, a value replaced by one of another type, the file cut
//! short, garbage put in — is read or refused with an error naming the file (and a line
//! of it when there is one), never a panic, and no error quotes the ARI password, a
//! device token or a secret of a key file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use pushwake::config::parse;
use pushwake_testkit::config::standalone;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 600,
        ..ProptestConfig::default()
    }
}

const PASSWORD: &str = "ari-5ecret-pa55w0rd-never-quoted";
const APNS_TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const FCM_TOKEN: &str = "fcmT0ken:APA91bSecretRegistrationTokenNeverQuoted";
const HMS_TOKEN: &str = "IQAAAACy0kYkAACwNzSecretHmsTokenNeverQuoted";
const WEBPUSH_ENDPOINT: &str = "https://push.example.net/wpush/v2/gAAAAABSECRETSUBSCRIPTION";
const HMS_SECRET: &str = "0a1b2c3d4e5f0a1b2c3d4e5fhmssecret";

/// The secrets no error may quote.
const SECRETS: &[&str] = &[
    PASSWORD,
    APNS_TOKEN,
    FCM_TOKEN,
    HMS_TOKEN,
    WEBPUSH_ENDPOINT,
    HMS_SECRET,
];

/// The complete valid file (its key files in a directory kept for the whole run).
fn valid() -> (PathBuf, String) {
    static VALID: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    let (_, path, text) = VALID.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = standalone(dir.path(), "127.0.0.1:0", None).unwrap();
        let hms_secret = dir.path().join("hms.secret");
        std::fs::write(&hms_secret, HMS_SECRET).unwrap();
        std::fs::set_permissions(&hms_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let subscription = format!(
            r#"{{"endpoint":"{WEBPUSH_ENDPOINT}","expirationTime":null,"keys":{{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}}}"#
        );
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("password = \"pw\"", &format!("password = \"{PASSWORD}\""))
            + &format!(
                "\n[hms]\napp_id = \"107654321\"\nclient_secret_file = \"{}\"\n\n\
                 [defaults]\nring_timeout = \"30s\"\n\n\
                 [[extension]]\nnumber = \"101\"\nring_timeout = \"20s\"\n\n\
                 [[extension.device]]\nplatform = \"apns\"\ntoken = \"{APNS_TOKEN}\"\nenvironment = \"sandbox\"\n\n\
                 [[extension.device]]\nplatform = \"fcm\"\ntoken = \"{FCM_TOKEN}\"\n\n\
                 [[extension]]\nnumber = \"102\"\n\n\
                 [[extension.device]]\nplatform = \"hms\"\ntoken = \"{HMS_TOKEN}\"\n\n\
                 [[extension.device]]\nplatform = \"webhook\"\ntoken = \"desk-phone-102\"\n\n\
                 [[extension.device]]\nplatform = \"webpush\"\ntoken = '''{subscription}'''\n",
                hms_secret.display()
            );
        (dir, path, text)
    });
    // Every mutation starts from a file that is valid as it is.
    (path.clone(), text.clone())
}

/// Values of every TOML type, and some that are no TOML at all.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("12345".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("true".to_owned()),
        Just("[1, \"a\", []]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"   \"".to_owned()),
        "[ -~]{0,30}".prop_map(|s| format!("{s:?}")),
        "[ -~]{0,30}",
        ".{0,30}".prop_map(|s| format!("{s:?}")),
    ]
}

/// One line-level change.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    Double(Index),
    Move(Index, Index),
    RenameKey(Index, String),
    ReplaceValue(Index, String),
    CutAt(Index),
    Insert(Index, String),
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Double),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Move(a, b)),
        (any::<Index>(), "[a-z_]{1,12}").prop_map(|(i, k)| Mutation::RenameKey(i, k)),
        (any::<Index>(), any_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        any::<Index>().prop_map(Mutation::CutAt),
        (
            any::<Index>(),
            prop_oneof![
                ".{0,40}",
                "\\[[a-z.\\[\\]]{0,12}\\]",
                "[a-z_]{1,8} = .{0,20}"
            ]
        )
            .prop_map(|(i, l)| Mutation::Insert(i, l)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len();
    if n == 0 {
        // Cut to nothing already: nothing left to change.
        return text.to_owned();
    }
    match mutation {
        Mutation::Delete(i) => {
            lines.remove(i.index(n));
        }
        Mutation::Double(i) => {
            let i = i.index(n);
            lines.insert(i, lines[i].clone());
        }
        Mutation::Move(a, b) => {
            let line = lines.remove(a.index(n));
            lines.insert(b.index(n), line);
        }
        Mutation::RenameKey(i, key) => {
            let line = &mut lines[i.index(n)];
            if let Some((_, value)) = line.split_once(" = ") {
                *line = format!("{key} = {value}");
            }
        }
        Mutation::ReplaceValue(i, value) => {
            let line = &mut lines[i.index(n)];
            if let Some((key, _)) = line.split_once(" = ") {
                *line = format!("{key} = {value}");
            }
        }
        Mutation::CutAt(i) => {
            let bounds: Vec<usize> = text.char_indices().map(|(at, _)| at).collect();
            return text[..bounds[i.index(bounds.len())]].to_owned();
        }
        Mutation::Insert(i, line) => lines.insert(i.index(n + 1), line.clone()),
    }
    lines.join("\n") + "\n"
}

fn check(path: &Path, text: &str) -> Result<(), TestCaseError> {
    let Err(error) = parse(path, text) else {
        return Ok(());
    };
    let shown = error.to_string();
    prop_assert!(
        shown.starts_with(&path.display().to_string()),
        "{shown} names no file"
    );
    prop_assert!(!error.message.trim().is_empty(), "an empty error");
    if let Some(line) = error.line {
        prop_assert!(
            (1..=text.lines().count() + 1).contains(&line),
            "line {line} of a {}-line file",
            text.lines().count()
        );
    }
    for secret in SECRETS {
        prop_assert!(!shown.contains(secret), "{shown} quotes a secret");
    }
    Ok(())
}

#[test]
fn the_file_the_mutations_start_from_is_valid() {
    let (path, text) = valid();
    if let Err(error) = parse(&path, &text) {
        panic!("{error}\n{text}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_read_or_refused(text in prop_oneof![
        ".{0,300}",
        "[\\[\\]a-z_.=\"' \n0-9{}]{0,300}",
    ]) {
        check(Path::new("/etc/pushwake/pushwake.toml"), &text)?;
    }

    #[test]
    fn a_valid_file_mutated_is_read_or_refused_clearly(
        mutations in proptest::collection::vec(any_mutation(), 1..4),
    ) {
        let (path, text) = valid();
        let text = mutations.iter().fold(text, |text, m| apply(&text, m));
        check(&path, &text)?;
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_at_its_line(
        line in any::<Index>(),
        value in prop_oneof![Just("12345"), Just("true"), Just("[1]"), Just("{ a = 1 }")],
    ) {
        let (path, text) = valid();
        let lines: Vec<&str> = text.lines().collect();
        let at = line.index(lines.len());
        let Some((key, _)) = lines[at].split_once(" = ") else {
            return Ok(());
        };
        let mutated = apply(&text, &Mutation::ReplaceValue(line, value.to_owned()));
        let error = parse(&path, &mutated)
            .map(|_| ())
            .expect_err(&format!("{key} = {value} accepted"));
        check(&path, &mutated)?;
        prop_assert!(error.line.is_some(), "{error} has no line for {key} = {value}");
    }
}

/// Found while writing these properties, by reading how toml's errors are made (the
/// mutations above do not turn the password into a number): a password written without
/// quotes, `password = 123456`, was quoted in the error ("invalid type: integer
/// `123456`, expected a string"), which goes to stderr and the journal.
#[test]
fn a_password_written_as_a_number_is_not_quoted_in_the_error() {
    let (path, text) = valid();
    let text = text.replace(&format!("\"{PASSWORD}\""), "987654321012");
    let error = parse(&path, &text).map(|_| ()).unwrap_err().to_string();
    assert!(!error.contains("987654321012"), "{error}");
    assert!(error.contains("integer"), "{error}");
}
