//! The RUN sandbox (to be written).
