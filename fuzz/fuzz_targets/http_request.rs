//! HTTP request parser (and the upgrade handshake on what it accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sockloop::ws::fuzzing::parse_http(data);
});
