//! One launcher of sandboxes, for RUN and `strata run`: it lays out the
//! sandbox's folder over an image, starts `strata __sandbox`, and where the
//! kernel refuses an overlay root (no support, an overlay store, a user
//! namespace without it) starts again on a copied root. What happened is read
//! from the sandbox's setup report, never from its output.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::idmap::IdMap;
use super::sandbox::{self, SETUP_FAILED, SandboxMount, SandboxNetwork, SandboxSpec};
use super::{ExecError, copydiff, diff, users};
use crate::oci::Digest;
use crate::store::Store;
use crate::store::rootfs::RootfsView;

/// The host name of a sandbox unless a build asks for another.
pub const DEFAULT_HOSTNAME: &str = "strata";

/// A command to start in a sandbox over an image.
pub struct Launch<'a> {
    pub view: &'a RootfsView,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub ids: users::UserIds,
    pub network: SandboxNetwork,
    /// In the UTS namespace, /etc/hostname and /etc/hosts.
    pub hostname: String,
    pub mounts: Vec<SandboxMount>,
    /// The upper layer is scratch until a layer is written from it (RUN, not a kept run).
    pub volatile_upper: bool,
    /// Docker's default confinement; false for `--security=insecure` and `--privileged`.
    pub confined: bool,
}

/// How a launched sandbox ended.
pub struct Launched {
    /// The attempt folder it ran in (`attempt_dir`).
    pub dir: PathBuf,
    /// The spec it ran with (over an overlay or a copied root).
    pub prepared: Prepared,
    /// The command's exit code.
    pub code: i32,
}

/// The folder of one attempt under a launch's folder: `overlay/` or `copy/`.
pub fn attempt_dir(dir: &Path, copied_root: bool) -> PathBuf {
    dir.join(if copied_root { "copy" } else { "overlay" })
}

