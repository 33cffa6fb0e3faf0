//! RFC 8599 / Linphone push parameters of any contact text: read or refused, never a
//! panic, and a refusal never quotes the `pn-prid` it refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushwake_core::directory::DeviceToken;
use pushwake_core::rfc8599::{contact_names_device, PushParams};

fuzz_target!(|contact: &str| {
    match PushParams::from_contact(contact) {
        Ok(Some(params)) => {
            let _ = params.linphone_token("voip");
            let _ = params.device_key();
            assert!(contact_names_device(
                contact,
                &DeviceToken::new(params.prid.clone())
            ));
        }
        Ok(None) => {}
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
