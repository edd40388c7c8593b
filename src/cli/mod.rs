//! Command-line parsing and printing only.

/// Entry point of the `strata` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
