//! mount (to be written).
