//! Inflater: arbitrary bytes as one permessage-deflate message, bounded to 64 KiB.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sockloop::ws::fuzzing::inflate(data, 64 << 10);
});