impl Launch<'_> {
    /// Runs the command with its sandbox under `dir`. `wait` gives the
    /// prepared `strata __sandbox` command its stdio, starts it (with
    /// `sandbox::start`), waits and returns its exit code.
    pub fn run(&self, dir: &Path, wait: &mut dyn FnMut(Command, &Prepared) -> Result<i32, ExecError>) -> Result<Launched, ExecError> {
        let mut copied = copy_snapshotter_forced();
        loop {
            let prepared = self.prepare(&attempt_dir(dir, copied), copied)?;
            let spec_path = attempt_dir(dir, copied).join("spec.json");
            let spec = serde_json::to_vec(&prepared.spec).map_err(|source| ExecError::Encode { what: "the sandbox spec", source })?;
            fs::write(&spec_path, spec).map_err(|e| ExecError::io("write", &spec_path, e))?;
            // The running binary itself, not its path: a path names nothing once the
            // file is replaced (a package upgrade, a rebuild) while a build runs.
            let mut command = Command::new("/proc/self/exe");
            command.arg("__sandbox").arg(&spec_path);
            if !self.confined {
                command.arg(sandbox::UNCONFINED_ARG);
            }
            let code = wait(command, &prepared)?;
            if code == SETUP_FAILED
                && let Some(report) = sandbox::setup_report(&spec_path)
            {
                if !copied && report.what == sandbox::OVERLAY_ROOT {
                    copied = true;
                    continue;
                }
                return Err(ExecError::Sandbox { report, hint: rootless_hint() });
            }
            return Ok(Launched { dir: attempt_dir(dir, copied), prepared, code });
        }
    }

    /// Lays out `dir` (upper, work, root, supplied /etc files) for a sandbox over the image.
    fn prepare(&self, dir: &Path, copied_root: bool) -> Result<Prepared, ExecError> {
        let (view, ids) = (self.view, &self.ids);
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", ids.home.clone().unwrap_or_else(|| "/".into())));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("root"));
        for d in [&upper, &work, &rootfs] {
            fs::create_dir_all(d).map_err(|e| ExecError::io("create", d, e))?;
        }
        let mut lowerdirs: Vec<PathBuf> = if copied_root { Vec::new() } else { view.overlay_lowerdirs() };
        let dir_marks = if copied_root { super::copydiff::materialize(view, &rootfs)? } else { Default::default() };
        if !copied_root && lowerdirs.is_empty() {
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).map_err(|e| ExecError::io("create", &empty, e))?;
            lowerdirs.push(empty);
        }
        let hostname = self.hostname.clone();
        let hosts = dir.join("hosts");
        let hosts_text = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n");
        let resolv = dir.join("resolv.conf");
        let resolv_text = resolv_conf(&self.network, &fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let hostname_file = dir.join("hostname");
        for (path, text) in [(&hosts, hosts_text), (&resolv, resolv_text), (&hostname_file, format!("{hostname}\n"))] {
            fs::write(path, text).map_err(|e| ExecError::io("write", path, e))?;
        }
        let mut points: Vec<String> =
            ["proc", "dev", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"].iter().map(|s| s.to_string()).collect();
        for m in &self.mounts {
            let (SandboxMount::Bind { target, .. } | SandboxMount::Layers { target, .. } | SandboxMount::Tmpfs { target, .. }) = m;
            points.push(target.trim_start_matches('/').to_string());
        }
        // The mount points the image lacks, and the directories made only to hold them.
        let mut mount_points: Vec<String> = Vec::new();
        for point in points {
            for ancestor in Path::new(&point).ancestors().filter(|a| !a.as_os_str().is_empty()) {
                let text = ancestor.to_string_lossy().into_owned();
                if view.lookup(ancestor).is_none() && !mount_points.contains(&text) {
                    mount_points.push(text);
                }
            }
        }
        let spec = SandboxSpec {
            lowerdirs,
            upperdir: upper,
            workdir: work,
            rootfs,
            copied_root,
            volatile_upper: self.volatile_upper,
            argv: self.argv.clone(),
            env,
            cwd: self.cwd.clone(),
            uid: ids.uid,
            gid: ids.gid,
            groups: ids.groups.clone(),
            hostname,
            network: self.network.clone(),
            user_namespace: !nix::unistd::geteuid().is_root(),
            maps_from_outside: !nix::unistd::geteuid().is_root() && IdMap::for_caller().ranged(),
            etc_files: vec![(hosts, "/etc/hosts".into()), (resolv, "/etc/resolv.conf".into()), (hostname_file, "/etc/hostname".into())],
            mounts: self.mounts.clone(),
        };
        Ok(Prepared { spec, mount_points, dir_marks })
    }
}

/// The sandbox's /etc/resolv.conf: the host's when it shares the host's
/// network; slirp4netns's forwarder (with the host's search and options
/// lines) in a namespace of its own, where the host's loopback resolvers are
/// out of reach; nothing without a network.
fn resolv_conf(network: &SandboxNetwork, host: &str) -> String {
    match network {
        SandboxNetwork::Host => host.to_string(),
        SandboxNetwork::None => String::new(),
        SandboxNetwork::Slirp(_) => {
            let kept = host.lines().filter(|line| line.starts_with("search") || line.starts_with("options"));
            std::iter::once(format!("nameserver {}", sandbox::SLIRP_DNS)).chain(kept.map(str::to_string)).map(|line| line + "\n").collect()
        }
    }
}

/// What a finished sandbox changed: its attempt folder and what to leave out.
pub struct Changes<'a> {
    /// The attempt folder (`attempt_dir`): `upper/` over an overlay, `root/` when copied.
    pub dir: &'a Path,
    pub copied_root: bool,
    pub mount_points: &'a [String],
    pub dir_marks: copydiff::DirMarks,
}

impl Launched {
    /// What the command changed.
    pub fn changes(&self) -> Changes<'_> {
        let p = &self.prepared;
        Changes { dir: &self.dir, copied_root: p.spec.copied_root, mount_points: &p.mount_points, dir_marks: p.dir_marks }
    }
}

