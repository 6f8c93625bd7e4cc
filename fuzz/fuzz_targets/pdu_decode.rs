//! Any octets, and any text as hex, must decode to Ok or Err: never a panic, never an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = modemgate::pdu::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = modemgate::pdu::decode_hex(text);
    }
});
