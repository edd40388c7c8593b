//! The KDL front end on arbitrary text: a graph or a diagnostic, nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::graph::args::BuildArgs;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strata::frontend::kdl::lower("strata.kdl", text, &BuildArgs::new());
    }
});
