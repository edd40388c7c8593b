//! Crash safety, proven: a seeded kill campaign (`kill -9` of build, load,
//! commit, rmi, prune, pull and push at random moments; after each, `system verify`
//! finds no damage, every other tag is intact and the command run again
//! completes), and many writers on one store at once.
//!
//! `STRATA_CHAOS_SEED` and `STRATA_CHAOS_ROUNDS` (default 10) steer the
//! campaign; `just chaos` runs 100 rounds. A failure prints the seed and round.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::verify::{assert_clean, tags, verify};
use crate::{TestStore, context, require_root};

/// xorshift64*: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a round interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    CopyBuild,
    RunBuild,
    Load,
    Commit,
    Rmi,
    Prune,
    Pull,
    Push,
}

/// A deterministic ~6 MB of incompressible bytes.
fn noise(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len.div_ceil(8)).flat_map(|_| rng.next().to_le_bytes()).take(len).collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `docker-registry serve` on 127.0.0.1 for the pull and push rounds, killed by its PID on drop.
struct Registry {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::Builder::new().prefix("strata-chaos-registry-").tempdir().expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let data = dir.path().join("data");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            data.display()
        );
        std::fs::write(&config, yaml).expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, _dir: dir, addr }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether Debian's docker-registry is installed (`just deps`); pull and push rounds need it.
fn has_registry() -> bool {
    let found = Command::new("docker-registry").arg("--version").output().is_ok();
    if !found {
        eprintln!("kill campaign: no docker-registry (apt-get install docker-registry), so no pull or push rounds");
    }
    found
}

/// Whether a process's temp folder in the store holds anything (a write is under way).
fn tmp_busy(root: &Path) -> bool {
    !crate::store_temp_files(root).is_empty()
}

