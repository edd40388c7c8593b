//! Registries: strata against Debian's `docker-registry` (the distribution
//! registry) on 127.0.0.1, with skopeo and umoci on the other side — push
//! and read back, pull what skopeo pushed (gzip, zstd, Docker schema2),
//! build FROM it and run it, keep a pulled manifest's digest, refuse a
//! tampered blob, name an unknown reference, and Basic auth with login.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{TestStore, context, require_root};

/// A `docker-registry serve` on 127.0.0.1 at a free port, killed by its PID on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
}

impl Registry {
    /// A registry without auth.
    pub(crate) fn start() -> Registry {
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
        Registry::start_on("127.0.0.1", extra)
    }

    /// A registry listening on `host` (any loopback address) at a free port.
    fn start_on(host: &str, extra: &str) -> Registry {
        let which = Command::new("docker-registry").arg("--version").output();
        assert!(which.is_ok(), "docker-registry is missing (apt-get install docker-registry)");
        let dir = tempfile::Builder::new().prefix("strata-registry-").tempdir().expect("registry dir");
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(format!("{host}:0")).and_then(|l| l.local_addr()).expect("free port").port();
            let addr = format!("{host}:{port}");
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
                // The access log (one line per request), which tests count requests in.
                .stdout(Stdio::from(std::fs::File::create(dir.path().join("access.log")).expect("access log")))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            if wait_ready(&mut child, &addr, extra.contains("tls:")) {
                return Registry { child, dir, addr };
            }
            // The port was taken in between, or the registry died: try another port.
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start:\n{log}");
    }

