//! The push parameters of RFC 8599 that phones put in the contact they register
//! (`pn-provider`, `pn-prid`, `pn-param`), as the wake logic reads them.
//!
//! Clients put the parameters in any order and with other parameters between them
//! (liblinphone adds `pn-silent`, `pn-timeout`, …), so they are found by name, never by
//! position. Values are %-decoded; Linphone does not escape its `&` and `:`.
//!
//! What a registration means for a provider (which app a `pn-param` names, which of
//! Linphone's tokens is the VoIP one) is the provider's business: this module only says
//! what the contact carries, and refuses what no phone would send, without ever quoting
//! a token in its errors.

use std::fmt;

use crate::directory::DeviceToken;

/// The longest parameter value accepted (a Web Push subscription is the longest real
/// one, well under this).
pub const MAX_VALUE_LEN: usize = 4096;

/// The RFC 8599 parameters of one registered contact.
#[derive(Clone, PartialEq, Eq)]
pub struct PushParams {
    /// `pn-provider`, lower-case: `apns`, `apns.dev`, `fcm`, `hms`, `webpush`, …
    pub provider: String,
    /// `pn-prid`, decoded: the push token (Linphone: `<remote>:remote&<voip>:voip`).
    /// Secret.
    pub prid: String,
    /// `pn-param`, decoded, if given: which app the token belongs to (APNs:
    /// `<team id>.<topic>`; FCM: the project).
    pub param: Option<String>,
}

impl fmt::Debug for PushParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushParams")
            .field("provider", &self.provider)
            .field("prid", &DeviceToken::new(self.prid.clone()))
            .field("param", &self.param)
            .finish()
    }
}

/// Why a contact's push parameters cannot be used. Never quotes a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushParamsError {
    /// `pn-provider` without `pn-prid`, or the other way round.
    #[error("{present} without {missing}")]
    Incomplete {
        /// The parameter that is there.
        present: &'static str,
        /// The one that is not.
        missing: &'static str,
    },
    /// A parameter given twice (with different values).
    #[error("{0} given twice")]
    Repeated(&'static str),
    /// A value that is empty, too long, or holds control characters or white space.
    #[error("{name} is not a usable value ({reason})")]
    BadValue {
        /// The parameter.
        name: &'static str,
        /// What is wrong, without the value.
        reason: String,
    },
}

/// The URI part of a contact: `"Name" <sip:…;params>;expires=…` gives `sip:…;params`;
/// a bare URI is itself. URI headers (`?…`) are cut off.
fn uri_of(contact: &str) -> &str {
    let contact = contact.trim();
    let uri = match (contact.find('<'), contact.rfind('>')) {
        (Some(open), Some(close)) if open < close => &contact[open + 1..close],
        _ => contact,
    };
    uri.split('?').next().unwrap_or(uri)
}

/// The URI parameters of a contact, names lower-case, values as written.
fn uri_params(contact: &str) -> impl Iterator<Item = (String, &str)> {
    uri_of(contact).split(';').skip(1).map(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        (name.trim().to_ascii_lowercase(), value.trim())
    })
}

