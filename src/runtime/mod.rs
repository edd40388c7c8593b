//! The runtime of `strata run`, `commit`, `ps` and `rm`: an image's command
//! in the sandbox RUN uses (the same launcher), with its changes kept under
//! `strata/runs/NAME/` so that `commit` can turn them into a layer, as
//! `docker commit` does. It stands on `exec`; nothing below knows it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::exec::launch::{Changes, Launch, attempt_dir, changes_to_layer};
use crate::exec::{ExecError, ImageState, sandbox, timestamp, users};
use crate::oci::{Descriptor, Digest, ImageRef};
use crate::store::Store;

/// What `strata run` was asked to do.
#[derive(Debug, Default)]
pub struct RunRequest {
    pub image: String,
    pub command: Vec<String>,
    /// `-e`/`--env-file` values, applied over the image's ENV.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub name: Option<String>,
    pub remove: bool,
    pub interactive: bool,
    /// `--privileged`: no capability limits, seccomp filter, /proc masking or nodev.
    pub privileged: bool,
}

/// A run's record, `strata/runs/NAME/run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub image: String,
    pub image_manifest: Digest,
    pub command: Vec<String>,
    pub created: String,
    pub exit_code: Option<i32>,
    /// Image paths created only as mount points.
    pub mount_points: Vec<String>,
    /// The run used a copied root instead of an overlay (see `STRATA_SNAPSHOTTER`).
    #[serde(default)]
    pub copied_root: bool,
    #[serde(default)]
    pub dir_inodes: crate::exec::copydiff::DirInodes,
}

