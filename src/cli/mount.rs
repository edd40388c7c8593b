//! The mount verbs: mount, umount, diff.

use super::failed;
use std::path::Path;
use std::process::ExitCode;

use super::args::MountArgs;
use strata::mount::{self, Change, View};

pub fn mount(args: &MountArgs) -> miette::Result<ExitCode> {
    let view = args.layer.map_or(View::Merged, View::Layer);
    if args.foreground {
        let store = super::open_store()?;
        mount::serve(&store, &args.image, &args.dir, view, args.notify).map_err(|e| failed(e, format!("mount {}", args.image)))?;
    } else {
        let store = super::open_store()?;
        mount::mount_background(&store, &args.image, &args.dir, args.layer).map_err(|e| failed(e, format!("mount {}", args.image)))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn umount(dir: &Path) -> miette::Result<ExitCode> {
    mount::umount(dir).map_err(miette::Report::from_err)?;
    Ok(ExitCode::SUCCESS)
}

pub fn diff(store: &strata::store::Store, old: &str, new: &str) -> miette::Result<ExitCode> {
    for change in mount::diff(store, old, new).map_err(|e| failed(e, format!("diff {old} {new}")))? {
        let (mark, path) = match &change {
            Change::Added(p) => ('A', p),
            Change::Changed(p) => ('C', p),
            Change::Removed(p) => ('D', p),
        };
        println!("{mark} {}", mount::display_path(path));
    }
    Ok(ExitCode::SUCCESS)
}
