//! The `:authority` rewriter on the API's Unix socket: any bytes a local client sends, in any
//! split, give the same output or the same error, never a panic; output past the preface is
//! whole HTTP/2 frames no larger than the rewriter allows for header frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_proto::authority::{PREFACE, Rewriter};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    // Most inputs start with the preface, so that the fuzzer reaches the frames.
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(body);

    let mut whole = Vec::new();
    let whole_result = Rewriter::new().feed(&input, &mut whole);

    let step = usize::from(cut).max(1);
    let mut split = Vec::new();
    let mut rewriter = Rewriter::new();
    let mut split_result = Ok(());
    for chunk in input.chunks(step) {
        split_result = rewriter.feed(chunk, &mut split);
        if split_result.is_err() {
            break;
        }
    }
    assert_eq!(whole_result, split_result);
    if whole_result.is_ok() {
        assert_eq!(whole, split);
    }
});
