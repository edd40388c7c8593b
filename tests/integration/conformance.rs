//! Conformance with BuildKit's Dockerfile integration tests
//! (moby/buildkit `frontend/dockerfile/dockerfile_*_test.go`): each test here
//! is named `buildkit_` + the snake case of the BuildKit test it ports, and
//! asserts what that test asserts, with our own inputs on the busybox base.
//! `tests/CONFORMANCE.md` lists every BuildKit test: ported here, covered
//! elsewhere, not applicable to a local builder (and why), or differing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{TestStore, busybox_context, context, require_root, secret_file, step_outcomes};

/// One ported case: a store holding `busybox:latest` and a build context.
struct Case {
    store: TestStore,
    ctx: tempfile::TempDir,
}

/// An image unpacked with umoci; the folder lives as long as this value.
struct Unpacked {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Unpacked {
    fn read(&self, path: &str) -> String {
        let path = self.root.join(path.trim_start_matches('/'));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn exists(&self, path: &str) -> bool {
        self.root.join(path.trim_start_matches('/')).symlink_metadata().is_ok()
    }

    fn meta(&self, path: &str) -> std::fs::Metadata {
        let path = self.root.join(path.trim_start_matches('/'));
        path.symlink_metadata().unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
    }
}

impl Case {
    /// A context of `files` (path, content) beside a store holding busybox.
    fn new(files: &[(&str, &str)]) -> Case {
        Case { store: TestStore::with_busybox(), ctx: context(files) }
    }

    fn dir(&self) -> &Path {
        self.ctx.path()
    }

    /// Writes (or replaces) one context file.
    fn write(&self, path: &str, content: &str) {
        let path = self.dir().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }

    /// A successful build of the context with `extra` flags; returns its progress (stderr).
    fn build(&self, extra: &[&str]) -> String {
        self.store.build(self.dir(), extra).1
    }

    /// A build that must fail; returns its stderr.
    fn fails(&self, extra: &[&str]) -> String {
        let out =
            self.store.strata().args(["build", "--progress", "plain"]).args(extra).arg(self.dir()).output().expect("run strata build");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "build of {} succeeded but should fail\nstderr:\n{stderr}", self.dir().display());
        stderr
    }

    /// The `Config` and history of `image` as `strata image inspect` prints them.
    fn inspect(&self, image: &str) -> serde_json::Value {
        let text = self.store.ok(&["image", "inspect", image]);
        serde_json::from_str::<serde_json::Value>(&text).expect("inspect prints JSON")[0].clone()
    }

    /// The files of `image`, a tag of this store (`:latest` when it names none).
    fn unpack(&self, image: &str) -> Unpacked {
        let dir = tempfile::tempdir().expect("temp dir");
        let reference = if image.contains(':') { image.to_string() } else { format!("{image}:latest") };
        let root = self.store.unpack(&reference, dir.path());
        Unpacked { _dir: dir, root }
    }
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().map(|v| v.as_str().expect("a string").to_string()).collect()).unwrap_or_default()
}

/// A tar archive of `entries` (path, content; a path ending in `/` is a folder), as written by a packer
/// that lists only what it is given: no entry for a parent it was not told about.
fn archive(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    append_entries(&mut builder, entries);
    builder.into_inner().expect("finish tar")
}

/// Appends `archive`'s entries to a tar still being written.
fn append_entries(builder: &mut tar::Builder<Vec<u8>>, entries: &[(&str, &str)]) {
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
        }
        builder.append_data(&mut header, path, content.as_bytes()).expect("append tar entry");
    }
}

// ---- dockerfile_add_test.go (local archives; URLs and git: add_remote.rs) ----

#[test]
fn buildkit_test_dockerfile_add_archive_with_implied_parent_dir() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nADD pack.tar.gz /\n")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &archive(&[("opt/tool/", ""), ("opt/tool/tool.conf", "conf-data")])).expect("gzip");
    std::fs::write(case.dir().join("pack.tar.gz"), gz.finish().expect("gzip")).expect("write archive");
    case.build(&["-t", "implied-parent"]);
    assert_eq!(case.unpack("implied-parent").read("opt/tool/tool.conf"), "conf-data");
}

#[test]
fn buildkit_test_dockerfile_add_archive_through_absolute_symlink() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nADD base.tar /\nADD payload.tar /\n")]);
    let mut base = tar::Builder::new(Vec::new());
    for dir in ["srv/", "opt/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        base.append_data(&mut header, dir, std::io::empty()).expect("append dir");
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    link.set_mode(0o777);
    base.append_link(&mut link, "opt/srv", "/srv").expect("append symlink");
    std::fs::write(case.dir().join("base.tar"), base.into_inner().expect("finish tar")).expect("write base.tar");

    let mut payload = tar::Builder::new(Vec::new());
    append_entries(&mut payload, &[("opt/srv/app/", ""), ("opt/srv/app/conf/", ""), ("opt/srv/app/conf/main", "main-data")]);
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    hard.set_uid(0);
    hard.set_gid(0);
    hard.set_mtime(0);
    hard.set_mode(0o644);
    payload.append_link(&mut hard, "opt/srv/app/conf/main.link", "opt/srv/app/conf/main").expect("append hard link");
    std::fs::write(case.dir().join("payload.tar"), payload.into_inner().expect("finish tar")).expect("write payload.tar");

    case.build(&["-t", "through-link"]);
    let files = case.unpack("through-link");
    assert_eq!(files.read("srv/app/conf/main"), "main-data", "extracted through the image's absolute symlink");
    assert_eq!(files.read("srv/app/conf/main.link"), "main-data");
    assert_eq!(files.meta("srv/app/conf/main").ino(), files.meta("srv/app/conf/main.link").ino(), "the hard link stays one file");
}

#[test]
fn buildkit_test_dockerfile_add_chown_archive() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nADD --chown=123:456 pack.tar /unpacked/\n")]);
    std::fs::write(case.dir().join("pack.tar"), archive(&[("entry", "entry-data")])).expect("write archive");
    case.build(&["-t", "chown-archive"]);
    let files = case.unpack("chown-archive");
    assert_eq!(files.read("unpacked/entry"), "entry-data");
    for path in ["unpacked/entry", "unpacked"] {
        let meta = files.meta(path);
        assert_eq!((meta.uid(), meta.gid()), (123, 456), "owner of {path}");
    }
}

#[test]
fn buildkit_test_dockerfile_add_archive_wildcard() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nADD *.tar /into\n")]);
    std::fs::write(case.dir().join("one.tar"), archive(&[("first", "first-data")])).expect("write archive");
    std::fs::write(case.dir().join("two.tar"), archive(&[("second", "second-data")])).expect("write archive");
    case.build(&["-t", "archive-wildcard"]);
    let files = case.unpack("archive-wildcard");
    assert_eq!(files.read("into/first"), "first-data");
    assert_eq!(files.read("into/second"), "second-data");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerfile_add_chown_expand() {
    if !require_root("buildkit_test_dockerfile_add_chown_expand") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM busybox\nARG grp\nENV uid 1000\nADD --chown=${uid}:${grp} item /\nRUN [ \"$(stat -c '%u %G' /item)\" = '1000 staff' ]\n",
        ),
        ("item", "x"),
    ]);
    case.build(&["--build-arg", "grp=staff", "-t", "add-chown-expand"]);
}

#[test]
fn buildkit_test_add_invalid_chmod() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nADD --chmod=6z4 item /\n"), ("item", "x")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("6z4") && stderr.contains("Dockerfile:2"), "{stderr}");
    case.write("Dockerfile", "FROM scratch\nADD --chmod=20000 item /\n");
    let stderr = case.fails(&[]);
    assert!(stderr.contains("20000") && stderr.contains("Dockerfile:2"), "{stderr}");
}

// ---- dockerfile_args_test.go ----

#[test]
fn buildkit_test_global_arg() {
    let case = Case::new(&[("Dockerfile", "ARG version=no-such-version\nFROM busybox:${version}\n")]);
    case.build(&["--pull=never", "--build-arg", "version=latest", "-t", "global-arg"]);
}

#[test]
fn buildkit_test_global_arg_errors() {
    let case = Case::new(&[("Dockerfile", "ARG NEEDED=${NEEDED:?\"give NEEDED\"}\nFROM busybox\n")]);
    let stderr = case.fails(&["--pull=never"]);
    assert!(stderr.contains("NEEDED: give NEEDED"), "{stderr}");
    case.build(&["--pull=never", "--build-arg", "NEEDED=here", "-t", "global-arg-errors"]);
}

#[test]
fn buildkit_test_arg_default_expansion() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nARG FIRST\nARG SECOND=${FIRST:?\"FIRST is unset\"}\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("FIRST: FIRST is unset"), "{stderr}");
    case.build(&["--build-arg", "FIRST=1", "-t", "arg-default-expansion"]);
    case.build(&["--build-arg", "SECOND=2", "-t", "arg-default-expansion"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_multi_args() {
    if !require_root("buildkit_test_multi_args") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        r#"ARG first="one two" tail=box
ARG third="$tail-three"
FROM busy$tail AS build
ARG third fourth="4 5" first
RUN echo -n "$first|$third|$fourth" > /result
FROM scratch
COPY --from=build /result .
"#,
    )]);
    case.build(&["-t", "multi-args"]);
    assert_eq!(case.unpack("multi-args").read("result"), "one two|box-three|4 5");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_quoted_meta_args() {
    if !require_root("buildkit_test_quoted_meta_args") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        r#"ARG part="box"
ARG joined="$part-joined"
FROM busy$part AS build
ARG joined
ARG outer="pre-$joined"
RUN echo -n $outer > /result
FROM scratch
COPY --from=build /result .
"#,
    )]);
    case.build(&["-t", "quoted-meta"]);
    assert_eq!(case.unpack("quoted-meta").read("result"), "pre-box-joined");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_target_stage_name_arg() {
    if !require_root("buildkit_test_target_stage_name_arg") {
        return;
    }
    let stages = r#"FROM busybox AS common
WORKDIR /names
RUN echo -n "stage=$TARGETSTAGE" > before
ARG TARGETSTAGE
RUN echo -n "stage=$TARGETSTAGE" > after

FROM scratch AS chosen
COPY --from=common /names/ /

FROM scratch
COPY --from=common /names/ /
"#;
    let case = Case::new(&[("Dockerfile", stages)]);
    case.build(&["--target", "chosen", "-t", "chosen"]);
    let files = case.unpack("chosen");
    assert_eq!(files.read("before"), "stage=", "undeclared, TARGETSTAGE is not in the environment");
    assert_eq!(files.read("after"), "stage=chosen");

    case.build(&["-t", "unnamed-last"]);
    let files = case.unpack("unnamed-last");
    assert_eq!(files.read("before"), "stage=");
    assert_eq!(files.read("after"), "stage=default", "an unnamed last stage is called default");

    case.write("Dockerfile", &format!("{stages}\nFROM scratch AS named-last\nCOPY --from=common /names/ /\n"));
    case.build(&["-t", "named-last"]);
    assert_eq!(case.unpack("named-last").read("after"), "stage=named-last");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_builtin_args() {
    if !require_root("buildkit_test_builtin_args") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        r#"FROM busybox AS build
ARG GIVEN
ARG UNSET
ARG DEFAULTED=from-default
RUN echo -n "$HTTP_PROXY|$NO_PROXY|$GIVEN|$UNSET|$DEFAULTED" > /result
FROM scratch
COPY --from=build /result /
"#,
    )]);
    let result = |args: &[&str]| {
        let mut flags = vec!["-t", "builtin"];
        for arg in args {
            flags.extend(["--build-arg", arg]);
        }
        case.build(&flags);
        case.unpack("builtin").read("result")
    };
    assert_eq!(result(&["GIVEN=g1", "HTTP_PROXY=http://proxy-one", "NO_PROXY=internal"]), "http://proxy-one|internal|g1||from-default");
    // A proxy is not part of the cache key: changing it alone reuses the step.
    assert_eq!(result(&["GIVEN=g1", "HTTP_PROXY=http://proxy-two"]), "http://proxy-one|internal|g1||from-default");
    assert_eq!(result(&["GIVEN=g2", "HTTP_PROXY=http://proxy-two"]), "http://proxy-two||g2||from-default");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_default_env_with_args() {
    if !require_root("buildkit_test_default_env_with_args") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let case = Case::new(&[
        (
            "Dockerfile",
            r#"ARG base=tinybox
FROM busy${base#tiny} AS build
ARG opt
ENV opt "opt=${opt:-fallback}"
ENV cut "${opt%%a*}"
COPY print.sh print.sh
RUN ./print.sh $opt $cut
FROM scratch
COPY --from=build /result /result
"#,
        ),
        ("print.sh", "#!/bin/sh\necho -n $opt $* > /result\n"),
    ]);
    std::fs::set_permissions(case.dir().join("print.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod print.sh");
    for (args, expected) in [
        (vec![], "opt=fallback opt=fallback opt=f"),
        (vec!["--build-arg", "opt="], "opt=fallback opt=fallback opt=f"),
        (vec!["--build-arg", "opt=overridden"], "opt=overridden opt=overridden opt=overridden"),
    ] {
        let mut flags = args.clone();
        flags.extend(["-t", "default-env-args"]);
        case.build(&flags);
        assert_eq!(case.unpack("default-env-args").read("result"), expected, "{args:?}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_empty_string_arg_in_env() {
    if !require_root("buildkit_test_empty_string_arg_in_env") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS build\nARG NOVALUE\nARG EMPTY=\nRUN env > /environment\nFROM scratch\nCOPY --from=build /environment .\n",
    )]);
    case.build(&["-t", "empty-arg"]);
    let env = case.unpack("empty-arg").read("environment");
    assert!(env.lines().any(|l| l == "EMPTY="), "an ARG with an empty default is set:\n{env}");
    assert!(!env.lines().any(|l| l.starts_with("NOVALUE=")), "an ARG with no value is not:\n{env}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_env_empty_formatting() {
    if !require_root("buildkit_test_env_empty_formatting") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nENV pct one%stwo\nRUN [ \"$pct\" = 'one%stwo' ]\n")]);
    case.build(&["-t", "env-pct"]);
}

