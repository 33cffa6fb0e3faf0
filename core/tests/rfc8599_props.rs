//! Property tests of the RFC 8599 / Linphone push parameters of a registered contact:
//! any text is read or refused, never a panic; what a phone writes (parameters in any
//! order and case, %-escaped or not, inside a `name-addr` or bare, among other
//! parameters) reads back exactly; errors name the parameter and never quote the token.
//! Seeds: the contacts liblinphone, PJSIP and Asterisk really send (below), mutated.

use proptest::prelude::*;
use proptest::sample::Index;
use pushwake_core::directory::DeviceToken;
use pushwake_core::rfc8599::{contact_names_device, PushParams, PushParamsError};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    }
}

/// Contacts as phones and PBXes really write them.
const REAL: &[&str] = &[
    "sip:101@127.0.0.1:5070;pn-provider=apns;pn-param=ABCDE12345.com.example.app.voip;pn-prid=00fc13ad",
    "\"\" <sip:101@127.0.0.1:5091;transport=UDP;pn-provider=apns;pn-prid=abc123;pn-param=TEAM.com.example.voip>;expires=600",
    "sip:101@127.0.0.1:5161;transport=udp;pn-provider=apns.dev;pn-prid=AB12:remote&CD34:voip;pn-param=ABCDE12345.org.linphone.phone.remote&voip;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-snd=notes_of_the_optimistic.caf",
    "sip:101@h;pn-provider=apns;pn-prid=AB12%3Aremote%26CD34%3Avoip;pn-param=T.b.remote%26voip",
    "sip:102@10.0.0.9:5999;transport=tcp;pn-provider=fcm;pn-prid=e1Xq3kPTSa2:APA91bHun4MxP5egoKMwt2KZFBaFUH;pn-param=pushwake-test;ob",
    "<sip:103@192.0.2.1:5060;pn-provider=webpush;pn-prid=%7B%22endpoint%22%3A%22https%3A%2F%2Fpush.example%2Fx%22%7D>",
];

/// A real contact with `insert` put in at some character boundary.
fn mutated() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(REAL),
        any::<Index>(),
        prop_oneof![".{0,8}", "[;=<>%?&:]{1,4}", Just("%".to_owned())],
        any::<bool>(),
    )
        .prop_map(|(base, at, insert, cut)| {
            let bounds: Vec<usize> = base
                .char_indices()
                .map(|(i, _)| i)
                .chain([base.len()])
                .collect();
            let at = bounds[at.index(bounds.len())];
            if cut {
                base[..at].to_owned()
            } else {
                format!("{}{insert}{}", &base[..at], &base[at..])
            }
        })
}

/// A token as providers issue them: long enough not to occur by chance elsewhere.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.~:&-]{12,120}"
}

/// `value` as a phone may write it: each character as is or %-escaped.
fn written(value: &str, escape: &[bool]) -> String {
    value
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            if escape.get(i).copied().unwrap_or(false) {
                format!("%{b:02X}")
            } else {
                (b as char).to_string()
            }
        })
        .collect()
}

