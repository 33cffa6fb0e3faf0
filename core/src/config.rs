//! The shared rules of the configuration file (`pushwake.toml`), so that each part of
//! pushwake reads its own section: the daemon its `[defaults]`, `[[extension]]` and
//! `[http]`, each PBX adapter its PBX's section, each push provider its own.
//!
//! The file is parsed once ([`ConfigFile::parse`]); a section is then read into the
//! reader's own `#[serde(deny_unknown_fields)]` struct with the position of every value
//! kept ([`ConfigFile::section`]). Every error is one line of the form
//! `<file>:<line>: <what is wrong>` ([`ConfigError`]), so a failed `pushwake check-config`
//! or service start says exactly what to fix.
//!
//! This module reads files only to check secret-holding files ([`read_secret_file`]),
//! at load time; nothing of the wake logic touches the file system.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
pub use toml::Spanned;

/// A configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A problem found while checking a section: where it is (a byte range of the file; an
/// empty range means "the section as a whole") and what is wrong.
pub type Problem = (Range<usize>, String);

/// A configuration file, parsed once, from which each part reads its own section.
pub struct ConfigFile<'a> {
    path: &'a Path,
    text: &'a str,
    root: toml::de::DeTable<'a>,
}

impl<'a> ConfigFile<'a> {
    /// Parses `text`, read from `path` (used in messages only).
    pub fn parse(path: &'a Path, text: &'a str) -> Result<Self, ConfigError> {
        let file = Self {
            path,
            text,
            root: toml::de::DeTable::new(),
        };
        let root = toml::de::DeTable::parse(text).map_err(|e| file.toml_error(&e))?;
        Ok(Self {
            root: root.into_inner(),
            ..file
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// The top-level keys (section names) with the position of each name.
    pub fn keys(&self) -> impl Iterator<Item = (&str, Range<usize>)> {
        self.root.keys().map(|k| (&**k.get_ref(), k.span()))
    }

    /// Whether the file has a top-level `name`.
    pub fn has(&self, name: &str) -> bool {
        self.keys().any(|(key, _)| key == name)
    }

    /// Reads the top-level `name` into `T`, if the file has it. `T` is usually a
    /// `#[serde(deny_unknown_fields)]` struct of [`Spanned`] values, so an unknown key, a
    /// missing key and a value of the wrong type are errors that name the key and line.
    pub fn section<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<Spanned<T>>, ConfigError> {
        let Some((_, value)) = self.root.iter().find(|(k, _)| &**k.get_ref() == name) else {
            return Ok(None);
        };
        let deserializer = toml::de::ValueDeserializer::from(value.clone());
        serde::Deserialize::deserialize(deserializer)
            .map(Some)
            .map_err(|e| self.toml_error(&e))
    }

    /// An error at `span` (a byte range of the file); an empty span means the whole file.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            line: (span.end > 0).then(|| self.line_of(span.start)),
            message: message.into(),
        }
    }

    /// The error for a [`Problem`] found in a section that starts at `section`: a
    /// problem without a place of its own is put at the section.
    pub fn problem_in(&self, section: Range<usize>, (span, message): Problem) -> ConfigError {
        self.error_at(if span.end > 0 { span } else { section }, message)
    }

    /// The 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        // Without the values serde quotes: `password = 123456` (no quotes) must not
        // put the password in the error.
        let message = crate::redact::without_values(e.message().trim()).replace('\n', " ");
        self.error_at(e.span().unwrap_or(0..0), message)
    }
}

/// Checks that `value` is an http:// or https:// URL with a host; the error names `key`
/// at `span`.
pub fn check_http_url(value: &str, span: Range<usize>, key: &str) -> Result<(), Problem> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err((
            span,
            format!("{key}: `{value}` is not an http:// or https:// URL"),
        )),
    }
}

/// An optional base-URL key: the value without a final `/`, checked, or `default`.
pub fn base_url(
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
) -> Result<String, Problem> {
    match value {
        Some(v) => {
            let url = v.get_ref().trim_end_matches('/').to_owned();
            check_http_url(&url, v.span(), key)?;
            Ok(url)
        }
        None => Ok(default.to_owned()),
    }
}

