//! The gatehouse binary: `run` serves Gateway API resources from YAML files (standalone
//! mode); `check` validates them offline.
#![forbid(unsafe_code)]

mod admin;
mod check;
mod engine;
mod metrics;
mod source;
mod watch;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use prometheus_client::registry::Registry;
use translate::Settings;

/// A proxied request allocates its header maps, bodies and futures and frees them within
/// microseconds. glibc's per-thread cache stops at about 1 KiB, so a header map's entries
/// go through its arena (under a lock, if uncontended); mimalloc serves them from a
/// per-thread page. See docs/design.md for what it saved.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "A Kubernetes Gateway API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the resources in YAML files, reloading them as they change.
    Run(RunArgs),
    /// Validate the resources in YAML files and print their status.
    Check(CheckArgs),
}

#[derive(Args)]
struct Common {
    /// A YAML file or a directory of them (read recursively). Repeatable.
    #[arg(long = "config", required = true)]
    config: Vec<PathBuf>,
    /// Only GatewayClasses with this controllerName are handled.
    #[arg(long, default_value = translate::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// The address Gateway listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Give each Gateway its own address from this range.
    #[arg(long)]
    address_pool: Option<IpNet>,
}

impl Common {
    fn settings(&self) -> Settings {
        Settings {
            controller_name: self.controller_name.clone(),
            bind: self.bind,
            address_pool: self.address_pool,
            ..Settings::default()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// The admin API's address.
    #[arg(long, default_value = "127.0.0.1:19000")]
    admin: SocketAddr,
    /// Data-plane worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    common: Common,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: check::Format,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    api::validate::parse_duration_ms(s)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for the whole process (shared/docs/crates.md).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => {
            let (report, healthy) =
                check::check(source::FileSource::new(args.common.config.clone()), &args.common.settings(), args.output);
            print!("{report}");
            return if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    proxy::ticks::start().context("starting the ticking thread")?;
    // One worker needs no work-stealing scheduler: a current-thread runtime does the same
    // work with less synchronization per task wake-up.
    let mut runtime = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let proxy = proxy::Proxy::new(&mut registry);
    let admin = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("binding the admin API on {}", args.admin))?;
    tracing::info!(address = %admin.local_addr()?, "admin API listening");

    let source = source::FileSource::new(args.common.config.clone());
    let (_watcher, mut changes) = watch::watch(source.paths()).context("watching the configuration files")?;
    let (mut engine, published) = engine::Engine::new(source, args.common.settings(), proxy, metrics);
    tokio::spawn(admin::serve(admin, published, Arc::new(registry)));
    engine.reload().await;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(()) = changes.recv() => {
                watch::settle(&mut changes).await;
                engine.reload().await;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(deadline = ?args.drain_timeout, "shutting down: draining connections");
    engine.proxy().shutdown(args.drain_timeout).await;
    Ok(())
}
