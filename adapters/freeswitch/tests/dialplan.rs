//! The shipped FreeSWITCH dialplans (`dialplan/freeswitch/`), run for every status
//! pushwake can give back, through a model of mod_dialplan_xml's hunting as FreeSWITCH's
//! source has it (mod_dialplan_xml.c, `parse_exten` and `dialplan_xml_locate`):
//!
//! - the extensions of the context are tried in order; within one, each condition's
//!   regex is matched, its actions queued when it passes and its anti-actions when it
//!   fails, and a failed condition ends the extension (`break="on-false"`, the default);
//! - an extension whose last condition passed ends the hunt, unless `continue="true"`;
//!   one that did not lets the hunt go on, **keeping what it queued**;
//! - `${var}` in a condition's field is read at hunting time; in an action's data, when
//!   the action runs; `$N` is the condition's own capture; `$${var}` a global.
//!
//! A real FreeSWITCH is not available here (docs/freeswitch.md); this catches what a
//! reading of the files alone misses: a pattern that also matches the "back from
//! pushwake" destination (the member context once handed its own return over again), a
//! status no extension handles, actions leaking into the rest of a context.

use std::collections::HashMap;

use pushwake_core::pbx::WakeStatus;
use pushwake_freeswitch::config::DEFAULT_LISTEN;
use regex::Regex;

const DOMAIN: &str = "pbx.example.com";

#[derive(Debug)]
struct Condition {
    field: Option<String>,
    expression: Option<String>,
    actions: Vec<(String, String)>,
    anti_actions: Vec<(String, String)>,
    break_on: String,
}

#[derive(Debug)]
struct Extension {
    name: String,
    continues: bool,
    conditions: Vec<Condition>,
}

