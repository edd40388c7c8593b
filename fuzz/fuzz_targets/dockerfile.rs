//! The Dockerfile front end on arbitrary text: parse and lower must return a
//! graph or a diagnostic, never panic, hang or blow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::graph::args::BuildArgs;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strata::frontend::dockerfile::lower("Dockerfile", text, &BuildArgs::new());
    }
});
