//! `tessera`: the server and its admin commands.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tessera_server::cli::{ClientCommand, ConsentCommand, EventsCommand, KeysCommand, TenantCommand, UserCommand};
use tessera_server::config::{Config, Overrides};
use tessera_server::{Runtime, bootstrap, cli};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a token request allocates and frees dozens of small
/// buffers across threads, where glibc spent about a tenth of the CPU (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `tessera --version` names the build profile, so that a benchmark (or a bug report) can tell
/// a debug binary, which spends several times the CPU per request, from a release one.
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (release build)")
};

#[derive(Debug, Parser)]
#[command(name = "tessera", version = VERSION, about = "Tessera: customer identity and access management")]
struct Cli {
    /// TOML configuration file (also TESSERA_CONFIG).
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite:<path> or postgres://… (overrides TESSERA_DATABASE_URL).
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (applies migrations and bootstraps the default tenant first).
    Serve {
        /// Address to listen on (overrides TESSERA_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Public URL (overrides TESSERA_PUBLIC_URL).
        #[arg(long)]
        public_url: Option<String>,
        /// Development mode: allows http public URLs and generates a master key.
        #[arg(long)]
        dev: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Tenants (brands): each has its own customers, apps, keys and issuer.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Applications (OAuth clients) of a tenant.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Customers of a tenant.
    #[command(subcommand)]
    User(UserCommand),
    /// Customers' consents to third-party applications.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// A tenant's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The event log (sign-ups, sign-ins, tokens, changes).
    #[command(subcommand)]
    Events(EventsCommand),
}

fn init_logging(json: bool, access_log: bool) {
    // `TESSERA_LOG` decides alone when set; otherwise server errors are always logged and the
    // line per request (`tower_http=info`) only with `access_log`.
    let default_filter = if access_log { "info,sqlx=warn,tower_http=info" } else { "info,sqlx=warn,tower_http=warn" };
    let filter = EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides = Overrides { database_url: cli.database_url.clone(), ..Overrides::default() };
    if let Command::Serve { listen, public_url, dev } = &cli.command {
        overrides.listen = listen.clone();
        overrides.public_url = public_url.clone();
        overrides.dev_mode = *dev;
    }
    let config = Config::load(cli.config.as_ref(), overrides)?;
    // Admin commands keep stderr quiet so `--json` output stays clean to read.
    let serving = matches!(cli.command, Command::Serve { .. });
    if serving {
        init_logging(config.log_format == "json", config.access_log || config.dev_mode);
    }
    let rt = Runtime::start_default(config).await?;
    match cli.command {
        Command::Serve { .. } => serve(rt).await,
        Command::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant(cmd) => cli::tenant_command(&rt, cmd).await,
        Command::Client(cmd) => cli::client_command(&rt, cmd).await,
        Command::User(cmd) => cli::user_command(&rt, cmd).await,
        Command::Consent(cmd) => cli::consent_command(&rt, cmd).await,
        Command::Keys(cmd) => cli::keys_command(&rt, cmd).await,
        Command::Events(cmd) => cli::events_command(&rt, cmd).await,
    }
}

async fn serve(rt: Runtime) -> anyhow::Result<()> {
    let slug = rt.config.bootstrap_tenant.clone();
    let (tenant, created) = bootstrap::ensure_tenant(&rt, &slug, "Tessera").await?;
    if created {
        tracing::info!(tenant = %tenant.slug, "bootstrapped tenant");
    }
    let (metrics, metrics_upkeep) = tessera_server::telemetry::install()?;
    let app = tessera_web::app(rt.app_state(Some(metrics)));
    let listener = tokio::net::TcpListener::bind(&rt.config.listen).await.with_context(|| format!("binding {}", rt.config.listen))?;
    tracing::info!(listen = %rt.config.listen, issuer = %rt.oauth.issuer(&tenant), "Tessera is serving");
    let janitor = tokio::spawn(housekeeping(rt.clone()));
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(shutdown_signal()).await?;
    janitor.abort();
    metrics_upkeep.abort();
    // Closing the pool lets SQLite checkpoint its write-ahead log into the database file.
    rt.store.close().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Deletes expired rows now and then. Any node may do it; the deletes are idempotent.
async fn housekeeping(rt: Runtime) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        let now = rt.oauth.clock.now();
        match rt.store.delete_expired(now).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired rows removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
        if let Ok(tenants) = rt.store.list_tenants().await {
            for t in tenants {
                if let Err(e) = rt.store.delete_expired_signing_keys(t.id, now).await {
                    tracing::warn!(error = %e, "retired key cleanup failed");
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
