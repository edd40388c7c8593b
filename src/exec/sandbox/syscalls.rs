//! The seam between the sandbox's plan and the kernel: every system call the
//! sandbox makes before exec goes through `Syscalls`, so the order of mounts,
//! their flags and the confinement steps can be checked by a recording fake
//! without root. `Host` is the real thing.

use std::fs;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;
use nix::unistd::{Gid, Uid};

/// What the sandbox asks of the kernel, in the order it asks.
pub trait Syscalls {
    fn mount(&mut self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()>;
    /// Changes the flags of the bind mount at `target` (`MS_BIND | MS_REMOUNT | flags`). Flags the
    /// kernel locks on a mount from a more privileged namespace (read-only, nosuid, nodev, noexec,
    /// atime) are kept as they are, as a remount may not clear them.
    fn bind_remount(&mut self, target: &Path, flags: MsFlags) -> nix::Result<()>;
    fn umount2(&mut self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&mut self, dir: &Path) -> nix::Result<()>;
    /// Makes `path` exist (to mount over, or to work in): a directory, or an empty file; what exists stays.
    fn make_path(&mut self, path: &Path, dir: bool) -> std::io::Result<()>;
    fn symlink(&mut self, target: &str, link: &Path) -> std::io::Result<()>;
    fn exists(&mut self, path: &Path) -> bool;
    fn is_dir(&mut self, path: &Path) -> bool;
    fn sethostname(&mut self, name: &str) -> nix::Result<()>;
    /// Brings the network namespace's loopback `lo` up, as a new namespace has it down.
    fn loopback_up(&mut self) -> nix::Result<()>;
    fn setgroups(&mut self, groups: &[Gid]) -> nix::Result<()>;
    fn setgid(&mut self, gid: Gid) -> nix::Result<()>;
    fn setuid(&mut self, uid: Uid) -> nix::Result<()>;
    /// Asks for SIGKILL when the parent (the sandbox's waiting process) dies. Changing the ids
    /// clears this, so it is asked again after them.
    fn die_with_parent(&mut self) -> nix::Result<()>;
    /// Limits bounding, permitted and effective to `keep`, empties inheritable and ambient.
    fn limit_capabilities(&mut self, keep: u64) -> Result<(), String>;
    fn set_no_new_privs(&mut self) -> nix::Result<()>;
    fn install_seccomp(&mut self) -> Result<(), String>;
}

/// The kernel itself.
pub struct Host;

impl Syscalls for Host {
    fn mount(&mut self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn bind_remount(&mut self, target: &Path, flags: MsFlags) -> nix::Result<()> {
        let current = nix::sys::statvfs::statvfs(target)?.flags();
        let mut locked = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if current.contains(fs) {
                locked |= ms;
            }
        }
        nix::mount::mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked, None::<&str>)
    }

    fn umount2(&mut self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&mut self, dir: &Path) -> nix::Result<()> {
        nix::unistd::chdir(dir)
    }

    fn make_path(&mut self, path: &Path, dir: bool) -> std::io::Result<()> {
        if dir {
            fs::create_dir_all(path)
        } else if path.symlink_metadata().is_err() {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(path, b"")
        } else {
            Ok(())
        }
    }

    fn symlink(&mut self, target: &str, link: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        path.is_dir()
    }

    fn sethostname(&mut self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&mut self) -> nix::Result<()> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
        use std::os::fd::AsRawFd;
        let probe = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
        // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated by the zeros after "lo".
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the flags of the ifreq passed, which lives across the calls.
        unsafe {
            if libc::ioctl(probe.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
                return Err(nix::errno::Errno::last());
            }
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(probe.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
                return Err(nix::errno::Errno::last());
            }
        }
        Ok(())
    }

    fn setgroups(&mut self, groups: &[Gid]) -> nix::Result<()> {
        nix::unistd::setgroups(groups)
    }

    fn setgid(&mut self, gid: Gid) -> nix::Result<()> {
        nix::unistd::setgid(gid)
    }

    fn setuid(&mut self, uid: Uid) -> nix::Result<()> {
        nix::unistd::setuid(uid)
    }

    fn die_with_parent(&mut self) -> nix::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
    }

    fn limit_capabilities(&mut self, keep: u64) -> Result<(), String> {
        use caps::CapSet;
        let kept: caps::CapsHashSet = caps::all().into_iter().filter(|c| keep & c.bitmask() != 0).collect();
        let e = |what: &str, err: caps::errors::CapsError| format!("{what}: {err}");
        // The bounding set first: dropping from it needs CAP_SETPCAP, which it may take away.
        for cap in caps::all().into_iter().filter(|c| !kept.contains(c)) {
            if caps::has_cap(None, CapSet::Bounding, cap).map_err(|err| e("read bounding set", err))? {
                caps::drop(None, CapSet::Bounding, cap).map_err(|err| e(&format!("drop {cap} from the bounding set"), err))?;
            }
        }
        caps::clear(None, CapSet::Ambient).map_err(|err| e("clear ambient capabilities", err))?;
        caps::clear(None, CapSet::Inheritable).map_err(|err| e("clear inheritable capabilities", err))?;
        caps::set(None, CapSet::Effective, &kept).map_err(|err| e("set effective capabilities", err))?;
        caps::set(None, CapSet::Permitted, &kept).map_err(|err| e("set permitted capabilities", err))?;
        Ok(())
    }

    fn set_no_new_privs(&mut self) -> nix::Result<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn install_seccomp(&mut self) -> Result<(), String> {
        super::seccomp::install()
    }
}

