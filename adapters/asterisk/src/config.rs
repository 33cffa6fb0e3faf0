//! The `[asterisk]` section of `pushwake.toml`: how to reach ARI.

use std::fmt;

use pushwake_core::config::{check_http_url, ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

/// The section's name in the configuration file.
pub const SECTION: &str = "asterisk";

/// `[asterisk]`: how to reach ARI.
#[derive(Clone, PartialEq, Eq)]
pub struct AsteriskConfig {
    /// ARI base URL (`http://host:8088`); events use the matching `ws://`/`wss://`.
    pub url: String,
    /// ARI user.
    pub username: String,
    /// ARI password. Secret.
    pub password: String,
    /// Stasis application name used in the dialplan.
    pub app: String,
    /// Whether pushwake keeps a device state `Stasis:<app>-<extension>` per push-enabled
    /// extension (for queues and hints). Off unless asked for: on, pushwake sets one for
    /// every such extension on each connect.
    pub device_states: bool,
}

impl fmt::Debug for AsteriskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsteriskConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("app", &self.app)
            .field("device_states", &self.device_states)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsterisk {
    url: Spanned<String>,
    username: String,
    password: String,
    #[serde(default = "default_app")]
    app: Spanned<String>,
    #[serde(default)]
    device_states: bool,
}

fn default_app() -> Spanned<String> {
    Spanned::new(0..0, "pushwake".to_owned())
}

impl AsteriskConfig {
    /// Reads and checks the `[asterisk]` section of `file`, if it has one.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = file.section::<RawAsterisk>(SECTION)? else {
            return Ok(None);
        };
        let raw = raw.into_inner();
        let url = raw.url.get_ref().trim_end_matches('/').to_owned();
        check_http_url(&url, raw.url.span(), "asterisk.url")
            .map_err(|(span, message)| file.error_at(span, message))?;
        let app = raw.app.get_ref().clone();
        if app.is_empty()
            || !app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(file.error_at(
                raw.app.span(),
                format!("asterisk.app: `{app}` must be letters, digits, `-` or `_`"),
            ));
        }
        Ok(Some(Self {
            url,
            username: raw.username,
            password: raw.password,
            app,
            device_states: raw.device_states,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SECTION_TEXT: &str =
        "[asterisk]\nurl = \"http://127.0.0.1:8088/\"\nusername = \"pushwake\"\npassword = \"secret\"\n";

    fn read(text: &str) -> Result<Option<AsteriskConfig>, String> {
        let file = ConfigFile::parse(Path::new("pw.toml"), text).map_err(|e| e.to_string())?;
        AsteriskConfig::from_file(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_gets_its_defaults_and_hides_the_password() {
        let config = read(SECTION_TEXT).unwrap().unwrap();
        assert_eq!(config.url, "http://127.0.0.1:8088");
        assert_eq!(config.app, "pushwake");
        assert!(!config.device_states, "off unless asked for");
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(read("[http]\nx = 1\n").unwrap(), None);
        let on = read(&format!("{SECTION_TEXT}device_states = true\n"))
            .unwrap()
            .unwrap();
        assert!(on.device_states);
        let e = read(&format!("{SECTION_TEXT}device_states = \"yes\"\n")).unwrap_err();
        assert!(e.starts_with("pw.toml:5: ") && e.contains("boolean"), "{e}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let e =
            read(&SECTION_TEXT.replace("http://127.0.0.1:8088/", "127.0.0.1:8088")).unwrap_err();
        assert!(e.starts_with("pw.toml:2: asterisk.url"), "{e}");
        let e = read(&format!("{SECTION_TEXT}app = \"push wake\"\n")).unwrap_err();
        assert!(e.starts_with("pw.toml:5: asterisk.app: `push wake`"), "{e}");
        let e = read(&format!("{SECTION_TEXT}pasword = \"x\"\n")).unwrap_err();
        assert!(e.starts_with("pw.toml:5: ") && e.contains("pasword"), "{e}");
    }
}
