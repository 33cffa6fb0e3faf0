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

/// The `p`th percentile (0–100) of `sorted` samples, by the nearest-rank rule.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in milliseconds, for reports.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `kB` field of `/proc/<pid>/status` (`field` with its colon, e.g. `"VmRSS:"`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
