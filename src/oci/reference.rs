//! `ImageRef`: an image name as Docker's reference grammar allows.
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] component ( "/" component )*
//! domain    := host [ ":" port ]          (a first part with '.' or ':', or "localhost")
//! component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```

use std::fmt;
use std::str::FromStr;

use super::Digest;

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
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            if !valid_domain(parts[0]) {
                return Err(err("bad registry host"));
            }
            parts.remove(0);
        }
        if !parts.iter().all(|c| valid_component(c)) {
            return Err(err("names are lowercase letters, digits and separators (. _ __ -)"));
        }
        let tag = match tag {
            Some(t) if valid_tag(t) => t.to_string(),
            Some(_) => return Err(err("tags are letters, digits, '_', '.' and '-', at most 128")),
            None => "latest".to_string(),
        };
        Ok(ImageRef { name: name.to_string(), tag, digest })
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
    fn refuses_what_docker_refuses() {
        for bad in ["Web", "a//b", "a:", "a:-x", "-a", "a@sha256:12", ""] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
