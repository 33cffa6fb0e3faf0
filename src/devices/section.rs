//! The `[store]` section: where registered devices are kept, and how long a learned one
//! lives without a REGISTER.

use std::time::Duration;

use pushwake_core::config::{duration, ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

use crate::store::StoreConfig;

/// The section's name.
pub const SECTION: &str = "store";

/// How long a learned device is kept without a REGISTER.
pub const DEFAULT_LEARNED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest `learned_ttl` accepted.
const MAX_LEARNED_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `[store]`, or its defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSection {
    /// Where the devices are kept (`url`; the package's state directory by default).
    pub store: StoreConfig,
    /// How long a learned device is kept without a REGISTER.
    pub learned_ttl: Duration,
    /// This node's name in a site of several nodes sharing the store (`node`): every
    /// push carries it, so that the woken app registers with the node holding its call.
    pub node: Option<String>,
}

/// The longest `node` accepted.
const MAX_NODE_LEN: usize = 255;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<Spanned<String>>,
    learned_ttl: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
}

impl StoreSection {
    /// Reads `[store]` from `file`, or the defaults when it has none.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Self, ConfigError> {
        let Some(raw) = file.section::<RawStore>(SECTION)? else {
            return Ok(Self {
                store: StoreConfig::default(),
                learned_ttl: DEFAULT_LEARNED_TTL,
                node: None,
            });
        };
        let raw = raw.into_inner();
        let url = match &raw.url {
            Some(value) => {
                let url = value.get_ref().trim().to_owned();
                let sqlite = url.starts_with("sqlite:") || url.starts_with('/');
                let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
                let config = StoreConfig { url };
                if !(sqlite || postgres) || config.url == "sqlite:" {
                    return Err(file.error_at(
                        value.span(),
                        format!(
                            "store.url: `{}` is neither sqlite:<path> (or an absolute path) nor postgres://user:password@host/database",
                            config.describe()
                        ),
                    ));
                }
                config
            }
            None => StoreConfig::default(),
        };
        let learned_ttl = match &raw.learned_ttl {
            Some(value) => duration(value, "store.learned_ttl", "\"30d\"", MAX_LEARNED_TTL)
                .map_err(|p| file.problem_in(0..0, p))?,
            None => DEFAULT_LEARNED_TTL,
        };
        let node = match &raw.node {
            Some(value) => {
                let text = value.get_ref().trim();
                if text.is_empty()
                    || text.len() > MAX_NODE_LEN
                    || !text.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(file.error_at(
                        value.span(),
                        format!("store.node: 1 to {MAX_NODE_LEN} printable characters without spaces, the address the phones register with on this node (e.g. \"pbx-b.example.com\")"),
                    ));
                }
                Some(text.to_owned())
            }
            None => None,
        };
        Ok(Self {
            store: url,
            learned_ttl,
            node,
        })
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
        assert_eq!(StoreConfig::default().url, crate::store::DEFAULT_URL);
        let default = read("[http]\nx = 1\n").unwrap();
        assert_eq!(default.store.url, "sqlite:/var/lib/pushwake/devices.db");
        assert_eq!(default.learned_ttl, DEFAULT_LEARNED_TTL);
        let store = read("[store]\nurl = \"postgres://pw:s3cret@db.example.com/pushwake\"\nlearned_ttl = \"7d\"\n").unwrap();
        assert_eq!(store.learned_ttl, Duration::from_secs(7 * 86_400));
        let shown = format!("{store:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.example.com"), "{shown}");
        assert_eq!(
            read("[store]\nurl = \"/tmp/devices.db\"\n")
                .unwrap()
                .store
                .url,
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
        let e = read("[store]\nnode = \"pbx b\"\n").unwrap_err();
        assert!(e.starts_with("pw.toml:2: store.node: "), "{e}");
        let node = read("[store]\nnode = \" pbx-b.example.com \"\n").unwrap();
        assert_eq!(node.node.as_deref(), Some("pbx-b.example.com"));
        let e = read("[store]\npath = \"/x\"\n").unwrap_err();
        assert!(e.starts_with("pw.toml:2: ") && e.contains("path"), "{e}");
    }
}
