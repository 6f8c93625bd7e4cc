//! Any line a modem could print must parse to a result without panicking.
//! Needs `modemgate::at::parse_line(&str)` from the at module.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = modemgate::at::parse_line(line);
    }
});
