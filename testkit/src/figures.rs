//! The benchmarks' figures in one machine-readable form, for `scripts/bench-all`.
//!
//! Each benchmark prints its own report for people and, for every figure an issue names,
//! one line `FIGURE<TAB>name<TAB>value<TAB>target<TAB>ok|MISSED`; `scripts/bench-all`
//! runs every benchmark and gathers those lines into one table.

/// Prints one figure line: what was measured, its value with its unit, the target it is
/// held to (or what it is reported beside), and whether the target was met.
pub fn figure(name: &str, value: &str, target: &str, met: bool) {
    println!(
        "FIGURE\t{name}\t{value}\t{target}\t{}",
        if met { "ok" } else { "MISSED" }
    );
}

/// A figure that is reported, not held to a target.
pub fn reported(name: &str, value: &str, beside: &str) {
    figure(name, value, beside, true);
}
