//! Resolving `user[:group]` (names or ids) against an image's /etc/passwd and /etc/group.

use std::path::Path;

use super::ExecError;
use crate::store::rootfs::RootfsView;

/// A resolved user: ids plus the home directory when the passwd entry gives one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
    /// A process's groups (`setgroups`): the primary group, then, when no
    /// group was named, every /etc/group entry listing the user, as Docker
    /// gives them. Empty for an owner (`--chown`, WORKDIR).
    pub groups: Vec<u32>,
}

fn read_db(view: &RootfsView, path: &str) -> String {
    view.resolve(Path::new(path)).and_then(|(_, real)| std::fs::read_to_string(real).ok()).unwrap_or_default()
}

fn find(db: &str, name: &str) -> Option<Vec<String>> {
    db.lines().map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>()).find(|f| f.first().is_some_and(|n| n == name))
}

/// Resolves `spec` as Docker does: a name or uid, optionally `:group` (name or gid);
/// without a group, the user's primary group for a name, or the same number for a bare uid.
pub fn resolve_user(view: &RootfsView, spec: &str) -> Result<UserIds, ExecError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(view, "/etc/passwd");
    let (uid, primary, home) = match user.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.get(2) == Some(&user));
            let primary = entry.as_ref().and_then(|f| f.get(3)?.parse().ok()).unwrap_or(uid);
            (uid, primary, entry.and_then(|f| f.get(5).map(|h| h.to_string())))
        }
        Err(_) => {
            let fields = find(&passwd, user).ok_or_else(|| ExecError::UnknownUser(user.to_string()))?;
            let number = |i: usize| fields.get(i).and_then(|v| v.parse::<u32>().ok());
            let uid = number(2).ok_or_else(|| ExecError::BadPasswdEntry(user.to_string()))?;
            (uid, number(3).unwrap_or(uid), fields.get(5).cloned())
        }
    };
    let gid = match group {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_db(view, "/etc/group");
                find(&groups, g).and_then(|f| f.get(2)?.parse().ok()).ok_or_else(|| ExecError::UnknownGroup(g.to_string()))?
            }
        },
    };
    Ok(UserIds { uid, gid, home, groups: Vec::new() })
}

/// The ids a process runs with for `spec` (a USER), as Docker and runc give
/// them: an empty spec is root; a uid the image's /etc/passwd lacks has group
/// 0 (not its own number, as an owner would); without an explicit group the
/// process also gets the supplementary groups /etc/group lists the user in.
pub fn resolve_user_or_root(view: &RootfsView, spec: &str) -> Result<UserIds, ExecError> {
    let mut ids = resolve_user(view, if spec.is_empty() { "0" } else { spec })?;
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    let passwd = read_db(view, "/etc/passwd");
    // The user's name: as given, or the one /etc/passwd gives its uid.
    let name = if user.is_empty() || user.parse::<u32>().is_ok() { passwd_name(&passwd, ids.uid) } else { Some(user.to_string()) };
    if name.is_none() && group.is_empty() {
        ids.gid = 0;
    }
    if spec.is_empty() && ids.home.is_none() {
        ids.home = Some("/root".into());
    }
    ids.groups = vec![ids.gid];
    if let Some(name) = name.filter(|_| group.is_empty()) {
        for fields in read_db(view, "/etc/group").lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            let listed = fields.get(3).is_some_and(|members| members.split(',').any(|m| m.trim() == name));
            if let Some(gid) = fields.get(2).and_then(|g| g.parse::<u32>().ok()).filter(|g| listed && !ids.groups.contains(g)) {
                ids.groups.push(gid);
            }
        }
    }
    Ok(ids)
}

/// The name /etc/passwd gives `uid`.
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    let uid = uid.to_string();
    passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.get(2) == Some(&uid.as_str())).map(|f| f[0].to_string())
}
