//! The `[freeswitch]` section of `pushwake.toml`: how to reach FreeSWITCH's event socket,
//! and where pushwake listens for the calls the dialplan hands over.
//!
//! ```toml
//! [freeswitch]
//! address = "127.0.0.1:8021"                      # mod_event_socket
//! password_file = "/etc/pushwake/esl.password"    # its password, readable by pushwake only
//! listen = "127.0.0.1:8084"                       # the dialplan's `socket` connects here
//! domain = "pbx.example.com"                      # the users' domain (sofia_contact)
//! # profile = "internal"                          # the sofia profile to dial through
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use pushwake_core::config::{read_secret_file, ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

use crate::client::Password;

/// The section's name in the configuration file.
pub const SECTION: &str = "freeswitch";
/// mod_event_socket's own default address.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8021";
/// Where pushwake listens for the `socket` application by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8084";
/// The sofia profile of FreeSWITCH's example configuration, where phones register.
pub const DEFAULT_PROFILE: &str = "internal";

/// `[freeswitch]`, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct FreeSwitchConfig {
    /// `host:port` of mod_event_socket.
    pub address: String,
    /// Its password, read from `password_file`. Secret.
    pub password: String,
    /// Where pushwake accepts the calls the dialplan's `socket` application hands over.
    pub listen: SocketAddr,
    /// The domain the users register in: `sofia_contact <extension>@<domain>`.
    pub domain: String,
    /// The sofia profile contacts are dialled through when FreeSWITCH did not name one.
    pub profile: String,
}

impl FreeSwitchConfig {
    /// The event socket password, as the client takes it.
    pub fn password(&self) -> Password {
        Password::new(self.password.clone())
    }
}

impl fmt::Debug for FreeSwitchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeSwitchConfig")
            .field("address", &self.address)
            .field("password", &"<redacted>")
            .field("listen", &self.listen)
            .field("domain", &self.domain)
            .field("profile", &self.profile)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeSwitch {
    address: Option<Spanned<String>>,
    password_file: Spanned<PathBuf>,
    listen: Option<Spanned<String>>,
    domain: Spanned<String>,
    profile: Option<Spanned<String>>,
}

