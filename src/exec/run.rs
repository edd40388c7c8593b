//! RUN: a command in an isolated rootfs whose changes become the layer.

use super::{ExecCx, ExecError, ImageState, StepOutcome};
use crate::graph::RunOp;

/// Runs one RUN step (or takes it from the cache).
pub fn execute(_state: &mut ImageState, _cx: &ExecCx, _run: &RunOp) -> Result<StepOutcome, ExecError> {
    Err(ExecError::Sandbox("RUN is not yet supported".into()))
}
