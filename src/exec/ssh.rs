//! `RUN --mount=type=ssh`: the SSH agent a build was given (`--ssh`),
//! reached from the step through a socket of the step's own, as BuildKit
//! forwards it. The socket carries the mount's mode and owner; the agent's
//! keys never enter a layer, the config or a cache key.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ExecError;

/// An agent for key files that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("run {program} (is openssh-client installed?)")]
    Run { program: &'static str, source: io::Error },
    #[error("ssh-agent did not listen on {} within {AGENT_START:?}", .socket.display())]
    NotListening { socket: PathBuf },
    #[error("ssh-add {keys}: {stderr}")]
    Add { keys: String, stderr: String },
}

/// What `--ssh ID[=…]` gives: an agent's socket, or key files to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshSource {
    Socket(PathBuf),
    Keys(Vec<PathBuf>),
}

impl SshSource {
    /// Reads the value of `--ssh ID=VALUE`: one socket, or comma-separated
    /// key files; none means the agent of `$SSH_AUTH_SOCK`, as Docker reads it.
    pub fn parse(value: Option<&str>) -> Result<SshSource, String> {
        let paths: Vec<PathBuf> = value.unwrap_or_default().split(',').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        match paths.as_slice() {
            [] => std::env::var_os("SSH_AUTH_SOCK")
                .map(|sock| SshSource::Socket(sock.into()))
                .ok_or_else(|| "no agent: SSH_AUTH_SOCK is not set (name a socket or key files)".to_string()),
            [one] if is_socket(one) => Ok(SshSource::Socket(one.clone())),
            keys => Ok(SshSource::Keys(keys.to_vec())),
        }
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The host's `ssh-agent` serving key files, stopped on drop.
struct KeyAgent(Child);

impl Drop for KeyAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long a started agent may take to listen.
const AGENT_START: Duration = Duration::from_secs(10);

impl KeyAgent {
    /// Starts `ssh-agent` on `socket` and adds `keys` to it.
    fn start(keys: &[PathBuf], socket: &Path) -> Result<KeyAgent, ExecError> {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SshError::Run { program: "ssh-agent", source })?;
        let agent = KeyAgent(child);
        let started = Instant::now();
        while !is_socket(socket) {
            if started.elapsed() > AGENT_START {
                return Err(SshError::NotListening { socket: socket.to_path_buf() }.into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", socket)
            .env_remove("DISPLAY")
            .env_remove("SSH_ASKPASS")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SshError::Run { program: "ssh-add", source })?;
        if !out.status.success() {
            let keys: Vec<String> = keys.iter().map(|k| k.display().to_string()).collect();
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(SshError::Add { keys: keys.join(" "), stderr }.into());
        }
        Ok(agent)
    }
}

/// A socket that forwards every connection to an agent, until dropped.
pub struct Forward {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _agent: Option<KeyAgent>,
    /// Holds the sockets (paths under the store could pass the 108 bytes a socket path may have).
    _dir: tempfile::TempDir,
}

impl Forward {
    /// Listens on a new socket for `source`; `set_attrs` gives it the mount's mode and owner.
    pub fn start(source: &SshSource, set_attrs: impl FnOnce(&Path) -> Result<(), ExecError>) -> Result<Forward, ExecError> {
        let dir = tempfile::Builder::new()
            .prefix("strata-ssh-")
            .tempdir()
            .map_err(|e| ExecError::io("create a folder for the ssh socket in", &std::env::temp_dir(), e))?;
        let (agent_socket, agent) = match source {
            SshSource::Socket(path) => (path.clone(), None),
            SshSource::Keys(keys) => {
                let socket = dir.path().join("agent.sock");
                let agent = KeyAgent::start(keys, &socket)?;
                (socket, Some(agent))
            }
        };
        let path = dir.path().join("forward.sock");
        let listener = UnixListener::bind(&path).map_err(|e| ExecError::io("listen on", &path, e))?;
        set_attrs(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let agent_socket = agent_socket.clone();
                std::thread::spawn(move || {
                    if let Ok(agent) = UnixStream::connect(&agent_socket) {
                        let _ = pipe(client, agent);
                    }
                });
            }
        });
        Ok(Forward { path, stop, thread: Some(thread), _agent: agent, _dir: dir })
    }

    /// The socket to bind into the step.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies both ways between a client and the agent until either side closes.
fn pipe(client: UnixStream, agent: UnixStream) -> io::Result<()> {
    let (mut client_in, mut agent_out) = (client.try_clone()?, agent.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut agent_out);
        let _ = agent_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut agent_in, mut client_out) = (agent, client);
    let _ = io::copy(&mut agent_in, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_forward_carries_bytes_both_ways_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = agent.accept().unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
        });
        let forward = Forward::start(&SshSource::Socket(agent_path), |_| Ok(())).unwrap();
        let mut client = UnixStream::connect(forward.path()).unwrap();
        client.write_all(b"hello").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "HELLO");
        echo.join().unwrap();
        let path = forward.path().to_path_buf();
        drop(forward);
        assert!(UnixStream::connect(&path).is_err(), "the forward is gone");
    }

    #[test]
    fn a_key_that_cannot_be_added_fails_naming_it() {
        if Command::new("ssh-agent").arg("-h").output().is_err() {
            eprintln!("skipping: ssh-agent is not installed (apt-get install openssh-client)");
            return;
        }
        let missing = PathBuf::from("/nonexistent/strata-key");
        let error = Forward::start(&SshSource::Keys(vec![missing]), |_| Ok(())).err().expect("refused");
        assert!(error.to_string().contains("ssh-add /nonexistent/strata-key"), "{error}");
    }

    #[test]
    fn key_files_and_sockets_are_told_apart() {
        assert_eq!(SshSource::parse(Some("/k1,/k2")), Ok(SshSource::Keys(vec!["/k1".into(), "/k2".into()])));
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        assert_eq!(SshSource::parse(socket.to_str()), Ok(SshSource::Socket(socket.clone())));
    }
}