/// Turns what a sandbox changed over `view` into a layer: the overlay's upper
/// folder (whiteouts and opaque folders as OCI writes them), or a tree diff
/// of a copied root; mount points made only for the sandbox are left out.
pub fn changes_to_layer(store: &Store, view: &RootfsView, changes: &Changes, epoch: Option<u64>) -> Result<(Digest, u64), ExecError> {
    if changes.copied_root {
        let root = changes.dir.join("root");
        let skip = stubs_to_skip(&root, changes.mount_points, view);
        copydiff::diff_to_layer(store, view, &root, changes.dir_marks, &skip, epoch, &ids_on_disk())
    } else {
        let upper = changes.dir.join("upper");
        let skip = stubs_to_skip(&upper, changes.mount_points, view);
        diff::upper_to_layer(store, &upper, &skip, epoch, &ids_on_disk())
    }
}

/// Mount points created only for the sandbox, when still empty, and the
/// directories overlay copied up only to hold them (same owner and mode as below).
fn stubs_to_skip(upper: &Path, missing: &[String], below: &RootfsView) -> Vec<String> {
    let depth = |p: &String| std::cmp::Reverse(p.matches('/').count());
    let holds_only = |dir: &str, skip: &[String]| {
        fs::read_dir(upper.join(dir))
            .is_ok_and(|entries| entries.flatten().all(|e| skip.iter().any(|s| Path::new(s) == Path::new(dir).join(e.file_name()))))
    };
    let mut skip: Vec<String> = Vec::new();
    // Deepest first: a directory made only for mount points is judged after them.
    let mut made: Vec<&String> = missing.iter().collect();
    made.sort_by_key(|p| depth(p));
    for point in made {
        let unchanged = match fs::symlink_metadata(upper.join(point)) {
            Ok(m) if m.is_dir() => holds_only(point, &skip),
            Ok(m) => m.len() == 0,
            Err(_) => false,
        };
        if unchanged {
            skip.push(point.clone());
        }
    }
    // Directories of the image that overlay copied up only to hold those.
    let mut parents: Vec<String> = skip
        .iter()
        .flat_map(|p| Path::new(p).ancestors().skip(1).map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>())
        .filter(|p| !p.is_empty() && !missing.contains(p))
        .collect();
    parents.sort_by_key(depth);
    parents.dedup();
    for dir in parents {
        let real = upper.join(&dir);
        let same_as_below = match (fs::symlink_metadata(&real), below.lookup(Path::new(&dir)).and_then(|l| fs::symlink_metadata(l).ok())) {
            (Ok(up), Some(low)) => up.mode() == low.mode() && up.uid() == low.uid() && up.gid() == low.gid(),
            _ => false,
        };
        if same_as_below && holds_only(&dir, &skip) && !diff::is_opaque(&real) {
            skip.push(dir);
        }
    }
    skip
}

/// How ids the sandbox wrote appear on disk: as they are for root, mapped back when rootless.
pub fn ids_on_disk() -> Option<IdMap> {
    (!nix::unistd::geteuid().is_root()).then(IdMap::for_caller)
}

/// `STRATA_SNAPSHOTTER=copy` runs sandboxes on a copied root instead of overlayfs.
pub fn copy_snapshotter_forced() -> bool {
    std::env::var("STRATA_SNAPSHOTTER").is_ok_and(|v| v == "copy")
}

/// A sandbox ready to start in `dir`, and the mount points the image lacked.
pub struct Prepared {
    pub spec: SandboxSpec,
    /// Image paths created only to mount over; not changes of the command.
    pub mount_points: Vec<String>,
    /// With a copied root: its directories' inodes before the command ran.
    pub dir_marks: copydiff::DirMarks,
}

fn rootless_hint() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        ""
    } else {
        " (rootless RUN needs unprivileged user namespaces and overlayfs in them: kernel 5.11+, sysctl kernel.unprivileged_userns_clone=1)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_the_network() {
        let host = "# comment\nnameserver 127.0.0.53\nsearch example.com\noptions edns0\n";
        assert_eq!(resolv_conf(&SandboxNetwork::Host, host), host);
        assert_eq!(resolv_conf(&SandboxNetwork::None, host), "");
        let own = resolv_conf(&SandboxNetwork::Slirp("/usr/bin/slirp4netns".into()), host);
        assert_eq!(own, "nameserver 10.0.2.3\nsearch example.com\noptions edns0\n");
    }
}
