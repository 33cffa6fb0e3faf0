//! The `[metrics]` section: where the Prometheus endpoint listens. Without the section
//! there is no endpoint (the metrics are still kept, for nobody).

use pushwake_core::config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

/// The section's name.
pub const SECTION: &str = "metrics";

/// `[metrics]`, when configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSection {
    /// Where the plain-HTTP listener serving `GET /metrics` binds (`listen`; usually
    /// loopback, or an address only the Prometheus server reaches: the metrics carry no
    /// secret, but say how busy the PBX is).
    pub listen: std::net::SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

impl MetricsSection {
    /// Reads `[metrics]` from `file`; `None` when it has none.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = file.section::<RawMetrics>(SECTION)? else {
            return Ok(None);
        };
        let raw = raw.into_inner();
        let text = raw.listen.get_ref().trim();
        let listen = text.parse::<std::net::SocketAddr>().map_err(|_| {
            file.error_at(
                raw.listen.span(),
                format!("metrics.listen: `{text}` is not an address and port like \"127.0.0.1:9464\" or \"[::1]:9464\""),
            )
        })?;
        Ok(Some(Self { listen }))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::MINIMAL;
    use std::path::Path;

    fn parse(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::parse(
            Path::new("/etc/pushwake/pushwake.toml"),
            &format!("{MINIMAL}{extra}"),
        )
    }

    #[test]
    fn absent_means_no_endpoint() {
        assert_eq!(parse("").unwrap().metrics, None);
    }

    #[test]
    fn listen_is_an_address_and_port() {
        let config = parse("\n[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            config.metrics.unwrap().listen,
            "127.0.0.1:9464".parse().unwrap()
        );
    }

    #[test]
    fn a_bad_section_is_a_one_line_error_naming_the_key_and_line() {
        let text = "\n[metrics]\nlisten = \"localhost\"\n";
        let error = parse(text).unwrap_err().to_string();
        let line = MINIMAL.lines().count() + 3;
        assert!(
            error.starts_with(&format!("/etc/pushwake/pushwake.toml:{line}: metrics.listen: `localhost` is not an address and port")),
            "{error}"
        );
        let error = parse("\n[metrics]\nport = 9464\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `port`"), "{error}");
        let error = parse("\n[metrics]\n").unwrap_err().to_string();
        assert!(error.contains("missing field `listen`"), "{error}");
    }
}
