//! Registries: strata against Debian's `docker-registry` (the distribution
//! registry) on 127.0.0.1, with skopeo and umoci on the other side — push
//! and read back, pull what skopeo pushed (gzip, zstd, Docker schema2),
//! build FROM it and run it, keep a pulled manifest's digest, refuse a
//! tampered blob, name an unknown reference, and Basic auth with login.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestStore, context, require_root};

/// A `docker-registry serve` on 127.0.0.1 at a free port, killed by its PID on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Registry {
    /// A registry without auth.
    fn start() -> Registry {
        Registry::start_with("")
    }

    /// A registry with htpasswd Basic auth for `user`:`password` (None where no bcrypt is at hand).
    fn with_basic_auth(user: &str, password: &str) -> Option<Registry> {
        let script = "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))";
        let out = Command::new("python3").args(["-W", "ignore", "-c", script, password]).output().ok()?;
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !hash.starts_with("$2") {
            eprintln!("skipping: no bcrypt (python3's crypt module) to write an htpasswd file");
            return None;
        }
        let file = tempfile::NamedTempFile::new().expect("htpasswd file");
        std::fs::write(file.path(), format!("{user}:{hash}\n")).expect("write htpasswd");
        let (_, path) = file.keep().expect("keep htpasswd");
        let auth = format!("auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n", path.display());
        Some(Registry::start_with(&auth))
    }

    fn start_with(extra: &str) -> Registry {
        let which = Command::new("docker-registry").arg("--version").output();
        assert!(which.is_ok(), "docker-registry is missing (apt-get install docker-registry)");
        let dir = tempfile::Builder::new().prefix("strata-registry-").tempdir().expect("registry dir");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            let yaml = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}",
                dir.path().join("data").display()
            );
            std::fs::write(&config, yaml).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            if wait_ready(&mut child, &addr) {
                return Registry { child, dir, addr };
            }
            // The port was taken in between, or the registry died: try another port.
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start:\n{log}");
    }

    /// `ADDR/name` for a repository on this registry.
    fn name(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    /// The registry's own file of a blob.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

/// Polls `GET /v2/` until any HTTP answer, for at most 20 s; false if the process died first.
fn wait_ready(child: &mut Child, addr: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut head = [0u8; 12];
            if stream.write_all(request.as_bytes()).is_ok() && stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo with `args`; panics with its output on failure; returns stdout.
fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo (apt-get install skopeo)");
    assert!(out.status.success(), "skopeo {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The manifest digest skopeo sees at `docker://REF`.
fn remote_digest(reference: &str) -> String {
    let out = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{reference}")]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
    json["Digest"].as_str().expect("Digest").to_string()
}

/// Runs strata, expecting failure; returns stderr.
fn fails(store: &TestStore, args: &[&str]) -> String {
    let out = store.strata().args(args).output().expect("run strata");
    assert!(!out.status.success(), "strata {args:?} succeeded\nstdout:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under the store's blobs and temp folders.
fn blob_names(store: &TestStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.root().join("blobs/sha256"))
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn tmp_is_empty(store: &TestStore) -> bool {
    std::fs::read_dir(store.root().join("strata/tmp")).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Pushes busybox:latest from a fresh store to `dest`; returns the store and the digest strata printed.
fn push_busybox(dest: &str) -> (TestStore, String) {
    let store = TestStore::with_busybox();
    let digest = store.ok(&["push", "-q", "busybox", dest]).trim().to_string();
    (store, digest)
}

#[test]
fn pushed_images_are_read_by_skopeo_and_umoci_and_a_second_push_compresses_nothing() {
    let registry = Registry::start();
    let dest = registry.name("strata/busybox:v1");
    let (store, digest) = push_busybox(&dest);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(remote_digest(&dest), digest);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{dest}")]);
    assert!(raw.contains("application/vnd.oci.image.layer.v1.tar+gzip"), "layers are sent gzip-compressed: {raw}");

    let out = tempfile::tempdir().expect("temp dir");
    let layout = out.path().join("layout");
    skopeo(&["copy", "-q", "--src-tls-verify=false", &format!("docker://{dest}"), &format!("oci:{}:v1", layout.display())]);
    let bundle = out.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(unpack.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&unpack.stderr));
    assert!(bundle.join("rootfs/bin/busybox").exists());

    // The compressed layer is remembered: pushing again (here or elsewhere) compresses and sends nothing new.
    let records = std::fs::read_dir(store.root().join("strata/compressed")).expect("compressed records").count();
    assert_eq!(records, 1);
    let blobs_before = blob_names(&store);
    let again = store.strata().args(["push", "busybox", &dest]).output().expect("push again");
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!stderr.contains(" MB in "), "nothing is uploaded again:\n{stderr}");
    assert_eq!(blob_names(&store), blobs_before);
    let elsewhere = registry.name("other/busybox:v2");
    assert_eq!(store.ok(&["image", "push", "-q", "busybox", &elsewhere]).trim(), digest);
    assert_eq!(blob_names(&store), blobs_before, "no layer compressed again for another repository");
}

#[test]
fn images_skopeo_pushes_in_gzip_and_zstd_are_pulled_built_on_and_run() {
    let registry = Registry::start();
    let (_source, _) = push_busybox(&registry.name("src/busybox:v1"));
    let source = format!("docker://{}", registry.name("src/busybox:v1"));
    // zstd goes to a second registry: skopeo's blob-info cache would otherwise reuse the gzip layers it saw.
    let second = Registry::start();
    let gzip = registry.name("skopeo/gzip:v1");
    let zstd = second.name("skopeo/zstd:v1");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "gzip",
        "--dest-compress",
        &source,
        &format!("docker://{gzip}"),
    ]);
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        &source,
        &format!("docker://{zstd}"),
    ]);
    assert!(skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{zstd}")]).contains("tar+zstd"));

    let store = TestStore::empty();
    for reference in [&gzip, &zstd] {
        assert_eq!(store.ok(&["pull", reference]).trim(), reference.as_str());
    }
    let listed = store.ok(&["images"]);
    assert!(listed.contains(&second.name("skopeo/zstd")) && listed.contains(&registry.name("skopeo/gzip")), "{listed}");
    // The pulled manifest is stored as sent: the blob named by the registry's digest.
    for reference in [&gzip, &zstd] {
        let digest = remote_digest(reference);
        assert!(blob_names(&store).contains(&digest.trim_start_matches("sha256:").to_string()), "{reference}");
    }

    if !require_root("images_skopeo_pushes_in_gzip_and_zstd_are_pulled_built_on_and_run") {
        return;
    }
    for (base, word) in [(&gzip, "gzip"), (&zstd, "zstd")] {
        let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN echo built-on-{word} > /built\n"))]);
        store.build(ctx.path(), &["-t", &format!("on-{word}")]);
        let out = store.ok(&["run", "--rm", &format!("on-{word}"), "cat", "/built"]);
        assert_eq!(out.trim(), format!("built-on-{word}"));
        let out = store.ok(&["run", "--rm", base, "busybox", "echo", "ran"]);
        assert_eq!(out.trim(), "ran");
    }
    // A build on a pulled base pushes back: old layers as pulled, the new one gzip-compressed.
    let pushed = registry.name("built/on-zstd:v1");
    let digest = store.ok(&["push", "-q", "on-zstd", &pushed]).trim().to_string();
    assert_eq!(remote_digest(&pushed), digest);
}

#[test]
fn a_pulled_image_pushed_elsewhere_keeps_its_manifest_digest() {
    let registry = Registry::start();
    let (_source, _) = push_busybox(&registry.name("src/busybox:v1"));
    let source = format!("docker://{}", registry.name("src/busybox:v1"));
    let store = TestStore::empty();
    for (format, repo) in [("oci", "as-oci"), ("v2s2", "as-docker")] {
        let original = registry.name(&format!("{repo}/busybox:v1"));
        skopeo(&[
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            format,
            &source,
            &format!("docker://{original}"),
        ]);
        let digest = remote_digest(&original);
        store.ok(&["pull", "-q", &original]);
        let copy = registry.name(&format!("copy-{repo}/busybox:v2"));
        assert_eq!(store.ok(&["push", "-q", &original, &copy]).trim(), digest, "{format}");
        assert_eq!(remote_digest(&copy), digest, "{format}");
    }
    // By digest: untagged in the store, found by the digest.
    let by_digest = format!("{}@{}", registry.name("as-docker/busybox"), remote_digest(&registry.name("as-docker/busybox:v1")));
    let fresh = TestStore::empty();
    fresh.ok(&["pull", &by_digest]);
    assert!(fresh.ok(&["images"]).contains("<none>"));
    fresh.ok(&["image", "history", &by_digest]);
}

#[test]
fn a_blob_served_with_the_wrong_bytes_is_refused_and_leaves_nothing() {
    let registry = Registry::start();
    let dest = registry.name("tampered/busybox:v1");
    let (source, _) = push_busybox(&dest);
    // The layer as pushed (the gzip blob), found through the manifest skopeo reads.
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{dest}")])).expect("manifest");
    let layer = raw["layers"][0]["digest"].as_str().expect("layer digest").to_string();
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).expect("read the registry's blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).expect("tamper with the blob");
    drop(source);

    let store = TestStore::empty();
    let before = blob_names(&store);
    let err = fails(&store, &["pull", &dest]);
    assert!(err.contains("does not match its digest") && err.contains(&layer), "{err}");
    let after = blob_names(&store);
    assert!(!after.contains(&layer.trim_start_matches("sha256:").to_string()), "the bad layer is not stored");
    assert!(after.len() <= before.len() + 1, "at most the config was stored: {after:?}");
    assert!(tmp_is_empty(&store), "no temp file is left");
    assert!(!store.ok(&["images"]).contains("tampered"), "nothing is tagged");
}

#[test]
fn an_unknown_repository_or_tag_is_named_in_the_error() {
    let registry = Registry::start();
    let (_source, _) = push_busybox(&registry.name("known/busybox:v1"));
    let store = TestStore::empty();
    for reference in [registry.name("unknown/repo:v1"), registry.name("known/busybox:nope")] {
        let err = fails(&store, &["pull", &reference]);
        assert!(err.contains(&reference) && err.contains("not found"), "{err}");
    }
    let err = fails(&store, &["pull", "127.0.0.1:1/nothing:here"]);
    assert!(err.contains("127.0.0.1:1") && err.contains("unreachable"), "{err}");
    let err = fails(&store, &["push", "no-such-image", &registry.name("x:y")]);
    assert!(err.contains("no-such-image"), "{err}");
}

/// Runs strata with an auth file of its own and no other credentials in reach.
fn with_auth(store: &TestStore, auth: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = store.strata();
    cmd.env("REGISTRY_AUTH_FILE", auth).env("HOME", home).env_remove("XDG_RUNTIME_DIR").env_remove("DOCKER_CONFIG").args(args);
    if let Some(input) = stdin {
        cmd.write_stdin(input.as_bytes().to_vec());
    }
    cmd.output().expect("run strata")
}

#[test]
fn basic_auth_login_push_pull_and_logout() {
    let Some(registry) = Registry::with_basic_auth("alice", "s3cret-pw") else { return };
    let home = tempfile::tempdir().expect("home");
    let auth = home.path().join("auth.json");
    let store = TestStore::with_busybox();
    let dest = registry.name("private/busybox:v1");

    let out = with_auth(&store, &auth, home.path(), &["push", "busybox", &dest], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied") && err.contains(&registry.addr), "{err}");

    let out = with_auth(&store, &auth, home.path(), &["login", &registry.addr, "-u", "alice", "--password-stdin"], Some("wrong\n"));
    assert!(!out.status.success(), "a wrong password is refused");
    assert!(!auth.exists(), "nothing is written for a refused login");

    let out = with_auth(&store, &auth, home.path(), &["login", &registry.addr, "-u", "alice", "--password-stdin"], Some("s3cret-pw\n"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "login failed: {stderr}");
    assert!(!stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"), "the secret is never printed");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&auth).expect("auth file").permissions().mode() & 0o777, 0o600);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&auth).expect("read auth")).expect("auth JSON");
    assert!(saved["auths"][&registry.addr]["auth"].is_string(), "{saved}");

    let out = with_auth(&store, &auth, home.path(), &["push", "-q", "busybox", &dest], None);
    assert!(out.status.success(), "push after login: {}", String::from_utf8_lossy(&out.stderr));
    let fresh = TestStore::empty();
    let out = with_auth(&fresh, &auth, home.path(), &["pull", &dest], None);
    assert!(out.status.success(), "pull after login: {}", String::from_utf8_lossy(&out.stderr));

    let out = with_auth(&store, &auth, home.path(), &["logout", &registry.addr], None);
    assert!(out.status.success());
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&auth).expect("read auth")).expect("auth JSON");
    assert!(saved["auths"].get(&registry.addr).is_none(), "{saved}");
    let out = with_auth(&TestStore::empty(), &auth, home.path(), &["pull", &dest], None);
    assert!(!out.status.success(), "logged out: the pull is denied");
}

/// `image inspect` of one image, as JSON.
fn inspect(store: &TestStore, image: &str) -> serde_json::Value {
    let out: serde_json::Value = serde_json::from_str(&store.ok(&["image", "inspect", image])).expect("inspect JSON");
    out[0].clone()
}

/// Builds `FROM busybox` + `ENV V=version` in `store` and pushes it as `dest` with `push_flag`.
fn push_version(store: &TestStore, dest: &str, version: &str, push_flag: &[&str]) {
    let ctx = context(&[("Dockerfile", &format!("FROM busybox\nENV V={version}\n"))]);
    let mut extra = vec!["-t", dest];
    extra.extend_from_slice(push_flag);
    let (_, stderr) = store.build(ctx.path(), &extra);
    assert!(stderr.contains("pushed"), "the build pushed {dest}:\n{stderr}");
}

#[test]
fn from_pulls_what_the_store_lacks_and_a_moved_tag_misses_the_cache_with_pull_always() {
    let registry = Registry::start();
    let base = registry.name("base/moving:t");
    let publisher = TestStore::with_busybox();
    push_version(&publisher, &base, "1", &["--push"]);
    let v1 = remote_digest(&base);
    let pushed = inspect(&publisher, &base);
    assert_eq!(pushed["RepoDigests"], serde_json::json!([format!("{}@{v1}", registry.name("base/moving"))]), "{pushed}");

    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nCOPY f /f\n")), ("f", "data")]);
    let consumer = TestStore::empty();
    let (_, stderr) = consumer.build(ctx.path(), &["-t", "app"]);
    assert!(stderr.contains(&format!("pulled {}", registry.name("base/moving:t"))), "FROM pulled the missing base:\n{stderr}");
    assert!(inspect(&consumer, "app")["Config"]["Env"].to_string().contains("V=1"));
    let pulled = inspect(&consumer, &base);
    assert_eq!(pulled["RepoTags"], serde_json::json!([base.clone()]));
    assert_eq!(pulled["RepoDigests"], serde_json::json!([format!("{}@{v1}", registry.name("base/moving"))]));

    // The tag moves; --pull=missing keeps what the store has, cached.
    push_version(&publisher, &base, "2", &["--output", "type=registry"]);
    let v2 = remote_digest(&base);
    assert_ne!(v1, v2);
    let (_, stderr) = consumer.build(ctx.path(), &["-t", "app", "--pull=missing"]);
    assert!(!stderr.contains("pulled") && stderr.contains("CACHED"), "{stderr}");
    assert!(inspect(&consumer, "app")["Config"]["Env"].to_string().contains("V=1"));

    // `--pull` alone is always: the new base is pulled and the COPY on it misses the cache.
    let (_, stderr) = consumer.build(ctx.path(), &["-t", "app", "--pull"]);
    assert!(stderr.contains("pulled") && !stderr.contains("CACHED"), "a moved base misses the cache:\n{stderr}");
    let app = inspect(&consumer, "app");
    assert!(app["Config"]["Env"].to_string().contains("V=2"), "{app}");
    assert_eq!(inspect(&consumer, &base)["RepoDigests"][0], format!("{}@{v2}", registry.name("base/moving")));
    let (_, stderr) = consumer.build(ctx.path(), &["-t", "app", "--pull=always"]);
    assert!(stderr.contains("CACHED"), "the same base again hits the cache:\n{stderr}");

    // --pull=never does not fetch; COPY --from an image pulls it like FROM.
    let fresh = TestStore::empty();
    let out = fresh.strata().args(["build", "--pull=never", "-t", "app"]).arg(ctx.path()).output().expect("run strata");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&base) && err.contains("not found"), "{err}");
    let ctx = context(&[("Dockerfile", &format!("FROM scratch\nCOPY --from={base} /bin/busybox /busybox\n"))]);
    let (_, stderr) = fresh.build(ctx.path(), &["-t", "copied"]);
    assert!(stderr.contains("pulled"), "{stderr}");
    assert_eq!(inspect(&fresh, "copied")["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
}

#[test]
fn build_push_needs_a_name() {
    let registry = Registry::start();
    let store = TestStore::with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nENV A=1\n")]);
    let out = store.strata().args(["build", "--push"]).arg(ctx.path()).output().expect("run strata");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("-t"), "{err}");
    let spec = format!("type=registry,dest={}", registry.name("x"));
    let out = store.strata().args(["build", "--output", &spec]).arg(ctx.path()).output().expect("run strata");
    assert!(!out.status.success());
}
