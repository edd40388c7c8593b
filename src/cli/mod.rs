//! Command-line parsing and printing only: every verb calls into the library.

mod args;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};

/// Entry point of the `strata` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Graph(args) => graph(args),
    }
}

fn graph(args: args::GraphArgs) -> miette::Result<ExitCode> {
    let build_args = args::parse_build_args(&args.build_args)?;
    let graph = crate::frontend::load(&args.file, &build_args)?;
    graph.check().map_err(|e| miette::miette!("{}: {e}", args.file.display()))?;
    if let Some(target) = &args.target {
        graph.roots(Some(target)).map_err(|e| miette::miette!("{}: {e}", args.file.display()))?;
    }
    let text = match args.format {
        args::GraphFormat::Json => crate::graph::to_json(&graph) + "\n",
        args::GraphFormat::Dot => crate::graph::to_dot(&graph),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
