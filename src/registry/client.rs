//! One repository on one registry, over HTTP(S): picks the scheme, answers
//! auth challenges (Basic, or a Bearer token fetched from the realm), and
//! retries what a flaky network breaks (connection errors, 429, 5xx) with
//! backoff. It knows nothing of images; pull and push speak through it.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Method, Response, StatusCode};
use ureq::{Body, SendBody};

use super::RegistryError;
use super::auth::{self, Credentials};

/// Attempts per request: the first and this many retries.
const RETRIES: u32 = 4;

/// A request body that can be made again for a retry.
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A file's whole content, with its length sent as Content-Length; the bar counts what is sent.
    File(&'a std::path::Path, &'a indicatif::ProgressBar),
    /// Bytes made as they are sent (chunked): sent once, so a retry of it fails.
    Stream(std::sync::Mutex<Option<Box<dyn std::io::Read + Send>>>),
}

impl Payload<'_> {
    fn body(&self) -> Result<(SendBody<'static>, Option<u64>), std::io::Error> {
        Ok(match self {
            Payload::Empty => (SendBody::none(), Some(0)),
            Payload::Bytes(bytes) => (SendBody::from_owned_reader(std::io::Cursor::new(bytes.to_vec())), Some(bytes.len() as u64)),
            Payload::File(path, bar) => {
                let file = std::fs::File::open(path)?;
                let len = file.metadata()?.len();
                // Every attempt sends the whole file again.
                bar.set_position(0);
                (SendBody::from_owned_reader(bar.wrap_read(std::io::BufReader::with_capacity(1 << 20, file))), Some(len))
            }
            Payload::Stream(reader) => {
                let reader = reader.lock().ok().and_then(|mut r| r.take());
                let reader = reader.ok_or_else(|| std::io::Error::other("a streamed body cannot be sent twice"))?;
                (SendBody::from_owned_reader(reader), None)
            }
        })
    }
}

/// Where and how to reach one repository.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://…`; Docker Hub's API host for `docker.io`.
    base: String,
    /// The registry as users name it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    pub repository: String,
    /// `pull` or `pull,push`: the scope a Bearer token is asked for.
    actions: &'static str,
    credentials: Option<Credentials>,
    /// The `Authorization` value in use, if any.
    authorization: Mutex<Option<String>>,
}

/// Whether a host may be reached over plain HTTP without being asked.
fn is_local(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn transport_error(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) | ureq::Error::Timeout(_))
}

impl Client {
    /// Reaches `registry` for `repository` with `actions` (`pull`, `pull,push`):
    /// HTTPS with the system's roots, else, for localhost or with `tls_verify`
    /// off, HTTPS without verification falling back to plain HTTP. Answers the
    /// registry's first auth challenge at once.
    pub fn connect(registry: &str, repository: &str, actions: &'static str, tls_verify: bool) -> Result<Client, RegistryError> {
        let credentials = auth::lookup(registry)?;
        Client::connect_with(registry, repository, actions, tls_verify, credentials)
    }

