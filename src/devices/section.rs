//! The `[store]` section: where registered devices are kept, and how long a learned one
//! lives without a REGISTER.

use std::fmt;
use std::time::Duration;

use pushwake_core::config::{duration, ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

/// The section's name.
pub const SECTION: &str = "store";

/// The store when `[store] url` is not set: SQLite in the package's state directory.
pub const DEFAULT_URL: &str = "sqlite:/var/lib/pushwake/devices.db";

/// How long a learned device is kept without a REGISTER.
pub const DEFAULT_LEARNED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest `learned_ttl` accepted.
const MAX_LEARNED_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `[store]`, or its defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreSection {
    /// `sqlite:<path>` (or a plain path) or `postgres://…`. A PostgreSQL URL may hold a
    /// password: `Debug` shows only the scheme and host.
    pub url: String,
    /// How long a learned device is kept without a REGISTER.
    pub learned_ttl: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            learned_ttl: DEFAULT_LEARNED_TTL,
        }
    }
}

impl fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSection")
            .field("url", &redacted_url(&self.url))
            .field("learned_ttl", &self.learned_ttl)
            .finish()
    }
}

/// `url` without its user information (a password), for logs and `Debug`.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let had_credentials = !parsed.username().is_empty() || parsed.password().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let mut text = parsed.to_string();
            if had_credentials {
                text = text.replacen("://", "://<redacted>@", 1);
            }
            text
        }
        _ => url.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<Spanned<String>>,
    learned_ttl: Option<Spanned<String>>,
}

impl StoreSection {
    /// Reads `[store]` from `file`, or the defaults when it has none.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Self, ConfigError> {
        let Some(raw) = file.section::<RawStore>(SECTION)? else {
            return Ok(Self::default());
        };
        let raw = raw.into_inner();
        let url = match &raw.url {
            Some(value) => {
                let url = value.get_ref().trim().to_owned();
                let sqlite = url.starts_with("sqlite:") || url.starts_with('/');
                let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
                if !(sqlite || postgres) || url == "sqlite:" {
                    return Err(file.error_at(
                        value.span(),
                        format!(
                            "store.url: `{}` is neither sqlite:<path> (or an absolute path) nor postgres://user:password@host/database",
                            redacted_url(&url)
                        ),
                    ));
                }
                url
            }
            None => DEFAULT_URL.to_owned(),
        };
        let learned_ttl = match &raw.learned_ttl {
            Some(value) => duration(value, "store.learned_ttl", "\"30d\"", MAX_LEARNED_TTL)
                .map_err(|p| file.problem_in(0..0, p))?,
            None => DEFAULT_LEARNED_TTL,
        };
        Ok(Self { url, learned_ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read(text: &str) -> Result<StoreSection, String> {
        let file = ConfigFile::parse(Path::new("pw.toml"), text).map_err(|e| e.to_string())?;
        StoreSection::from_file(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn the_store_defaults_to_sqlite_in_the_state_directory_for_thirty_days() {
        assert_eq!(read("[http]\nx = 1\n").unwrap(), StoreSection::default());
        let store = read("[store]\nurl = \"postgres://pw:s3cret@db.example.com/pushwake\"\nlearned_ttl = \"7d\"\n").unwrap();
        assert_eq!(store.learned_ttl, Duration::from_secs(7 * 86_400));
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw:"),
            "{shown}"
        );
        assert!(shown.contains("db.example.com"), "{shown}");
        assert_eq!(
            read("[store]\nurl = \"/tmp/devices.db\"\n").unwrap().url,
            "/tmp/devices.db"
        );
    }

    #[test]
    fn bad_values_are_named_with_their_line_without_the_password() {
        let e = read("[store]\nurl = \"mysql://u:s3cret@h/db\"\n").unwrap_err();
        assert!(
            e.starts_with("pw.toml:2: store.url: ") && !e.contains("s3cret"),
            "{e}"
        );
        let e = read("[store]\nlearned_ttl = \"forever\"\n").unwrap_err();
        assert!(e.starts_with("pw.toml:2: store.learned_ttl"), "{e}");
        let e = read("[store]\npath = \"/x\"\n").unwrap_err();
        assert!(e.starts_with("pw.toml:2: ") && e.contains("path"), "{e}");
    }
}
