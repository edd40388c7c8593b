//! The run verbs: run, ps, logs, stop, kill, exec, inspect, commit, diff, rm.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use miette::miette;
use serde_json::{Value, json};

use super::args::{ExecArgs, InspectArgs, KillArgs, LogsArgs, PsArgs, RmRunsArgs, RunArgs, StopArgs};
use super::failed;
use super::format;
use super::images::human_age;
use strata::oci::ImageRef;
use strata::runtime::{self, RunOutcome, RunRecord, RunRequest, RunState};
use strata::store::Store;

/// `K=V` as given, or `K` with the host's value (skipped when unset), as Docker does.
fn env_pair(text: &str) -> Option<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) => Some((k.to_string(), v.to_string())),
        None => std::env::var(text).ok().map(|v| (text.to_string(), v)),
    }
}

pub fn run(store: &Store, args: RunArgs) -> miette::Result<ExitCode> {
    if let Some(policy) = &args.restart
        && policy != "no"
    {
        return Err(miette!("--restart {policy}: strata has no daemon to restart runs (out of scope); use a service manager"));
    }
    if !args.publish.is_empty() {
        return Err(miette!(
            "-p {}: not supported; runs share the host's network (--network=host), so a port the command listens on is the host's",
            args.publish.join(" -p ")
        ));
    }
    if let Some(network) = args.network.as_deref().filter(|n| *n != "host") {
        return Err(miette!("--network {network}: `strata run` supports only --network=host"));
    }
    let mut env = Vec::new();
    for file in &args.env_files {
        let text = std::fs::read_to_string(file).map_err(|e| miette!("read env file {}: {e}", file.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            env.extend(env_pair(line));
        }
    }
    for pair in &args.env {
        env.extend(env_pair(pair));
    }
    for stream in &args.attach {
        if !["stdin", "stdout", "stderr"].contains(&stream.to_ascii_lowercase().as_str()) {
            return Err(miette!("-a {stream}: expected STDIN, STDOUT or STDERR"));
        }
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
        entrypoint: args.entrypoint,
        detach: args.detach,
        attach: args.attach,
        stop_timeout: args.stop_timeout,
    };
    if req.privileged {
        eprintln!("strata: running {} unconfined (--privileged): all capabilities, no seccomp filter, /proc unmasked", req.image);
    }
    match runtime::run(store, &req).map_err(|e| failed(e, format!("run {}", req.image)))? {
        RunOutcome::Exited(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        RunOutcome::Detached(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The internal `__supervise DIR` verb: a detached run's supervisor.
pub fn supervise(dir: &std::path::Path) -> miette::Result<ExitCode> {
    runtime::supervise(&Store::default_root(), dir).map_err(|e| failed(e, format!("supervise {}", dir.display())))?;
    Ok(ExitCode::SUCCESS)
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

/// STATUS as Docker words it: `Up 3 seconds`, `Exited (0) 2 minutes ago`.
fn status(record: &RunRecord) -> String {
    let since = |time: Option<&str>| human_age(time).trim_end_matches(" ago").to_string();
    match record.state() {
        RunState::Created => "Created".into(),
        RunState::Running => format!("Up {}", since(record.started.as_deref().or(Some(&record.created)))),
        RunState::Exited(code) => format!("Exited ({code}) {}", human_age(record.finished.as_deref().or(Some(&record.created)))),
        RunState::Dead => "Dead".into(),
    }
}

/// A run as `ps --format` and `inspect` fields see it.
fn ps_row(record: &RunRecord, no_trunc: bool) -> Value {
    let id = record.id();
    let mut command = record.command.join(" ");
    if !no_trunc && command.chars().count() > 20 {
        command = format!("{}…", command.chars().take(19).collect::<String>());
    }
    json!({
        "ID": if no_trunc { id.clone() } else { id[..12].to_string() },
        "Names": record.name,
        "Image": record.image,
        "Command": format!("{command:?}"),
        "CreatedAt": record.created,
        "RunningFor": human_age(Some(&record.created)),
        "Status": status(record),
        "State": record.state().word(),
        "Ports": "",
        "Labels": "",
    })
}

/// Whether a run passes every `--filter` of `ps`.
fn ps_filter(record: &RunRecord, filters: &[(String, String)]) -> miette::Result<bool> {
    for (key, value) in filters {
        let pass = match key.as_str() {
            "status" => record.state().word() == value,
            "name" => record.name.contains(value.as_str()),
            "id" => record.id().starts_with(value.as_str()),
            "ancestor" => record.image == *value || record.image.split(':').next() == Some(value.as_str()),
            "exited" => matches!(record.state(), RunState::Exited(code) if code.to_string() == *value),
            other => return Err(miette!("--filter {other}: expected status, name, id, ancestor or exited")),
        };
        if !pass {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn parse_filters(filters: &[String]) -> miette::Result<Vec<(String, String)>> {
    filters
        .iter()
        .map(|f| f.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| miette!("--filter {f}: expected KEY=VALUE")))
        .collect()
}

pub fn ps(store: &Store, args: &PsArgs) -> miette::Result<ExitCode> {
    let filters = parse_filters(&args.filter)?;
    let mut records = Vec::new();
    for record in runtime::list(store).map_err(|e| failed(e, "list runs"))? {
        let state = record.state();
        // A status filter may ask for exited runs without -a.
        if !args.all && state != RunState::Running && !filters.iter().any(|(k, _)| k == "status") {
            continue;
        }
        if ps_filter(&record, &filters)? {
            records.push(record);
        }
    }
    // Newest first, as Docker lists them.
    records.reverse();
    if args.quiet {
        for record in &records {
            let id = record.id();
            println!("{}", if args.no_trunc { &id[..] } else { &id[..12] });
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Value> = records.iter().map(|r| ps_row(r, args.no_trunc)).collect();
    let format = args.format.clone().unwrap_or_else(|| "table".into());
    let format = if format == "table" {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}".to_string()
    } else {
        format
    };
    let headers = [
        ("ID", "CONTAINER ID"),
        ("Names", "NAMES"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Status", "STATUS"),
        ("State", "STATE"),
        ("Ports", "PORTS"),
    ];
    format::print_rows(&format, &rows, &headers).map_err(miette::Report::from_err)?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove(store: &Store, args: &RmRunsArgs) -> miette::Result<ExitCode> {
    for name in &args.names {
        runtime::remove(store, name, args.force).map_err(|e| failed(e, format!("rm {name}")))?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(store: &Store, args: &LogsArgs) -> miette::Result<ExitCode> {
    let tail = match args.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| miette!("--tail {n}: expected a number or `all`"))?),
    };
    let options = runtime::log::LogOptions { follow: args.follow, tail };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    runtime::log::read(store, &args.name, options, &mut |entry| {
        let text = if args.timestamps { format!("{} {}", entry.time, entry.log) } else { entry.log.clone() };
        let _ = if entry.stream == "stderr" { stderr.write_all(text.as_bytes()) } else { stdout.write_all(text.as_bytes()) };
        let _ = stdout.flush();
    })
    .map_err(|e| failed(e, format!("logs {}", args.name)))?;
    Ok(ExitCode::SUCCESS)
}

pub fn stop(store: &Store, args: &StopArgs) -> miette::Result<ExitCode> {
    for name in &args.names {
        let timeout = Duration::from_secs(args.time);
        match &args.signal {
            Some(signal) => {
                let signal = runtime::signal::parse_signal(signal).map_err(miette::Report::from_err)?;
                let record = runtime::record(store, name).map_err(|e| failed(e, format!("stop {name}")))?;
                if record.state() == RunState::Running {
                    runtime::signal::kill(store, name, signal).map_err(|e| failed(e, format!("stop {name}")))?;
                    if !runtime::signal::wait_for_owner(&record, timeout) {
                        runtime::signal::kill(store, name, nix::sys::signal::Signal::SIGKILL)
                            .map_err(|e| failed(e, format!("stop {name}")))?;
                        runtime::signal::wait_for_owner(&record, Duration::from_secs(30));
                    }
                }
            }
            None => runtime::signal::stop(store, name, timeout).map_err(|e| failed(e, format!("stop {name}")))?,
        }
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(store: &Store, args: &KillArgs) -> miette::Result<ExitCode> {
    let signal = runtime::signal::parse_signal(&args.signal).map_err(miette::Report::from_err)?;
    for name in &args.names {
        runtime::signal::kill(store, name, signal).map_err(|e| failed(e, format!("kill {name}")))?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn exec(store: &Store, args: ExecArgs) -> miette::Result<ExitCode> {
    let req = runtime::nsenter::ExecRequest {
        argv: args.command,
        env: args.env.iter().filter_map(|p| env_pair(p)).collect(),
        workdir: args.workdir,
        user: args.user,
        interactive: args.interactive,
    };
    let code = runtime::nsenter::exec(store, &args.name, &req).map_err(|e| failed(e, format!("exec in {}", args.name)))?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// A run as `inspect` prints it, with Docker's field names.
fn run_json(record: &RunRecord) -> Value {
    let state = record.state();
    let exec = record.exec.clone().unwrap_or_default();
    json!({
        "Id": record.id(),
        "Name": format!("/{}", record.name),
        "Created": record.created,
        "Path": record.command.first(),
        "Args": record.command.get(1..).unwrap_or_default(),
        "State": {
            "Status": state.word(),
            "Running": state == RunState::Running,
            "Dead": state == RunState::Dead,
            "Pid": if state == RunState::Running { record.pid.map_or(0, |p| p.pid) } else { 0 },
            "ExitCode": record.exit_code.unwrap_or(0),
            "Error": record.error.clone().unwrap_or_default(),
            "StartedAt": record.started,
            "FinishedAt": record.finished,
        },
        "Image": record.image_manifest,
        "Config": {
            "Image": record.image,
            "Cmd": record.command,
            "Env": exec.env,
            "WorkingDir": exec.cwd,
            "User": format!("{}:{}", exec.uid, exec.gid),
            "StopSignal": record.stop_signal,
        },
        "HostConfig": { "NetworkMode": "host", "Privileged": !exec.confined, "AutoRemove": record.auto_remove },
        "LogPath": if record.detached { runtime::log::FILE } else { "" },
    })
}

fn print_inspected(values: Vec<Value>, format: Option<&str>) -> miette::Result<ExitCode> {
    match format {
        Some(format) => {
            for value in &values {
                println!("{}", format::render_one(format, value).map_err(miette::Report::from_err)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&values).unwrap_or_default()),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn inspect_runs(store: &Store, names: &[String], format: Option<&str>) -> miette::Result<ExitCode> {
    let mut values = Vec::new();
    for name in names {
        values.push(run_json(&runtime::record(store, name).map_err(|e| failed(e, format!("inspect {name}")))?));
    }
    print_inspected(values, format)
}

/// Top-level `inspect`: a run by that name or id, else an image.
pub fn inspect(store: &Store, args: &InspectArgs) -> miette::Result<ExitCode> {
    let kind = args.kind.as_deref();
    if kind.is_some_and(|k| k != "image" && k != "container") {
        return Err(miette!("--type {}: expected image or container", kind.unwrap_or_default()));
    }
    let mut values = Vec::new();
    for name in &args.names {
        let run = if kind == Some("image") { None } else { runtime::record(store, name).ok() };
        match run {
            Some(record) => values.push(run_json(&record)),
            None if kind == Some("container") => return Err(miette!("inspect {name}: no run named {name:?}")),
            None => values
                .push(super::images::image_json(store, name).map_err(|e| e.wrap_err(format!("inspect {name}: no such run or image")))?),
        }
    }
    print_inspected(values, args.format.as_deref())
}

/// `container diff`: what a run added (A), changed (C) and deleted (D), from its overlay's upper folder.
pub fn diff(store: &Store, name: &str) -> miette::Result<ExitCode> {
    let changes = runtime::changes(store, name).map_err(|e| failed(e, format!("diff {name}")))?;
    for (kind, path) in changes {
        println!("{kind} {path}");
    }
    Ok(ExitCode::SUCCESS)
}
