//! Manifest, index and config JSON as a registry or an archive sends it, and
//! image references: parse or refuse; what parses prints and parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::oci::{ImageConfig, ImageRef, Index, Manifest};

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&strata::oci::to_blob(&value)).expect("a printed value parses");
        assert_eq!(value, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Manifest>(data);
    round_trip::<Index>(data);
    round_trip::<ImageConfig>(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(reference) = text.parse::<ImageRef>()
    {
        let again: ImageRef = reference.to_string().parse().expect("a printed reference parses");
        assert_eq!(reference.to_string(), again.to_string());
    }
});
