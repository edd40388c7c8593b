//! archive (to be written).