fn runs_dir(store: &Store) -> PathBuf {
    store.root().join("strata/runs")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Runs an image's command; returns its exit code.
pub fn run(store: &Store, req: &RunRequest) -> Result<i32, ExecError> {
    let image = store.resolve(&req.image)?;
    let state = ImageState::from_image(&image);
    let config = &image.config.config;
    let name = match &req.name {
        Some(name) if !valid_name(name) => {
            return Err(ExecError::Invalid(format!("invalid run name {name:?}: use letters, digits, '_', '.' and '-'")));
        }
        Some(name) => name.clone(),
        None => format!("run-{}", &Digest::of(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes()).hex()[..12]),
    };
    let dir = runs_dir(store).join(&name);
    if dir.exists() {
        return Err(ExecError::Invalid(format!("a run named {name:?} already exists; remove it with `strata rm {name}`")));
    }
    let mut argv = config.entrypoint.clone().unwrap_or_default();
    if req.command.is_empty() {
        argv.extend(config.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(req.command.iter().cloned());
    }
    if argv.is_empty() {
        return Err(ExecError::Invalid(format!("image {} has no ENTRYPOINT or CMD; give a command", req.image)));
    }
    let mut env = config.env.clone();
    for (k, v) in &req.env {
        let entry = format!("{k}={v}");
        match env.iter_mut().find(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str())) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    let cwd = req.workdir.clone().or_else(|| config.working_dir.clone()).unwrap_or_else(|| "/".into());
    let view = state.view(store)?;
    let user = req.user.clone().or_else(|| config.user.clone()).unwrap_or_default();
    let ids = users::resolve_user_or_root(&view, &user)?;
    fs::create_dir_all(&dir).map_err(|e| ExecError::io("create", &dir, e))?;
    let launch = Launch {
        view: &view,
        argv: argv.clone(),
        env,
        cwd,
        ids,
        network_none: false,
        mounts: Vec::new(),
        volatile_upper: false,
        confined: !req.privileged,
    };
    let mut record = RunRecord {
        name: name.clone(),
        image: req.image.clone(),
        image_manifest: image.manifest_descriptor.digest.clone(),
        command: argv,
        created: timestamp(None),
        exit_code: None,
        mount_points: Vec::new(),
        copied_root: false,
        dir_inodes: Default::default(),
    };
    let write_record = |record: &RunRecord| {
        let path = dir.join("run.json");
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| ExecError::Invalid(format!("encode {}: {e}", path.display())))?;
        fs::write(&path, bytes).map_err(|e| ExecError::io("write", &path, e))
    };
    let stdin = if req.interactive { Stdio::inherit() } else { Stdio::null() };
    let mut stdin = Some(stdin);
    let launched = launch.run(&dir, &mut |mut command, prepared| {
        // Recorded before the command starts, so `ps -a` shows it while it runs.
        record.mount_points.clone_from(&prepared.mount_points);
        record.copied_root = prepared.spec.copied_root;
        record.dir_inodes.clone_from(&prepared.dir_inodes);
        write_record(&record)?;
        command.stdin(stdin.take().unwrap_or_else(Stdio::null));
        let status = sandbox::start(command, &prepared.spec, &crate::exec::idmap::IdMap::for_caller()).and_then(|mut child| child.wait());
        let status = status.map_err(|e| ExecError::io("start the sandbox in", &dir, e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    });
    let code = match launched {
        Ok(launched) => launched.code,
        Err(e) => {
            let _ = remove_tree(&dir);
            return Err(e);
        }
    };
    if req.remove {
        remove_tree(&dir).map_err(|e| ExecError::io("remove", &dir, e))?;
    } else {
        record.exit_code = Some(code);
        write_record(&record)?;
    }
    Ok(code)
}

/// Every kept run, oldest first.
pub fn list(store: &Store) -> Result<Vec<RunRecord>, ExecError> {
    let dir = runs_dir(store);
    let mut records = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| ExecError::io("list", &dir, e))?.flatten() {
        if let Ok(bytes) = fs::read(entry.path().join("run.json"))
            && let Ok(record) = serde_json::from_slice::<RunRecord>(&bytes)
        {
            records.push(record);
        }
    }
    records.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(records)
}

/// The layers (diff_ids) of the images kept runs stand on: their snapshots may be mounted.
pub fn layers_in_use(store: &Store) -> Result<std::collections::HashSet<Digest>, ExecError> {
    let mut layers = std::collections::HashSet::new();
    for run in list(store)? {
        let manifest: crate::oci::Manifest = store.read_json(&run.image_manifest, "manifest")?;
        let config: crate::oci::ImageConfig = store.read_json(&manifest.config.digest, "image config")?;
        layers.extend(config.rootfs.diff_ids);
    }
    Ok(layers)
}

fn record(store: &Store, name: &str) -> Result<RunRecord, ExecError> {
    let path = runs_dir(store).join(name).join("run.json");
    let bytes = fs::read(&path).map_err(|_| ExecError::Invalid(format!("no run named {name:?} (see `strata ps -a`)")))?;
    serde_json::from_slice(&bytes).map_err(|e| ExecError::Invalid(format!("read {}: {e}", path.display())))
}

/// Removes a kept run.
pub fn remove(store: &Store, name: &str) -> Result<(), ExecError> {
    record(store, name)?;
    let dir = runs_dir(store).join(name);
    remove_tree(&dir).map_err(|e| ExecError::io("remove", &dir, e))
}

/// Removes a run's folder. Rootless, overlayfs leaves its work folder mode
/// 000 (owned by the caller), which `remove_dir_all` cannot enter: open such
/// folders up and try again.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Each folder is opened as it is reached, before the walk reads it.
            let opened = walkdir::WalkDir::new(dir).into_iter().filter_entry(|e| {
                if e.file_type().is_dir() && e.metadata().is_ok_and(|m| m.permissions().mode() & 0o700 != 0o700) {
                    let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
                }
                true
            });
            opened.for_each(drop);
            fs::remove_dir_all(dir)
        }
        other => other,
    }
}

/// Turns a run's changes into a new layer over its image and tags the result.
pub fn commit(store: &Store, name: &str, tag: Option<&ImageRef>) -> Result<(Descriptor, Digest), ExecError> {
    let record = record(store, name)?;
    let descriptor = store.entries()?.into_iter().map(|(_, d)| d).find(|d| d.digest == record.image_manifest).unwrap_or(Descriptor {
        media_type: crate::oci::MEDIA_MANIFEST.into(),
        digest: record.image_manifest.clone(),
        size: store.read_blob(&record.image_manifest)?.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    });
    let image = store.load_image(None, descriptor)?;
    let mut state = ImageState::from_image(&image);
    let view = state.view(store)?;
    let attempt = attempt_dir(&runs_dir(store).join(name), record.copied_root);
    let changes =
        Changes { dir: &attempt, copied_root: record.copied_root, mount_points: &record.mount_points, dir_inodes: &record.dir_inodes };
    let layer = changes_to_layer(store, &view, &changes, crate::exec::source_date_epoch())?;
    state.push_history(record.command.join(" "), timestamp(None), Some(layer));
    if let Some(last) = state.config.history.last_mut() {
        last.comment = Some(format!("strata commit {name}"));
    }
    let (manifest, id) = state.write_image(store)?;
    match tag {
        Some(tag) => store.set_tag(tag, &manifest)?,
        None => store.add_untagged(&manifest)?,
    }
    Ok((manifest, id))
}
