//! COPY's and RUN's execution semantics against BuildKit's: destinations
//! through symlinks, owners and modes of existing and created directories,
//! owners kept from other stages, empty wildcards, a user's supplementary
//! groups and the options of `RUN --mount`. Each test names the behaviour or
//! the BuildKit test (frontend/dockerfile/*_test.go) it comes from.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{TestStore, context, require_root};

/// (uid, gid, permission bits) of `path`, not following a symlink.
fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Builds `dockerfile` over `files` as `tag` and returns the unpacked rootfs (kept alive by the returned dir).
fn build_and_unpack(store: &TestStore, files: &[(&str, &str)], dockerfile: &str, tag: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut all = files.to_vec();
    all.push(("Dockerfile", dockerfile));
    let ctx = context(&all);
    store.build(ctx.path(), &["-t", tag]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack(&format!("{tag}:latest"), unpacked.path());
    (unpacked, root)
}

// ---- destinations through symlinks ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn copy_through_a_symlinked_destination_writes_into_its_target() {
    if !require_root("copy_through_a_symlinked_destination_writes_into_its_target") {
        return;
    }
    let store = TestStore::with_busybox();
    // /app is an absolute link, /srv/deep/up climbs far above the root (it resolves
    // to the root), /conf is a link to a file: each is followed inside the image.
    let dockerfile = "FROM busybox:latest\n\
         RUN mkdir -p /srv/app /srv/deep && ln -s /srv/app /app && ln -s ../../../../.. /srv/deep/up \
             && echo old > /srv/app/conf.txt && ln -s srv/app/conf.txt /conf\n\
         COPY f /app/\n\
         COPY f /srv/deep/up/landed/\n\
         COPY g /conf\n\
         RUN test -L /app && test -f /srv/app/f && test -f /landed/f && test -L /conf && [ \"$(cat /srv/app/conf.txt)\" = g ]\n";
    let (_keep, root) = build_and_unpack(&store, &[("f", "f"), ("g", "g")], dockerfile, "through-links");
    assert!(root.join("app").is_symlink(), "/app stays a symlink");
    assert_eq!(read(&root.join("srv/app/f")), "f");
    assert!(root.join("srv/deep/up").is_symlink());
    assert_eq!(read(&root.join("landed/f")), "f", "a link above the root resolves against the root");
    assert!(root.join("conf").is_symlink(), "/conf stays a symlink");
    assert_eq!(read(&root.join("srv/app/conf.txt")), "g");
}

