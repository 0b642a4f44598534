//! Feeds arbitrary bytes to the FLV parser, split into chunks at sizes the input chooses, and
//! checks the parser's promises: no panic, bounded buffering, and the same tags whether the
//! input arrives in pieces or whole.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamgate_flv::{demux, Event, Parser, Tag};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size so the fuzzer explores split points too.
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first).max(1);

    let mut p = Parser::with_max_data_size(1 << 16);
    let mut chunked: Vec<Tag> = Vec::new();
    'feed: for c in rest.chunks(chunk) {
        if p.push(c).is_err() {
            break;
        }
        loop {
            match p.next_event() {
                Ok(Some(Event::Tag(t))) => {
                    let _ = (t.is_keyframe(), t.is_sequence_header(), t.is_metadata());
                    let _ = t.with_timestamp(t.timestamp().wrapping_add(1));
                    chunked.push(t);
                }
                Ok(Some(Event::Header(_))) => {}
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(p.buffered() <= p.buffer_limit() + chunk);
    }
    let _ = p.finish();

    // Whole-buffer parsing must agree with chunked parsing on every tag both produced (the
    // chunked parser has a lower size bound, so it may stop earlier, never differ).
    let whole = demux(Bytes::copy_from_slice(rest));
    for (a, b) in whole.tags.iter().zip(&chunked) {
        assert_eq!(a, b);
    }
});