    /// `connect` with credentials given rather than looked up (`login` checks them this way).
    pub fn connect_with(
        registry: &str,
        repository: &str,
        actions: &'static str,
        tls_verify: bool,
        credentials: Option<Credentials>,
    ) -> Result<Client, RegistryError> {
        let insecure = !tls_verify || is_local(registry);
        let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).disable_verification(insecure).build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(8)
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let host = if registry == crate::oci::DEFAULT_DOMAIN { "registry-1.docker.io" } else { registry };
        let mut client = Client {
            agent,
            base: format!("https://{host}"),
            registry: registry.to_string(),
            repository: repository.to_string(),
            actions,
            credentials,
            authorization: Mutex::new(None),
        };
        let ping = match client.raw(Method::GET, &client.url("/v2/"), &[], &Payload::Empty) {
            Err(e) if insecure && transport_error(&e) => {
                client.base = format!("http://{host}");
                client.raw(Method::GET, &client.url("/v2/"), &[], &Payload::Empty)
            }
            other => other,
        };
        let ping = ping.map_err(|e| RegistryError::Unreachable { registry: registry.to_string(), message: e.to_string() })?;
        if ping.status() == StatusCode::UNAUTHORIZED {
            client.answer_challenge(&ping)?;
        }
        Ok(client)
    }

    /// An absolute URL for a path on the registry, or a Location header as given.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// `/v2/<repository>/<rest>`.
    pub fn repo_url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repository)
    }

    fn raw(&self, method: Method, url: &str, headers: &[(&str, &str)], payload: &Payload) -> Result<Response<Body>, ureq::Error> {
        let mut request = http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(value) = self.authorization.lock().ok().and_then(|a| a.clone()) {
            request = request.header("authorization", value);
        }
        let (body, len) = payload.body()?;
        if method != Method::GET
            && method != Method::HEAD
            && let Some(len) = len
        {
            request = request.header("content-length", len.to_string());
        }
        let request = request.body(body).map_err(ureq::Error::Http)?;
        self.agent.run(request)
    }

    /// Sends a request: answers a 401 once (a new or refreshed token), retries
    /// connection errors, 429 and 5xx with backoff. Other statuses are returned.
    pub fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], payload: &Payload) -> Result<Response<Body>, RegistryError> {
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            let result = self.raw(method.clone(), url, headers, payload);
            let retry = match &result {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED && !reauthenticated => {
                    reauthenticated = true;
                    self.answer_challenge(response)?;
                    continue;
                }
                Ok(response) => response.status() == StatusCode::TOO_MANY_REQUESTS || response.status().is_server_error(),
                Err(e) => transport_error(e),
            };
            if !retry || attempt >= RETRIES {
                return result.map_err(|e| RegistryError::Request { what: format!("{method} {url}"), message: e.to_string() });
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
    }

    /// Answers a 401: Basic with the stored credentials, or a Bearer token from the realm.
    fn answer_challenge(&self, response: &Response<Body>) -> Result<(), RegistryError> {
        let denied = |message: String| RegistryError::Denied { registry: self.registry.clone(), message };
        let header = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let challenge = auth::parse_challenge(header).ok_or_else(|| denied("unauthorized, and no WWW-Authenticate challenge".into()))?;
        let value = match challenge.scheme.as_str() {
            "basic" => match &self.credentials {
                Some(credentials) => credentials.basic(),
                None => return Err(denied(format!("credentials are required (strata login {})", self.registry))),
            },
            "bearer" => format!("Bearer {}", self.fetch_token(&challenge)?),
            other => return Err(denied(format!("unsupported auth scheme {other:?}"))),
        };
        if let Ok(mut slot) = self.authorization.lock() {
            *slot = Some(value);
        }
        Ok(())
    }

    /// The token flow: GET realm?service=…&scope=repository:NAME:ACTIONS, with Basic credentials if any.
    fn fetch_token(&self, challenge: &auth::Challenge) -> Result<String, RegistryError> {
        let denied = |message: String| RegistryError::Denied { registry: self.registry.clone(), message };
        let realm = challenge.params.get("realm").ok_or_else(|| denied("Bearer challenge without a realm".into()))?;
        let mut request = self.agent.get(realm.as_str());
        if let Some(service) = challenge.params.get("service") {
            request = request.query("service", service);
        }
        // The scope the challenge names is for one request; ask for what this client will do.
        let scope = if self.repository.is_empty() {
            challenge.params.get("scope").cloned()
        } else {
            Some(format!("repository:{}:{}", self.repository, self.actions))
        };
        if let Some(scope) = scope {
            request = request.query("scope", scope);
        }
        if let Some(credentials) = &self.credentials {
            request = request.header("authorization", credentials.basic());
        }
        let mut response = request.call().map_err(|e| denied(format!("token request to {realm}: {e}")))?;
        if !response.status().is_success() {
            return Err(denied(format!("token request to {realm}: {}", response.status())));
        }
        let bytes = response.body_mut().with_config().limit(1 << 20).read_to_vec();
        let body: serde_json::Value = bytes
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| denied(format!("token response from {realm}: {e}")))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| denied(format!("token response from {realm} has no token")))
    }
}

/// The registry's error text (`{"errors":[{"code","message"}]}`), or the status.
pub fn error_text(response: &mut Response<Body>) -> String {
    let status = response.status();
    let mut bytes = Vec::new();
    let _ = response.body_mut().as_reader().take(64 * 1024).read_to_end(&mut bytes);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let messages: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or_default();
                    let message = e.get("message").and_then(|c| c.as_str()).unwrap_or_default();
                    format!("{code}: {message}").trim_matches([':', ' ']).to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    if messages.is_empty() { status.to_string() } else { format!("{status} ({})", messages.join("; ")) }
}

/// A header's value as text.
pub fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_local() {
        for local in ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000"] {
            assert!(is_local(local), "{local}");
        }
        for remote in ["docker.io", "quay.io:443", "127.0.0.2:5000", "localhost.example.com"] {
            assert!(!is_local(remote), "{remote}");
        }
    }
}
