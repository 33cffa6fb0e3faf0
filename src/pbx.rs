//! The PBX pushwake drives: the one adapter section of the configuration.
//!
//! Each PBX has its own adapter crate under `adapters/`, which reads its own section,
//! speaks its PBX's protocol and implements the core's call control
//! ([`pushwake_core::pbx::CallControl`]). This module is the only place that lists them.

use pushwake_asterisk::AsteriskConfig;
use pushwake_core::config::{ConfigError, ConfigFile};
use pushwake_freeswitch::FreeSwitchConfig;

/// The section names of every PBX adapter pushwake is built with. A configuration has
/// exactly one of them.
pub const SECTIONS: [&str; 2] = [
    pushwake_asterisk::config::SECTION,
    pushwake_freeswitch::config::SECTION,
];

/// The PBX in the configuration, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbxConfig {
    /// `[asterisk]`: Asterisk through ARI.
    Asterisk(AsteriskConfig),
    /// `[freeswitch]`: FreeSWITCH through its Event Socket and the `socket` application.
    FreeSwitch(FreeSwitchConfig),
}

impl PbxConfig {
    /// Reads the configuration's one PBX section.
    pub fn from_file(file: &ConfigFile<'_>) -> Result<Self, ConfigError> {
        one_of(file, &SECTIONS)?;
        if let Some(asterisk) = AsteriskConfig::from_file(file)? {
            return Ok(PbxConfig::Asterisk(asterisk));
        }
        if let Some(freeswitch) = FreeSwitchConfig::from_file(file)? {
            return Ok(PbxConfig::FreeSwitch(freeswitch));
        }
        unreachable!("one_of found a PBX section that no adapter reads")
    }

    /// The section's name.
    pub fn section(&self) -> &'static str {
        match self {
            PbxConfig::Asterisk(_) => pushwake_asterisk::config::SECTION,
            PbxConfig::FreeSwitch(_) => pushwake_freeswitch::config::SECTION,
        }
    }

    /// A short description for the start-up log: the PBX and what pushwake calls itself
    /// there.
    pub fn describe(&self) -> String {
        match self {
            PbxConfig::Asterisk(asterisk) => format!("asterisk (ARI application {})", asterisk.app),
            PbxConfig::FreeSwitch(freeswitch) => format!(
                "freeswitch (event socket {}, socket application to {})",
                freeswitch.address, freeswitch.listen
            ),
        }
    }
}

/// The name of the one section of `sections` that `file` has; none, or more than one,
/// is an error naming the file.
fn one_of<'s>(file: &ConfigFile<'_>, sections: &[&'s str]) -> Result<&'s str, ConfigError> {
    let listed = sections
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(" or ");
    let found: Vec<(&'s str, std::ops::Range<usize>)> = file
        .keys()
        .filter_map(|(key, span)| sections.iter().find(|s| **s == key).map(|s| (*s, span)))
        .collect();
    match found.as_slice() {
        [(one, _)] => Ok(one),
        [] => Err(file.error_at(
            0..0,
            format!("no PBX section: pushwake needs one, {listed}, saying how to reach the PBX"),
        )),
        [(first, _), (second, span), ..] => Err(file.error_at(
            span.clone(),
            format!("[{second}] and [{first}] are both configured: one pushwake drives one PBX; run one daemon per PBX"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn exactly_one_pbx_section_is_taken() {
        let path = Path::new("pw.toml");
        let text = "[asterisk]\nurl = \"http://h:8088\"\n\n[freeswitch]\naddress = \"h:8021\"\n";
        let file = ConfigFile::parse(path, text).unwrap();
        assert_eq!(one_of(&file, &["asterisk"]).unwrap(), "asterisk");
        let e = one_of(&file, &["asterisk", "freeswitch"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("pw.toml:4: ") && e.contains("both configured"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let file = ConfigFile::parse(path, "[http]\nx = 1\n").unwrap();
        let e = one_of(&file, &["asterisk", "freeswitch"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "pw.toml: no PBX section: pushwake needs one, [asterisk] or [freeswitch], saying how to reach the PBX"
        );
    }
}