/// Letters, digits and `.-_` (a host name, a profile name): nothing that needs quoting
/// in an Event Socket command.
fn plain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl FreeSwitchConfig {
    /// Reads and checks the `[freeswitch]` section of `file`, if it has one; the
    /// password file is read now (and must be readable by its owner and group only), so
    /// a missing one stops pushwake at start.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = file.section::<RawFreeSwitch>(SECTION)? else {
            return Ok(None);
        };
        let raw = raw.into_inner();
        let address = match &raw.address {
            Some(value) => {
                let text = value.get_ref().trim();
                let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !valid {
                    return Err(file.error_at(
                        value.span(),
                        format!("freeswitch.address: `{text}` is not host:port (mod_event_socket's listen-ip and listen-port, e.g. {DEFAULT_ADDRESS})"),
                    ));
                }
                text.to_owned()
            }
            None => DEFAULT_ADDRESS.to_owned(),
        };
        let path = raw.password_file.get_ref();
        let password = read_secret_file(path, "the event socket password").map_err(|e| {
            file.error_at(
                raw.password_file.span(),
                format!("freeswitch.password_file: {e}"),
            )
        })?;
        let password = String::from_utf8(password)
            .map_err(|_| {
                file.error_at(
                    raw.password_file.span(),
                    format!("freeswitch.password_file: {} is not text", path.display()),
                )
            })?
            .trim()
            .to_owned();
        if password.is_empty() || password.contains(['\n', '\r']) {
            return Err(file.error_at(
                raw.password_file.span(),
                format!(
                    "freeswitch.password_file: {} must hold the password on one line",
                    path.display()
                ),
            ));
        }
        let listen = match &raw.listen {
            Some(value) => value.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                file.error_at(
                    value.span(),
                    format!(
                        "freeswitch.listen: `{}` is not an IP address and port (e.g. {DEFAULT_LISTEN}, as in the dialplan's socket application)",
                        value.get_ref()
                    ),
                )
            })?,
            None => DEFAULT_LISTEN.parse().expect("a valid default"),
        };
        let domain = raw.domain.get_ref().trim().to_owned();
        if !plain(&domain) {
            return Err(file.error_at(
                raw.domain.span(),
                format!("freeswitch.domain: `{domain}` is not a domain name (the users' domain, as in `sofia_contact 101@<domain>`)"),
            ));
        }
        let profile = match &raw.profile {
            Some(value) => {
                let text = value.get_ref().trim();
                if !plain(text) {
                    return Err(file.error_at(
                        value.span(),
                        format!("freeswitch.profile: `{text}` is not a sofia profile name"),
                    ));
                }
                text.to_owned()
            }
            None => DEFAULT_PROFILE.to_owned(),
        };
        Ok(Some(Self {
            address,
            password,
            listen,
            domain,
            profile,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn password_file(dir: &Path, contents: &str, mode: u32) -> PathBuf {
        let path = dir.join("esl.password");
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn read(text: &str) -> Result<Option<FreeSwitchConfig>, String> {
        let file = ConfigFile::parse(Path::new("pw.toml"), text).map_err(|e| e.to_string())?;
        FreeSwitchConfig::from_file(&file).map_err(|e| e.to_string())
    }

    fn section(password: &Path, extra: &str) -> String {
        format!(
            "[freeswitch]\npassword_file = \"{}\"\ndomain = \"pbx.example.com\"\n{extra}",
            password.display()
        )
    }

    #[test]
    fn the_section_gets_its_defaults_and_hides_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let password = password_file(dir.path(), "ClueCon-s3cret\n", 0o640);
        let config = read(&section(&password, "")).unwrap().unwrap();
        assert_eq!(config.address, DEFAULT_ADDRESS);
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.profile, DEFAULT_PROFILE);
        assert_eq!(config.domain, "pbx.example.com");
        assert_eq!(config.password, "ClueCon-s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        let custom = read(&section(
            &password,
            "address = \"10.0.0.5:8021\"\nlisten = \"[::1]:9084\"\nprofile = \"external\"\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(custom.address, "10.0.0.5:8021");
        assert_eq!(custom.listen, "[::1]:9084".parse().unwrap());
        assert_eq!(custom.profile, "external");
        assert_eq!(read("[http]\nx = 1\n").unwrap(), None);
    }

    #[test]
    fn bad_values_are_named_with_their_line_and_never_show_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let password = password_file(dir.path(), "ClueCon-s3cret\n", 0o640);
        for (extra, needle) in [
            ("address = \"8021\"\n", "pw.toml:4: freeswitch.address"),
            (
                "listen = \"localhost:8084\"\n",
                "pw.toml:4: freeswitch.listen",
            ),
            ("profile = \"in ternal\"\n", "pw.toml:4: freeswitch.profile"),
            ("pasword = \"x\"\n", "pasword"),
        ] {
            let e = read(&section(&password, extra)).unwrap_err();
            assert!(e.contains(needle), "{extra}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e =
            read(&section(&password, "").replace("pbx.example.com", "pbx example")).unwrap_err();
        assert!(e.starts_with("pw.toml:3: freeswitch.domain"), "{e}");
        let open = password_file(dir.path(), "ClueCon-s3cret\n", 0o644);
        let e = read(&section(&open, "")).unwrap_err();
        assert!(
            e.starts_with("pw.toml:2: freeswitch.password_file: ") && e.contains("0644"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let two_lines = password_file(dir.path(), "a\nb\n", 0o600);
        let e = read(&section(&two_lines, "")).unwrap_err();
        assert!(e.contains("one line"), "{e}");
        let e = read(&section(&dir.path().join("missing"), "")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let e = read("[freeswitch]\ndomain = \"d\"\n").unwrap_err();
        assert!(e.contains("password_file"), "{e}");
    }
}
