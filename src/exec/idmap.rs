//! Rootless id mapping: the caller becomes root in the sandbox's user
//! namespace, and, where `/etc/subuid` and `/etc/subgid` give it a range and
//! `newuidmap`/`newgidmap` exist, container ids 1… map onto that range, so a
//! RUN can own files as other users. Without a range, only root exists inside.

use serde::{Deserialize, Serialize};

/// How ids inside the sandbox map to ids on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// The host uid and gid that are root inside.
    pub host_uid: u32,
    pub host_gid: u32,
    /// Host ids of container ids 1…count (start, count), when subordinate ranges are configured.
    pub sub_uids: Option<(u32, u32)>,
    pub sub_gids: Option<(u32, u32)>,
}

fn range(file: &str, user: &str, uid: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split(':');
        let owner = parts.next()?;
        if owner != user && owner != uid.to_string() {
            return None;
        }
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    })
}

impl IdMap {
    /// The mapping for the calling (non-root) user.
    pub fn for_caller() -> IdMap {
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name).unwrap_or_default();
        let tools = super::host_program("newuidmap").is_some() && super::host_program("newgidmap").is_some();
        let (sub_uids, sub_gids) = match (range("/etc/subuid", &user, uid), range("/etc/subgid", &user, uid)) {
            (Some(u), Some(g)) if tools => (Some(u), Some(g)),
            _ => (None, None),
        };
        IdMap { host_uid: uid, host_gid: gid, sub_uids, sub_gids }
    }

    /// Whether subordinate ranges are in use (set up from outside with newuidmap/newgidmap).
    pub fn ranged(&self) -> bool {
        self.sub_uids.is_some()
    }

    /// Writes the maps of process `pid`, which has just entered its user namespace.
    pub fn apply(&self, pid: u32) -> Result<(), String> {
        let (Some((su, cu)), Some((sg, cg))) = (self.sub_uids, self.sub_gids) else { return Ok(()) };
        for (tool, host, start, count) in [("newuidmap", self.host_uid, su, cu), ("newgidmap", self.host_gid, sg, cg)] {
            let out = std::process::Command::new(tool)
                .args([pid.to_string(), "0".into(), host.to_string(), "1".into(), "1".into(), start.to_string(), count.to_string()])
                .output()
                .map_err(|e| format!("{tool}: {e} (install uidmap)"))?;
            if !out.status.success() {
                return Err(format!("{tool} {pid}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(())
    }

    /// The container id of a host id found on disk (files the sandbox wrote).
    pub fn to_container(&self, host: u32, uid: bool) -> u32 {
        let (own, sub) = if uid { (self.host_uid, self.sub_uids) } else { (self.host_gid, self.sub_gids) };
        if host == own {
            return 0;
        }
        match sub {
            Some((start, count)) if host >= start && host < start + count => host - start + 1,
            _ => host,
        }
    }
}