// ---- dockerfile_cmd_test.go ----

#[test]
fn buildkit_test_cmd_shell() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCMD [\"first\"]\n")]);
    case.build(&["-t", "cmd-base"]);
    case.write("Dockerfile", "FROM cmd-base\nSHELL [\"ls\"]\nENTRYPOINT the entry point\n");
    case.build(&["--pull=never", "-t", "cmd-shell"]);
    let config = &case.inspect("cmd-shell")["Config"];
    assert!(config["Cmd"].is_null(), "ENTRYPOINT clears the base's CMD: {config}");
    assert_eq!(strings(&config["Entrypoint"]), ["ls", "the entry point"]);
}

#[test]
fn buildkit_test_default_shell_and_path() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nENTRYPOINT run this\nCOPY Dockerfile .\n")]);
    case.build(&["-t", "default-shell"]);
    let config = &case.inspect("default-shell")["Config"];
    assert_eq!(strings(&config["Entrypoint"]), ["/bin/sh", "-c", "run this"]);
    assert_eq!(strings(&config["Env"]), ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_ignore_entrypoint() {
    if !require_root("buildkit_test_ignore_entrypoint") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nENTRYPOINT [\"/no/such/program\"]\nRUN [\"true\"]\n")]);
    case.build(&["-t", "ignore-entrypoint"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_invalid_json_commands() {
    if !require_root("buildkit_test_invalid_json_commands") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nRUN [\"echo\", \"hi\"]trailing words\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("trailing words"), "{stderr}");

    case.write("Dockerfile", "FROM busybox\nENTRYPOINT []trailing words\n");
    case.build(&["-t", "bad-json"]);
    assert_eq!(strings(&case.inspect("bad-json")["Config"]["Entrypoint"]), ["/bin/sh", "-c", "[]trailing words"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerfile_invalid_command() {
    if !require_root("buildkit_test_dockerfile_invalid_command") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nRUN no-such-command-here\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("/bin/sh -c no-such-command-here"), "{stderr}");
    assert!(stderr.contains("exit code: 127"), "{stderr}");
}

#[test]
fn buildkit_test_dockerfile_invalid_instruction() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nENTRYPIONT [\"/bin/true\"]\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("unknown instruction: ENTRYPIONT"), "{stderr}");
    assert!(stderr.contains("did you mean ENTRYPOINT"), "{stderr}");
}

// ---- dockerfile_core_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerfile_dirs() {
    if !require_root("buildkit_test_dockerfile_dirs") {
        return;
    }
    let case = Case::new(&[("data", "payload")]);
    let elsewhere = context(&[(
        "build.Dockerfile",
        "FROM busybox\nCOPY data /data2\nCOPY data /\nRUN echo -n payload > data3\nRUN test -f data\nRUN cmp -s data data2\nRUN cmp -s data data3\n",
    )]);
    let file = elsewhere.path().join("build.Dockerfile");
    case.build(&["-f", file.to_str().expect("utf-8 path"), "-t", "dirs"]);
}

#[test]
fn buildkit_test_symlinked_dockerfile() {
    let case = Case::new(&[("web.Dockerfile", "FROM scratch\nENV via link\n")]);
    std::os::unix::fs::symlink("web.Dockerfile", case.dir().join("Dockerfile")).expect("symlink");
    case.build(&["-t", "symlinked"]);
    assert!(strings(&case.inspect("symlinked")["Config"]["Env"]).contains(&"via=link".to_string()));
}

#[test]
fn buildkit_test_context_change_dir_to_file() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY item /\n"), ("item/inner", "first")]);
    case.build(&["-t", "dir-to-file"]);
    std::fs::remove_dir_all(case.dir().join("item")).expect("remove dir");
    case.write("item", "second");
    case.build(&["-t", "dir-to-file"]);
    assert_eq!(case.unpack("dir-to-file").read("item"), "second");
}

#[test]
fn buildkit_test_expose_expansion() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nARG PORTS=\"8080 9090/udp\"\nEXPOSE $PORTS\nEXPOSE 7070\n")]);
    case.build(&["-t", "expose"]);
    let ports = case.inspect("expose")["Config"]["ExposedPorts"].as_object().expect("ports").keys().cloned().collect::<Vec<_>>();
    assert_eq!(ports, ["7070/tcp", "8080/tcp", "9090/udp"]);
}

#[test]
fn buildkit_test_dockerfile_lowercase() {
    let case = Case::new(&[("dockerfile", "FROM scratch\nENV from=lowercase\n")]);
    case.build(&["-t", "lowercase"]);
    assert!(strings(&case.inspect("lowercase")["Config"]["Env"]).contains(&"from=lowercase".to_string()));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_step_names() {
    if !require_root("buildkit_test_step_names") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS prep\nWORKDIR /made\nRUN echo \"made\" > made\nFROM scratch\nCOPY --from=prep --chmod=0640 /made /made\n",
    )]);
    let stderr = case.build(&["-t", "step-names"]);
    let steps = step_outcomes(&stderr).into_iter().map(|(text, _)| text).collect::<Vec<_>>();
    assert!(steps.iter().any(|s| s == "[prep 3/3] RUN echo \"made\" > made"), "{steps:#?}");
    assert!(steps.iter().any(|s| s == "[stage-1 1/1] COPY --from=prep --chmod=0640 /made /made"), "{steps:#?}");
}

#[test]
fn buildkit_test_target_mistype() {
    let case = Case::new(&[("Dockerfile", "FROM scratch AS compile\nCOPY Dockerfile /out\nFROM scratch\nCOPY --from=compile /out /\n")]);
    let stderr = case.fails(&["--target", "comiple"]);
    assert!(stderr.contains("comiple") && stderr.contains("did you mean") && stderr.contains("compile"), "{stderr}");
}