/// BuildKit's testSymlinkDestination: a layer's relative link out of a FROM scratch image.
#[test]
fn symlink_destination() {
    let store = TestStore::empty();
    let ctx = context(&[("foo", "content0"), ("Dockerfile", "FROM scratch\nADD t.tar /\nCOPY foo /symlink/\n")]);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    tar.append_link(&mut header, "symlink", "../tmp/symlink-target").expect("tar symlink");
    std::fs::write(ctx.path().join("t.tar"), tar.into_inner().expect("finish tar")).expect("write t.tar");
    store.build(ctx.path(), &["-t", "symdest"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("symdest:latest", unpacked.path());
    assert!(root.join("symlink").is_symlink());
    assert_eq!(read(&root.join("tmp/symlink-target/foo")), "content0");
}

// ---- owners and modes of directories ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn copy_into_an_existing_directory_keeps_its_owner_and_mode() {
    if !require_root("copy_into_an_existing_directory_keeps_its_owner_and_mode") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\n\
         RUN mkdir /d && chown 1000:1000 /d && chmod 700 /d \
             && mkdir -p /home/app/.ssh && chown -R 1000:50 /home/app && chmod 750 /home/app && chmod 700 /home/app/.ssh\n\
         COPY f /d/\n\
         COPY f /home/app/.ssh/config\n\
         RUN [ \"$(stat -c '%u:%g %a' /d)\" = '1000:1000 700' ] && [ \"$(stat -c '%u:%g %a' /home/app/.ssh)\" = '1000:50 700' ] \
             && [ \"$(stat -c '%u:%g %a' /home/app)\" = '1000:50 750' ]\n";
    let (_keep, root) = build_and_unpack(&store, &[("f", "f")], dockerfile, "keepdir");
    assert_eq!(owner_mode(&root.join("d")), (1000, 1000, 0o700));
    assert_eq!(owner_mode(&root.join("d/f")), (0, 0, 0o644));
    assert_eq!(owner_mode(&root.join("home/app")), (1000, 50, 0o750));
    assert_eq!(owner_mode(&root.join("home/app/.ssh")), (1000, 50, 0o700));
}

/// BuildKit's testCopyChownExistingDir: owners kept from a stage, an existing
/// destination untouched, a created one root's (or --chown's).
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn copy_chown_existing_dir() {
    if !require_root("copy_chown_existing_dir") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest AS source\n\
         RUN touch /file && chown 100:200 /file && mkdir -p /dir/subdir && touch /dir/subdir/nestedfile \
             && chown 100:200 /dir && chown 101:201 /dir/subdir && chown 102:202 /dir/subdir/nestedfile\n\
         FROM busybox:latest AS base\n\
         RUN mkdir -p /existingdir/existingsubdir && touch /existingdir/existingfile \
             && chown 500:600 /existingdir && chown 501:601 /existingdir/existingsubdir /existingdir/existingfile\n\
         FROM base AS plain\n\
         COPY --from=source /file .\n\
         COPY --from=source /dir /dir\n\
         COPY --from=source /dir/. /existingdir\n\
         FROM base AS chowned\n\
         COPY --from=source --chown=300:400 /file .\n\
         COPY --from=source --chown=300:400 /dir /dir\n\
         COPY --from=source --chown=300:400 /dir/. /existingdir\n";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let ids = |root: &Path, path: &str| {
        let (uid, gid, _) = owner_mode(&root.join(path));
        format!("{uid}:{gid}")
    };
    store.build(ctx.path(), &["--target", "plain", "-t", "plain"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("plain:latest", unpacked.path());
    for (path, expected) in [
        ("file", "100:200"),
        ("dir", "0:0"),
        ("dir/subdir", "101:201"),
        ("dir/subdir/nestedfile", "102:202"),
        ("existingdir", "500:600"),
        ("existingdir/existingsubdir", "501:601"),
        ("existingdir/existingfile", "501:601"),
        ("existingdir/subdir", "101:201"),
        ("existingdir/subdir/nestedfile", "102:202"),
    ] {
        assert_eq!(ids(&root, path), expected, "/{path} without --chown");
    }
    store.build(ctx.path(), &["--target", "chowned", "-t", "chowned"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("chowned:latest", unpacked.path());
    for (path, expected) in [
        ("file", "300:400"),
        ("dir", "300:400"),
        ("dir/subdir", "300:400"),
        ("dir/subdir/nestedfile", "300:400"),
        ("existingdir", "500:600"),
        ("existingdir/existingsubdir", "501:601"),
        ("existingdir/existingfile", "501:601"),
        ("existingdir/subdir", "300:400"),
        ("existingdir/subdir/nestedfile", "300:400"),
    ] {
        assert_eq!(ids(&root, path), expected, "/{path} with --chown=300:400");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn an_owner_changed_in_the_source_stage_reaches_the_copy() {
    if !require_root("an_owner_changed_in_the_source_stage_reaches_the_copy") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest AS source\nARG OWNER\nRUN echo data > /f && chown $OWNER /f\n\
         FROM busybox:latest\nCOPY --from=source /f /f\n",
    )]);
    for owner in ["7:8", "9:10"] {
        store.build(ctx.path(), &["-t", "owned", "--build-arg", &format!("OWNER={owner}")]);
        let unpacked = tempfile::tempdir().expect("temp dir");
        let root = store.unpack("owned:latest", unpacked.path());
        let (uid, gid, _) = owner_mode(&root.join("f"));
        assert_eq!(format!("{uid}:{gid}"), owner);
    }
}

#[test]
fn files_from_the_context_belong_to_root_unless_chown() {
    let store = TestStore::with_busybox();
    let ctx = context(&[("tree/f", "f"), ("Dockerfile", "FROM busybox:latest\nCOPY tree /plain/\nCOPY --chown=7:8 tree /owned/\n")]);
    // Owned by someone other than root in the context (as root; else the caller owns it).
    if require_root("files_from_the_context_belong_to_root_unless_chown (owner in the context)") {
        std::os::unix::fs::lchown(ctx.path().join("tree/f"), Some(4321), Some(4322)).expect("chown context file");
    }
    store.build(ctx.path(), &["-t", "ctxowners"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("ctxowners:latest", unpacked.path());
    let ids = |path: &str| {
        let (uid, gid, _) = owner_mode(&root.join(path));
        (uid, gid)
    };
    assert_eq!(ids("plain/f"), (0, 0));
    assert_eq!(ids("owned/f"), (7, 8));
}

/// BuildKit's testCopyChmod (parents): missing parents take --chmod's mode; existing ones keep theirs.
#[test]
fn copy_chmod_creates_parents_with_its_mode() {
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\n\
         COPY --chmod=777 foo /parent/foo\n\
         COPY --chmod=770 foo /parent/sub/foo\n\
         COPY foo /plain/new/foo\n";
    let (_keep, root) = build_and_unpack(&store, &[("foo", "foo-contents")], dockerfile, "chmodparents");
    assert_eq!(owner_mode(&root.join("parent")).2, 0o777);
    assert_eq!(owner_mode(&root.join("parent/sub")).2, 0o770);
    assert_eq!(owner_mode(&root.join("parent/sub/foo")).2, 0o770);
    assert_eq!(owner_mode(&root.join("plain")), (0, 0, 0o755));
    assert_eq!(owner_mode(&root.join("plain/new")), (0, 0, 0o755));
}

/// BuildKit's testCopyChownCreateDest: a destination COPY makes belongs to --chown's user.
#[test]
fn copy_chown_create_dest() {
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\n\
         ARG group\n\
         ENV owner=app\n\
         COPY --chown=app:app . /dest\n\
         COPY --chown=${owner}:${group} . /dest01\n\
         COPY --chown=app:app f /made/parents/\n";
    let ctx = context(&[("f", "f"), ("Dockerfile", dockerfile)]);
    store.build(ctx.path(), &["-t", "createdest", "--build-arg", "group=staff"]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("createdest:latest", unpacked.path());
    assert_eq!(owner_mode(&root.join("dest")), (1000, 1000, 0o755));
    assert_eq!(owner_mode(&root.join("dest01")), (1000, 50, 0o755));
    assert_eq!(owner_mode(&root.join("made")), (1000, 1000, 0o755));
    assert_eq!(owner_mode(&root.join("made/parents")), (1000, 1000, 0o755));
}

// ---- wildcards ----

/// BuildKit's testEmptyWildcard: a wildcard matching nothing, beside a source that exists.
#[test]
fn empty_wildcard() {
    let store = TestStore::empty();
    let (_keep, root) = build_and_unpack(&store, &[("foo", "contents0")], "FROM scratch\nCOPY foo nomatch* /\n", "emptywild");
    assert_eq!(read(&root.join("foo")), "contents0");
}

// ---- users and groups ----

/// BuildKit's testUser and testUserAdditionalGids: the process gets the
/// primary group, then (when USER names no group) every group /etc/group lists
/// the user in; a uid /etc/passwd lacks has group 0.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn user_additional_gids() {
    if !require_root("user_additional_gids") {
        return;
    }
    let store = TestStore::with_busybox();
    let cases = [
        ("", "0:0:0 10"),
        ("root", "0:0:0 10"),
        ("app", "1000:1000:1000 50 1002"),
        ("1000", "1000:1000:1000 50 1002"),
        ("app:app", "1000:1000:1000"),
        ("app:staff", "1000:50:50"),
        ("1000:1002", "1000:1002:1002"),
        ("daemon", "1:1:1 1002"),
        ("1234", "1234:0:0"),
        ("1234:1234", "1234:1234:1234"),
    ];
    let mut dockerfile = String::from(
        "FROM busybox:latest\nRUN echo 'wheel:x:10:root' >> /etc/group && echo 'builders:x:1002:app,daemon' >> /etc/group \
         && mkdir -m 777 /out && touch /out/ids && chmod 666 /out/ids\n",
    );
    for (user, _) in &cases {
        if !user.is_empty() {
            dockerfile.push_str(&format!("USER {user}\n"));
        }
        dockerfile.push_str(&format!("RUN echo \"{user}=$(id -u):$(id -g):$(id -G)\" >> /out/ids\n"));
    }
    let (_keep, root) = build_and_unpack(&store, &[], &dockerfile, "groups");
    let expected: String = cases.iter().map(|(user, ids)| format!("{user}={ids}\n")).collect();
    assert_eq!(read(&root.join("out/ids")), expected);
}

// ---- RUN --mount options ----

/// BuildKit's testCacheMountUser, and the options in the step's key.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn cache_mount_user() {
    if !require_root("cache_mount_user") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = |mode: &str| {
        format!(
            "FROM busybox:latest\nRUN --mount=type=cache,target=/mycache,uid=1001,gid=1002,mode={mode} stat -c '%u %g %a' /mycache > /seen\n"
        )
    };
    let (_keep, root) = build_and_unpack(&store, &[], &dockerfile("0751"), "cacheuser");
    assert_eq!(read(&root.join("seen")), "1001 1002 751\n");
    // Another mode is another step: it runs again rather than reusing the first result.
    let (_keep, root) = build_and_unpack(&store, &[], &dockerfile("0700"), "cacheuser");
    assert_eq!(read(&root.join("seen")), "1001 1002 700\n");
}

/// BuildKit's testMountTmpfsSize.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn mount_tmpfs_size() {
    if !require_root("mount_tmpfs_size") {
        return;
    }
    let store = TestStore::with_busybox();
    let dockerfile = "FROM busybox:latest\nRUN --mount=type=tmpfs,target=/dev/shm,size=128m grep ' /dev/shm ' /proc/mounts > /tmpfssize\n";
    let (_keep, root) = build_and_unpack(&store, &[], dockerfile, "tmpfssize");
    let line = read(&root.join("tmpfssize"));
    assert!(line.contains("size=131072k"), "{line}");
}

/// A secret is a 0400 file of root's unless mode, uid and gid say otherwise.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn secret_mount_mode_and_owner() {
    if !require_root("secret_mount_mode_and_owner") {
        return;
    }
    let store = TestStore::with_busybox();
    let (_secret, spec) = crate::secret_file("token-value");
    let dockerfile = "FROM busybox:latest\n\
         RUN --mount=type=secret,id=tok stat -c '%u %g %a' /run/secrets/tok > /default && mkdir -m 777 /out\n\
         USER app\n\
         RUN --mount=type=secret,id=tok,target=/home/app/tok,mode=0440,uid=1000,gid=50 \
             stat -c '%u %g %a' /home/app/tok > /out/given && cat /home/app/tok >> /out/given\n";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    store.build(ctx.path(), &["-t", "secretmode", "--secret", &spec]);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack("secretmode:latest", unpacked.path());
    assert_eq!(read(&root.join("default")), "0 0 400\n");
    assert_eq!(read(&root.join("out/given")), "1000 50 440\ntoken-value");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn a_missing_secret_fails_only_when_required() {
    if !require_root("a_missing_secret_fails_only_when_required") {
        return;
    }
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n")]);
    store.build(ctx.path(), &["-t", "optional-secret"]);
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=secret,id=absent,required=true true\n")]);
    let out = store.strata().args(["build", "--progress", "plain"]).arg(ctx.path()).output().expect("run strata build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("\"absent\"") && stderr.contains("Dockerfile:2"), "the error names the secret and the step:\n{stderr}");
}

/// Two stages built at once, each with one RUN using cache `data` with
/// `sharing` (and cache `sig`, shared, to see each other): each step marks
/// itself in both, waits (at most 5 s) for the other's mark in `sig`, and
/// records whether it met the other (seen started, and not done before this
/// step began) and the marks its `data` folder holds.
fn concurrent_cache_steps(sharing: &str) -> (String, String) {
    let store = TestStore::with_busybox();
    let step = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=data,target=/data,sharing={sharing} --mount=type=cache,id=sig,target=/sig \
             if [ -e /sig/{other}-done ]; then late=1; else late=0; fi; touch /data/{me} /sig/{me}; \
             i=0; while [ ! -e /sig/{other} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
             if [ -e /sig/{other} ] && [ $late = 0 ]; then echo met; else echo alone; fi > /seen; \
             ls /data >> /seen && rm /data/{me} && touch /sig/{me}-done\n"
        )
    };
    let dockerfile = format!(
        "FROM busybox:latest AS a\n{}FROM busybox:latest AS b\n{}FROM busybox:latest\nCOPY --from=a /seen /a\nCOPY --from=b /seen /b\n",
        step("a", "b"),
        step("b", "a")
    );
    let (_keep, root) = build_and_unpack_with(&store, &dockerfile, "sharing", &["--jobs", "2"]);
    (read(&root.join("a")), read(&root.join("b")))
}

fn build_and_unpack_with(store: &TestStore, dockerfile: &str, tag: &str, extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let mut args = vec!["-t", tag];
    args.extend_from_slice(extra);
    store.build(ctx.path(), &args);
    let unpacked = tempfile::tempdir().expect("temp dir");
    let root = store.unpack(&format!("{tag}:latest"), unpacked.path());
    (unpacked, root)
}

/// sharing=shared: two steps at once use one folder (which proves they ran at once).
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn cache_mount_shared_steps_run_together_in_one_folder() {
    if !require_root("cache_mount_shared_steps_run_together_in_one_folder") {
        return;
    }
    let (a, b) = concurrent_cache_steps("shared");
    assert!(a.starts_with("met\n") && b.starts_with("met\n"), "a: {a:?}, b: {b:?}");
    assert!(a.contains("a\nb\n") || b.contains("a\nb\n"), "one folder holds both marks: a: {a:?}, b: {b:?}");
}

/// sharing=locked: one step at a time holds the folder.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn cache_mount_locked_steps_take_turns() {
    if !require_root("cache_mount_locked_steps_take_turns") {
        return;
    }
    let (a, b) = concurrent_cache_steps("locked");
    assert_eq!((a.as_str(), b.as_str()), ("alone\na\n", "alone\nb\n"));
}

/// sharing=private: steps running at once each get a folder of their own.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn cache_mount_private_steps_get_their_own_folder() {
    if !require_root("cache_mount_private_steps_get_their_own_folder") {
        return;
    }
    let (a, b) = concurrent_cache_steps("private");
    assert_eq!((a.as_str(), b.as_str()), ("met\na\n", "met\nb\n"));
}

/// A spec has no property for these options yet: converting refuses rather than drop them.
#[test]
fn mount_options_a_spec_cannot_hold_are_refused_by_convert() {
    let store = TestStore::empty();
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=tmpfs,target=/t,size=1m true\n")]);
    let out = store.strata().args(["convert", "--to", "kdl"]).arg(ctx.path().join("Dockerfile")).output().expect("run strata convert");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("size"), "{stderr}");
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nRUN --mount=type=tmpfs,target=/t true\n")]);
    store.strata().args(["convert", "--to", "kdl"]).arg(ctx.path().join("Dockerfile")).assert().success();
}