impl PushParams {
    /// The push parameters of a registered contact (a URI, or a `name-addr` as some PBXes
    /// report it); `Ok(None)` if it has none (a phone that does not want pushes).
    pub fn from_contact(contact: &str) -> Result<Option<Self>, PushParamsError> {
        let (mut provider, mut prid, mut param) = (None, None, None);
        for (name, raw) in uri_params(contact) {
            let (slot, label) = match name.as_str() {
                "pn-provider" => (&mut provider, "pn-provider"),
                "pn-prid" => (&mut prid, "pn-prid"),
                "pn-param" => (&mut param, "pn-param"),
                _ => continue,
            };
            let value = checked(label, raw)?;
            match slot {
                Some(earlier) if *earlier != value => return Err(PushParamsError::Repeated(label)),
                _ => *slot = Some(value),
            }
        }
        match (provider, prid) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(PushParamsError::Incomplete {
                present: "pn-provider",
                missing: "pn-prid",
            }),
            (None, Some(_)) => Err(PushParamsError::Incomplete {
                present: "pn-prid",
                missing: "pn-provider",
            }),
            (Some(provider), Some(prid)) => Ok(Some(Self {
                provider: provider.to_ascii_lowercase(),
                prid,
                param,
            })),
        }
    }

    /// The device this contact belongs to: two contacts with the same provider and
    /// token are one phone, whatever address it registered from.
    pub fn device_key(&self) -> (String, String) {
        (self.provider.clone(), self.prid.clone())
    }

    /// For Linphone's `<token>:<service>&<token>:<service>` form, the token of
    /// `service` (`voip`, `remote`); `None` if the prid is not in that form or has no
    /// such service.
    pub fn linphone_token(&self, service: &str) -> Option<&str> {
        if !self.prid.contains(':') {
            return None;
        }
        self.prid.split('&').find_map(|part| {
            let (token, kind) = part.rsplit_once(':')?;
            (kind == service && !token.is_empty()).then_some(token)
        })
    }
}

