//! `pull`, `push`, `login` and `logout`: their flags and their output.

use super::failed;
use std::io::Read;
use std::process::ExitCode;

use clap::{ArgAction, Args};
use miette::miette;

use strata::build::{BaseResolver, BuiltImage};
use strata::graph::ImageName;
use strata::registry::{self, Compression, Options, PullPolicy, auth::Credentials};
use strata::store::{Store, StoredImage};

/// `--tls-verify[=true|false]`: on unless turned off.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Verify TLS certificates; `--tls-verify=false` also allows plain HTTP
    /// (localhost and 127.0.0.1 are always allowed both).
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub tls_verify: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `name[:tag][@digest]`, normalised as Docker does (`busybox` is `docker.io/library/busybox:latest`).
    pub reference: String,
    /// Pick this platform from a multi-platform image: `os/arch[/variant]` (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image id.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the store.
    pub image: String,
    /// Where to push (default: IMAGE's own name); `docker://` is accepted.
    pub destination: Option<String>,
    /// How uncompressed local layers are sent: gzip, zstd or none.
    #[arg(long, default_value = "gzip", value_parser = |s: &str| s.parse::<Compression>())]
    pub compression: Compression,
    /// Print only the manifest digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host (default: Docker Hub).
    pub registry: Option<String>,
    #[arg(short = 'u', long)]
    pub username: String,
    /// The password (visible to other users in the process list; prefer --password-stdin).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry host (default: Docker Hub).
    pub registry: Option<String>,
}

pub fn pull(args: &PullArgs) -> miette::Result<ExitCode> {
    let store = super::open_store()?;
    let reference = registry::parse_reference(&args.reference).map_err(miette::Report::from_err)?;
    let options = Options { tls_verify: args.tls.tls_verify, platform: args.platform.clone(), verbose: !args.quiet };
    let pulled = registry::pull(&store, &reference, &options).map_err(|e| failed(e, "pull"))?;
    if args.quiet {
        println!("{}", pulled.id);
    } else {
        println!("{}", reference.full());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn push(args: &PushArgs) -> miette::Result<ExitCode> {
    let store = super::open_store()?;
    let dest = registry::parse_reference(args.destination.as_deref().unwrap_or(&args.image)).map_err(miette::Report::from_err)?;
    let options = Options { tls_verify: args.tls.tls_verify, platform: None, verbose: !args.quiet };
    let pushed =
        registry::push(&store, &args.image, &dest, args.compression, &options).map_err(|e| failed(e, format!("push {}", args.image)))?;
    if args.quiet {
        println!("{}", pushed.digest);
    } else {
        println!("{}: digest: {} size: {}", dest.tag, pushed.digest, pushed.size);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn login(args: &LoginArgs) -> miette::Result<ExitCode> {
    let registry = registry::normalise_registry(args.registry.as_deref().unwrap_or_default());
    let password = match (&args.password, args.password_stdin) {
        (Some(password), _) => password.clone(),
        (None, true) => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| failed(e, "read the password from standard input"))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => return Err(miette!("login {registry}: give the password with --password-stdin (or -p)")),
    };
    if password.is_empty() {
        return Err(miette!("login {registry}: the password is empty"));
    }
    let credentials = Credentials { username: args.username.clone(), password };
    let file = registry::login(&registry, credentials, args.tls.tls_verify).map_err(|e| failed(e, format!("login {registry}")))?;
    eprintln!("credentials saved in {}", file.display());
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: &LogoutArgs) -> miette::Result<ExitCode> {
    let registry = registry::normalise_registry(args.registry.as_deref().unwrap_or_default());
    if registry::logout(&registry).map_err(|e| failed(e, format!("logout {registry}")))? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A build's base images, pulled as `--pull` says (the build itself knows no registry).
#[derive(Debug)]
pub struct PullingResolver {
    pub policy: PullPolicy,
    pub options: Options,
}

impl BaseResolver for PullingResolver {
    fn resolve(&self, store: &Store, name: &ImageName) -> Result<StoredImage, Box<dyn std::error::Error + Send + Sync>> {
        Ok(registry::resolve_base(store, name.as_str(), self.policy, &self.options)?)
    }
}

/// `build --push` / `--output type=registry`: every tag the build wrote, pushed to its name (gzip).
pub fn push_built(store: &Store, built: &[BuiltImage], options: &Options) -> miette::Result<()> {
    if built.iter().all(|image| image.tags.is_empty()) {
        return Err(miette!("--push: the build named no image; give it a name with -t"));
    }
    for tag in built.iter().flat_map(|image| &image.tags) {
        let dest = registry::parse_reference(tag).map_err(miette::Report::from_err)?;
        let pushed = registry::push(store, tag, &dest, Compression::Gzip, options).map_err(|e| failed(e, format!("push {tag}")))?;
        if options.verbose {
            eprintln!("pushed {}: digest: {} size: {}", dest.full(), pushed.digest, pushed.size);
        }
    }
    Ok(())
}