fn applications(node: roxmltree::Node, tag: &str) -> Vec<(String, String)> {
    node.children()
        .filter(|c| c.has_tag_name(tag))
        .map(|a| {
            (
                a.attribute("application")
                    .expect("an action names its application")
                    .to_owned(),
                a.attribute("data").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The extensions under `parent` (a `<context>` or the `<include>` of a snippet).
fn extensions(parent: roxmltree::Node) -> Vec<Extension> {
    parent
        .children()
        .filter(|c| c.has_tag_name("extension"))
        .map(|e| Extension {
            name: e.attribute("name").unwrap_or("UNKNOWN").to_owned(),
            continues: e.attribute("continue") == Some("true"),
            conditions: e
                .children()
                .filter(|c| c.has_tag_name("condition"))
                .map(|c| {
                    assert!(
                        !c.children().any(|n| n.has_tag_name("condition")),
                        "nested conditions are not modelled"
                    );
                    Condition {
                        field: c.attribute("field").map(str::to_owned),
                        expression: c.attribute("expression").map(str::to_owned),
                        actions: applications(c, "action"),
                        anti_actions: applications(c, "anti-action"),
                        break_on: c.attribute("break").unwrap_or("on-false").to_owned(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// A channel as the dialplan sees it.
struct Channel {
    context: String,
    destination: String,
    variables: HashMap<String, String>,
}

impl Channel {
    fn expand(&self, text: &str) -> String {
        let text = text.replace("$${domain}", DOMAIN);
        let var = Regex::new(r"\$\{([A-Za-z0-9_]+)\}").unwrap();
        var.replace_all(&text, |c: &regex::Captures| match &c[1] {
            "context" => self.context.clone(),
            name => self.variables.get(name).cloned().unwrap_or_default(),
        })
        .into_owned()
    }
}

/// What hunting queues for `channel` in `context`: mod_dialplan_xml's rules above.
fn hunt(context: &[Extension], channel: &Channel) -> Vec<(String, String)> {
    let mut queued = Vec::new();
    for extension in context {
        let mut proceed = false;
        for condition in &extension.conditions {
            let captures: Option<Vec<String>> = match (&condition.field, &condition.expression) {
                (Some(field), Some(expression)) => {
                    let data = if field == "destination_number" {
                        channel.destination.clone()
                    } else {
                        assert!(field.starts_with("${"), "field {field} not modelled");
                        channel.expand(field)
                    };
                    Regex::new(expression)
                        .unwrap_or_else(|e| panic!("{}: {expression}: {e}", extension.name))
                        .captures(&data)
                        .map(|c| {
                            c.iter()
                                .map(|m| m.map_or("", |m| m.as_str()).to_owned())
                                .collect()
                        })
                }
                (None, None) => Some(Vec::new()),
                _ => panic!(
                    "{}: a condition with a field needs an expression",
                    extension.name
                ),
            };
            proceed = captures.is_some();
            let substitute = |data: &str| {
                let mut data = data.to_owned();
                let groups = captures.as_deref().unwrap_or_default();
                // $10 before $1, so that one capture does not eat another's digits.
                for (n, value) in groups.iter().enumerate().skip(1).rev() {
                    data = data.replace(&format!("${n}"), value);
                }
                data
            };
            let queue = if proceed {
                &condition.actions
            } else {
                &condition.anti_actions
            };
            queued.extend(
                queue
                    .iter()
                    .map(|(app, data)| (app.clone(), substitute(data))),
            );
            let stop = match condition.break_on.as_str() {
                "on-true" => proceed,
                "always" => true,
                "never" => false,
                _ => !proceed,
            };
            if stop {
                break;
            }
        }
        if proceed && !extension.continues {
            break;
        }
    }
    queued
}

/// Runs a call for `destination` in `context` of `contexts`, pushwake giving it back
/// with `status` (`None`: pushwake not running, the socket fails and sets nothing).
/// Returns the applications that ran, their data expanded, up to the first that ends
/// the dialplan's part (`hangup`, `bridge`, `voicemail`), and then every application
/// the last hunt queued after it (what would run should that one return).
fn run(
    contexts: &HashMap<String, Vec<Extension>>,
    context: &str,
    destination: &str,
    variables: &[(&str, &str)],
    status: Option<WakeStatus>,
) -> Vec<(String, String)> {
    let mut channel = Channel {
        context: context.to_owned(),
        destination: destination.to_owned(),
        variables: variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let mut ran = Vec::new();
    for _ in 0..5 {
        let queued = hunt(&contexts[&channel.context], &channel);
        let mut transferred = false;
        for (at, (app, data)) in queued.iter().enumerate() {
            let data = channel.expand(data);
            ran.push((app.clone(), data.clone()));
            match app.as_str() {
                "set" => {
                    let (name, value) = data.split_once('=').expect("set name=value");
                    channel.variables.insert(name.to_owned(), value.to_owned());
                }
                "socket" => {
                    if let Some(status) = status {
                        channel
                            .variables
                            .insert("pushwake_status".into(), status.as_str().into());
                    }
                }
                "transfer" => {
                    let parts: Vec<&str> = data.split(' ').collect();
                    assert_eq!(parts.len(), 3, "transfer <destination> XML <context>");
                    assert_eq!(parts[1], "XML");
                    channel.destination = parts[0].to_owned();
                    channel.context = parts[2].to_owned();
                    transferred = true;
                    break;
                }
                "hangup" | "bridge" | "voicemail" => {
                    ran.extend(queued[at + 1..].iter().cloned());
                    return ran;
                }
                "answer" => {}
                other => panic!("application {other} not modelled"),
            }
        }
        if !transferred {
            return ran;
        }
    }
    panic!("more than five transfers: a loop; ran {ran:?}");
}

fn load(file: &str) -> String {
    let path = format!(
        "{}/../../dialplan/freeswitch/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const STATUSES: [WakeStatus; 7] = [
    WakeStatus::Answered,
    WakeStatus::AnsweredFallback,
    WakeStatus::Timeout,
    WakeStatus::NoPush,
    WakeStatus::Failed,
    WakeStatus::Recovered,
    WakeStatus::Shutdown,
];

fn app(ran: &[(String, String)], name: &str) -> Vec<String> {
    ran.iter()
        .filter(|(a, _)| a == name)
        .map(|(_, d)| d.clone())
        .collect()
}

/// The application that ended the dialplan's part.
fn ending(ran: &[(String, String)]) -> (&str, &str) {
    let (a, d) = ran
        .iter()
        .find(|(a, _)| ["hangup", "bridge", "voicemail"].contains(&a.as_str()))
        .expect("the call ends somewhere");
    (a.as_str(), d.as_str())
}

#[test]
fn the_direct_call_snippet_hands_over_and_goes_on_for_every_status() {
    let text = load("pushwake.xml");
    let doc = roxmltree::Document::parse(&text).expect("pushwake.xml is XML");
    let mut default = extensions(doc.root_element());
    // The snippet is included at the top of the default context; what the rest of that
    // context does is stood for by one catch-all.
    default.push(Extension {
        name: "the rest of the default context".into(),
        continues: false,
        conditions: vec![Condition {
            field: Some("destination_number".into()),
            expression: Some("^(.*)$".into()),
            actions: vec![("hangup".into(), "REST_OF_CONTEXT".into())],
            anti_actions: Vec::new(),
            break_on: "on-false".into(),
        }],
    });
    let contexts = HashMap::from([("default".to_owned(), default)]);
    let vars = [("domain_name", DOMAIN)];
    let statuses = STATUSES.iter().map(|s| Some(*s)).chain([None]);
    for status in statuses {
        let ran = run(&contexts, "default", "101", &vars, status);
        let what = format!("{status:?}: {ran:?}");
        assert_eq!(
            app(&ran, "socket"),
            [format!("{DEFAULT_LISTEN} async full")],
            "{what}"
        );
        let answered = matches!(
            status,
            Some(WakeStatus::Answered | WakeStatus::AnsweredFallback)
        );
        if answered {
            assert_eq!(ending(&ran), ("hangup", "NORMAL_CLEARING"), "{what}");
        } else {
            assert_eq!(
                ending(&ran),
                ("bridge", "user/101@pbx.example.com"),
                "{what}"
            );
        }
        assert!(
            !app(&ran, "hangup").contains(&"REST_OF_CONTEXT".to_owned()),
            "nothing of the rest of the context is queued after it: {what}"
        );
    }
    // Another number is not handed over.
    let ran = run(
        &contexts,
        "default",
        "200",
        &vars,
        Some(WakeStatus::Answered),
    );
    assert_eq!(ran, [("hangup".to_owned(), "REST_OF_CONTEXT".to_owned())]);
}

#[test]
fn the_member_context_hands_over_once_and_ends_the_member_as_the_group_needs() {
    let text = load("pushwake-member.xml");
    let doc = roxmltree::Document::parse(&text).expect("pushwake-member.xml is XML");
    let context = doc
        .descendants()
        .find(|n| n.has_tag_name("context"))
        .expect("a context");
    assert_eq!(context.attribute("name"), Some("pushwake-member"));
    let contexts = HashMap::from([("pushwake-member".to_owned(), extensions(context))]);
    let statuses = STATUSES.iter().map(|s| Some(*s)).chain([None]);
    for status in statuses {
        let ran = run(&contexts, "pushwake-member", "101", &[], status);
        let what = format!("{status:?}: {ran:?}");
        assert_eq!(
            app(&ran, "socket"),
            [format!("{DEFAULT_LISTEN} async full")],
            "handed over once: {what}"
        );
        let socket_at = ran.iter().position(|(a, _)| a == "socket").unwrap();
        for set in ["loopback_bowout=false", "pushwake_extension=101"] {
            assert!(
                ran[..socket_at].contains(&("set".to_owned(), set.to_owned())),
                "{set} before the hand-over: {what}"
            );
        }
        let expected = match status {
            Some(WakeStatus::Answered | WakeStatus::AnsweredFallback) => {
                ("hangup", "NORMAL_CLEARING")
            }
            Some(WakeStatus::Timeout) => ("hangup", "NO_ANSWER"),
            _ => ("bridge", "user/101@pbx.example.com"),
        };
        assert_eq!(ending(&ran), expected, "{what}");
    }
}

/// The shipped chatplan (mod_sms's `chatplan_hunt` matches a condition's `field`
/// against the MESSAGE event's header of that name): `final` for a push-enabled
/// extension, so that FreeSWITCH does not relay its messages besides pushwake, and
/// nothing for the others, which FreeSWITCH relays.
#[test]
fn the_chatplan_keeps_freeswitch_from_relaying_only_push_enabled_extensions_messages() {
    let text = load("pushwake-chatplan.xml");
    let document = roxmltree::Document::parse(&text).expect("the chatplan is XML");
    let context = document
        .descendants()
        .find(|n| n.has_tag_name("context") && n.attribute("name") == Some("public"))
        .expect("a context named as the example internal profile's");
    let chatplan = extensions(context);
    // chatplan_hunt's rule: an extension whose conditions all match the event's headers
    // runs its actions.
    let ran = |to_user: &str| -> Vec<(String, String)> {
        let headers = HashMap::from([("to_user", to_user)]);
        chatplan
            .iter()
            .filter(|extension| {
                extension.conditions.iter().all(|c| {
                    let field = c
                        .field
                        .as_deref()
                        .expect("a chatplan condition has a field");
                    let value = headers.get(field).copied().unwrap_or_default();
                    Regex::new(c.expression.as_deref().unwrap_or_default())
                        .unwrap()
                        .is_match(value)
                })
            })
            .flat_map(|extension| extension.conditions.iter().flat_map(|c| c.actions.clone()))
            .collect()
    };
    assert_eq!(
        ran("101"),
        [("final".to_owned(), String::new())],
        "a push-enabled extension's message is pushwake's alone"
    );
    for other in ["200", "1001", "10", ""] {
        assert!(ran(other).is_empty(), "{other:?} is relayed by FreeSWITCH");
    }
}
