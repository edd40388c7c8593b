//! Build arguments, resolved the same way by both front ends (at lowering,
//! for `FROM` and `--from`) and by the executor (at build time): `--build-arg`
//! values, the global `ARG`s declared before the first stage, BuildKit's
//! automatic platform args and Docker's proxy args.

use std::collections::BTreeMap;

use super::ArgDecl;
use crate::oci;

/// `--build-arg` values by name.
pub type BuildArgs = BTreeMap<String, String>;

/// Build args Docker passes to RUN without an ARG and leaves out of history and the cache key.
pub const PROXY_ARGS: [&str; 10] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/// Build args every stage may declare without a default (BuildKit's automatic platform args).
pub fn automatic_args() -> BuildArgs {
    let arch = oci::host_architecture();
    let platform = format!("linux/{arch}");
    [
        ("TARGETPLATFORM", platform.clone()),
        ("TARGETOS", "linux".into()),
        ("TARGETARCH", arch.into()),
        ("BUILDPLATFORM", platform),
        ("BUILDOS", "linux".into()),
        ("BUILDARCH", arch.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The value of a global build arg: its `--build-arg`, else its declared
/// default (which sees only the global args declared before it, so
/// `ARG A=$A` cannot loop), else an automatic platform arg of that name.
pub fn global_value(name: &str, build_args: &BuildArgs, globals: &[ArgDecl]) -> Option<String> {
    if let Some(value) = build_args.get(name) {
        return Some(value.clone());
    }
    match globals.iter().rposition(|a| a.name == name) {
        Some(at) => {
            let before = &globals[..at];
            // A default that cannot expand (`${X:?…}`) was refused where it is written, at lowering.
            globals[at].default.as_ref().and_then(|default| default.expand(&|n| global_value(n, build_args, before)).ok())
        }
        None => automatic_args().remove(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Part, Word};

    fn decl(name: &str, parts: Vec<Part>) -> ArgDecl {
        ArgDecl { name: name.into(), default: Some(Word(parts)) }
    }

    #[test]
    fn globals_see_what_was_declared_before_them() {
        let (lit, var) = (|t: &str| Part::Lit(t.into()), |n: &str| Part::Var(n.into()));
        let globals = [decl("A", vec![lit("a")]), decl("B", vec![var("A"), lit("-b")]), decl("C", vec![var("C")])];
        let none = BuildArgs::new();
        assert_eq!(global_value("B", &none, &globals).as_deref(), Some("a-b"));
        assert_eq!(global_value("C", &none, &globals).as_deref(), Some(""), "a default reading itself sees nothing");
        let given = BuildArgs::from([("A".to_string(), "x".to_string())]);
        assert_eq!(global_value("B", &given, &globals).as_deref(), Some("x-b"));
        assert_eq!(global_value("TARGETOS", &none, &globals).as_deref(), Some("linux"));
        assert_eq!(global_value("NOPE", &none, &globals), None);
    }
}
