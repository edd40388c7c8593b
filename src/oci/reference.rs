//! `ImageRef`: an image name as Docker's reference grammar allows.
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] component ( "/" component )*
//! domain    := host [ ":" port ]          (a first part with '.' or ':', or "localhost")
//! component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```
//!
//! Names are kept in Docker's familiar form: `docker.io/library/busybox`
//! parses to `busybox`, `docker.io/foo/bar` to `foo/bar`. `domain()` and
//! `repository()` give the registry and the path on it (`docker.io`,
//! `library/busybox`).

use std::fmt;
use std::str::FromStr;

use super::Digest;

/// The registry of names without a host part.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed image reference; a missing tag means `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
    pub digest: Option<Digest>,
}

/// Text that is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {text:?}: {reason}")]
pub struct RefError {
    pub text: String,
    pub reason: &'static str,
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    !host.is_empty()
        && host.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !t.is_empty() && t.len() <= 128 && word(t.as_bytes()[0]) && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| RefError { text: text.to_string(), reason };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>().map_err(|_| err("bad digest"))?)),
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a port.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].find(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err("empty name"));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let mut domain = None;
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            if !valid_domain(parts[0]) {
                return Err(err("bad registry host"));
            }
            domain = Some(parts.remove(0));
        }
        if !parts.iter().all(|c| valid_component(c)) {
            return Err(err("names are lowercase letters, digits and separators (. _ __ -)"));
        }
        // Docker Hub names are kept familiar: docker.io/library/busybox is busybox.
        let name = match domain {
            Some(DEFAULT_DOMAIN | "index.docker.io") | None => {
                if parts.len() == 2 && parts[0] == "library" {
                    parts[1].to_string()
                } else {
                    parts.join("/")
                }
            }
            Some(_) => name.to_string(),
        };
        let tag = match tag {
            Some(t) if valid_tag(t) => t.to_string(),
            Some(_) => return Err(err("tags are letters, digits, '_', '.' and '-', at most 128")),
            None => "latest".to_string(),
        };
        Ok(ImageRef { name, tag, digest })
    }
}

impl ImageRef {
    /// The registry host (with its port): the name's first part when it is a host, else `docker.io`.
    pub fn domain(&self) -> &str {
        match self.name.split_once('/') {
            Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
            _ => DEFAULT_DOMAIN,
        }
    }

    /// The repository path on the registry; Docker Hub's one-part names live under `library/`.
    pub fn repository(&self) -> String {
        match self.name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest.to_string(),
            Some(_) => self.name.clone(),
            None => format!("library/{}", self.name),
        }
    }

    /// The fully qualified form: `docker.io/library/busybox:latest`, with `@digest` when pinned.
    pub fn full(&self) -> String {
        let mut text = format!("{}/{}:{}", self.domain(), self.repository(), self.tag);
        if let Some(digest) = &self.digest {
            text = format!("{text}@{digest}");
        }
        text
    }
}

/// `name:tag`, the form stored as `org.opencontainers.image.ref.name`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tag_means_latest_and_ports_are_not_tags() {
        let r: ImageRef = "web-ping".parse().unwrap();
        assert_eq!(r.to_string(), "web-ping:latest");
        let r: ImageRef = "localhost:5000/a/b".parse().unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("localhost:5000/a/b", "latest"));
        let r: ImageRef = "localhost:5000/a/b:v1.2".parse().unwrap();
        assert_eq!(r.tag, "v1.2");
    }

    #[test]
    fn names_normalise_as_docker_does() {
        let cases = [
            ("busybox", "busybox:latest", "docker.io", "library/busybox"),
            ("docker.io/library/busybox:1.36", "busybox:1.36", "docker.io", "library/busybox"),
            ("index.docker.io/foo/bar", "foo/bar:latest", "docker.io", "foo/bar"),
            ("library/busybox", "busybox:latest", "docker.io", "library/busybox"),
            ("foo/bar:v1", "foo/bar:v1", "docker.io", "foo/bar"),
            ("127.0.0.1:5000/ns/x:t", "127.0.0.1:5000/ns/x:t", "127.0.0.1:5000", "ns/x"),
            ("localhost/x", "localhost/x:latest", "localhost", "x"),
            ("quay.io/a/b/c", "quay.io/a/b/c:latest", "quay.io", "a/b/c"),
        ];
        for (text, shown, domain, repository) in cases {
            let r: ImageRef = text.parse().unwrap();
            assert_eq!((r.to_string().as_str(), r.domain(), r.repository().as_str()), (shown, domain, repository), "{text}");
        }
        let hex = "a".repeat(64);
        let r: ImageRef = format!("busybox:1@sha256:{hex}").parse().unwrap();
        assert_eq!(r.full(), format!("docker.io/library/busybox:1@sha256:{hex}"));
        let r: ImageRef = format!("busybox@sha256:{hex}").parse().unwrap();
        assert_eq!((r.tag.as_str(), r.digest.is_some()), ("latest", true));
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for bad in ["Web", "a//b", "a:", "a:-x", "-a", "a@sha256:12", ""] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