/// One call the sandbox made, as the recording fake keeps it.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mount { source: Option<PathBuf>, target: PathBuf, fstype: Option<String>, flags: MsFlags, data: Option<String> },
    BindRemount { target: PathBuf, flags: MsFlags },
    Umount { target: PathBuf },
    PivotRoot { new_root: PathBuf },
    Chdir(PathBuf),
    MakePath(PathBuf),
    Symlink { target: String, link: PathBuf },
    Hostname(String),
    LoopbackUp,
    SetGroups(Vec<u32>),
    SetGid(u32),
    SetUid(u32),
    DieWithParent,
    LimitCapabilities(u64),
    NoNewPrivs,
    Seccomp,
}

/// Records every call and answers like a kernel that allows everything
/// but the mounts of a file system type listed in `refuse`.
#[cfg(test)]
#[derive(Default)]
pub struct Recorder {
    pub calls: Vec<Call>,
    /// Paths `exists` denies (everything else exists).
    pub missing: Vec<PathBuf>,
    /// Paths that are files (everything else is a directory).
    pub files: Vec<PathBuf>,
    /// File system types whose mounts fail with EPERM.
    pub refuse: Vec<&'static str>,
}

#[cfg(test)]
impl Syscalls for Recorder {
    fn mount(&mut self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()> {
        if fstype.is_some_and(|t| self.refuse.contains(&t)) {
            return Err(nix::errno::Errno::EPERM);
        }
        self.calls.push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        Ok(())
    }

    fn bind_remount(&mut self, target: &Path, flags: MsFlags) -> nix::Result<()> {
        self.calls.push(Call::BindRemount { target: target.to_path_buf(), flags });
        Ok(())
    }

    fn umount2(&mut self, target: &Path, _: MntFlags) -> nix::Result<()> {
        self.calls.push(Call::Umount { target: target.to_path_buf() });
        Ok(())
    }

    fn pivot_root(&mut self, new_root: &Path, _: &Path) -> nix::Result<()> {
        self.calls.push(Call::PivotRoot { new_root: new_root.to_path_buf() });
        Ok(())
    }

    fn chdir(&mut self, dir: &Path) -> nix::Result<()> {
        self.calls.push(Call::Chdir(dir.to_path_buf()));
        Ok(())
    }

    fn make_path(&mut self, path: &Path, _: bool) -> std::io::Result<()> {
        self.calls.push(Call::MakePath(path.to_path_buf()));
        Ok(())
    }

    fn symlink(&mut self, target: &str, link: &Path) -> std::io::Result<()> {
        self.calls.push(Call::Symlink { target: target.to_string(), link: link.to_path_buf() });
        Ok(())
    }

    fn exists(&mut self, path: &Path) -> bool {
        !self.missing.iter().any(|m| m == path)
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        !self.files.iter().any(|f| f == path)
    }

    fn sethostname(&mut self, name: &str) -> nix::Result<()> {
        self.calls.push(Call::Hostname(name.to_string()));
        Ok(())
    }

    fn loopback_up(&mut self) -> nix::Result<()> {
        self.calls.push(Call::LoopbackUp);
        Ok(())
    }

    fn setgroups(&mut self, groups: &[Gid]) -> nix::Result<()> {
        self.calls.push(Call::SetGroups(groups.iter().map(|g| g.as_raw()).collect()));
        Ok(())
    }

    fn setgid(&mut self, gid: Gid) -> nix::Result<()> {
        self.calls.push(Call::SetGid(gid.as_raw()));
        Ok(())
    }

    fn setuid(&mut self, uid: Uid) -> nix::Result<()> {
        self.calls.push(Call::SetUid(uid.as_raw()));
        Ok(())
    }

    fn die_with_parent(&mut self) -> nix::Result<()> {
        self.calls.push(Call::DieWithParent);
        Ok(())
    }

    fn limit_capabilities(&mut self, keep: u64) -> Result<(), String> {
        self.calls.push(Call::LimitCapabilities(keep));
        Ok(())
    }

    fn set_no_new_privs(&mut self) -> nix::Result<()> {
        self.calls.push(Call::NoNewPrivs);
        Ok(())
    }

    fn install_seccomp(&mut self) -> Result<(), String> {
        self.calls.push(Call::Seccomp);
        Ok(())
    }
}
