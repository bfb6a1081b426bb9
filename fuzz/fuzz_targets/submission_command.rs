#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaygate_fuzz::submission_command(data));
