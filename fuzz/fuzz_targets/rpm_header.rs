//! Fuzzes the RPM header parser: any bytes must give a header or an error, never a
//! panic or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata::components::rpmdb::parse_header(data);
});
