//! Build arguments, resolved here for both front ends (at lowering, for
//! `FROM` and other read-time words) and for the executor (at build time): `--build-arg`
//! values, the global `ARG`s declared before the first stage, BuildKit's
//! automatic platform args and Docker's proxy args.

use std::collections::BTreeMap;

use super::{ArgDecl, ExpandError};
use crate::oci;

/// `--build-arg` values by name.
pub type BuildArgs = BTreeMap<String, String>;

/// Build args Docker passes to RUN without an ARG and leaves out of history and the cache key.
pub const PROXY_ARGS: [&str; 10] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

/// The build arg that names the host RUN steps see, as in BuildKit (which
/// reads it whether or not an `ARG` declares it).
pub const SANDBOX_HOSTNAME_ARG: &str = "BUILDKIT_SANDBOX_HOSTNAME";

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

/// The global `ARG`s (those before the first stage), each valued once, in
/// order, as BuildKit does: its `--build-arg`, else its default expanded
/// against the global args declared before it (so `ARG A=$A` cannot loop).
/// Computing each once keeps `ARG B=$A$A`, `ARG C=$B$B`, … linear.
#[derive(Debug)]
pub struct GlobalArgs<'a> {
    build_args: &'a BuildArgs,
    values: BTreeMap<String, Option<String>>,
}

impl<'a> GlobalArgs<'a> {
    /// No global declared yet.
    pub fn empty(build_args: &'a BuildArgs) -> GlobalArgs<'a> {
        GlobalArgs { build_args, values: BTreeMap::new() }
    }

    /// All of `globals`; a default that cannot expand leaves its arg unset
    /// (the front end reports it where it is written, at lowering).
    pub fn new(build_args: &'a BuildArgs, globals: &[ArgDecl]) -> GlobalArgs<'a> {
        let mut all = GlobalArgs::empty(build_args);
        for decl in globals {
            let _ = all.declare(decl);
        }
        all
    }

    /// Declares the next global ARG.
    pub fn declare(&mut self, decl: &ArgDecl) -> Result<(), ExpandError> {
        let value = match self.build_args.get(&decl.name) {
            Some(value) => Ok(Some(value.clone())),
            None => decl.default.as_ref().map(|default| default.expand(&|name| self.get(name))).transpose(),
        };
        let (value, result) = match value {
            Ok(value) => (value, Ok(())),
            Err(e) => (None, Err(e)),
        };
        self.values.insert(decl.name.clone(), value);
        result
    }

    /// A declared global's value, else a `--build-arg`, else an automatic platform arg of that name.
    pub fn get(&self, name: &str) -> Option<String> {
        match self.values.get(name) {
            Some(value) => value.clone(),
            None => self.build_args.get(name).cloned().or_else(|| automatic_args().remove(name)),
        }
    }
}

/// The value of one global build arg (see [`GlobalArgs`]).
pub fn global_value(name: &str, build_args: &BuildArgs, globals: &[ArgDecl]) -> Option<String> {
    GlobalArgs::new(build_args, globals).get(name)
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

    #[test]
    fn doubling_defaults_cost_one_expansion_each_and_stop_at_the_length_limit() {
        // Each default reads the one before twice: valued once each, and the 2^40
        // characters the last would hold are refused, not built.
        let mut globals = vec![decl("A0", vec![Part::Lit("x".into())])];
        for i in 1..=40 {
            let before = format!("A{}", i - 1);
            globals.push(decl(&format!("A{i}"), vec![Part::Var(before.clone()), Part::Var(before)]));
        }
        let none = BuildArgs::new();
        let mut all = GlobalArgs::empty(&none);
        let failed: Vec<usize> = (0..=40).filter(|i| all.declare(&globals[*i]).is_err()).collect();
        assert_eq!(all.get("A10").map(|v| v.len()), Some(1024));
        assert_eq!(failed.first(), Some(&21), "2^21 characters are over the limit");
    }
}
