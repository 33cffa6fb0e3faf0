//! Property tests of the Event Socket frame parser: any bytes, split at any points, give
//! frames or an error, never a panic, a loop that does not end, or a buffer beyond the
//! reader's limits; a real FreeSWITCH's stream (the captures in
//! `testkit/captures/freeswitch/`) gives the same frames however it is split; and an
//! event's header values, URL-encoded as FreeSWITCH writes them, read back exactly.

use proptest::prelude::*;
use proptest::sample::Index;
use pushwake_freeswitch::frame::{Frame, FrameError, FrameReader, Limits};
use pushwake_testkit::esl::capture;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 500,
        ..ProptestConfig::default()
    }
}

/// Small limits, so that the bound is reached by the inputs drawn.
const LIMITS: Limits = Limits {
    header_block: 2048,
    body: 4096,
};

/// Everything FreeSWITCH sent in all the captures, one stream per capture.
fn streams() -> &'static [Vec<u8>] {
    static STREAMS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    STREAMS.get_or_init(|| {
        capture::all()
            .iter()
            .map(|c| c.received().flat_map(|b| b.bytes.clone()).collect())
            .collect()
    })
}

/// `bytes` cut at the drawn points.
fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// What a stream gave: its frames, the events skipped, and the fatal error it ended
/// with, if any.
type Read = (Vec<Frame>, Vec<FrameError>, Option<FrameError>);

/// Feeds the pieces, taking frames after each, as the client does; stops at a fatal
/// error. Checks that every call returns (a bounded number of them) and that the reader
/// never holds more than its limits allow once it asks for more bytes.
fn read_all(pieces: &[&[u8]], limits: Limits) -> Result<Read, TestCaseError> {
    let mut reader = FrameReader::with_limits(limits);
    let (mut frames, mut skipped) = (Vec::new(), Vec::new());
    let mut fed = 0usize;
    for piece in pieces {
        reader.feed(piece);
        fed += piece.len();
        // Every frame or skipped event consumes at least one byte: more calls than
        // bytes fed is a loop that would never end.
        let mut calls = 0usize;
        loop {
            calls += 1;
            prop_assert!(calls <= fed + 2, "next_frame loops without consuming");
            match reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    let bound = limits.header_block.max(limits.body);
                    prop_assert!(
                        reader.buffered() <= bound,
                        "{} bytes held waiting, over the limits",
                        reader.buffered()
                    );
                    break;
                }
                Err(error) if error.is_fatal() => {
                    prop_assert_eq!(reader.next_frame(), Err(error.clone()), "fatal, then again");
                    return Ok((frames, skipped, Some(error)));
                }
                Err(error) => skipped.push(error),
            }
        }
    }
    Ok((frames, skipped, None))
}

/// A stream mutated: bytes flipped, inserted or cut at drawn points.
fn mutated(stream: &[u8], edits: &[(Index, u8, u8)]) -> Vec<u8> {
    let mut bytes = stream.to_vec();
    for (at, kind, byte) in edits {
        let i = at.index(bytes.len() + 1);
        match kind % 3 {
            0 if i < bytes.len() => bytes[i] = *byte,
            1 => bytes.insert(i, *byte),
            _ => bytes.truncate(i.max(bytes.len() / 2)),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_in_any_pieces_give_frames_or_an_error(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            // Mostly header-like bytes, where the parser has the most to decide.
            proptest::collection::vec(
                proptest::sample::select(b"Content-Length: 12\nContent-Type:text/event-plain\r\n%:9 ".to_vec()),
                0..3000,
            ),
        ],
        cuts in proptest::collection::vec(any::<Index>(), 0..20),
    ) {
        read_all(&pieces(&bytes, &cuts), LIMITS)?;
    }

    #[test]
    fn a_real_stream_mutated_gives_frames_or_an_error(
        which in any::<Index>(),
        edits in proptest::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..8),
        cuts in proptest::collection::vec(any::<Index>(), 0..30),
    ) {
        let streams = streams();
        let stream = mutated(&streams[which.index(streams.len())], &edits);
        read_all(&pieces(&stream, &cuts), Limits::default())?;
    }

    #[test]
    fn a_real_stream_gives_the_same_frames_however_it_is_split(
        which in any::<Index>(),
        cuts in proptest::collection::vec(any::<Index>(), 1..60),
    ) {
        let streams = streams();
        let stream = &streams[which.index(streams.len())];
        let whole = read_all(&[stream], Limits::default())?;
        prop_assert!(whole.2.is_none(), "a real stream is refused: {:?}", whole.2);
        prop_assert!(whole.1.is_empty(), "real events skipped: {:?}", whole.1);
        let split = read_all(&pieces(stream, &cuts), Limits::default())?;
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn event_header_values_read_back_as_they_were_encoded(
        values in proptest::collection::vec(".{0,40}", 1..12),
        job_body in proptest::option::of(".{0,200}"),
    ) {
        let encode = |value: &str| -> String {
            value
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect()
        };
        let mut inner = String::from("Event-Name: BACKGROUND_JOB\n");
        for (n, value) in values.iter().enumerate() {
            inner.push_str(&format!("X-Value-{n}: {}\n", encode(value)));
        }
        if let Some(body) = &job_body {
            inner.push_str(&format!("Content-Length: {}\n\n{body}", body.len()));
        } else {
            inner.push('\n');
        }
        let frame = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{inner}",
            inner.len()
        );
        let (frames, skipped, fatal) = read_all(&[frame.as_bytes()], Limits::default())?;
        prop_assert!(fatal.is_none() && skipped.is_empty(), "{:?} {:?}", fatal, skipped);
        let [Frame::Event(event)] = frames.as_slice() else {
            return Err(TestCaseError::fail(format!("not one event: {frames:?}")));
        };
        for (n, value) in values.iter().enumerate() {
            prop_assert_eq!(event.header(&format!("X-Value-{n}")), Some(value.as_str()));
        }
        prop_assert_eq!(&event.body, &job_body);
    }
}
