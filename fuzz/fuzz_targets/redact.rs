//! serde error messages with their values left out, on any text: never a panic, and
//! never longer than the message but for the longer names of the kinds put in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushwake_core::redact::without_values;

fuzz_target!(|message: &str| {
    let out = without_values(message);
    // Each kind's name is at most 7 bytes longer than the prefix it stands for ("a
    // floating point number" for "floating point `", the value unclosed).
    let prefixes: usize = [
        "string \"",
        "integer `",
        "floating point `",
        "boolean `",
        "character `",
    ]
    .iter()
    .map(|p| message.matches(p).count())
    .sum();
    assert!(out.len() <= message.len() + 7 * prefixes);
});
