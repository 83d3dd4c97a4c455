#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| barkeep_fuzz::parsers(data));