/// `name` in upper, lower or mixed case.
fn cased(name: &str, case: u8) -> String {
    match case % 3 {
        0 => name.to_owned(),
        1 => name.to_ascii_uppercase(),
        _ => name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// Everything that describes one well-formed contact.
#[derive(Debug, Clone)]
struct Written {
    provider: String,
    prid: String,
    param: Option<String>,
    others: Vec<(String, String)>,
    escapes: Vec<bool>,
    cases: Vec<u8>,
    order: Vec<Index>,
    name_addr: Option<String>,
}

fn well_formed() -> impl Strategy<Value = Written> {
    (
        "[a-z][a-z0-9.]{0,10}",
        token(),
        proptest::option::of("[A-Za-z0-9.&-]{1,60}"),
        proptest::collection::vec(("[a-oq-z][a-z-]{0,10}", "[a-z0-9]{0,10}"), 0..6),
        proptest::collection::vec(any::<bool>(), 0..130),
        proptest::collection::vec(any::<u8>(), 3),
        proptest::collection::vec(any::<Index>(), 10),
        proptest::option::of("[A-Za-z ]{0,12}"),
    )
        .prop_map(
            |(provider, prid, param, others, escapes, cases, order, name_addr)| Written {
                provider,
                prid,
                param,
                others,
                escapes,
                cases,
                order,
                name_addr,
            },
        )
}

impl Written {
    fn contact(&self) -> String {
        let mut params = vec![
            format!(
                "{}={}",
                cased("pn-provider", self.cases[0]),
                written(&self.provider, &[])
            ),
            format!(
                "{}={}",
                cased("pn-prid", self.cases[1]),
                written(&self.prid, &self.escapes)
            ),
        ];
        if let Some(param) = &self.param {
            params.push(format!(
                "{}={}",
                cased("pn-param", self.cases[2]),
                written(param, &self.escapes)
            ));
        }
        for (name, value) in &self.others {
            params.push(if value.is_empty() {
                name.clone()
            } else {
                format!("{name}={value}")
            });
        }
        // Shuffle by the drawn indices (a Fisher–Yates walk).
        for i in (1..params.len()).rev() {
            let j = self.order[i % self.order.len()].index(i + 1);
            params.swap(i, j);
        }
        let uri = format!("sip:101@192.0.2.7:5060;{}", params.join(";"));
        match &self.name_addr {
            Some(name) => format!("\"{name}\" <{uri}>;expires=600"),
            None => uri,
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_read_or_refused(contact in prop_oneof![".{0,200}", mutated()]) {
        let _ = PushParams::from_contact(&contact);
        let _ = contact_names_device(&contact, &DeviceToken::new("00fc13ad"));
    }

    #[test]
    fn what_a_phone_writes_reads_back_exactly(w in well_formed()) {
        let contact = w.contact();
        let params = PushParams::from_contact(&contact)
            .map_err(|e| TestCaseError::fail(format!("{contact}: {e}")))?
            .ok_or_else(|| TestCaseError::fail(format!("{contact}: no parameters")))?;
        prop_assert_eq!(&params.provider, &w.provider);
        prop_assert_eq!(&params.prid, &w.prid);
        prop_assert_eq!(&params.param, &w.param);
        prop_assert!(contact_names_device(&contact, &DeviceToken::new(w.prid.clone())));
        prop_assert!(!format!("{params:?}").contains(&w.prid), "Debug shows the token");
    }

    #[test]
    fn linphone_s_two_tokens_are_told_apart(
        remote in "[A-Za-z0-9]{8,64}",
        voip in "[A-Za-z0-9]{8,64}",
        escape in any::<bool>(),
    ) {
        let prid = format!("{remote}:remote&{voip}:voip");
        let prid = if escape { prid.replace(':', "%3A").replace('&', "%26") } else { prid };
        let contact = format!("sip:101@h;pn-provider=apns;pn-prid={prid};pn-param=T.b.remote%26voip");
        let params = PushParams::from_contact(&contact).unwrap().unwrap();
        prop_assert_eq!(params.linphone_token("voip"), Some(voip.as_str()));
        prop_assert_eq!(params.linphone_token("remote"), Some(remote.as_str()));
    }

    #[test]
    fn a_refused_token_is_named_by_its_parameter_and_never_quoted(
        token in "[A-Za-z0-9]{12,64}",
        flaw in prop_oneof![
            Just("%20".to_owned()),
            Just("%00".to_owned()),
            Just("%FF".to_owned()),
            Just("%0A".to_owned()),
        ],
        at in any::<Index>(),
        twice in any::<bool>(),
    ) {
        let split = at.index(token.len() + 1);
        let contact = if twice {
            format!("sip:h;pn-provider=apns;pn-prid={token};pn-prid=other{token}")
        } else {
            format!("sip:h;pn-provider=apns;pn-prid={}{flaw}{}", &token[..split], &token[split..])
        };
        let error = PushParams::from_contact(&contact).unwrap_err();
        let text = error.to_string();
        prop_assert!(text.contains("pn-prid"), "{text}");
        prop_assert!(!text.contains(&token), "{text} quotes the token");
        if twice {
            prop_assert_eq!(error, PushParamsError::Repeated("pn-prid"));
        }
    }
}
