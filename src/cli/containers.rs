//! The run verbs: run, commit, ps, rm.

use super::failed;
use std::process::ExitCode;


use super::args::RunArgs;
use super::images::human_age;
use super::table::Table;
use strata::oci::ImageRef;
use strata::runtime::{self, RunRequest};
use strata::store::Store;

/// `K=V` as given, or `K` with the host's value (skipped when unset), as Docker does.
fn env_pair(text: &str) -> Option<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) => Some((k.to_string(), v.to_string())),
        None => std::env::var(text).ok().map(|v| (text.to_string(), v)),
    }
}

pub fn run(store: &Store, args: RunArgs) -> miette::Result<ExitCode> {
    let mut env = Vec::new();
    for file in &args.env_files {
        let text = std::fs::read_to_string(file).map_err(|e| failed(e, format!("read env file {}", file.display())))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            env.extend(env_pair(line));
        }
    }
    for pair in &args.env {
        env.extend(env_pair(pair));
    }
    let req = RunRequest {
        image: args.image,
        command: args.command,
        env,
        workdir: args.workdir,
        user: args.user,
        name: args.name,
        remove: args.rm,
        interactive: args.interactive || args.tty,
        privileged: args.privileged,
    };
    if req.privileged {
        eprintln!("strata: running {} unconfined (--privileged): all capabilities, no seccomp filter, /proc unmasked", req.image);
    }
    let code = runtime::run(store, &req).map_err(|e| failed(e, format!("run {}", req.image)))?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn commit(store: &Store, name: &str, image: Option<&str>) -> miette::Result<ExitCode> {
    let tag = match image {
        Some(text) => Some(text.parse::<ImageRef>().map_err(miette::Report::from_err)?),
        None => None,
    };
    let (_, id) = runtime::commit(store, name, tag.as_ref()).map_err(|e| failed(e, format!("commit {name}")))?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub fn ps(store: &Store, all: bool) -> miette::Result<ExitCode> {
    let mut table = Table::new(&["NAME", "IMAGE", "COMMAND", "CREATED", "STATUS"]);
    for record in runtime::list(store).map_err(miette::Report::from_err)? {
        let status = match record.exit_code {
            Some(code) => format!("Exited ({code})"),
            None => "Running".to_string(),
        };
        if !all && record.exit_code.is_some() {
            continue;
        }
        let mut command = record.command.join(" ");
        if command.chars().count() > 28 {
            command = format!("{}…", command.chars().take(27).collect::<String>());
        }
        table.row(vec![record.name, record.image, format!("{command:?}"), human_age(Some(&record.created)), status]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

pub fn remove(store: &Store, names: &[String]) -> miette::Result<ExitCode> {
    for name in names {
        runtime::remove(store, name).map_err(|e| failed(e, format!("rm {name}")))?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}