    /// Kills the registry with SIGKILL, as a crash.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed registry again on the same address and storage.
    fn start_again(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).expect("registry log");
        let config = self.dir.path().join("config.yml");
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart docker-registry");
        assert!(wait_ready(&mut self.child, &self.addr, false), "docker-registry did not start again");
    }

    /// `ADDR/name` for a repository on this registry.
    fn name(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    /// The registry's own file of a blob.
    /// The requests in the access log since it was last cleared, one line each.
    pub(crate) fn requests(&self) -> Vec<String> {
        let log = std::fs::read(self.dir.path().join("access.log")).unwrap_or_default();
        String::from_utf8_lossy(&log).lines().filter(|l| l.contains("\" ")).map(str::to_string).collect()
    }

    pub(crate) fn clear_requests(&self) {
        std::fs::write(self.dir.path().join("access.log"), "").expect("clear access log");
    }

    pub(crate) fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

/// Polls `GET /v2/` until any HTTP answer (with TLS: until the port accepts), for at most 20 s; false if the process died first.
fn wait_ready(child: &mut Child, addr: &str, tls: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if tls && TcpStream::connect(addr).is_ok() {
            return true;
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

/// Whether no temp file is in the store (a finished command's temp folder is swept when the store is next opened).
fn tmp_is_empty(store: &TestStore) -> bool {
    crate::store_temp_files(store.root()).is_empty()
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
    registry.clear_requests();
    let again = store.strata().args(["push", "busybox", &dest]).output().expect("push again");
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!stderr.contains(" MB in "), "nothing is uploaded again:\n{stderr}");
    assert_eq!(blob_names(&store), blobs_before);
    // The tag already names the manifest: one HEAD of it answers the push, no blob is asked about.
    let requests = registry.requests();
    assert!(requests.iter().any(|r| r.contains("\"HEAD /v2/strata/busybox/manifests/v1 ")), "{requests:#?}");
    assert!(!requests.iter().any(|r| r.contains("/blobs/")), "a second push touches no blob: {requests:#?}");
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
        registry.clear_requests();
        assert_eq!(store.ok(&["push", "-q", &original, &copy]).trim(), digest, "{format}");
        assert_eq!(remote_digest(&copy), digest, "{format}");
        // The same registry holds the blobs in the source repository: mounted, not sent.
        let requests = registry.requests();
        let mounted = requests
            .iter()
            .filter(|r| r.contains("/blobs/uploads/?mount=") && r.contains(&format!("from={repo}/busybox")) && r.contains("\" 201 "))
            .count();
        assert_eq!(mounted, 2, "config and layer are mounted from {repo}/busybox: {requests:#?}");
        assert!(
            !requests.iter().any(|r| r.contains("\"PATCH ") || r.contains("\"PUT /v2/copy-") && r.contains("/blobs/")),
            "no blob bytes are sent: {requests:#?}"
        );
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

/// A TCP proxy in front of a registry that goes dead once `limit` bytes have
/// passed one way (downloads or uploads): it cuts every connection and closes
/// each new one at once, as a crashed registry would, until revived.
struct FaultProxy {
    addr: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    /// Count bytes sent to the registry (uploads) rather than from it.
    uploads: bool,
    counted: AtomicU64,
    limit: AtomicU64,
    dead: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl FaultProxy {
    fn start(upstream: &str, uploads: bool, limit: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            uploads,
            counted: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
            dead: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        // The accepting thread lives as long as the test binary; a dead proxy answers nothing.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if shared.dead.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&shared.upstream) else { continue };
                for stream in [&client, &server] {
                    if let (Ok(clone), Ok(mut open)) = (stream.try_clone(), shared.open.lock()) {
                        open.push(clone);
                    }
                }
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
                let (up, down) = (Arc::clone(&shared), Arc::clone(&shared));
                std::thread::spawn(move || up.pipe(client, server, up.uploads));
                std::thread::spawn(move || down.pipe(server2, client2, !down.uploads));
            }
        });
        FaultProxy { addr, state }
    }

    fn name(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    fn is_dead(&self) -> bool {
        self.state.dead.load(Ordering::SeqCst)
    }

    fn revive(&self) {
        self.state.limit.store(u64::MAX, Ordering::SeqCst);
        self.state.dead.store(false, Ordering::SeqCst);
    }
}

impl ProxyState {
    /// Copies `from` to `to`, counting the bytes if `counted`; past the limit the proxy dies.
    fn pipe(&self, mut from: TcpStream, mut to: TcpStream, counted: bool) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if counted && self.counted.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > self.limit.load(Ordering::SeqCst) {
                self.die();
                break;
            }
            if self.dead.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }

    /// Cuts every connection at once.
    fn die(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A store holding `big`: one layer of `mib` MiB that does not compress.
fn big_image(mib: usize) -> TestStore {
    let ctx = tempfile::tempdir().expect("context");
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(ctx.path().join("big"), &data).expect("write big file");
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY big /big\n").expect("write Dockerfile");
    let store = TestStore::empty();
    store.build(ctx.path(), &["-t", "big"]);
    store
}

/// Waits (at most 60 s) for `proxy` to die while `child` runs.
fn wait_until_dead(proxy: &FaultProxy, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.is_dead() {
        assert!(Instant::now() < deadline, "the transfer never reached the proxy's limit");
        assert!(child.try_wait().expect("poll strata").is_none(), "strata ended before the registry was killed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts strata in the background with `args`, its stderr piped.
fn spawn(store: &TestStore, args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .env("STRATA_ROOT", store.root())
        .env("NO_COLOR", "1")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata")
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().expect("wait for strata");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_registry_killed_in_the_middle_of_a_pull_leaves_no_blob_or_tag_and_the_rerun_completes() {
    let mut registry = Registry::start();
    let source = big_image(24);
    source.ok(&["push", "-q", "big", &registry.name("fault/big:v1")]);
    let proxy = FaultProxy::start(&registry.addr, false, 6 << 20);
    let reference = proxy.name("fault/big:v1");

    let store = TestStore::empty();
    let mut child = spawn(&store, &["pull", &reference]);
    wait_until_dead(&proxy, &mut child);
    registry.kill();
    let (ok, err) = finish(child);
    assert!(!ok, "the pull failed");
    assert!(err.contains(&reference) && err.contains("stopped answering"), "the error names what was pulled and why:\n{err}");
    let blobs = blob_names(&store);
    assert!(blobs.len() <= 1, "at most the config was stored: {blobs:?}");
    assert!(tmp_is_empty(&store), "no partial download is left");
    assert!(!store.ok(&["images"]).contains("fault/big"), "nothing is tagged");

    registry.start_again();
    proxy.revive();
    store.ok(&["pull", &reference]);
    assert!(store.ok(&["images"]).contains("fault/big"));
    assert!(tmp_is_empty(&store));
}

/// The registry's answer to `GET /v2/REPOSITORY/manifests/TAG` (status code only).
fn manifest_status(registry: &Registry, repository: &str, tag: &str) -> u16 {
    let url = format!("http://{}/v2/{repository}/manifests/{tag}", registry.addr);
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).output().expect("run curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_registry_killed_in_the_middle_of_a_push_leaves_no_blob_or_tag_and_the_rerun_completes() {
    let mut registry = Registry::start();
    let store = big_image(24);
    let proxy = FaultProxy::start(&registry.addr, true, 6 << 20);
    let dest = proxy.name("fault/up:v1");
    let mut child = spawn(&store, &["push", "big", &dest]);
    wait_until_dead(&proxy, &mut child);
    registry.kill();
    let (ok, err) = finish(child);
    assert!(!ok, "the push failed");
    assert!(err.contains("big") && err.contains(&proxy.addr), "the error names the image and the registry:\n{err}");
    assert!(tmp_is_empty(&store), "no temp file is left in the store");

    registry.start_again();
    assert_eq!(manifest_status(&registry, "fault/up", "v1"), 404, "no tag on the registry");
    let blobs = registry.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let stored: Vec<PathBuf> = walk(&blobs).into_iter().filter(|p| p.ends_with("data")).collect();
    for file in &stored {
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        assert!(len < 1 << 20, "only the small config is complete on the registry; {} holds {len} bytes", file.display());
    }
    proxy.revive();
    let digest = store.ok(&["push", "-q", "big", &dest]).trim().to_string();
    assert_eq!(remote_digest(&registry.name("fault/up:v1")), digest);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn a_manifest_naming_a_missing_blob_is_refused_naming_the_digest() {
    let registry = Registry::start();
    let dest = registry.name("missing/busybox:v1");
    let (_source, _) = push_busybox(&dest);
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{dest}")])).expect("manifest");
    let layer = raw["layers"][0]["digest"].as_str().expect("layer digest").to_string();
    // The repository forgets the layer; its manifest still names it.
    let link = registry
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/missing/busybox/_layers/sha256")
        .join(layer.trim_start_matches("sha256:"));
    std::fs::remove_dir_all(&link).expect("remove the layer's link");

    let store = TestStore::empty();
    let err = fails(&store, &["pull", &dest]);
    assert!(err.contains(&layer) && err.contains("not found"), "{err}");
    assert!(!blob_names(&store).contains(&layer.trim_start_matches("sha256:").to_string()));
    assert!(!store.ok(&["images"]).contains("missing/busybox"), "nothing is tagged");
}

/// A Bearer-token front for a registry, as Docker Hub's auth flow works:
/// `/token` issues a token (to `alice`:`pw` only, sent as Basic), `/v2/…`
/// wants `Authorization: Bearer <token>` and answers 401 with a Bearer
/// challenge otherwise; each request is forwarded on a connection of its own.
/// Every `expire_every` forwarded requests all tokens expire.
struct TokenProxy {
    addr: String,
    state: Arc<TokenState>,
}

struct TokenState {
    addr: String,
    upstream: String,
    tokens: Mutex<Vec<String>>,
    issued: AtomicU64,
    forwarded: AtomicU64,
    expire_every: u64,
}

impl TokenProxy {
    fn start(upstream: &str, expire_every: u64) -> TokenProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token proxy");
        let addr = listener.local_addr().expect("address").to_string();
        let state = Arc::new(TokenState {
            addr: addr.clone(),
            upstream: upstream.to_string(),
            tokens: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            expire_every,
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || state.serve(client));
            }
        });
        TokenProxy { addr, state }
    }

    fn name(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }
}

impl TokenState {
    fn serve(&self, mut client: TcpStream) {
        let mut reader = std::io::BufReader::new(match client.try_clone() {
            Ok(c) => c,
            Err(_) => return,
        });
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match std::io::BufRead::read_line(&mut reader, &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push(line),
            }
        }
        let Some(request_line) = head.first().cloned() else { return };
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let header = |name: &str| {
            head.iter().skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        if path.starts_with("/token") {
            use base64::Engine as _;
            let wanted = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pw"));
            if header("authorization").as_deref() != Some(wanted.as_str()) {
                let _ = client.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return;
            }
            let token = format!("tok-{}", self.issued.fetch_add(1, Ordering::SeqCst));
            if let Ok(mut tokens) = self.tokens.lock() {
                tokens.push(token.clone());
            }
            let body = format!("{{\"token\":\"{token}\",\"expires_in\":60}}");
            let _ = write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
        let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_string));
        let live = bearer.is_some_and(|t| self.tokens.lock().map(|tokens| tokens.contains(&t)).unwrap_or(false));
        if !live {
            let challenge = format!("Bearer realm=\"http://{}/token\",service=\"strata-test\",scope=\"repository:x:pull\"", self.addr);
            let _ = write!(
                client,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        if self.expire_every > 0
            && (self.forwarded.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(self.expire_every)
            && let Ok(mut tokens) = self.tokens.lock()
        {
            tokens.clear();
        }
        let Ok(mut server) = TcpStream::connect(&self.upstream) else { return };
        let mut forwarded = request_line;
        for line in head.iter().skip(1) {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                forwarded.push_str(line);
            }
        }
        forwarded.push_str("Connection: close\r\n\r\n");
        if server.write_all(forwarded.as_bytes()).is_err() {
            return;
        }
        let length: u64 = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        if std::io::copy(&mut (&mut reader).take(length), &mut server).is_err() {
            return;
        }
        let _ = std::io::copy(&mut server, &mut client);
    }
}

#[test]
fn the_bearer_token_flow_logs_in_pushes_and_pulls_and_refreshes_an_expired_token() {
    let registry = Registry::start();
    let proxy = TokenProxy::start(&registry.addr, 5);
    let home = tempfile::tempdir().expect("home");
    let auth = home.path().join("auth.json");
    let store = TestStore::with_busybox();
    let dest = proxy.name("token/busybox:v1");

    // No credentials: the token endpoint refuses, and the error says so.
    let out = with_auth(&store, &auth, home.path(), &["push", "busybox", &dest], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("denied") && err.contains("token"), "{err}");
    let out = with_auth(&store, &auth, home.path(), &["login", &proxy.addr, "-u", "alice", "--password-stdin"], Some("nope\n"));
    assert!(!out.status.success(), "a refused token request fails the login");
    let out = with_auth(&store, &auth, home.path(), &["login", &proxy.addr, "-u", "alice", "--password-stdin"], Some("pw\n"));
    assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));

    // Tokens expire every 5 requests: each 401 fetches a new one and the request is sent again.
    let out = with_auth(&store, &auth, home.path(), &["push", "-q", "busybox", &dest], None);
    assert!(out.status.success(), "push with tokens: {}", String::from_utf8_lossy(&out.stderr));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(remote_digest(&registry.name("token/busybox:v1")), digest);
    let fresh = TestStore::empty();
    let out = with_auth(&fresh, &auth, home.path(), &["pull", &dest], None);
    assert!(out.status.success(), "pull with tokens: {}", String::from_utf8_lossy(&out.stderr));
    assert!(proxy.state.issued.load(Ordering::SeqCst) >= 4, "expired tokens were replaced");
}

/// A CA and a certificate it signed for 127.0.0.2, made with openssl in `dir`: (ca.pem, cert.pem, key.pem).
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=strata test CA",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=127.0.0.2"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.2\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        .expect("write extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

#[test]
fn a_tls_registry_with_an_unknown_certificate_is_refused_unless_trusted_or_tls_verify_is_off() {
    let certs = tempfile::tempdir().expect("cert dir");
    let (ca, cert, key) = make_certificate(certs.path());
    // 127.0.0.2 is loopback but not a name strata trusts without TLS.
    let tls = format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
    let registry = Registry::start_on("127.0.0.2", &tls);
    let store = TestStore::with_busybox();
    let dest = registry.name("tls/busybox:v1");

    let err = fails(&store, &["push", "busybox", &dest]);
    assert!(err.contains("127.0.0.2") && err.to_lowercase().contains("certificate"), "{err}");
    let digest = store.ok(&["push", "-q", "--tls-verify=false", "busybox", &dest]).trim().to_string();
    assert!(digest.starts_with("sha256:"));

    let fresh = TestStore::empty();
    let err = fails(&fresh, &["pull", &dest]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The test CA as the system's roots (SSL_CERT_FILE): verified, accepted.
    let out = fresh.strata().env("SSL_CERT_FILE", &ca).args(["pull", "-q", &dest]).output().expect("run strata");
    assert!(out.status.success(), "pull trusting the test CA: {}", String::from_utf8_lossy(&out.stderr));
    let ctx = context(&[("Dockerfile", &format!("FROM {dest}\nENV T=1\n"))]);
    let built = TestStore::empty();
    let out = built.strata().args(["build", "--tls-verify=false", "-t", "on-tls"]).arg(ctx.path()).output().expect("run strata");
    assert!(out.status.success(), "build FROM a TLS registry: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn credential_helpers_from_docker_config_supply_basic_credentials() {
    let Some(registry) = Registry::with_basic_auth("alice", "s3cret-pw") else { return };
    let home = tempfile::tempdir().expect("home");
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    // The helper logs the server it was asked about, and knows only this registry.
    let log = home.path().join("asked");
    let script = format!(
        "#!/bin/sh\nread server\necho \"$1 $server\" >> {}\nif [ \"$server\" = \"{}\" ]; then\n  echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"s3cret-pw\"}}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        log.display(),
        registry.addr
    );
    for name in ["test-helper", "test-store"] {
        let path = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&path, &script).expect("write helper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let docker = home.path().join(".docker");
    std::fs::create_dir_all(&docker).expect(".docker");
    let store = TestStore::with_busybox();
    let dest = registry.name("helped/busybox:v1");
    let run = |config: &str, args: &[&str]| {
        std::fs::write(docker.join("config.json"), config).expect("write config.json");
        let mut cmd = store.strata();
        cmd.env("HOME", home.path())
            .env("PATH", &path)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG");
        cmd.args(args).output().expect("run strata")
    };
    let helpers = format!("{{\"credHelpers\":{{\"{}\":\"test-helper\"}}}}", registry.addr);
    let out = run(&helpers, &["push", "-q", "busybox", &dest]);
    assert!(out.status.success(), "push with credHelpers: {}", String::from_utf8_lossy(&out.stderr));
    let out = run("{\"credsStore\":\"test-store\"}", &["pull", &dest]);
    assert!(out.status.success(), "pull with credsStore: {}", String::from_utf8_lossy(&out.stderr));
    let asked = std::fs::read_to_string(&log).expect("the helper ran");
    assert!(asked.contains(&format!("get {}", registry.addr)), "{asked}");
    // A helper that is not installed: a clear error naming it.
    let missing = format!("{{\"credHelpers\":{{\"{}\":\"missing-helper\"}}}}", registry.addr);
    let out = run(&missing, &["pull", &dest]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("docker-credential-missing-helper"), "{err}");
}