#[test]
fn buildkit_test_labels() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nLABEL in.file=from-file\n")]);
    case.build(&["--label", "on.cli=given", "-t", "labels"]);
    let labels = &case.inspect("labels")["Config"]["Labels"];
    assert_eq!(labels["in.file"], "from-file", "{labels}");
    assert_eq!(labels["on.cli"], "given", "{labels}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_excluded_files_on_copy() {
    if !require_root("buildkit_test_excluded_files_on_copy") {
        return;
    }
    let files = [
        ("dir1/file-101.png", "2"),
        ("dir1/file-102.txt", "3"),
        ("dir1/file-103.jpeg", "4"),
        ("dir2/file-201.pdf", "6"),
        ("dir2/file-202.jpeg", "7"),
        ("dir2/file-203.png", "8"),
        ("dir3/file-301.mp3", "9"),
        ("dir3/file-302.mpeg", "10"),
    ];
    let builders = [
        "COPY --exclude=*/*.png --exclude=*/*.jpeg . /1",
        "COPY --exclude=*/*.pdf --exclude=*/*.txt . /2",
        "ADD --exclude=*.mp3 dir3/ /3/",
        "COPY --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/",
        "ADD --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5",
        "ADD --exclude=* dir* /6",
    ];
    // (path in the final image, its content, or None when excluded)
    let mut expected: Vec<(String, Option<&str>)> = Vec::new();
    let kept1 = ["dir1/file-102.txt", "dir2/file-201.pdf", "dir3/file-301.mp3", "dir3/file-302.mpeg"];
    let kept2 =
        ["dir1/file-101.png", "dir1/file-103.jpeg", "dir2/file-202.jpeg", "dir2/file-203.png", "dir3/file-301.mp3", "dir3/file-302.mpeg"];
    for (path, content) in files {
        let name = path.split('/').nth(1).unwrap();
        expected.push((format!("/b1/1/{path}"), kept1.contains(&path).then_some(content)));
        expected.push((format!("/b2/2/{path}"), kept2.contains(&path).then_some(content)));
        if path.starts_with("dir3/") {
            expected.push((format!("/b3/3/{name}"), (name == "file-302.mpeg").then_some(content)));
        }
        expected.push((format!("/b4/4/{name}"), (name == "file-302.mpeg").then_some(content)));
        expected.push((format!("/b5/5/{name}"), (name == "file-102.txt").then_some(content)));
    }
    let mut dockerfile = String::new();
    for (i, copy) in builders.iter().enumerate() {
        dockerfile += &format!("FROM scratch AS builder{}\n{copy}\n", i + 1);
    }
    dockerfile += "FROM busybox\n";
    for i in 1..=builders.len() {
        dockerfile += &format!("COPY --from=builder{i} / /b{i}/\n");
    }
    for (path, content) in &expected {
        dockerfile += &match content {
            Some(content) => format!("RUN [ \"$(cat {path})\" = {content} ]\n"),
            None => format!("RUN [ ! -e {path} ]\n"),
        };
    }
    dockerfile += "RUN [ -d /b6/6 ] && [ -z \"$(ls -A /b6/6)\" ]\n";
    let mut context_files = vec![("Dockerfile", dockerfile.as_str())];
    context_files.extend(files);
    let case = Case::new(&context_files);
    case.build(&[]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_ssh_socket_params() {
    if !require_root("buildkit_test_ssh_socket_params") {
        return;
    }
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("key");
    let made = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output();
    let Ok(made) = made else {
        eprintln!("skipping: ssh-keygen is not installed (apt-get install openssh-client)");
        return;
    };
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let dockerfile = "FROM busybox\n\
        RUN --mount=type=ssh,mode=741,uid=100,gid=102 [ \"$(stat -c \"%u %g %f\" $SSH_AUTH_SOCK)\" = \"100 102 c1e1\" ]\n\
        RUN --mount=type=ssh [ \"$SSH_AUTH_SOCK\" = /run/buildkit/ssh_agent.0 ] && [ -S /run/buildkit/ssh_agent.0 ]\n\
        RUN --mount=type=ssh,id=other,target=/agent [ ! -e /agent ] && [ -z \"$SSH_AUTH_SOCK\" ]\n";
    let case = Case::new(&[("Dockerfile", dockerfile)]);
    case.build(&["--ssh", &format!("default={}", key.display())]);
    // A required agent that was not given fails the step, naming it.
    let required = Case::new(&[("Dockerfile", "FROM busybox\nRUN --mount=type=ssh,id=deploy,required true\n")]);
    let stderr = required.fails(&[]);
    assert!(stderr.contains("ssh agent \"deploy\" is required"), "{stderr}");
}

/// BuildKit's test runs Alpine's `ssh` against github.com; here the host's
/// `ssh-add` (with the libraries `ldd` names, bound from the context) asks
/// the forwarded agent five times. An agent started with `-d` logs the slot
/// of each connection. If the forward kept connections open, the slots would
/// climb (1, 2, 3, …); closed, each request comes on slot 1, or on slot 2
/// when it arrives while the agent is still closing the one before (BuildKit
/// asserts slot 1 alone, over ssh's slower round trips; here that race shows
/// on a loaded machine).
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_ssh_file_descriptors_closed() {
    if !require_root("buildkit_test_ssh_file_descriptors_closed") {
        return;
    }
    let Some((ssh_add, ldd)) =
        which("ssh-add").ok().and_then(|path| Some((path.clone(), std::process::Command::new("ldd").arg(path).output().ok()?)))
    else {
        eprintln!("skipping: ssh-add or ldd is missing (apt-get install openssh-client)");
        return;
    };
    let dockerfile = "FROM busybox\n\
        RUN --mount=type=bind,target=/sshlib --mount=type=ssh \\\n\
        for i in 1 2 3 4 5; do /sshlib/ld.so --library-path /sshlib /sshlib/ssh-add -l; done; exit 0\n";
    let case = Case::new(&[("Dockerfile", dockerfile)]);
    // The binary, its libraries and its loader (glibc's), side by side in the context.
    let listed = String::from_utf8_lossy(&ldd.stdout).into_owned();
    if !listed.contains("ld-linux") {
        eprintln!("skipping buildkit_test_ssh_file_descriptors_closed: ssh-add has no glibc loader to bring along");
        return;
    }
    for line in listed.lines() {
        let Some(path) = line.split_whitespace().find(|word| word.starts_with('/')) else { continue };
        let name = if line.contains("ld-linux") { "ld.so".to_string() } else { path.rsplit('/').next().expect("file name").to_string() };
        std::fs::copy(path, case.dir().join(name)).expect("copy a library into the context");
    }
    std::fs::copy(&ssh_add, case.dir().join("ssh-add")).expect("copy ssh-add");
    let sockets = tempfile::tempdir().expect("temp dir");
    let socket = sockets.path().join("agent.sock");
    let log = sockets.path().join("agent.log");
    /// Stops the agent however the test ends.
    struct Agent(std::process::Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent = Agent(
        std::process::Command::new("ssh-agent")
            .arg("-d")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the agent's log"))
            .spawn()
            .expect("start ssh-agent"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ssh = format!("default={}", socket.display());
    let built =
        case.store.strata().args(["build", "--progress", "plain", "--ssh", &ssh]).arg(case.dir()).output().expect("run strata build");
    drop(agent);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let logged = std::fs::read_to_string(&log).expect("the agent's log");
    let slots: Vec<&str> = logged.lines().filter_map(|line| line.split("process_message: socket ").nth(1)?.split(' ').next()).collect();
    assert_eq!(slots.len(), 5, "five requests reached the agent:\n{logged}");
    assert!(slots.iter().all(|slot| ["1", "2"].contains(slot)), "no connection was left open: {slots:?}\n{logged}");
}

/// The path of `program` on PATH.
fn which(program: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file()))
        .ok_or_else(|| format!("{program} is not on PATH"))
}

/// An echo server on `address` (port 0: any): each connection gets "foo".
/// Returns its port.
fn echo_server(address: std::net::IpAddr) -> u16 {
    let listener = std::net::TcpListener::bind((address, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &stream, b"foo\n");
        }
    });
    port
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_global_network() {
    if !require_root("buildkit_test_run_global_network") {
        return;
    }
    let port = echo_server(std::net::Ipv4Addr::LOCALHOST.into());
    let dockerfile = format!("FROM busybox\nRUN nc 127.0.0.1 {port} | grep foo\nRUN --network=none ! nc 127.0.0.1 {port}\n");
    let case = Case::new(&[("Dockerfile", &dockerfile)]);
    case.build(&["--network", "host"]);
    // Forced to none, a step that names no network reaches nothing.
    let stderr = case.fails(&["--network", "none"]);
    assert!(stderr.contains(&format!("nc 127.0.0.1 {port} | grep foo")), "{stderr}");
}

/// `RUN --network=host` reaches the host's loopback; a RUN that names no
/// network runs in a namespace of its own and does not. (strata asks for no
/// `network.host` entitlement, as `docker build` asks for none.)
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_host_network() {
    if !require_root("buildkit_test_run_host_network") {
        return;
    }
    let port = echo_server(std::net::Ipv4Addr::LOCALHOST.into());
    let dockerfile = format!("FROM busybox\nRUN --network=host nc 127.0.0.1 {port} | grep foo\nRUN ! nc 127.0.0.1 {port} | grep foo\n");
    Case::new(&[("Dockerfile", &dockerfile)]).build(&[]);
}

/// A RUN that names no network has an `eth0` (and slirp4netns's resolver).
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_default_network() {
    if !require_root("buildkit_test_run_default_network") {
        return;
    }
    let dockerfile =
        "FROM busybox\nRUN ip link show eth0 && grep -x 'nameserver 10.0.2.3' /etc/resolv.conf\nRUN --network=none ! ip link show eth0\n";
    Case::new(&[("Dockerfile", dockerfile)]).build(&[]);
}

/// A RUN in its own network reaches the host at an address other than the
/// loopback, as a container behind Docker's bridge does.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_default_network_reaches_out() {
    if !require_root("run_default_network_reaches_out") {
        return;
    }
    // The address this host reaches others from (no packet is sent: a UDP connect only picks a route).
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let Some(address) =
        probe.connect("192.0.2.1:9").ok().and_then(|()| probe.local_addr().ok()).map(|a| a.ip()).filter(|ip| !ip.is_loopback())
    else {
        eprintln!("skipping run_default_network_reaches_out: this host has no address but the loopback");
        return;
    };
    let port = echo_server(address);
    let dockerfile = format!("FROM busybox\nRUN nc {address} {port} | grep foo\n");
    Case::new(&[("Dockerfile", &dockerfile)]).build(&[]);
}

/// Without slirp4netns, a RUN that names no network fails, naming the step
/// and what to install; one that fails to start fails the step with what it
/// said; `--network=host` still runs.
#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn run_default_network_without_slirp4netns_says_what_to_install() {
    if !require_root("run_default_network_without_slirp4netns_says_what_to_install") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nRUN echo hi\n")]);
    let empty = tempfile::tempdir().expect("temp dir");
    let build = |extra: &[&str]| {
        let mut command = case.store.strata();
        command.env("PATH", empty.path()).args(["build", "--progress", "plain"]).args(extra).arg(case.dir());
        command.output().expect("run strata build")
    };
    let refused = build(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("RUN echo hi") && stderr.contains("apt-get install slirp4netns"), "{stderr}");
    let host = build(&["--network", "host"]);
    assert!(host.status.success(), "{}", String::from_utf8_lossy(&host.stderr));
    let broken = empty.path().join("slirp4netns");
    std::fs::write(&broken, "#!/bin/sh\necho 'open(\"/dev/net/tun\"): Permission denied' >&2\nexit 1\n").expect("write");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let failed = build(&[]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(stderr.contains("start slirp4netns") && stderr.contains("/dev/net/tun\"): Permission denied"), "{stderr}");
}

/// The tree BuildKit's --parents tests copy from, made in a stage named `base` under /test.
const PARENTS_BASE: &str = "FROM busybox AS base\nWORKDIR /test\nRUN <<EOT\nset -ex\nmkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2\ntouch a/b/c/d/foo a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz\nEOT\n";

/// The base stage, then for each (name, copy, checks) a stage of busybox
/// that copies `copy` (with --from=base --parents) and runs each `[ check ]`.
fn parents_case(stages: &[(&str, &str, &[&str])]) -> Case {
    let mut dockerfile = PARENTS_BASE.to_string();
    for (name, copy, checks) in stages {
        dockerfile += &format!("\nFROM busybox AS {name}\nCOPY --from=base --parents {copy}\n");
        for check in *checks {
            dockerfile += &format!("RUN [ {check} ]\n");
        }
    }
    Case::new(&[("Dockerfile", &dockerfile)])
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_parents() {
    if !require_root("buildkit_test_copy_parents") {
        return;
    }
    let dockerfile = "FROM scratch AS result\nCOPY --parents foo1/foo2/bar /\nWORKDIR /test\nCOPY --parents foo1/foo2/ba* .\n\
        FROM busybox\nCOPY --from=result / /r/\n\
        RUN [ \"$(cat /r/foo1/foo2/bar)\" = testing ] && [ \"$(cat /r/test/foo1/foo2/bar)\" = testing ] && [ \"$(cat /r/test/foo1/foo2/baz)\" = testing2 ]\n";
    let case = Case::new(&[("Dockerfile", dockerfile), ("foo1/foo2/bar", "testing"), ("foo1/foo2/baz", "testing2")]);
    case.build(&[]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_relative_parents() {
    if !require_root("buildkit_test_copy_relative_parents") {
        return;
    }
    let stages = [
        ("middle", "/test/a/b/./c/d /out/", &["-d /out/c/d/e", "-f /out/c/d/foo", "! -d /out/a", "! -d /out/e"][..]),
        ("end", "/test/a/b/c/d/. /out/", &["-d /out/test/a/b/c/d/e", "-f /out/test/a/b/c/d/foo"]),
        ("start", "./test/a/b/c/d /out/", &["-d /out/test/a/b/c/d/e", "-f /out/test/a/b/c/d/foo"]),
        ("double", "/test/a/./b/./c /out/", &["-d /out/b/c/d/e", "-f /out/b/c/d/foo"]),
        ("wildcard", "/test/a/./*/c /out/", &["-d /out/b/c/d/e", "-f /out/b2/c/d/e/bar"]),
        ("doublewildcard", "/test/a/b*/./c/**/e /out/", &["-d /out/c/d/e", "-f /out/c/d/e/bay", "-f /out/c/d/e/bar"]),
        (
            "doubleinputs",
            "/test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/",
            &["-f /out/d/e/baz", "! -f /out/d/e/bay", "-f /out/d/e2/baz", "-f /out/c/d/e/bar"],
        ),
    ];
    let case = parents_case(&stages);
    for (name, _, _) in stages {
        case.build(&["--target", name]);
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_parents_missing_directory() {
    if !require_root("buildkit_test_copy_parents_missing_directory") {
        return;
    }
    let stages = [
        ("normal", "/test/a/b/c/d /out/", &["-d /out/test/a/b/c/d/e", "-f /out/test/a/b/c/d/e/bay", "! -d /out/e", "! -d /out/a"][..]),
        ("withpivot", "/test/a/b/./c/d /out/", &["-d /out/c/d/e", "-f /out/c/d/foo", "! -d /out/a", "! -d /out/e"]),
        ("nonexistentfile", "/test/nonexistent-file /out/", &[]),
        ("wildcard-nonexistent", "/test/a/b3*/c /out/", &["-d /out", "! -d /out/a"]),
        ("wildcard-afterpivot", "/test/a/b/./c3* /out/", &["-d /out", "! -d /out/a", "! -d /out/c3"]),
    ];
    let case = parents_case(&stages);
    for (name, _, _) in stages {
        if name == "nonexistentfile" {
            let stderr = case.fails(&["--target", name]);
            assert!(stderr.contains("test/nonexistent-file"), "{stderr}");
        } else {
            case.build(&["--target", name]);
        }
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_chmod_non_octal() {
    if !require_root("buildkit_test_chmod_non_octal") {
        return;
    }
    // (name, mode, a directory?): chmod(1) on a copy made in a RUN is the expected result.
    let cases = [
        ("f1", "go-w", false),
        ("f2", "u=rw,g=r,o=r", false),
        ("f3", "a+X", false),
        ("d1", "go-w", true),
        ("d2", "u+rw,g+r,o-x,o+w", true),
        ("d3", "a+X", true),
    ];
    let (mut expected, mut copies, mut checks) = (String::new(), String::new(), String::new());
    for (name, mode, dir) in cases {
        if dir {
            expected += &format!("RUN mkdir -p /input/dirs/{name} && cp -a /input/dir /input/dirs/{name}/{name}\n");
            expected += &format!("RUN cp -a /input/dirs/{name}/. /expected/ && chmod {mode} /expected/{name}\n");
            copies += &format!("COPY --from=base --chmod={mode} /input/dirs/{name} /\n");
        } else {
            expected += &format!("RUN cp -a /input/file /expected/{name} && chmod {mode} /expected/{name}\n");
            copies += &format!("COPY --from=base --chmod={mode} /input/file /{name}\n");
        }
        checks += &format!("RUN [ \"$(stat -c %A /actual/{name})\" = \"$(stat -c %A /expected/{name})\" ]\n");
    }
    let dockerfile = format!(
        "FROM busybox AS base\nRUN <<EOT\nset -ex\nmkdir /input /expected\ntouch /input/file\nchmod 666 /input/file\nmkdir /input/dir\nchmod 124 /input/dir\nEOT\n{expected}\nFROM scratch AS result\n{copies}\nFROM base\nCOPY --from=result / /actual/\n{checks}"
    );
    let case = Case::new(&[("Dockerfile", &dockerfile)]);
    case.build(&[]);
    let stderr = Case::new(&[("Dockerfile", "FROM busybox\nCOPY --chmod=u+q Dockerfile /\n")]).fails(&[]);
    assert!(stderr.contains("--chmod=u+q: not a mode"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerfile_check_hostname() {
    if !require_root("buildkit_test_dockerfile_check_hostname") {
        return;
    }
    let checks = "RUN cat /etc/hosts | grep foo\nRUN echo $HOSTNAME | grep foo\nRUN echo $(hostname) | grep foo\n";
    let case = Case::new(&[("Dockerfile", &format!("FROM busybox\n{checks}"))]);
    case.build(&["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=foo"]);
    // Without it the steps see another host name and fail; the name is part of each RUN's key.
    let stderr = case.fails(&[]);
    assert!(stderr.contains("grep foo"), "{stderr}");
    let stderr = case.fails(&["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=foo\nbar"]);
    assert!(stderr.contains("not a host name"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_user() {
    if !require_root("buildkit_test_user") {
        return;
    }
    let ids = |expected: &str| format!("RUN [ \"$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)\" = '{expected}' ]\n");
    let mut dockerfile = String::from("FROM busybox AS base\nRUN mkdir -m 0777 /out\nRUN id -un > /out/rootuser\n");
    dockerfile += "RUN [ \"$(id -u):$(id -g)/$(id -un):$(id -gn)\" = '0:0/root:root' ]\n";
    dockerfile += "RUN echo 'builder:x:1500:1500::/home:/bin/false' >> /etc/passwd && echo 'builder:x:1500:' >> /etc/group\n";
    dockerfile += "USER builder\n";
    dockerfile += &ids("1500:1500/builder:builder/1500:builder");
    dockerfile += "USER root\nRUN echo 'extra:x:1600:builder' >> /etc/group\n";
    for user in ["builder", "1500"] {
        dockerfile += &format!("USER {user}\n");
        dockerfile += &ids("1500:1500/builder:builder/1500 1600:builder extra");
    }
    for user in ["builder:builder", "1500:builder", "builder:1500", "1500:1500"] {
        dockerfile += &format!("USER {user}\n");
        dockerfile += &ids("1500:1500/builder:builder/1500:builder");
    }
    for user in ["builder:extra", "builder:1600", "1500:extra", "1500:1600"] {
        dockerfile += &format!("USER {user}\n");
        dockerfile += &ids("1500:1600/builder:extra/1600:extra");
    }
    dockerfile += "USER 1700:1800\n";
    dockerfile += &ids("1700:1800/1700:1800/1800:1800");
    dockerfile += "USER daemon\nRUN id -un > /out/daemonuser\nFROM scratch AS files\nCOPY --from=base /out /\nFROM files\nUSER nobody\n";
    let case = Case::new(&[("Dockerfile", &dockerfile)]);
    case.build(&["-t", "users"]);
    // umoci cannot unpack an image whose user its own /etc/passwd lacks: read the files' stage.
    case.build(&["--target", "files", "-t", "user-files"]);
    let files = case.unpack("user-files");
    assert_eq!(files.read("rootuser"), "root\n");
    assert_eq!(files.read("daemonuser"), "daemon\n");
    assert_eq!(case.inspect("users")["Config"]["User"], "nobody");
}

// ---- dockerfile_copy_test.go ----

#[test]
fn buildkit_test_dockerfile_copy_from_args() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY --from=$SOURCE . .\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("--from") && stderr.contains("Dockerfile:2"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_empty_dest_dir() {
    if !require_root("buildkit_test_empty_dest_dir") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM busybox\nWORKDIR /work\nENV nothing=\"\"\nCOPY item $nothing\nRUN [ \"$(cat /work/item)\" = \"item-data\" ]\n",
        ),
        ("item", "item-data"),
    ]);
    case.build(&["-t", "empty-dest"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_preserve_dest_dir_slash() {
    if !require_root("buildkit_test_preserve_dest_dir_slash") {
        return;
    }
    let case = Case::new(&[
        ("Dockerfile", "FROM busybox\nCOPY item /into/\nRUN [ \"$(cat /into/item)\" = \"item-data\" ]\n"),
        ("item", "item-data"),
    ]);
    case.build(&["-t", "dest-slash"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_link_dot_dest_dir() {
    if !require_root("buildkit_test_copy_link_dot_dest_dir") {
        return;
    }
    let case = Case::new(&[
        ("Dockerfile", "FROM busybox\nWORKDIR /srv/site\nCOPY --link item .\nRUN [ \"$(cat /srv/site/item)\" = \"item-data\" ]\n"),
        ("item", "item-data"),
    ]);
    case.build(&["-t", "link-dot"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_link_empty_dest_dir() {
    if !require_root("buildkit_test_copy_link_empty_dest_dir") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM busybox\nWORKDIR /srv/site\nENV nothing=\"\"\nCOPY --link item $nothing\nRUN [ \"$(cat /srv/site/item)\" = \"item-data\" ]\n",
        ),
        ("item", "item-data"),
    ]);
    case.build(&["-t", "link-empty"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_wildcard_cache() {
    if !require_root("buildkit_test_copy_wildcard_cache") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM busybox AS base\nCOPY src* parts/\nRUN head -c 64 /dev/urandom | sha256sum > /random\nCOPY other parts/\nFROM scratch\nCOPY --from=base /random /\n",
        ),
        ("src-a", "a"),
        ("other", "first"),
    ]);
    case.build(&["-t", "wild-cache"]);
    let first = case.unpack("wild-cache").read("random");
    case.write("other", "second");
    case.build(&["-t", "wild-cache"]);
    assert_eq!(case.unpack("wild-cache").read("random"), first, "a change after the RUN keeps it cached");
    case.write("src-b", "b");
    case.build(&["-t", "wild-cache"]);
    assert_ne!(case.unpack("wild-cache").read("random"), first, "a new wildcard match reruns it");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_chown_create_dest() {
    if !require_root("buildkit_test_copy_chown_create_dest") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            r#"FROM busybox
ARG grp
ENV who daemon
COPY --chown=app:app . /dest
COPY --chown=${who}:${grp} . /dest-expanded
RUN [ "$(stat -c "%U %G" /dest)" = "app app" ]
RUN [ "$(stat -c "%U %G" /dest-expanded)" = "daemon staff" ]
"#,
        ),
        ("item", "x"),
    ]);
    case.build(&["--build-arg", "grp=staff", "-t", "chown-dest"]);
}

#[test]
fn buildkit_test_copy_through_symlink_context() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY alias/item .\n"), ("real/item", "through-link")]);
    std::os::unix::fs::symlink("real", case.dir().join("alias")).expect("symlink");
    case.build(&["-t", "through-link"]);
    assert_eq!(case.unpack("through-link").read("item"), "through-link");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_through_symlink_multi_stage() {
    if !require_root("buildkit_test_copy_through_symlink_multi_stage") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS build\nRUN mkdir -p /store/deep && ln -s /store/deep /abs && ln -s store/deep /rel && echo -n linked > /abs/item\nFROM scratch\nCOPY --from=build /abs/item .\nCOPY --from=build /rel/item second\n",
    )]);
    case.build(&["-t", "stage-links"]);
    let files = case.unpack("stage-links");
    assert_eq!(files.read("item"), "linked");
    assert_eq!(files.read("second"), "linked");
}

#[test]
fn buildkit_test_copy_socket() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY . /\n")]);
    let _listener = std::os::unix::net::UnixListener::bind(case.dir().join("control.sock")).expect("bind socket");
    case.build(&["-t", "socket"]);
    assert!(case.unpack("socket").meta("control.sock").file_type().is_file(), "a socket becomes a regular file");
}

#[test]
fn buildkit_test_copy_follow_all_symlinks() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY dir /\nCOPY dir/up target\n"), ("plain", "plain-data"), ("dir/keep", "k")]);
    std::os::unix::fs::symlink("../plain", case.dir().join("dir/up")).expect("symlink");
    case.build(&["-t", "follow-all"]);
}

#[test]
fn buildkit_test_copy_symlinks() {
    let case = Case::new(&[
        ("Dockerfile", "FROM scratch\nCOPY top /\nCOPY inner/l* links/\n"),
        ("target", "target-data"),
        ("inner/lplain", "lplain-data"),
        ("inner/file", "file-data"),
        ("inner/end", "end-data"),
    ]);
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, case.dir().join(at)).expect("symlink");
    link("target", "top");
    link("file", "inner/lone");
    link("middle", "inner/ltwo");
    link("end", "inner/middle");
    case.build(&["-t", "symlinks"]);
    let files = case.unpack("symlinks");
    assert_eq!(files.read("top"), "target-data");
    assert_eq!(files.read("links/lone"), "file-data");
    assert_eq!(files.read("links/lplain"), "lplain-data");
    assert_eq!(files.read("links/ltwo"), "end-data");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_chown() {
    if !require_root("buildkit_test_copy_chown") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            r#"FROM busybox AS base
ENV uid 1000
RUN mkdir -m 0777 /report
COPY --chown=daemon one /
COPY --chown=1000:nogroup tree /tree
ARG grp
COPY --chown=${uid}:${grp} one /one-expanded
RUN stat -c "%U %G" /one > /report/one
RUN stat -c "%u %G" /tree/leaf > /report/leaf
RUN stat -c "%u %G" /one-expanded > /report/expanded
FROM scratch
COPY --from=base /report /
"#,
        ),
        ("one", "one-data"),
        ("tree/leaf", "leaf-data"),
    ]);
    case.build(&["--build-arg", "grp=nogroup", "-t", "chown"]);
    let files = case.unpack("chown");
    assert_eq!(files.read("one"), "daemon daemon\n");
    assert_eq!(files.read("leaf"), "1000 nogroup\n");
    assert_eq!(files.read("expanded"), "1000 nogroup\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_chmod() {
    if !require_root("buildkit_test_copy_chmod") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            r#"FROM busybox AS base
RUN mkdir -m 0777 /report
COPY --chmod=0640 one /
COPY --chmod=777 two /two
COPY --chmod=0 one /none
COPY --chmod=777 one /up/one
COPY --chmod=750 one /up/down/one
ARG perm
COPY --chmod=${perm} one /expanded
RUN stat -c "%04a" /one > /report/one
RUN stat -c "%04a" /two > /report/two
RUN stat -c "%04a" /none > /report/none
RUN stat -c "%04a" /up > /report/up
RUN stat -c "%04a" /up/down > /report/down
RUN stat -c "%04a" /expanded > /report/expanded
FROM scratch
COPY --from=base /report /
"#,
        ),
        ("one", "one-data"),
        ("two", "two-data"),
    ]);
    case.build(&["--build-arg", "perm=705", "-t", "chmod"]);
    let files = case.unpack("chmod");
    // Folders a COPY creates for its destination take the --chmod mode too.
    for (name, mode) in [("one", "0640"), ("two", "0777"), ("none", "0000"), ("up", "0777"), ("down", "0750"), ("expanded", "0705")] {
        assert_eq!(files.read(name), format!("{mode}\n"), "mode of {name}");
    }
}

#[test]
fn buildkit_test_copy_invalid_chmod() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY --chmod=7x5 item /\n"), ("item", "x")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("7x5") && stderr.contains("Dockerfile:2"), "{stderr}");
    case.write("Dockerfile", "FROM scratch\nCOPY --chmod=17777 item /\n");
    let stderr = case.fails(&[]);
    assert!(stderr.contains("17777") && stderr.contains("Dockerfile:2"), "{stderr}");
}

#[test]
fn buildkit_test_copy_override_files() {
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM scratch AS base\nCOPY tree tree\nCOPY tree tree\nCOPY set/a.txt out/a.txt\nCOPY set/a.txt out/a.txt\nCOPY set out\n",
        ),
        ("tree/leaf", "leaf-data"),
        ("set/a.txt", "a-data"),
    ]);
    case.build(&["-t", "override"]);
    let files = case.unpack("override");
    assert_eq!(files.read("tree/leaf"), "leaf-data");
    assert_eq!(files.read("out/a.txt"), "a-data");
}

#[test]
fn buildkit_test_copy_var_substitution() {
    let case = Case::new(&[("Dockerfile", "FROM scratch AS base\nENV SRC chosen\nCOPY $SRC renamed\n"), ("chosen", "chosen-data")]);
    case.build(&["-t", "var-subst"]);
    assert_eq!(case.unpack("var-subst").read("renamed"), "chosen-data");
}

#[test]
fn buildkit_test_copy_wildcards() {
    let case = Case::new(&[
        (
            "Dockerfile",
            r#"FROM scratch AS base
COPY *.rs /sources/
COPY m*.rs single.rs
COPY tree/* /t1/
COPY tree/*/inner/leaf /t2/
COPY tree/*/inner/leaf /t3/renamed
COPY . everything/
COPY tree/top/ t4
COPY tree/top/. t5
COPY tree/top t6
"#,
        ),
        ("main.rs", "main-data"),
        ("lib.rs", "lib-data"),
        ("tree/top/inner/leaf", "leaf-data"),
    ]);
    case.build(&["-t", "wildcards"]);
    let files = case.unpack("wildcards");
    for (path, content) in [
        ("sources/main.rs", "main-data"),
        ("sources/lib.rs", "lib-data"),
        ("single.rs", "main-data"),
        ("t1/inner/leaf", "leaf-data"),
        ("t2/leaf", "leaf-data"),
        ("t3/renamed", "leaf-data"),
        ("everything/main.rs", "main-data"),
        ("t4/inner/leaf", "leaf-data"),
        ("t5/inner/leaf", "leaf-data"),
        ("t6/inner/leaf", "leaf-data"),
    ] {
        assert_eq!(files.read(path), content, "{path}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_relative() {
    if !require_root("buildkit_test_copy_relative") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            r#"FROM busybox
WORKDIR /r1
WORKDIR r2
RUN [ "$PWD" = /r1/r2 ]
COPY item ./
RUN [ "$(cat /r1/r2/item)" = item-data ]
ADD item ./sub/added
RUN [ "$(cat /r1/r2/sub/added)" = item-data ]
COPY item ./sub/copied
RUN [ "$(cat /r1/r2/sub/copied)" = item-data ]
WORKDIR ..
COPY item ./
RUN [ "$(cat /r1/item)" = item-data ]
COPY item /r3/
RUN [ "$(cat /r3/item)" = item-data ]
WORKDIR /r4
COPY . .
RUN [ "$(cat /r4/item)" = item-data ]
WORKDIR /r5/r6
COPY item ../
RUN [ "$(cat /r5/item)" = item-data ]
"#,
        ),
        ("item", "item-data"),
    ]);
    case.build(&["-t", "relative"]);
}

#[test]
fn buildkit_test_copy_unicode_path() {
    let case = Case::new(&[
        ("Dockerfile", "FROM scratch\nCOPY grüße-ñ.txt /\nCOPY grüße-%C3%B1.txt /\nCOPY a+b.txt /\n"),
        ("grüße-ñ.txt", "umlaut"),
        ("grüße-%C3%B1.txt", "escaped"),
        ("a+b.txt", "plus"),
    ]);
    case.build(&["-t", "unicode"]);
    let files = case.unpack("unicode");
    assert_eq!(files.read("grüße-ñ.txt"), "umlaut");
    assert_eq!(files.read("grüße-%C3%B1.txt"), "escaped");
    assert_eq!(files.read("a+b.txt"), "plus");
}

// ---- dockerfile_dockerignore_test.go ----

#[test]
fn buildkit_test_dockerignore() {
    let case = Case::new(&[
        ("Dockerfile", "FROM scratch\nCOPY . .\n"),
        (".dockerignore", "sk*\nDockerfile\n!skip-not\n.dockerignore\n"),
        ("kept", "kept-data"),
        ("skipped", "s"),
        ("skipper", "s"),
        ("skip-not", "back-in"),
    ]);
    case.build(&["-t", "ignore"]);
    let files = case.unpack("ignore");
    assert_eq!(files.read("kept"), "kept-data");
    for gone in ["skipped", "skipper", "Dockerfile", ".dockerignore"] {
        assert!(!files.exists(gone), "{gone} is ignored");
    }
    assert_eq!(files.read("skip-not"), "back-in");
}

#[test]
fn buildkit_test_dockerignore_invalid() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY . .\n"), (".dockerignore", "keep\n!\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains(".dockerignore:2") && stderr.contains("\"!\""), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_dockerignore_override() {
    if !require_root("buildkit_test_dockerignore_override") {
        return;
    }
    let case = Case::new(&[
        ("Dockerfile", "FROM busybox\nCOPY . .\nRUN [ -f one ] && [ ! -f two ]\n"),
        (".dockerignore", "two\n"),
        ("special.Dockerfile", "FROM busybox\nCOPY . .\nRUN [ ! -f one ] && [ -f two ]\n"),
        ("special.Dockerfile.dockerignore", "one\n"),
        ("one", "1"),
        ("two", "2"),
    ]);
    case.build(&["-t", "ignore-default"]);
    let special = case.dir().join("special.Dockerfile");
    case.build(&["-f", special.to_str().expect("utf-8 path"), "-t", "ignore-special"]);
}

// ---- dockerfile_heredoc_test.go (backslashes and #! scripts: dockerfile.rs) ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_copy_heredoc() {
    if !require_root("buildkit_test_copy_heredoc") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        r#"FROM busybox AS build
WORKDIR /out
COPY <<END alone
one file
END
COPY <<A <<B pair/
file a
A
file b
B
RUN mkdir -p /modes
COPY --chmod=751 <<END /modes/exec
x
END
COPY --chmod=0640 <<END /modes/read
x
END
COPY --chown=app:staff <<END /modes/owned
x
END
RUN stat -c "%04a" /modes/exec >> report && stat -c "%04a" /modes/read >> report && stat -c "%U:%G" /modes/owned >> report
FROM scratch
COPY --from=build /out /
"#,
    )]);
    case.build(&["-t", "copy-heredoc"]);
    let files = case.unpack("copy-heredoc");
    for (name, content) in [("alone", "one file\n"), ("pair/A", "file a\n"), ("pair/B", "file b\n"), ("report", "0751\n0640\napp:staff\n")]
    {
        assert_eq!(files.read(name), content, "{name}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_basic_heredoc() {
    if !require_root("buildkit_test_run_basic_heredoc") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS build\nRUN <<END\necho \"who:\" >> /result\nwhoami >> /result\nEND\nFROM scratch\nCOPY --from=build /result /\n",
    )]);
    case.build(&["-t", "basic-heredoc"]);
    assert_eq!(case.unpack("basic-heredoc").read("result"), "who:\nroot\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_fake_heredoc() {
    if !require_root("buildkit_test_run_fake_heredoc") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS build\nSHELL [\"/usr/bin/awk\"]\nRUN <<PROGRAM\nBEGIN {\n\tprint \"from awk\" > \"/result\"\n}\nPROGRAM\nFROM scratch\nCOPY --from=build /result /\n",
    )]);
    case.build(&["-t", "fake-heredoc"]);
    assert_eq!(case.unpack("fake-heredoc").read("result"), "from awk\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_complex_heredoc() {
    if !require_root("buildkit_test_run_complex_heredoc") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        r#"FROM busybox AS build
WORKDIR /results
RUN cat <<ONE | tr 'a-z' 'A-Z' > ./up; \
	cat <<TWO | tr 'A-Z' 'a-z' > ./down
Mixed Case
ONE
MIXED case
TWO
RUN <<PROG 5<<LOWER 6<<UPPER awk -f -
BEGIN {
	while ((getline line < "/proc/self/fd/5") > 0)
		print tolower(line) > "./fd5"
	while ((getline line < "/proc/self/fd/6") > 0)
		print toupper(line) > "./fd6"
}
PROG
Some Text
LOWER
Other Text
UPPER
FROM scratch
COPY --from=build /results /
"#,
    )]);
    case.build(&["-t", "complex-heredoc"]);
    let files = case.unpack("complex-heredoc");
    assert_eq!(files.read("up"), "MIXED CASE\n");
    assert_eq!(files.read("down"), "mixed case\n");
    assert_eq!(files.read("fd5"), "some text\n");
    assert_eq!(files.read("fd6"), "OTHER TEXT\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_heredoc_indent() {
    if !require_root("buildkit_test_heredoc_indent") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS build\n\
         COPY <<END /out/copy-kept\n\tkept\nEND\n\
         COPY <<-END /out/copy-stripped\n\tstripped\nEND\n\
         RUN <<END\necho \"\n\tkept\" > /out/run-kept\nEND\n\
         RUN <<-END\necho \"\n\tstripped\" > /out/run-stripped\nEND\n\
         RUN <<END sh > /out/sh-kept\necho \"\n\tkept\"\nEND\n\
         RUN <<-END sh > /out/sh-stripped\necho \"\n\tstripped\"\nEND\n\
         FROM scratch\nCOPY --from=build /out /\n",
    )]);
    case.build(&["-t", "indent"]);
    let files = case.unpack("indent");
    for (name, content) in [
        ("copy-kept", "\tkept\n"),
        ("copy-stripped", "stripped\n"),
        ("run-kept", "\n\tkept\n"),
        ("run-stripped", "\nstripped\n"),
        ("sh-kept", "\n\tkept\n"),
        ("sh-stripped", "\nstripped\n"),
    ] {
        assert_eq!(files.read(name), content, "{name}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_heredoc_var_substitution() {
    if !require_root("buildkit_test_heredoc_var_substitution") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        r#"FROM busybox AS build
ARG who=there
COPY <<END /out/plain
Hi ${who}!
END
COPY <<'END' /out/single
Hi ${who}!
END
COPY <<"END" /out/double
Hi ${who}!
END
COPY <<END /out/inner-single
Hi '${who}'!
END
COPY <<END /out/inner-double
Hi "${who}"!
END
COPY <<'END' /out/single-inner-single
Hi '${who}'!
END
COPY <<"END" /out/double-inner-double
Hi "${who}"!
END
RUN <<END
word="Hi"
echo "${word} ${who}!" > /out/run-arg
END
RUN <<END
who="over there"
echo "Hi ${who}!" > /out/run-local
END
FROM scratch
COPY --from=build /out /
"#,
    )]);
    case.build(&["-t", "heredoc-vars"]);
    let files = case.unpack("heredoc-vars");
    for (name, content) in [
        ("plain", "Hi there!\n"),
        ("single", "Hi ${who}!\n"),
        ("double", "Hi ${who}!\n"),
        ("inner-single", "Hi 'there'!\n"),
        ("inner-double", "Hi \"there\"!\n"),
        ("single-inner-single", "Hi '${who}'!\n"),
        ("double-inner-double", "Hi \"${who}\"!\n"),
        ("run-arg", "Hi there!\n"),
        ("run-local", "Hi over there!\n"),
    ] {
        assert_eq!(files.read(name), content, "{name}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_heredoc() {
    if !require_root("buildkit_test_on_build_heredoc") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nONBUILD RUN <<END\necho \"triggered here\" >> /result\nEND\n")]);
    case.build(&["-t", "onbuild-heredoc-base"]);
    case.write("Dockerfile", "FROM onbuild-heredoc-base AS base\nFROM scratch\nCOPY --from=base /result /\n");
    case.build(&["--pull=never", "-t", "onbuild-heredoc"]);
    assert_eq!(case.unpack("onbuild-heredoc").read("result"), "triggered here\n");
}

// ---- dockerfile_history_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_exported_history() {
    if !require_root("buildkit_test_exported_history") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM busybox AS base\nENV k=v\nCOPY item /item2\nFROM busybox\nLABEL tag=value\nCOPY --from=base item2 item3\nWORKDIR /place\nRUN echo made > item4\nRUN [\"ls\"]\nEXPOSE 2375 5000 1234/udp\n",
        ),
        ("item", "x"),
    ]);
    case.build(&["-t", "history"]);
    let base_len = case.inspect("busybox")["History"].as_array().expect("history").len();
    let image = case.inspect("history");
    let history = image["History"].as_array().expect("history");
    let layers = image["RootFS"]["Layers"].as_array().expect("layers").len();
    assert_eq!(layers, history.iter().filter(|h| h["empty_layer"] != true).count(), "one diff_id per non-empty entry");
    let ours = &history[base_len..];
    assert_eq!(ours.len(), 6, "{ours:#?}");
    let expect = [
        ("tag=value", true),
        ("COPY item2 item3", false),
        ("/place", false),
        ("echo made > item4", false),
        ("ls", false),
        ("EXPOSE", true),
    ];
    for (entry, (text, empty)) in ours.iter().zip(expect) {
        let created_by = entry["created_by"].as_str().expect("created_by");
        assert!(created_by.contains(text), "{created_by:?} should contain {text:?}");
        assert_eq!(entry["empty_layer"] == true, empty, "{created_by}");
        assert!(entry["created"].is_string(), "{entry}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_exported_history_flatten_args() {
    if !require_root("buildkit_test_exported_history_flatten_args") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nARG first=one\nARG second=222\nARG first=uno\nRUN ls /etc/\n")]);
    case.build(&["-t", "flatten"]);
    let base_len = case.inspect("busybox")["History"].as_array().expect("history").len();
    let history = case.inspect("flatten")["History"].as_array().expect("history").clone();
    let ours = history[base_len..].iter().map(|h| h["created_by"].as_str().expect("created_by").to_string()).collect::<Vec<_>>();
    assert_eq!(ours.len(), 4, "{ours:#?}");
    assert!(ours[1].contains("ARG second=222"), "{ours:#?}");
    assert!(ours[2].contains("ARG first=uno"), "{ours:#?}");
    assert!(ours[3].contains("RUN |2 first=uno second=222 "), "{ours:#?}");
    assert!(ours[3].contains("ls /etc/") && !ours[3].contains("first=one"), "{ours:#?}");
}

// ---- dockerfile_image_test.go ----

#[test]
fn buildkit_test_dockerfile_scratch_config() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nENV only=this\n")]);
    case.build(&["-t", "scratch-config"]);
    let image = case.inspect("scratch-config");
    assert!(!image["Os"].as_str().unwrap_or("").is_empty() && !image["Architecture"].as_str().unwrap_or("").is_empty(), "{image}");
    assert_eq!(image["RootFS"]["Type"], "layers");
    assert_eq!(image["RootFS"]["Layers"].as_array().map(Vec::len), Some(0));
    let history = image["History"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{history:#?}");
    assert!(history[0]["created_by"].as_str().expect("created_by").contains("ENV only=this"));
    assert_eq!(history[0]["empty_layer"], true);
    let env = strings(&image["Config"]["Env"]);
    assert!(env.contains(&"only=this".to_string()), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
}

/// `--output type=oci` (a folder, and a tar) writes one index entry per name,
/// the full name in `io.containerd.image.name` and the tag in `ref.name`.
#[test]
fn buildkit_test_oci_layout_multiname() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY <<END /greeting\nhello\nEND\n")]);
    let out = tempfile::tempdir().expect("temp dir");
    let (dir, tar) = (out.path().join("layout"), out.path().join("layout.tar"));
    for dest in [&dir, &tar] {
        let output = format!("type=oci,dest={}", dest.display());
        case.build(&["-t", "org/repo:tag1", "-t", "org/repo:tag2", "--output", &output]);
    }
    let from_tar = std::process::Command::new("tar").arg("-xOf").arg(&tar).arg("index.json").output().expect("run tar");
    assert!(from_tar.status.success(), "{}", String::from_utf8_lossy(&from_tar.stderr));
    for text in [std::fs::read(dir.join("index.json")).expect("index.json"), from_tar.stdout] {
        let index: serde_json::Value = serde_json::from_slice(&text).expect("JSON");
        let entries = index["manifests"].as_array().expect("manifests");
        assert_eq!(entries.len(), 2, "{index}");
        for field in ["digest", "size", "mediaType", "platform"] {
            assert_eq!(entries[0][field], entries[1][field], "{field}");
        }
        let annotation = |key: &str| -> Vec<&str> { entries.iter().map(|e| e["annotations"][key].as_str().expect(key)).collect() };
        assert_eq!(annotation("io.containerd.image.name"), ["docker.io/org/repo:tag1", "docker.io/org/repo:tag2"]);
        assert_eq!(annotation("org.opencontainers.image.ref.name"), ["tag1", "tag2"]);
    }
    // Loading it back gives both names.
    let fresh = TestStore::empty();
    let loaded = fresh.ok(&["load", "-i", tar.to_str().expect("utf-8")]);
    assert!(loaded.contains("org/repo:tag1") && loaded.contains("org/repo:tag2"), "{loaded}");
}

// ---- dockerfile_mount_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_context() {
    if !require_root("buildkit_test_mount_context") {
        return;
    }
    let case =
        Case::new(&[("Dockerfile", "FROM busybox\nRUN --mount=target=/ctx [ \"$(cat /ctx/item)\" = item-data ]\n"), ("item", "item-data")]);
    case.build(&["-t", "mount-context"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_tmpfs() {
    if !require_root("buildkit_test_mount_tmpfs") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=target=/scratchpad,type=tmpfs touch /scratchpad/left\nRUN [ ! -f /scratchpad/left ]\n",
    )]);
    case.build(&["-t", "mount-tmpfs"]);
}

#[test]
fn buildkit_test_mount_invalid() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nRUN --mnt=target=/t,type=tmpfs /bin/true\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("--mnt") && stderr.contains("Dockerfile:2"), "{stderr}");
    case.write("Dockerfile", "FROM scratch\nRUN --mount=tpye=tmpfs /bin/true\n");
    let stderr = case.fails(&[]);
    assert!(stderr.contains("tpye") && stderr.contains("Dockerfile:2"), "{stderr}");
    case.write("Dockerfile", "FROM scratch\nRUN --mount=type=tmpf /bin/true\n");
    let stderr = case.fails(&[]);
    assert!(stderr.contains("\"tmpf\"") && stderr.contains("tmpfs"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_rw_cache() {
    if !require_root("buildkit_test_mount_rw_cache") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS build\nRUN mkdir out && echo data > out/data\nFROM busybox AS second\nRUN --mount=from=build,src=out,target=/out,rw touch /out/extra && head -c 64 /dev/urandom | sha256sum > /random\nFROM scratch\nCOPY --from=second /random /random\n",
    )]);
    case.build(&["-t", "rw-cache"]);
    let first = case.unpack("rw-cache").read("random");
    case.build(&["-t", "rw-cache"]);
    assert_eq!(case.unpack("rw-cache").read("random"), first, "a rw mount's step is cached like any other");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_cache_mount_default_id() {
    if !require_root("buildkit_test_cache_mount_default_id") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/cache-one touch /cache-one/mark\nRUN --mount=type=cache,target=/cache-two [ ! -f /cache-two/mark ]\nRUN --mount=type=cache,target=/cache-one [ -f /cache-one/mark ]\n",
    )]);
    case.build(&["-t", "cache-id"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_env_var() {
    if !require_root("buildkit_test_mount_env_var") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nENV CACHE_AT=/cached\nRUN --mount=type=cache,target=/cached touch /cached/mark\nRUN --mount=type=cache,target=$CACHE_AT [ -f $CACHE_AT/mark ]\n",
    )]);
    case.build(&["-t", "mount-env"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_arg() {
    if !require_root("buildkit_test_mount_arg") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nARG KIND=cache\nRUN --mount=type=$KIND,target=/kept touch /kept/mark\nRUN --mount=type=cache,target=/kept [ -f /kept/mark ]\n",
    )]);
    case.build(&["-t", "mount-arg"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_env_across_stages() {
    if !require_root("buildkit_test_mount_env_across_stages") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS first\nENV CACHE_ID=shared\nENV KIND=cache\nRUN --mount=type=cache,id=shared,target=/a touch /a/mark\nRUN --mount=type=$KIND,id=$CACHE_ID,target=/b [ -f /b/mark ]\nFROM first\nRUN --mount=type=$KIND,id=$CACHE_ID,target=/c [ -f /c/mark ]\n",
    )]);
    case.build(&["-t", "mount-stages"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_meta_arg() {
    if !require_root("buildkit_test_mount_meta_arg") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "ARG AT=/var/meta\nFROM busybox\nARG AT\nRUN --mount=type=cache,id=meta,target=/var/meta touch /var/meta/mark\nRUN --mount=type=cache,id=meta,target=$AT [ -f /var/meta/mark ]\n",
    )]);
    case.build(&["-t", "mount-meta"]);
}

#[test]
fn buildkit_test_mount_from_error() {
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS named\nRUN touch /x\nFROM busybox\nENV src=named\nRUN --mount=from=$src,type=cache,target=/x ls\n",
    )]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("from") && stderr.contains("Dockerfile:5"), "{stderr}");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_mount_duplicate() {
    if !require_root("buildkit_test_mount_duplicate") {
        return;
    }
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM busybox AS base\nRUN --mount=source=.,target=/m/all \\\n  --mount=source=second.txt,target=/m/second.txt \\\n  cat /m/all/first.txt /m/second.txt > /joined\nFROM scratch\nCOPY --from=base /joined /\n",
        ),
        ("first.txt", "one\n"),
        ("second.txt", "two\n"),
    ]);
    case.build(&["-t", "mount-dup"]);
    assert_eq!(case.unpack("mount-dup").read("joined"), "one\ntwo\n");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_cache_mount_parallel() {
    if !require_root("buildkit_test_cache_mount_parallel") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS left\nRUN --mount=type=cache,target=/c/d --mount=type=cache,target=/c/d/e echo left\nFROM busybox AS right\nRUN --mount=type=cache,target=/c/d --mount=type=cache,target=/c/d/e echo right\nFROM scratch\nCOPY --from=left /etc/passwd p1\nCOPY --from=right /etc/passwd p2\n",
    )]);
    for _ in 0..3 {
        case.build(&["--no-cache", "-t", "cache-parallel"]);
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_cache_mount_source_escape() {
    if !require_root("buildkit_test_cache_mount_source_escape") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS seed\nRUN --mount=type=cache,id=escape,target=/c mkdir -p /c/pick && echo harmless > /c/pick/file\nFROM seed AS swap\nRUN --mount=type=cache,id=escape,target=/c rm -rf /c/pick && ln -s /etc /c/pick\nFROM swap AS reader\nRUN --mount=type=cache,id=escape,source=pick,target=/seen cat /seen/passwd > /leak\nFROM scratch\nCOPY --from=reader /leak /leak\n",
    )]);
    case.fails(&["--no-cache"]);
}

// ---- dockerfile_multistage_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_multi_stage_implicit_from() {
    if !require_root("buildkit_test_multi_stage_implicit_from") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY --from=busybox /etc/passwd users\n")]);
    case.build(&["--pull=never", "-t", "implicit-from"]);
    assert!(case.unpack("implicit-from").read("users").contains("root"));

    case.write("Dockerfile", "FROM busybox AS tools\nRUN mkdir -p /opt/bin && echo -n tool > /opt/bin/tool\nFROM scratch\nCOPY --from=tools /opt/bin/tool tool\n");
    case.build(&["-t", "implicit-from-stage"]);
    assert_eq!(case.unpack("implicit-from-stage").read("tool"), "tool");
}

#[test]
fn buildkit_test_multi_stage_case_insensitive() {
    let case = Case::new(&[
        (
            "Dockerfile",
            "FROM scratch AS FirST\nCOPY item a\nFROM scratch AS sEcOnD\nCOPY --from=FIRST a b\nFROM scratch\nCOPY --from=second b c\n",
        ),
        ("item", "item-data"),
    ]);
    case.build(&["--target", "Second", "-t", "case-insensitive"]);
    let files = case.unpack("case-insensitive");
    assert_eq!(files.read("b"), "item-data");
    assert!(!files.exists("c"), "the target stage is the last built");
}

#[test]
fn buildkit_test_out_of_order_stage() {
    for from in ["/Dockerfile", "/later-copy"] {
        let case = Case::new(&[(
            "Dockerfile",
            &format!(
                "FROM busybox AS first\nCOPY --from=later {from} /out\nFROM busybox AS later\nCOPY /Dockerfile /later-copy\nFROM first\n"
            ),
        )]);
        let stderr = case.fails(&["--pull=never"]);
        assert!(stderr.contains("later") && stderr.contains("Dockerfile:2"), "{stderr}");
    }
}

#[test]
fn buildkit_test_empty_stages() {
    let case = Case::new(&[("Dockerfile", "ARG only=arg\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("no FROM") || stderr.contains("no stages"), "{stderr}");
}

// ---- dockerfile_onbuild_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_cleared() {
    if !require_root("buildkit_test_on_build_cleared") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nONBUILD RUN mkdir -p /out && echo -n x >> /out/count\n")]);
    case.build(&["-t", "onbuild-one"]);
    case.write("Dockerfile", "FROM onbuild-one\n");
    case.build(&["--pull=never", "-t", "onbuild-two"]);
    assert!(case.inspect("onbuild-two")["Config"]["OnBuild"].as_array().is_none_or(Vec::is_empty), "triggers do not pass on");
    case.write("Dockerfile", "FROM onbuild-two AS base\nFROM scratch\nCOPY --from=base /out /\n");
    case.build(&["--pull=never", "-t", "onbuild-three"]);
    assert_eq!(case.unpack("onbuild-three").read("count"), "x", "the trigger ran once, in the first child");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_with_child_stage() {
    if !require_root("buildkit_test_on_build_with_child_stage") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nONBUILD RUN mkdir -p /out && touch /out/ran\n")]);
    case.build(&["-t", "onbuild-parent"]);
    case.write(
        "Dockerfile",
        "FROM onbuild-parent AS base\nRUN [ -f /out/ran ] && touch /step1\nRUN rm /out/ran\nRUN [ ! -f /out/ran ] && touch /step2\nFROM base AS child\nRUN [ ! -f /out/ran ] && touch /step3\nFROM scratch\nCOPY --from=child /step* /\n",
    );
    case.build(&["--pull=never", "-t", "onbuild-child"]);
    let files = case.unpack("onbuild-child");
    for step in ["step1", "step2", "step3"] {
        assert!(files.exists(step), "{step}");
    }
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_inherited_stage_run() {
    if !require_root("buildkit_test_on_build_inherited_stage_run") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS base\nONBUILD RUN mkdir -p /out && echo -n once >> /out/src\nFROM base AS mid\nRUN cp /out/src /out/copy\nFROM scratch\nCOPY --from=mid /out/copy /\n",
    )]);
    case.build(&["-t", "onbuild-stage-run"]);
    assert_eq!(case.unpack("onbuild-stage-run").read("copy"), "once");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_inherited_stage_with_from() {
    if !require_root("buildkit_test_on_build_inherited_stage_with_from") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS src\nRUN mkdir -p /in && echo -n thirteen > /in/file\nFROM busybox AS base\nONBUILD COPY --from=src /in/file /out/src\nFROM base AS mid\nRUN cp /out/src /out/copy\nFROM scratch\nCOPY --from=mid /out/copy /\n",
    )]);
    case.build(&["-t", "onbuild-stage-from"]);
    assert_eq!(case.unpack("onbuild-stage-from").read("copy"), "thirteen");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_new_deps() {
    if !require_root("buildkit_test_on_build_new_deps") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY <<END /release\nside-image-1.0\nEND\n")]);
    case.build(&["-t", "side-image"]);
    case.write("Dockerfile", "FROM busybox\nONBUILD COPY --from=side-image /release /out/release2\n");
    case.build(&["--pull=never", "-t", "onbuild-deps"]);
    case.write("Dockerfile", "FROM onbuild-deps AS base\nRUN cat /out/release2 > /out/release3\nFROM scratch\nCOPY --from=base /out /\n");
    case.build(&["--pull=never", "-t", "onbuild-deps-child"]);
    assert_eq!(case.unpack("onbuild-deps-child").read("release3"), "side-image-1.0\n");

    case.write(
        "Dockerfile",
        "FROM busybox\nONBUILD RUN --mount=type=bind,target=/in,from=inputstage mkdir /out && cat /in/value > /out/bar && cat /in/out/release2 > /out/bar2\n",
    );
    case.build(&["--pull=never", "-t", "onbuild-mount"]);
    case.write(
        "Dockerfile",
        "FROM onbuild-deps AS inputstage\nRUN echo -n value > /value\nFROM onbuild-mount AS base\nRUN echo -n bar3 > /out/bar3\nFROM scratch\nCOPY --from=base /out /\n",
    );
    case.build(&["--pull=never", "-t", "onbuild-mount-child"]);
    let files = case.unpack("onbuild-mount-child");
    assert_eq!(files.read("bar"), "value");
    assert_eq!(files.read("bar2"), "side-image-1.0\n");
    assert_eq!(files.read("bar3"), "bar3");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_on_build_with_cache_mount() {
    if !require_root("buildkit_test_on_build_with_cache_mount") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nONBUILD RUN --mount=type=cache,target=/cache echo -n 42 >> /cache/value && echo -n 7 >> /left\n",
    )]);
    case.build(&["-t", "onbuild-cache"]);
    case.write(
        "Dockerfile",
        "FROM onbuild-cache\nRUN --mount=type=cache,target=/cache [ \"$(cat /cache/value)\" = 42 ] && [ \"$(cat /left)\" = 7 ]\n",
    );
    case.build(&["--pull=never", "-t", "onbuild-cache-child"]);
}

// ---- dockerfile_runnetwork_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_no_network() {
    if !require_root("buildkit_test_run_no_network") {
        return;
    }
    // The loopback alone, and up (as Docker and runc bring it up).
    let dockerfile =
        "FROM busybox\nRUN --network=none [ \"$(ls /sys/class/net)\" = lo ] && ip link show lo | grep -q ',UP'\nRUN ip link show eth0\n";
    Case::new(&[("Dockerfile", dockerfile)]).build(&["-t", "no-network"]);
}

// ---- dockerfile_runsecurity_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_security_default() {
    if !require_root("buildkit_test_run_security_default") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nRUN grep -x 'CapBnd:\t00000000a80425fb' /proc/self/status\n")]);
    case.build(&["-t", "security-default"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_security_sandbox() {
    if !require_root("buildkit_test_run_security_sandbox") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nRUN --security=sandbox grep -x 'CapBnd:\t00000000a80425fb' /proc/self/status\n")]);
    case.build(&["-t", "security-sandbox"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_run_security_insecure() {
    if !require_root("buildkit_test_run_security_insecure") {
        return;
    }
    // BuildKit asserts every capability of its host; here: every one this test has.
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let own = status.lines().find(|l| l.starts_with("CapBnd:")).expect("CapBnd line").to_string();
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nARG HOST_CAPS\nRUN --security=insecure [ \"$(grep CapBnd /proc/self/status)\" = \"$HOST_CAPS\" ]\nRUN grep -x 'CapBnd:\t00000000a80425fb' /proc/self/status\n",
    )]);
    let arg = format!("HOST_CAPS={own}");
    let stderr = case.fails(&["--build-arg", &arg]);
    assert!(stderr.contains("security.insecure"), "without the entitlement the step is refused:\n{stderr}");
    case.build(&["--allow", "security.insecure", "--build-arg", &arg, "-t", "security-insecure"]);
}

// ---- dockerfile_platform_test.go ----

#[test]
fn buildkit_test_platform_args_implicit() {
    let case = Case::new(&[
        ("Dockerfile", "FROM scratch AS build-linux\nCOPY one first\nFROM build-${TARGETOS}\nCOPY two second\n"),
        ("one", "1"),
        ("two", "2"),
    ]);
    case.build(&["-t", "platform-implicit"]);
    let files = case.unpack("platform-implicit");
    assert_eq!(files.read("first"), "1");
    assert_eq!(files.read("second"), "2");
}

// ---- dockerfile_source_date_epoch_test.go ----

/// 2023-11-14T22:13:20Z.
const EPOCH: &str = "1700000000";

#[test]
fn buildkit_test_source_date_epoch_without_exporter() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nENTRYPOINT run this\nCOPY Dockerfile .\n")]);
    case.build(&["--build-arg", &format!("SOURCE_DATE_EPOCH={EPOCH}"), "-t", "epoch-arg"]);
    let image = case.inspect("epoch-arg");
    assert_eq!(image["Created"], "2023-11-14T22:13:20Z");
    for entry in image["History"].as_array().expect("history") {
        assert_eq!(entry["created"], "2023-11-14T22:13:20Z", "{entry}");
    }
}

#[test]
fn buildkit_test_source_date_epoch_dockerfile_default() {
    let case = Case::new(&[("Dockerfile", &format!("ARG SOURCE_DATE_EPOCH={EPOCH}\nFROM scratch\nCOPY Dockerfile .\n"))]);
    case.build(&["-t", "epoch-default"]);
    assert_eq!(case.unpack("epoch-default").meta("Dockerfile").mtime().to_string(), EPOCH, "a newer mtime is clamped");
    assert_eq!(case.inspect("epoch-default")["Created"], "2023-11-14T22:13:20Z");
}

#[test]
fn buildkit_test_source_date_epoch_dockerfile_default_override() {
    let case = Case::new(&[("Dockerfile", "ARG SOURCE_DATE_EPOCH=1600000000\nFROM scratch\nCOPY Dockerfile .\n")]);
    case.build(&["--build-arg", &format!("SOURCE_DATE_EPOCH={EPOCH}"), "-t", "epoch-override"]);
    assert_eq!(case.unpack("epoch-override").meta("Dockerfile").mtime().to_string(), EPOCH);
}

#[test]
fn buildkit_test_source_date_epoch_dockerfile_default_invalid() {
    let case = Case::new(&[("Dockerfile", "ARG SOURCE_DATE_EPOCH=not-seconds\nFROM scratch\nCOPY Dockerfile .\n")]);
    let stderr = case.fails(&[]);
    assert!(stderr.contains("invalid SOURCE_DATE_EPOCH") && stderr.contains("not-seconds"), "{stderr}");
}

#[test]
fn buildkit_test_source_date_epoch_context_local_unset() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nCOPY Dockerfile .\n")]);
    case.build(&["--build-arg", "SOURCE_DATE_EPOCH=context", "-t", "epoch-context"]);
    let written = std::fs::metadata(case.dir().join("Dockerfile")).expect("stat Dockerfile").mtime();
    assert_eq!(case.unpack("epoch-context").meta("Dockerfile").mtime(), written, "a local context gives no epoch: mtimes stay");
}

// ---- dockerfile_workdir_test.go ----

#[test]
fn buildkit_test_workdir_creates_dir() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\nWORKDIR /made\nWORKDIR /\n")]);
    case.build(&["-t", "workdir-dir"]);
    assert!(case.unpack("workdir-dir").meta("made").is_dir());
}

#[test]
fn buildkit_test_workdir_source_date_epoch_reproducible() {
    let ctx = context(&[("Dockerfile", "FROM busybox\nWORKDIR /place\n")]);
    let build = || {
        let store = TestStore::empty();
        let reproducible = |args: &[&str], dir: &Path| {
            store.strata().env("SOURCE_DATE_EPOCH", "1700000000").args(["build", "-q"]).args(args).arg(dir).assert().success();
        };
        reproducible(&["-t", "busybox:latest"], &busybox_context());
        reproducible(&["-t", "workdir-epoch"], ctx.path());
        store.ok(&["image", "inspect", "--format", "{{.ManifestDigest}}", "workdir-epoch"])
    };
    assert_eq!(build(), build(), "two stores, one epoch: one manifest");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_workdir_user() {
    if !require_root("buildkit_test_workdir_user") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nUSER app\nWORKDIR /owned\nRUN [ \"$(stat -c '%U %G' /owned)\" = 'app app' ]\n")]);
    case.build(&["-t", "workdir-user"]);
}

#[test]
fn buildkit_test_workdir_copy_ignore_relative() {
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS base\nWORKDIR /deep\nCOPY Dockerfile /\nFROM busybox\nCOPY --from=base Dockerfile .\n",
    )]);
    case.build(&["-t", "workdir-relative"]);
    assert!(case.unpack("workdir-relative").exists("Dockerfile"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_workdir_exists() {
    if !require_root("buildkit_test_workdir_exists") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nRUN mkdir /existing && chown app:app /existing\nWORKDIR /existing\nRUN [ \"$(stat -c '%U %G' /existing)\" = 'app app' ]\n",
    )]);
    case.build(&["-t", "workdir-exists"]);
}

// ---- dockerfile_cache_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_reproducible_ids() {
    if !require_root("buildkit_test_reproducible_ids") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nENV k=v\nCOPY item /\nRUN echo made > made\n"), ("item", "x")]);
    case.build(&["-t", "repro-one"]);
    case.build(&["-t", "repro-two"]);
    let id = |tag: &str| case.store.ok(&["image", "inspect", "--format", "{{.ManifestDigest}}", tag]);
    assert_eq!(id("repro-one"), id("repro-two"));
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_no_cache() {
    if !require_root("buildkit_test_no_cache") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS s0\nRUN head -c 64 /dev/urandom | sha256sum > /r0\nFROM busybox AS s1\nRUN head -c 64 /dev/urandom | sha256sum > /r1\nFROM scratch\nCOPY --from=s0 /r0 /\nCOPY --from=s1 /r1 /\n",
    )]);
    let both = |extra: &[&str]| {
        let mut flags = extra.to_vec();
        flags.extend(["-t", "no-cache"]);
        case.build(&flags);
        let files = case.unpack("no-cache");
        (files.read("r0"), files.read("r1"))
    };
    let first = both(&[]);
    let second = both(&["--no-cache"]);
    assert_ne!(first.0, second.0);
    assert_ne!(first.1, second.1);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_cache_mount_mode_no_cache() {
    if !require_root("buildkit_test_cache_mount_mode_no_cache") {
        return;
    }
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox AS base\nARG NAME=first\nRUN --mount=type=cache,target=/cache,mode=0773 touch /cache/$NAME && ls /cache | wc -l > /count\nFROM scratch\nCOPY --from=base /count /\n",
    )]);
    let count = |extra: &[&str]| {
        let mut flags = extra.to_vec();
        flags.extend(["-t", "cache-mode"]);
        case.build(&flags);
        case.unpack("cache-mode").read("count").trim().to_string()
    };
    assert_eq!(count(&["--no-cache"]), "1");
    assert_eq!(count(&["--no-cache", "--build-arg", "NAME=second"]), "1", "--no-cache also starts cache mounts empty");
    assert_eq!(count(&["--build-arg", "NAME=third"]), "2", "without it the cache mount keeps what the last build left");
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_wildcard_rename_cache() {
    if !require_root("buildkit_test_wildcard_rename_cache") {
        return;
    }
    let case = Case::new(&[("Dockerfile", "FROM busybox\nCOPY part* /parts/\nRUN ls /parts/part1\n"), ("part1", "p")]);
    case.build(&["-t", "rename-cache"]);
    std::fs::rename(case.dir().join("part1"), case.dir().join("part2")).expect("rename");
    case.fails(&[]);
}

// ---- dockerfile_secrets_test.go ----

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_secret_as_environ() {
    if !require_root("buildkit_test_secret_as_environ") {
        return;
    }
    let (_file, spec) = secret_file("hunter2");
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nENV TOKEN=before\nRUN --mount=type=secret,id=tok,env=TOKEN [ \"$TOKEN\" = hunter2 ] && [ ! -f /run/secrets/tok ]\n",
    )]);
    case.build(&["--secret", &spec, "-t", "secret-env"]);
}

#[test]
#[cfg_attr(not(strata_tests_root), ignore = "needs root (namespaces, overlayfs, mknod)")]
fn buildkit_test_secret_as_environ_with_file_mount() {
    if !require_root("buildkit_test_secret_as_environ_with_file_mount") {
        return;
    }
    let (_file, spec) = secret_file("hunter2");
    let case = Case::new(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=tok,target=/run/secrets/at,env=TOKEN [ \"$TOKEN\" = hunter2 ] && [ -f /run/secrets/at ]\n",
    )]);
    case.build(&["--secret", &spec, "-t", "secret-env-file"]);
}

// ---- errors_test.go ----

#[test]
fn buildkit_test_errors_source_map() {
    let case = Case::new(&[("Dockerfile", "FROM scratch\n")]);
    for (dockerfile, line) in [
        ("FROM busybox\nENV\n", 2),
        ("FROM scratch\nENV k=v\nCOPY --bogus=1 / /\nENV a=b\n", 3),
        ("FROM scratch\nENV k=v\nCOPY --from=no-such-stage-or-image missing here\nENV a=b\n", 3),
        ("FROM scratch\nENV k=v\nCOPY absent-file dest\nENV a=b\n", 3),
    ] {
        case.write("Dockerfile", dockerfile);
        let stderr = case.fails(&["--pull=never"]);
        assert!(stderr.contains(&format!("Dockerfile:{line}")), "error of\n{dockerfile}\nnames line {line}:\n{stderr}");
    }
}
