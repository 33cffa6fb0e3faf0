//! sipp's `-trace_msg` files: each message with sipp's timestamp, so latencies can be
//! measured where the SIP packets are (at the phone), not inside pushwake.

/// One SIP message as sipp traced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedMessage {
    /// Microseconds since the Unix epoch (sipp prints local time; the machines here run
    /// in UTC, and only differences between two traces of one machine are used).
    pub at_micros: i64,
    /// Sent by sipp (else received).
    pub sent: bool,
    /// The request or status line.
    pub first_line: String,
}

impl TracedMessage {
    /// Whether this is a request with this method (`INVITE`, `REGISTER`, …).
    pub fn is_request(&self, method: &str) -> bool {
        self.first_line.starts_with(&format!("{method} "))
    }
}

/// Parses a whole trace file.
pub fn parse(text: &str) -> Vec<TracedMessage> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(stamp) = line
            .strip_prefix("-----------------------------------------------")
            .map(str::trim)
        else {
            continue;
        };
        let Some(at_micros) = parse_stamp(stamp) else {
            continue;
        };
        let Some(kind) = lines.next() else { break };
        let sent = kind.contains("message sent");
        // A blank line, then the first line of the message.
        let first_line = lines
            .by_ref()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned();
        out.push(TracedMessage {
            at_micros,
            sent,
            first_line,
        });
    }
    out
}

/// `2026-11-23 23:58:05.882142` (sipp) or `2026-11-23T23:58:05.882142Z` (pushwake's
/// log) → microseconds since the epoch.
pub fn parse_stamp(stamp: &str) -> Option<i64> {
    let stamp = stamp.trim_end_matches('Z');
    let (date, time) = stamp.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, micros) = time.split_once('.')?;
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Scale to microseconds whatever the number of digits.
    let digits = micros.len().min(6);
    let micros: i64 = micros[..digits].parse::<i64>().ok()? * 10_i64.pow(6 - digits as u32);
    let days = days_from_civil(y, m, day);
    Some(((days * 24 + hh) * 60 + mm) * 60_000_000 + ss * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sipp_traces_across_midnight() {
        let text = "----------------------------------------------- 2026-11-23 23:59:59.999900\nUDP message sent (397 bytes):\n\nREGISTER sip:127.0.0.1:15060 SIP/2.0\nVia: x\n\n----------------------------------------------- 2026-11-24 00:00:00.001100\nUDP message received [900] bytes :\n\nINVITE sip:101@127.0.0.1:5070 SIP/2.0\n";
        let messages = parse(text);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].sent && messages[0].is_request("REGISTER"));
        assert!(!messages[1].sent && messages[1].is_request("INVITE"));
        assert_eq!(messages[1].at_micros - messages[0].at_micros, 1200);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            parse_stamp("2026-11-24T00:00:00.0011Z"),
            parse_stamp("2026-11-24 00:00:00.001100")
        );
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
