//! What a real FreeSWITCH 1.11.1 said on its Event Socket, byte for byte: the captures in
//! `testkit/captures/freeswitch/` (copied from the team's notes, where
//! `freeswitch-facts.md` says how each was made).
//!
//! Each file is a list of blocks: `<<<<< RECV <unix time>` … `<<<<< END` around what
//! FreeSWITCH sent, `>>>>> SEND <unix time>` … `>>>>> END` around what the client sent.
//! The logger of the inbound captures wrote one newline of its own before `<<<<< END`: an
//! `api/response` of `Content-Length: 25` is followed by a 26th byte, and so is every
//! frame, whatever it ends with. The logger of `outbound-socket.log` did not, and one of
//! its blocks is one read, which may hold several frames. [`Block::bytes`] is what went
//! over the wire either way.

/// Who wrote a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// FreeSWITCH.
    Received,
    /// The client.
    Sent,
}

/// One block of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Who wrote it.
    pub direction: Direction,
    /// The logger's time stamp (`1796113660.672043`).
    pub time: String,
    /// The bytes, exactly as they went over the wire.
    pub bytes: Vec<u8>,
}

impl Block {
    /// The bytes as text (the captures are all text).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// One capture file.
#[derive(Clone, Debug)]
pub struct Capture {
    /// Its file name (`events.log`).
    pub name: &'static str,
    /// Its blocks, in order.
    pub blocks: Vec<Block>,
}

impl Capture {
    /// What FreeSWITCH sent, block by block.
    pub fn received(&self) -> impl Iterator<Item = &Block> {
        self.blocks
            .iter()
            .filter(|b| b.direction == Direction::Received)
    }

    /// What the client sent, block by block.
    pub fn sent(&self) -> impl Iterator<Item = &Block> {
        self.blocks
            .iter()
            .filter(|b| b.direction == Direction::Sent)
    }

    /// The first block FreeSWITCH sent that contains `needle` (a header line, say).
    pub fn received_with(&self, needle: &str) -> Option<&Block> {
        self.received()
            .find(|b| contains(&b.bytes, needle.as_bytes()))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

macro_rules! files {
    ($($name:literal),* $(,)?) => {
        /// Every capture file, by name, with its raw text.
        pub const FILES: &[(&str, &[u8])] = &[
            $(($name, include_bytes!(concat!("../../captures/freeswitch/", $name)))),*
        ];
    };
}

files!(
    "api-errors.log",
    "api_after_register.log",
    "api_after_unregister.log",
    "api_later.log",
    "auth-fail.log",
    "bridge-9101.log",
    "call-flow.log",
    "events.log",
    "outbound-socket.log",
    "park-after-close.log",
    "park-close.log",
    "register-expire.log",
    "uuid-bridge-unanswered.log",
);

/// The one capture whose logger added no newline of its own (see the module's docs).
const EXACT_LOGGER: &str = "outbound-socket.log";

/// Every capture.
pub fn all() -> Vec<Capture> {
    FILES.iter().map(|(name, _)| load(name)).collect()
}

/// One capture by file name. Panics on a name that is not in [`FILES`] or a file that
/// does not follow the format: these are fixtures, a broken one is a broken test.
pub fn load(name: &str) -> Capture {
    let (name, raw) = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no capture named {name}"));
    let blocks = parse(raw, *name != EXACT_LOGGER).unwrap_or_else(|e| panic!("{name}: {e}"));
    Capture { name, blocks }
}

fn parse(raw: &[u8], logger_newline: bool) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a block's first line has no end")?;
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?;
        let (direction, time, end) = if let Some(time) = line.strip_prefix("<<<<< RECV ") {
            (Direction::Received, time, &b"<<<<< END\n"[..])
        } else if let Some(time) = line.strip_prefix(">>>>> SEND ") {
            (Direction::Sent, time, &b">>>>> END\n"[..])
        } else {
            return Err(format!("not a block's first line: {line:?}"));
        };
        let body = &rest[line_end + 1..];
        // An end marker only counts at the start of a line (a body could mention one).
        let mut at = 0;
        let stop = loop {
            let i = body[at..]
                .windows(end.len())
                .position(|w| w == end)
                .ok_or_else(|| format!("block {time} has no end marker"))?
                + at;
            if i == 0 || body[i - 1] == b'\n' {
                break i;
            }
            at = i + 1;
        };
        let mut bytes = body[..stop].to_vec();
        if direction == Direction::Received && logger_newline && bytes.pop() != Some(b'\n') {
            return Err(format!("block {time} lacks the logger's newline"));
        }
        blocks.push(Block {
            direction,
            time: time.to_owned(),
            bytes,
        });
        rest = &body[stop + end.len()..];
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_parses_and_frames_keep_their_exact_ends() {
        let captures = all();
        assert_eq!(captures.len(), FILES.len());
        for capture in &captures {
            assert!(capture.received().count() > 0, "{}", capture.name);
        }
        let errors = load("api-errors.log");
        let contact = errors
            .received_with("error/user_not_registered")
            .unwrap()
            .text();
        assert!(
            contact.ends_with("Content-Length: 25\n\nerror/user_not_registered"),
            "{contact:?}"
        );
        let auth = errors.received().next().unwrap();
        assert_eq!(auth.bytes, b"Content-Type: auth/request\n\n");
        let sent = errors.sent().next().unwrap();
        assert_eq!(sent.bytes, b"auth ClueCon\n\n");
        // The outbound capture's last block: `+OK bye` and the notice, in one read.
        let outbound = load("outbound-socket.log");
        let last = outbound.received().last().unwrap().text();
        assert!(last.starts_with("Content-Type: command/reply\nReply-Text: +OK bye\n\n"));
        assert!(last.ends_with("See you at ClueCon! http://www.cluecon.com/\n"));
    }
}
