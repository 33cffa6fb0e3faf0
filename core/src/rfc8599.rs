//! The push parameters of RFC 8599 that phones put in the contact they register
//! (`pn-provider`, `pn-prid`, `pn-param`), as the wake logic reads them.
//!
//! Clients put the parameters in any order and with other parameters between them
//! (liblinphone adds `pn-silent`, `pn-timeout`, …), so they are found by name, never by
//! position.

use crate::directory::DeviceToken;

/// Whether a contact URI carries the device's push token in its RFC 8599 `pn-prid`
/// parameter. Parameters are found by name (clients put them in any order), the value is
/// %-decoded, and Linphone's `<token>:remote&<token>:voip` form matches either token.
pub fn contact_names_device(uri: &str, token: &DeviceToken) -> bool {
    let token = token.expose().to_ascii_lowercase();
    if token.is_empty() {
        return false;
    }
    uri.split(';').skip(1).any(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        name.trim().eq_ignore_ascii_case("pn-prid")
            && percent_decode(value).to_ascii_lowercase().contains(&token)
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