#[test]
fn kill_campaign_leaves_no_damage_keeps_every_tag_and_the_command_completes_again() {
    let seed = env_u64("STRATA_CHAOS_SEED", 0x5eed);
    let rounds = env_u64("STRATA_CHAOS_ROUNDS", 10);
    let root_user = require_root("kill_campaign_… (RUN and commit rounds)");
    let mut rng = Rng(seed.max(1));
    let store = TestStore::with_busybox();
    let root = store.root().to_path_buf();
    let strata = assert_cmd::cargo::cargo_bin("strata");

    // A COPY-heavy context: many small files and one large one.
    let copy_ctx = tempfile::tempdir().expect("context");
    for i in 0..200 {
        std::fs::write(copy_ctx.path().join(format!("small-{i:03}")), noise(&mut rng, 16 * 1024)).expect("write");
    }
    std::fs::write(copy_ctx.path().join("large"), noise(&mut rng, 6 << 20)).expect("write");
    std::fs::write(copy_ctx.path().join("Dockerfile"), "FROM busybox:latest\nCOPY . /data\nLABEL kind=copy\n").expect("write");
    let run_ctx = context(&[(
        "Dockerfile",
        "FROM busybox:latest\nARG ROUND\nRUN dd if=/dev/urandom of=/big bs=64k count=96 2>/dev/null && echo $ROUND > /round\n",
    )]);
    // An archive to load: its own layer, so a load has blobs to copy in.
    let load_ctx = tempfile::tempdir().expect("context");
    std::fs::write(load_ctx.path().join("payload"), noise(&mut rng, 6 << 20)).expect("write");
    std::fs::write(load_ctx.path().join("Dockerfile"), "FROM busybox:latest\nCOPY payload /payload\n").expect("write");
    store.ok(&["build", "-q", "-t", "chaos-load-src", load_ctx.path().to_str().expect("utf-8")]);
    let archive = tempfile::tempdir().expect("archive dir");
    let archive = archive.path().join("image.tar");
    store.ok(&["save", "-o", archive.to_str().expect("utf-8"), "chaos-load-src"]);
    // Pushed from the store (its layer compressed on the way) and pulled back (gzip blobs of its own).
    let registry = has_registry().then(Registry::start);
    let remote = registry.as_ref().map(|r| format!("{}/chaos/pushed:latest", r.addr)).unwrap_or_default();
    if registry.is_some() {
        store.ok(&["push", "-q", "chaos-load-src", &remote]);
    }

    let mut ops = vec![Op::CopyBuild, Op::Load, Op::Rmi, Op::Prune];
    if registry.is_some() {
        ops.extend([Op::Pull, Op::Push]);
    }
    if root_user {
        ops.extend([Op::RunBuild, Op::Commit]);
    }
    let spawn = |args: &[String]| {
        Command::new(&strata)
            .args(args)
            .env("STRATA_ROOT", &root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata")
    };
    for round in 0..rounds {
        let op = ops[rng.below(ops.len() as u64) as usize];
        let at = format!("seed {seed} round {round} ({op:?})");
        // Each round changes the input, so a build is a miss and has layers to write.
        std::fs::write(copy_ctx.path().join("round"), format!("{seed} {round}\n")).expect("write");
        let args: Vec<String> = match op {
            Op::CopyBuild => vec!["build".into(), "-t".into(), "chaos-copy".into(), copy_ctx.path().display().to_string()],
            Op::RunBuild => {
                ["build", "--build-arg", &format!("ROUND={seed}-{round}"), "-t", "chaos-run", run_ctx.path().to_str().expect("utf-8")]
                    .map(String::from)
                    .to_vec()
            }
            Op::Load => ["load", "-i", archive.to_str().expect("utf-8"), "-t", "chaos-load"].map(String::from).to_vec(),
            Op::Commit => {
                let _ = store.strata().args(["rm", "chaos-run-box"]).output();
                store.ok(&[
                    "run",
                    "--name",
                    "chaos-run-box",
                    "busybox:latest",
                    "sh",
                    "-c",
                    "dd if=/dev/urandom of=/c bs=64k count=96 2>/dev/null",
                ]);
                ["commit", "chaos-run-box", "chaos-commit"].map(String::from).to_vec()
            }
            Op::Rmi => {
                let ctx = context(&[("file", &format!("{seed} {round}")), ("Dockerfile", "FROM busybox:latest\nCOPY file /file\n")]);
                store.ok(&["build", "-q", "-t", "chaos-rmi", ctx.path().to_str().expect("utf-8")]);
                ["rmi", "chaos-rmi"].map(String::from).to_vec()
            }
            Op::Prune => ["system", "prune"].map(String::from).to_vec(),
            Op::Pull => {
                // Not in the store yet, so the pull has blobs to write.
                if tags(&root).iter().any(|(t, _)| *t == remote) {
                    store.ok(&["rmi", &remote]);
                }
                vec!["pull".into(), "-q".into(), remote.clone()]
            }
            Op::Push => {
                let dest = format!("{}/chaos/push-{round}:latest", registry.as_ref().map(|r| r.addr.as_str()).unwrap_or_default());
                // The newest COPY layer, if any, is compressed and recorded during the push.
                let source = if tags(&root).iter().any(|(t, _)| t == "chaos-copy:latest") { "chaos-copy" } else { "chaos-load-src" };
                vec!["push".into(), "-q".into(), source.into(), dest]
            }
        };
        // The tag the command itself writes (or removes) may be old or new; every other one must stay.
        let own_tag = match op {
            Op::CopyBuild => Some("chaos-copy:latest"),
            Op::RunBuild => Some("chaos-run:latest"),
            Op::Load => Some("chaos-load:latest"),
            Op::Commit => Some("chaos-commit:latest"),
            Op::Rmi => Some("chaos-rmi:latest"),
            Op::Prune | Op::Push => None,
            Op::Pull => Some(remote.as_str()),
        };
        let before: Vec<_> = tags(&root).into_iter().filter(|(t, _)| Some(t.as_str()) != own_tag).collect();

        let mut child = spawn(&args);
        let started = Instant::now();
        if rng.below(2) == 0 {
            // Kill while a write is under way: once a temp file appears, a little later.
            while !tmp_busy(&root) && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.below(10)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        let _ = child.kill();
        let status = child.wait().expect("wait for the killed command");
        eprintln!("{at}: killed after {:?} ({status})", started.elapsed());

        // Nothing to find: the killed writer's temp folder goes when the store is next opened.
        let (code, stdout, stderr) = verify(&store, &[]);
        assert!(code == 0 && stdout.is_empty(), "{at}: verify after kill -9 ({status}) found something:\n{stdout}\n{stderr}");
        let after: Vec<_> = tags(&root).into_iter().filter(|(t, _)| Some(t.as_str()) != own_tag).collect();
        let lost: Vec<_> = before.iter().filter(|t| !after.contains(t)).collect();
        assert!(lost.is_empty(), "{at}: tags changed by a killed command: {lost:?}");

        // The same command again completes (an rmi that got as far as untagging has nothing left to do).
        if op != Op::Rmi || tags(&root).iter().any(|(t, _)| t == "chaos-rmi:latest") {
            let out = Command::new(&strata).args(&args).env("STRATA_ROOT", &root).output().expect("run again");
            assert!(
                out.status.success(),
                "{at}: strata {args:?} run again failed\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_clean(&store, &at);
    }
    // What is left still builds.
    let ctx = context(&[("Dockerfile", "FROM busybox:latest\nLABEL after=chaos\n")]);
    store.ok(&["build", "-q", "-t", "after-chaos", ctx.path().to_str().expect("utf-8")]);
    assert_clean(&store, "the campaign");
}

/// Unmounts on drop, even when the test fails.
struct Unmount<'a>(&'a TestStore, &'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = self.0.strata().arg("umount").arg(self.1).output();
    }
}

#[test]
fn four_builds_two_prunes_a_load_and_a_mount_on_one_store_all_land() {
    let root_user = require_root("four_builds_… (the mount and the runs)");
    let fuse = root_user && Path::new("/dev/fuse").exists();
    let store = TestStore::with_busybox();
    let load_ctx = context(&[("payload", &"to load\n".repeat(100_000)), ("Dockerfile", "FROM busybox:latest\nCOPY payload /payload\n")]);
    store.ok(&["build", "-q", "-t", "to-load", load_ctx.path().to_str().expect("utf-8")]);
    let archive_dir = tempfile::tempdir().expect("archive dir");
    let archive = archive_dir.path().join("image.tar");
    store.ok(&["save", "-o", archive.to_str().expect("utf-8"), "to-load"]);
    store.ok(&["rmi", "to-load"]);
    let contexts: Vec<_> = (0..4)
        .map(|i| {
            let own = format!("image {i}\n").repeat(50_000);
            context(&[
                ("shared", "in every image"),
                ("own", own.as_str()),
                ("Dockerfile", "FROM busybox:latest\nCOPY shared /shared\nCOPY own /own\n"),
            ])
        })
        .collect();
    let strata = assert_cmd::cargo::cargo_bin("strata");
    let spawn = |args: &[&str]| {
        Command::new(&strata)
            .args(args)
            .env("STRATA_ROOT", store.root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strata")
    };
    let mount_dir = tempfile::tempdir().expect("mount dir");
    let mount_path = mount_dir.path().to_str().expect("utf-8").to_string();
    let _unmount = Unmount(&store, mount_dir.path());
    let mut children = Vec::new();
    for (i, ctx) in contexts.iter().enumerate() {
        children.push((format!("build {i}"), spawn(&["build", "-q", "-t", &format!("together-{i}"), ctx.path().to_str().expect("utf-8")])));
        if i % 2 == 1 {
            children.push(("prune".into(), spawn(&["system", "prune"])));
        }
        if i == 1 {
            children.push(("load".into(), spawn(&["load", "-i", archive.to_str().expect("utf-8")])));
            if fuse {
                children.push(("mount".into(), spawn(&["mount", "busybox:latest", &mount_path])));
            }
        }
    }
    for (what, child) in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{what} failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let images = store.ok(&["images"]);
    for i in 0..4 {
        assert!(images.contains(&format!("together-{i}")), "together-{i} is missing:\n{images}");
        if root_user {
            let out = store.ok(&["run", "--rm", &format!("together-{i}"), "cat", "/own"]);
            assert_eq!(out, format!("image {i}\n").repeat(50_000));
        }
    }
    assert!(images.contains("to-load"), "the loaded image is missing:\n{images}");
    if fuse {
        assert!(mount_dir.path().join("bin/busybox").exists(), "the mount shows busybox");
    }
    assert_clean(&store, "builds, prunes, a load and a mount at once");
}
