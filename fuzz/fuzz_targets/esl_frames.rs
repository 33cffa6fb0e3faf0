//! The Event Socket frame parser on any bytes, fed in pieces whose sizes the input's
//! first bytes choose: frames or an error, never a panic, a loop that does not end, or
//! more held than the reader's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushwake_freeswitch::frame::{FrameReader, Limits};

const LIMITS: Limits = Limits {
    header_block: 4096,
    body: 8192,
};

fuzz_target!(|data: &[u8]| {
    let (sizes, mut bytes) = data.split_at(data.len().min(8));
    let mut reader = FrameReader::with_limits(LIMITS);
    let mut fed = 0;
    for size in sizes.iter().cycle() {
        if bytes.is_empty() {
            break;
        }
        let (piece, rest) = bytes.split_at((usize::from(*size) + 1).min(bytes.len()));
        bytes = rest;
        reader.feed(piece);
        fed += piece.len();
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(calls <= fed + 2, "next_frame loops without consuming");
            match reader.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => {
                    assert!(reader.buffered() <= LIMITS.header_block.max(LIMITS.body));
                    break;
                }
                Err(error) if error.is_fatal() => return,
                Err(_) => {}
            }
        }
    }
});
