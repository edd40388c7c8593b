//! `build --cache-to/--cache-from` and `cache prune`: flags and output; the
//! shared cache itself is `strata::registry::cache`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use miette::miette;

use strata::build::{BuildError, BuiltImage};
use strata::graph::CacheSettings;
use strata::registry::Options;
use strata::registry::cache::{self, BuildCache, CacheTo, Location};
use strata::store::Store;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Delete the entries of a shared build cache (`--cache-to`), all or the old ones.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The cache: `REGISTRY/REPOSITORY`, `type=registry,ref=…` or `type=local,dest=DIR`.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: String,
    /// Only entries first exported longer ago than this (`72h`, `30m`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    #[command(flatten)]
    pub tls: super::registry::TlsArgs,
}

/// The shared cache of one build, if `--cache-to` or `--cache-from` asked for one.
pub struct Shared {
    cache: Option<Arc<BuildCache>>,
    to: Option<CacheTo>,
}

impl Shared {
    /// From the flags and the build file's own settings (`file`'s `cache` block):
    /// `--cache-to` replaces the file's `to`; `--cache-from` sources are tried before the file's.
    pub fn from_flags(cache_to: Option<&str>, cache_from: &[String], settings: &CacheSettings, file: &str) -> miette::Result<Shared> {
        let to = match (cache_to, &settings.to) {
            (Some(flag), _) => Some(cache::parse_cache_to(flag).map_err(|e| miette!("--cache-to {flag}: {e}"))?),
            (None, Some(spec)) => Some(cache::parse_cache_to(spec).map_err(|e| miette!("{file}: cache to {spec:?}: {e}"))?),
            (None, None) => None,
        };
        let flags = cache_from.iter().map(|flag| cache::parse_cache_from(flag).map_err(|e| miette!("--cache-from {flag}: {e}")));
        let spec = settings.from.iter().map(|spec| cache::parse_cache_from(spec).map_err(|e| miette!("{file}: cache from {spec:?}: {e}")));
        let sources = flags.chain(spec).collect::<miette::Result<Vec<Location>>>()?;
        if to.is_none() && sources.is_empty() {
            return Ok(Shared { cache: None, to: None });
        }
        let options = Options { verbose: true, ..Options::default() };
        Ok(Shared { cache: Some(Arc::new(BuildCache::new(&sources, &options))), to })
    }

    /// The store, consulting the shared cache where its own misses.
    pub fn attach(&self, store: Store) -> Store {
        match &self.cache {
            Some(cache) => store.with_shared_cache(cache.clone()),
            None => store,
        }
    }

    /// Runs the build; where a shared entry's layer turned out missing or
    /// corrupt, runs it again without that entry (what was built stays cached).
    pub fn build(
        &self,
        store: &Store,
        build: impl Fn(&Store) -> Result<Vec<BuiltImage>, BuildError>,
    ) -> Result<Vec<BuiltImage>, BuildError> {
        let mut seen = 0;
        loop {
            let result = build(store);
            match (&result, &self.cache) {
                (Err(_), Some(cache)) if cache.take_new_failures(&mut seen) && seen <= 16 => {
                    eprintln!("warning: shared cache: building again without the entries whose layers failed");
                }
                _ => return result,
            }
        }
    }

    /// `--cache-to`: exports the build's steps.
    pub fn export(&self, store: &Store, built: &[BuiltImage]) -> miette::Result<()> {
        let (Some(cache), Some(to)) = (&self.cache, &self.to) else { return Ok(()) };
        let finals: Vec<_> = built.iter().map(|b| b.key.clone()).collect();
        cache.export(store, to, &finals).map_err(|e| miette!("export the build cache to {}: {e}", to.location))?;
        Ok(())
    }
}

pub fn prune(args: &PruneArgs) -> miette::Result<ExitCode> {
    let location = if args.reference.contains('=') {
        cache::parse_cache_to(&args.reference).map_err(|e| miette!("cache prune {}: {e}", args.reference))?.location
    } else {
        cache::parse_cache_from(&args.reference).map_err(|e| miette!("cache prune {}: {e}", args.reference))?
    };
    let older_than = match &args.older_than {
        Some(text) => {
            Some(strata::frontend::duration::parse(text).ok_or_else(|| miette!("--older-than {text}: not a duration (72h, 30m)"))?)
        }
        None => None,
    };
    let options = Options { tls_verify: args.tls.tls_verify, ..Options::default() };
    let pruned = cache::prune(&location, older_than, &options).map_err(|e| miette!("prune the build cache {location}: {e}"))?;
    println!("removed {} cache entries, kept {}", pruned.removed, pruned.kept);
    Ok(ExitCode::SUCCESS)
}
