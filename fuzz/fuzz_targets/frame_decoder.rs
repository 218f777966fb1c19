//! Frame decoder: arbitrary bytes as client and server frames, with and without deflate,
//! whole and in chunks (the two must agree).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, frames)) = data.split_first() else {
        return;
    };
    let deflate = control & 0x80 != 0;
    let chunk = usize::from(control & 0x7f) + 1;
    sockloop::ws::fuzzing::decode_frames(frames, deflate, chunk);
});