/// A value decoded and checked: 1 to [`MAX_VALUE_LEN`] bytes, no control characters
/// or white space.
fn checked(name: &'static str, raw: &str) -> Result<String, PushParamsError> {
    let bad = |reason: &str| PushParamsError::BadValue {
        name,
        reason: reason.to_owned(),
    };
    let value = percent_decode(raw);
    if value.is_empty() {
        return Err(bad("empty"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(bad(&format!(
            "{} bytes, at most {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\u{fffd}')
    {
        return Err(bad(
            "white space, control characters or bytes that are not UTF-8",
        ));
    }
    Ok(value)
}

/// Whether a contact URI carries the device's push token in its RFC 8599 `pn-prid`
/// parameter. Parameters are found by name (clients put them in any order), the value is
/// %-decoded, and Linphone's `<token>:remote&<token>:voip` form matches either token.
pub fn contact_names_device(uri: &str, token: &DeviceToken) -> bool {
    let token = token.expose().to_ascii_lowercase();
    if token.is_empty() {
        return false;
    }
    uri_params(uri).any(|(name, value)| {
        name == "pn-prid" && percent_decode(value).to_ascii_lowercase().contains(&token)
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(contact: &str) -> PushParams {
        PushParams::from_contact(contact).unwrap().unwrap()
    }

    #[test]
    fn the_generic_form_is_read_by_name_in_any_order() {
        let p = params("sip:101@127.0.0.1:5070;pn-provider=apns;pn-param=ABCDE12345.com.example.app.voip;pn-prid=00fc13ad");
        assert_eq!(p.provider, "apns");
        assert_eq!(p.prid, "00fc13ad");
        assert_eq!(p.param.as_deref(), Some("ABCDE12345.com.example.app.voip"));
        let q = params("sip:101@10.0.0.9:5999;transport=tcp;PN-PRID=00fc13ad;pn-param=ABCDE12345.com.example.app.voip;ob;Pn-Provider=APNS");
        assert_eq!(q.device_key(), p.device_key(), "same phone, other address");
        // A whole Contact header value: a name-addr with header parameters outside the URI.
        let r = params("\"\" <sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip>;expires=600");
        assert_eq!((r.provider.as_str(), r.prid.as_str()), ("apns", "abc123"));
        assert_eq!(
            PushParams::from_contact("sip:101@10.0.0.1:5060;transport=udp"),
            Ok(None)
        );
        assert_eq!(
            PushParams::from_contact("sip:101@h?pn-prid=x"),
            Ok(None),
            "a header, not a parameter"
        );
        assert!(!format!("{p:?}").contains("00fc13ad"));
    }

    #[test]
    fn linphone_s_real_form_gives_each_token_by_service() {
        let p = params("sip:101@127.0.0.1:5161;transport=udp;pn-provider=apns.dev;pn-prid=AB12:remote&CD34:voip;pn-param=ABCDE12345.org.linphone.phone.remote&voip;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-snd=notes_of_the_optimistic.caf");
        assert_eq!(p.provider, "apns.dev");
        assert_eq!(p.linphone_token("voip"), Some("CD34"));
        assert_eq!(p.linphone_token("remote"), Some("AB12"));
        assert_eq!(p.linphone_token("push"), None);
        assert_eq!(
            p.param.as_deref(),
            Some("ABCDE12345.org.linphone.phone.remote&voip")
        );
        let escaped = params("sip:101@h;pn-provider=apns;pn-prid=AB12%3Aremote%26CD34%3Avoip;pn-param=T.b.remote%26voip");
        assert_eq!(escaped.linphone_token("voip"), Some("CD34"));
        assert_eq!(
            params("sip:h;pn-provider=fcm;pn-prid=plain").linphone_token("voip"),
            None
        );
    }

    #[test]
    fn malformed_parameters_are_refused_without_quoting_the_token() {
        for (contact, needle) in [
            ("sip:h;pn-provider=apns", "pn-provider without pn-prid"),
            ("sip:h;pn-prid=secret-token", "pn-prid without pn-provider"),
            (
                "sip:h;pn-provider=apns;pn-prid=",
                "pn-prid is not a usable value (empty)",
            ),
            (
                "sip:h;pn-provider=apns;pn-prid=secret%20token",
                "white space",
            ),
            (
                "sip:h;pn-provider=apns;pn-prid=secret%00token",
                "control characters",
            ),
            ("sip:h;pn-provider=apns;pn-prid=secret%FFtoken", "not UTF-8"),
            (
                "sip:h;pn-provider=apns;pn-prid=secret;pn-prid=other",
                "pn-prid given twice",
            ),
        ] {
            let e = PushParams::from_contact(contact).unwrap_err().to_string();
            assert!(e.contains(needle), "{contact}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        let long = format!(
            "sip:h;pn-provider=webpush;pn-prid={}",
            "a".repeat(MAX_VALUE_LEN + 1)
        );
        assert!(PushParams::from_contact(&long)
            .unwrap_err()
            .to_string()
            .contains("at most"));
        // The same parameter twice with the same value is only redundant.
        assert!(
            PushParams::from_contact("sip:h;pn-provider=fcm;pn-prid=t;pn-provider=fcm").is_ok()
        );
        // Never a panic, whatever the bytes.
        for junk in [
            "",
            ";",
            ";;;=",
            "<",
            ">",
            "<>;pn-prid",
            "sip:%",
            "sip:h;pn-provider=%e2%82",
            "é;pn-provider=é;pn-prid=é",
        ] {
            let _ = PushParams::from_contact(junk);
        }
    }

    #[test]
    fn push_tokens_are_found_in_contacts_by_parameter_name() {
        let token = DeviceToken::new("00fc13adff785122");
        assert!(contact_names_device(
            "sip:1@h;pn-provider=apns;pn-prid=00fc13adff785122;pn-param=x",
            &token
        ));
        assert!(contact_names_device(
            "sip:1@h;transport=udp;pn-prid=AB:remote%2600FC13ADFF785122:voip",
            &token
        ));
        assert!(contact_names_device(
            "sip:1@h;pn-prid=aa:remote&00fc13adff785122:voip;pn-param=x",
            &token
        ));
        assert!(
            !contact_names_device("sip:1@h;pn-param=00fc13adff785122", &token),
            "only pn-prid counts"
        );
        assert!(!contact_names_device("sip:00fc13adff785122@h", &token));
        assert!(!contact_names_device(
            "sip:1@h;pn-prid=",
            &DeviceToken::new("")
        ));
    }
}
