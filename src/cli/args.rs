//! The clap definitions of every verb.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::frontend::BuildArgs;

/// strata: a daemonless, declarative container-image builder.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the build graph of a Dockerfile or KDL spec without building.
    Graph(GraphArgs),
}

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The Dockerfile or `.kdl` spec.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
    /// Check that this stage or image exists.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

/// Parses `K=V` pairs; a bare `K` takes its value from the environment, as Docker does.
pub fn parse_build_args(pairs: &[String]) -> miette::Result<BuildArgs> {
    let mut args = BuildArgs::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                args.insert(key.to_string(), value.to_string());
            }
            Some(_) => return Err(miette::miette!("--build-arg {pair:?}: missing name before '='")),
            None => {
                if let Ok(value) = std::env::var(pair) {
                    args.insert(pair.clone(), value);
                }
            }
        }
    }
    Ok(args)
}
