//! Credentials: the auth files Docker, Podman and skopeo share, and the
//! `WWW-Authenticate` challenges a registry answers with.
//!
//! Read in order: `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`); the first
//! with an entry for the registry wins. In each, as Docker reads its config:
//! a `credHelpers` entry for the registry, else `credsStore`, runs
//! `docker-credential-NAME get` (the registry on stdin, `{Username, Secret}`
//! out); else the inline `auths` entry.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::RegistryError;

/// A user name and a password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// The key Docker writes for a registry: Docker Hub keeps its historical URL.
fn auth_key(registry: &str) -> String {
    if registry == crate::oci::DEFAULT_DOMAIN { "https://index.docker.io/v1/".into() } else { registry.to_string() }
}

/// The registry an `auths` key names: scheme and path dropped, Docker Hub's aliases folded.
fn key_registry(key: &str) -> &str {
    let host = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => crate::oci::DEFAULT_DOMAIN,
        other => other,
    }
}

/// The files credentials are read from, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    files.push(docker_config());
    files
}

fn docker_config() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".docker/config.json"),
    }
}

/// The file `login` writes: `$REGISTRY_AUTH_FILE`, else Docker's config.
pub fn login_file() -> PathBuf {
    std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from).unwrap_or_else(docker_config)
}

/// The stored credentials for `registry`, if any file has them.
pub fn lookup(registry: &str) -> Result<Option<Credentials>, RegistryError> {
    for file in auth_files() {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Auth(format!("parse {}: {e}", file.display())))?;
        let helper = doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| helpers.iter().find(|(key, _)| key_registry(key) == registry).map(|(_, name)| name))
            .or_else(|| doc.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty());
        if let Some(name) = helper {
            match run_helper(name, registry)? {
                Some(credentials) => return Ok(Some(credentials)),
                None => continue,
            }
        }
        let Some(auths) = doc.get("auths").and_then(Value::as_object) else { continue };
        for (key, entry) in auths {
            if key_registry(key) != registry {
                continue;
            }
            if let Some(encoded) = entry.get("auth").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        RegistryError::Auth(format!("{}: the auth entry for {key} is not base64 of user:password", file.display()))
                    })?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| RegistryError::Auth(format!("{}: the auth entry for {key} has no ':'", file.display())))?;
                return Ok(Some(Credentials { username: username.into(), password: password.into() }));
            }
        }
    }
    Ok(None)
}

/// `docker-credential-NAME get` with the registry's server URL on stdin; None if it knows none.
fn run_helper(name: &str, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    let fail = |message: String| RegistryError::Auth(format!("{program} get {registry}: {message}"));
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(auth_key(registry).as_bytes()).map_err(|e| fail(format!("write: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helpers' protocol: this message means "no credentials for that server".
        if text.contains("credentials not found") || String::from_utf8_lossy(&out.stderr).contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("{} ({})", out.status, stderr.trim().chars().take(200).collect::<String>())));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| fail(format!("parse its answer: {e}")))?;
    let field = |key: &str| answer.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let (username, password) = (field("Username"), field("Secret"));
    if password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username, password }))
}

/// Reads an auth file as a JSON object (empty when missing).
fn read_doc(file: &Path) -> Result<Map<String, Value>, RegistryError> {
    match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(RegistryError::Auth(format!("{} is not a JSON object", file.display()))),
            Err(e) => Err(RegistryError::Auth(format!("parse {}: {e}", file.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(RegistryError::Auth(format!("read {}: {e}", file.display()))),
    }
}

/// Writes `doc` to `file` atomically with mode 0600 (it holds secrets).
fn write_doc(file: &Path, doc: &Map<String, Value>) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |action: &str, e: std::io::Error| RegistryError::Auth(format!("{action} {}: {e}", file.display()));
    std::fs::create_dir_all(dir).map_err(|e| fail("create the folder of", e))?;
    let mut tmp = tempfile::Builder::new().prefix(".auth-").tempfile_in(dir).map_err(|e| fail("write", e))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| fail("chmod", e))?;
    let mut bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    bytes.push(b'\n');
    tmp.write_all(&bytes).map_err(|e| fail("write", e))?;
    tmp.as_file().sync_all().map_err(|e| fail("fsync", e))?;
    tmp.persist(file).map_err(|e| fail("rename into place", e.error))?;
    Ok(())
}

/// Records `credentials` for `registry` in the login file; returns that file.
pub fn store(registry: &str, credentials: &Credentials) -> Result<PathBuf, RegistryError> {
    let file = login_file();
    let mut doc = read_doc(&file)?;
    let auths = doc.entry("auths").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(RegistryError::Auth(format!("{}: auths is not an object", file.display())));
    };
    auths.retain(|key, _| key_registry(key) != registry);
    let pair = format!("{}:{}", credentials.username, credentials.password);
    let mut entry = Map::new();
    entry.insert("auth".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(pair)));
    auths.insert(auth_key(registry), Value::Object(entry));
    write_doc(&file, &doc)?;
    Ok(file)
}

/// Removes the entry for `registry` from the login file; false if there was none.
pub fn remove(registry: &str) -> Result<bool, RegistryError> {
    let file = login_file();
    let mut doc = read_doc(&file)?;
    let Some(Value::Object(auths)) = doc.get_mut("auths") else { return Ok(false) };
    let before = auths.len();
    auths.retain(|key, _| key_registry(key) != registry);
    if auths.len() == before {
        return Ok(false);
    }
    write_doc(&file, &doc)?;
    Ok(true)
}

/// A parsed `WWW-Authenticate` header: the scheme (lowercase) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted or bare values).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("basic", "Registry Realm"));
        let c = parse_challenge("Bearer realm=http://x/t, service=s").unwrap();
        assert_eq!((c.params["realm"].as_str(), c.params["service"].as_str()), ("http://x/t", "s"));
    }

    #[test]
    fn auth_keys_fold_schemes_paths_and_hub_aliases() {
        assert_eq!(key_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(key_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(key_registry("http://quay.io/"), "quay.io");
        assert_eq!(auth_key("docker.io"), "https://index.docker.io/v1/");
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic(), "Basic dTpodW50ZXIy");
    }
}
