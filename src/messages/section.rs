//! The `[messages]` section: keeping SIP MESSAGEs for sleeping phones. Without the
//! section pushwake leaves messages to the PBX, as before.
//!
//! ```toml
//! [messages]
//! max_per_extension = 100   # the oldest is dropped beyond it
//! max_age = "7d"            # kept this long for a phone that does not register
//! max_body_bytes = 4096     # larger bodies are refused
//! preview = true            # pushes carry the body's first 120 characters
//! confirmation = "pbx"      # or "app": kept until the app confirms it
//! confirm_within = "10s"    # how long the app has to confirm ("app" only)
//! ```

use std::time::Duration;

use pushwake_core::config::{duration, ConfigError, ConfigFile, Spanned};
use pushwake_core::messages::courier::{Confirmation, CourierSettings};
use pushwake_core::messages::MessageLimits;
use serde::Deserialize;

/// The section's name.
pub const SECTION: &str = "messages";
/// The longest `max_age` accepted (FCM keeps a message 28 days at most).
pub const MAX_AGE: Duration = Duration::from_secs(28 * 24 * 3600);
/// The largest `max_per_extension` accepted.
pub const MAX_PER_EXTENSION: usize = 10_000;
/// The largest `max_body_bytes` accepted (a SIP MESSAGE over UDP stays well under it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest `confirm_within` accepted.
pub const MAX_CONFIRM_WITHIN: Duration = Duration::from_secs(300);
/// The characters of the body a push carries with `preview = true`.
pub const PREVIEW_CHARS: usize = 120;

/// `[messages]`, when configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagesSection {
    /// What the courier is to do.
    pub settings: CourierSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessages {
    max_per_extension: Option<Spanned<i64>>,
    max_age: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<i64>>,
    preview: Option<bool>,
    confirmation: Option<Spanned<String>>,
    confirm_within: Option<Spanned<String>>,
}

impl MessagesSection {
    /// Reads `[messages]` from `file`; `None` when it has none.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = file.section::<RawMessages>(SECTION)? else {
            return Ok(None);
        };
        let raw = raw.into_inner();
        let defaults = CourierSettings::default();
        let count =
            |value: &Option<Spanned<i64>>, key: &str, max: usize, default: usize| match value {
                None => Ok(default),
                Some(v) => usize::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        file.error_at(
                            v.span(),
                            format!(
                                "messages.{key}: {} is not a number from 1 to {max}",
                                v.get_ref()
                            ),
                        )
                    }),
            };
        let per_extension = count(
            &raw.max_per_extension,
            "max_per_extension",
            MAX_PER_EXTENSION,
            defaults.limits.per_extension,
        )?;
        let max_body = count(
            &raw.max_body_bytes,
            "max_body_bytes",
            MAX_BODY_BYTES,
            defaults.limits.max_body,
        )?;
        let max_age = match &raw.max_age {
            Some(value) => duration(value, "messages.max_age", "\"7d\"", MAX_AGE)
                .map_err(|p| file.problem_in(0..0, p))?,
            None => defaults.limits.max_age,
        };
        let confirmation = match &raw.confirmation {
            None => Confirmation::default(),
            Some(value) => {
                let name = value.get_ref().trim();
                match Confirmation::ALL.into_iter().find(|c| c.as_str() == name) {
                    Some(confirmation) => confirmation,
                    None => {
                        return Err(file.error_at(
                            value.span(),
                            format!("messages.confirmation: `{name}` is neither \"pbx\" (delivered once the PBX sent it to a registered phone) nor \"app\" (delivered once the app confirmed it)"),
                        ))
                    }
                }
            }
        };
        let confirm_within = match &raw.confirm_within {
            Some(value) => duration(
                value,
                "messages.confirm_within",
                "\"10s\"",
                MAX_CONFIRM_WITHIN,
            )
            .map_err(|p| file.problem_in(0..0, p))?,
            None => defaults.confirm_within,
        };
        Ok(Some(Self {
            settings: CourierSettings {
                limits: MessageLimits {
                    per_extension,
                    max_age,
                    max_body,
                },
                confirmation,
                confirm_within,
                preview_chars: if raw.preview.unwrap_or(true) {
                    PREVIEW_CHARS
                } else {
                    0
                },
                node: None,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read(text: &str) -> Result<Option<MessagesSection>, String> {
        let file = ConfigFile::parse(Path::new("pw.toml"), text).map_err(|e| e.to_string())?;
        MessagesSection::from_file(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_messages_are_left_to_the_pbx() {
        assert_eq!(read("").unwrap(), None);
    }

    #[test]
    fn an_empty_section_takes_the_defaults() {
        let section = read("[messages]\n").unwrap().expect("configured");
        assert_eq!(section.settings.limits, MessageLimits::default());
        assert_eq!(section.settings.confirmation, Confirmation::PbxAccepted);
        assert_eq!(section.settings.preview_chars, PREVIEW_CHARS);
    }

    #[test]
    fn every_key_is_read() {
        let section = read(
            "[messages]\nmax_per_extension = 5\nmax_age = \"2h\"\nmax_body_bytes = 512\npreview = false\nconfirmation = \"app\"\nconfirm_within = \"30s\"\n",
        )
        .unwrap()
        .unwrap();
        let s = section.settings;
        assert_eq!(s.limits.per_extension, 5);
        assert_eq!(s.limits.max_age, Duration::from_secs(7200));
        assert_eq!(s.limits.max_body, 512);
        assert_eq!(s.preview_chars, 0);
        assert_eq!(s.confirmation, Confirmation::AppConfirms);
        assert_eq!(s.confirm_within, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_are_one_line_errors_naming_the_key_and_line() {
        for (text, expected) in [
            (
                "[messages]\nmax_per_extension = 0\n",
                "pw.toml:2: messages.max_per_extension: 0 is not a number from 1 to 10000",
            ),
            (
                "[messages]\nmax_body_bytes = -1\n",
                "pw.toml:2: messages.max_body_bytes: -1 is not",
            ),
            (
                "[messages]\nmax_age = \"forever\"\n",
                "pw.toml:2: messages.max_age: `forever` is not a duration",
            ),
            (
                "[messages]\nmax_age = \"60d\"\n",
                "pw.toml:2: messages.max_age: `60d` must be more than 0s and at most",
            ),
            (
                "[messages]\nconfirmation = \"phone\"\n",
                "pw.toml:2: messages.confirmation: `phone` is neither",
            ),
            ("[messages]\nkeep = 3\n", "unknown field `keep`"),
        ] {
            let error = read(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