/// A duration key (`"30s"`, `"1m"`) that must be more than zero and at most `max`;
/// `example` shows the form in the error.
pub fn duration(
    value: &Spanned<String>,
    key: &str,
    example: &str,
    max: Duration,
) -> Result<Duration, Problem> {
    let text = value.get_ref();
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        (
            value.span(),
            format!("{key}: `{text}` is not a duration like {example} ({e})"),
        )
    })?;
    if duration.is_zero() || duration > max {
        return Err((
            value.span(),
            format!(
                "{key}: `{text}` must be more than 0s and at most {}s",
                max.as_secs()
            ),
        ));
    }
    Ok(duration)
}

/// A key that must not be empty, trimmed.
pub fn non_empty(value: &Spanned<String>, key: &str) -> Result<String, Problem> {
    let text = value.get_ref().trim();
    if text.is_empty() {
        Err((value.span(), format!("{key} must not be empty")))
    } else {
        Ok(text.to_owned())
    }
}

/// Refuses a secret-holding file that other users can read, or that anyone but its owner
/// can write. `what` says what the file holds, for the message.
pub fn check_private(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 || mode & 0o020 != 0 {
        return Err(format!(
            "{} is {what} and has mode {mode:04o}; other users must not read it: chmod 0640 (or 0600) {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Reads a file that holds a secret and checks that it is private
/// ([`check_private`]). The error says what went wrong, naming the file but never
/// quoting its contents.
pub fn read_secret_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_private(path, what)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pbx {
        url: Spanned<String>,
        #[allow(dead_code)]
        password: String,
    }

    const TEXT: &str = "[pbx]\nurl = \"http://h:1\"\npassword = \"pw\"\n\n[other]\nx = 1\n";

    #[test]
    fn a_section_is_read_with_its_positions() {
        let path = Path::new("pw.toml");
        let file = ConfigFile::parse(path, TEXT).unwrap();
        let keys: Vec<&str> = file.keys().map(|(k, _)| k).collect();
        assert_eq!(keys, ["other", "pbx"]);
        assert!(file.has("pbx") && !file.has("absent"));
        let pbx = file.section::<Pbx>("pbx").unwrap().unwrap();
        assert_eq!(file.line_of(pbx.span().start), 1);
        let url = &pbx.get_ref().url;
        assert_eq!(url.get_ref(), "http://h:1");
        assert_eq!(file.line_of(url.span().start), 2);
        assert!(file.section::<Pbx>("absent").unwrap().is_none());
    }

    #[test]
    fn errors_name_file_line_and_key_on_one_line() {
        let path = Path::new("pw.toml");
        let text = TEXT.replace("password", "pasword");
        let file = ConfigFile::parse(path, &text).unwrap();
        let e = file.section::<Pbx>("pbx").err().unwrap().to_string();
        assert!(e.starts_with("pw.toml:3: ") && e.contains("pasword"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = ConfigFile::parse(path, "[pbx\nurl = 1\n").err().unwrap();
        assert!(e.to_string().starts_with("pw.toml:1: "), "{e}");
        let e = file.error_at(0..0, "whole file");
        assert_eq!(e.to_string(), "pw.toml: whole file");
        let e = file.problem_in(5..8, (0..0, "in the section".into()));
        assert_eq!(e.to_string(), "pw.toml:1: in the section");
    }

    #[test]
    fn durations_and_urls_are_checked_with_the_key_named() {
        let value = |text: &str| Spanned::new(3..5, text.to_owned());
        let max = Duration::from_secs(300);
        assert_eq!(
            duration(&value("25s"), "k", "\"30s\"", max),
            Ok(Duration::from_secs(25))
        );
        for bad in ["0s", "301s", "soon"] {
            let (span, message) = duration(&value(bad), "k", "\"30s\"", max).unwrap_err();
            assert_eq!(span, 3..5);
            assert!(
                message.starts_with("k: `") && message.contains(bad),
                "{message}"
            );
        }
        assert!(check_http_url("https://h/x", 0..1, "k").is_ok());
        assert!(check_http_url("h:8088", 0..1, "k").is_err());
        assert_eq!(
            base_url(&Some(value("http://h:1/")), "k", "x"),
            Ok("http://h:1".into())
        );
        assert_eq!(base_url(&None, "k", "http://d"), Ok("http://d".into()));
    }
}
