//! The systems under test and their lifecycles, all on 127.0.0.1 with random ports:
//!
//! - **Tessera on SQLite**: a fresh database file in the run's temporary directory;
//! - **Tessera on PostgreSQL**: a fresh database created with `psql` and dropped afterwards;
//! - **the peer**: npm `oidc-provider` from `bench/peer/` (its in-memory adapter).
//!
//! Each is started as a child process (killed when dropped), waited for, given one
//! confidential client, and described by its discovery document. The Tessera admin CLI runs
//! against the same database with the same environment.

use crate::http::{self, Http, LOOPBACK, Req};
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The redirect URI of the bench client. Never requested: the harness reads the code from
/// the `Location` header.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// How long a server may take to answer after start (migrations included).
const START_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TesseraSqlite,
    TesseraPostgres,
    Peer,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::TesseraSqlite => "Tessera (SQLite)",
            Kind::TesseraPostgres => "Tessera (PostgreSQL)",
            Kind::Peer => "oidc-provider (in-memory)",
        }
    }

    pub fn is_tessera(self) -> bool {
        !matches!(self, Kind::Peer)
    }
}

/// Endpoints from the discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub discovery: String,
    pub authorization: String,
    pub token: String,
    pub userinfo: String,
    pub introspection: String,
    pub jwks: String,
    /// Tessera's hosted sign-up page (`None` for the peer).
    pub registration: Option<String>,
}

/// A running system under test.
pub struct System {
    pub kind: Kind,
    pub pid: u32,
    pub issuer: String,
    pub endpoints: Endpoints,
    pub client_id: String,
    pub client_secret: String,
    /// VmRSS right after the server answered for the first time.
    pub idle_rss_kib: Option<u64>,
    /// The Tessera CLI bound to this system's database (`None` for the peer).
    pub cli: Option<TesseraCli>,
    /// The PostgreSQL database, for counting its backends' CPU.
    pub pg: Option<PgDatabase>,
    pub log: PathBuf,
    child: Child,
}

impl System {
    /// Stops the server (SIGKILL; nothing it holds outlives the run) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A scratch directory removed on drop (unless kept for inspection).
pub struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl TempDir {
    pub fn new(keep: bool) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("tessera-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Where PostgreSQL is and how to reach it as an administrator.
#[derive(Debug, Clone)]
pub struct PgServer {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl PgServer {
    fn psql(&self, database: &str) -> std::process::Command {
        let mut c = std::process::Command::new("psql");
        c.args([
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
            "-d",
            database,
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        c.env_remove("PGPASSWORD").stdin(Stdio::null());
        c
    }

    /// Runs one SQL statement as the administrator and returns its output.
    pub fn query(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = self.psql(database).args(["-c", sql]).output().context("running psql (is the PostgreSQL client installed?)")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn reachable(&self) -> bool {
        self.query("postgres", "SELECT 1").map(|o| o == "1").unwrap_or(false)
    }

    pub fn create_database(&self) -> anyhow::Result<PgDatabase> {
        let name = format!("tessera_bench_{}_{}", std::process::id(), http::random_u64() % 1_000_000_000);
        self.query("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase { server: self.clone(), name })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A database of this run, dropped (with its connections) on drop.
pub struct PgDatabase {
    pub server: PgServer,
    pub name: String,
}

impl PgDatabase {
    /// Without TLS when the server is on this machine: sqlx's default (`sslmode=prefer`)
    /// would encrypt every round trip over loopback, which protects nothing and costs both
    /// sides CPU — as a deployment next to its database would also configure it.
    pub fn url(&self) -> String {
        let tls = if is_loopback(&self.server.host) { "?sslmode=disable" } else { "" };
        format!("postgres://{}@{}:{}/{}{tls}", self.server.user, self.server.host, self.server.port, self.name)
    }

    /// The server processes (backends) connected to this database right now.
    pub fn backend_pids(&self) -> Vec<u32> {
        self.server
            .query("postgres", &format!("SELECT pid FROM pg_stat_activity WHERE datname = '{}'", self.name))
            .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// Cumulative activity of one database (`pg_stat_database`, flushed by the backends about
/// once a second, so a few seconds' window gives a good average).
#[derive(Debug, Clone, Copy)]
pub struct DbActivity {
    pub transactions: u64,
    pub rows_written: u64,
}

impl PgDatabase {
    pub fn activity(&self) -> Option<DbActivity> {
        let out = self
            .server
            .query(
                "postgres",
                &format!(
                    "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = '{}'",
                    self.name
                ),
            )
            .ok()?;
        let (t, w) = out.trim().split_once('|')?;
        Some(DbActivity { transactions: t.parse().ok()?, rows_written: w.parse().ok()? })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = self.server.query("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("warning: could not drop database {}: {e:#}", self.name);
        }
    }
}

/// The `tessera` admin CLI with the environment of one system.
#[derive(Clone)]
pub struct TesseraCli {
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
}

impl TesseraCli {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        clear_tessera_env(&mut c);
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).stdin(Stdio::null());
        c
    }

    /// Runs `tessera <args>`; returns stdout, or fails with stderr.
    pub async fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut c = self.command();
        c.args(args).envs(extra_env.iter().copied()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(600), c.output())
            .await
            .map_err(|_| anyhow!("tessera {} timed out", args.join(" ")))?
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!("tessera {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether this build has `tessera <words…>` (checked with `--help`).
    pub async fn has_command(&self, words: &[&str]) -> bool {
        let mut args = words.to_vec();
        args.push("--help");
        self.run(&args, &[]).await.is_ok()
    }
}

fn clear_tessera_env(c: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TESSERA_") {
            c.env_remove(key);
        }
    }
}

/// A port the kernel just handed out on 127.0.0.1 (closed again for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((LOOPBACK, 0)).context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `tessera serve` on `database_url`, waits for `/readyz`, measures idle RSS, creates
/// the bench client and reads discovery.
pub async fn start_tessera(
    kind: Kind,
    bin: &Path,
    database_url: &str,
    dir: &Path,
    pg: Option<PgDatabase>,
    id_token_alg: &str,
) -> anyhow::Result<System> {
    let port = free_port()?;
    let base = format!("http://{LOOPBACK}:{port}");
    let data_dir = dir.join(format!("{kind:?}-data").to_lowercase());
    std::fs::create_dir_all(&data_dir)?;
    let master_key = STANDARD.encode(http::os_random(32)?);
    let env = vec![
        ("TESSERA_DATABASE_URL".to_owned(), database_url.to_owned()),
        ("TESSERA_LISTEN".to_owned(), format!("{LOOPBACK}:{port}")),
        ("TESSERA_PUBLIC_URL".to_owned(), base.clone()),
        ("TESSERA_MASTER_KEY".to_owned(), master_key),
        ("TESSERA_DATA_DIR".to_owned(), data_dir.display().to_string()),
    ];
    let cli = TesseraCli { bin: bin.to_owned(), env };
    let log = dir.join(format!("{kind:?}.log").to_lowercase());
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = cli.command();
    command.arg("serve").stdout(log_file.try_clone()?).stderr(log_file).kill_on_drop(true);
    let mut child = command.spawn().with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let http = Http::new(1);
    wait_until_ready(&http, &mut child, &format!("{base}/readyz"), &log).await?;
    let idle_rss_kib = crate::procstat::status_kib(pid, "VmRSS").ok();

    let created = cli
        .run(
            &[
                "client",
                "create",
                "--tenant",
                "default",
                "--name",
                "tessera-bench",
                "--redirect-uri",
                REDIRECT_URI,
                "--grant-type",
                "authorization_code",
                "--grant-type",
                "refresh_token",
                "--grant-type",
                "client_credentials",
                "--scope",
                "openid",
                "--scope",
                "profile",
                "--scope",
                "email",
                "--scope",
                "offline_access",
                "--scope",
                "api",
                "--first-party",
                "--id-token-alg",
                id_token_alg,
                "--json",
            ],
            &[],
        )
        .await?;
    let created: serde_json::Value = serde_json::from_str(created.trim()).context("client create printed no JSON")?;
    let field = |k: &str| created.get(k).and_then(|v| v.as_str()).map(str::to_owned).with_context(|| format!("client create gave no {k}"));
    let client_id = field("client_id")?;
    let client_secret = field("client_secret")?;
    let issuer = field("issuer")?;
    let mut endpoints = discover(&http, &issuer).await?;
    endpoints.registration = Some(format!("{issuer}/registration"));
    Ok(System { kind, pid, issuer, endpoints, client_id, client_secret, idle_rss_kib, cli: Some(cli), pg, log, child })
}

/// Starts the peer (`node bench/peer/server.mjs`) with a fresh client secret.
pub async fn start_peer(peer_dir: &Path, dir: &Path, id_token_alg: &str) -> anyhow::Result<System> {
    let port = free_port()?;
    let issuer = format!("http://{LOOPBACK}:{port}");
    let client_id = "tessera-bench".to_owned();
    let client_secret = http::random_token(32);
    let log = dir.join("peer.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(peer_dir)
        .env("PORT", port.to_string())
        .env("CLIENT_ID", &client_id)
        .env("CLIENT_SECRET", &client_secret)
        .env("REDIRECT_URI", REDIRECT_URI)
        .env("ID_TOKEN_ALG", id_token_alg)
        .env("NODE_ENV", "production")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("starting node (Node 20+ is required for the peer)")?;
    let pid = child.id().context("the peer exited at once")?;
    let http = Http::new(1);
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    wait_until_ready(&http, &mut child, &discovery, &log).await?;
    let idle_rss_kib = crate::procstat::status_kib(pid, "VmRSS").ok();
    let endpoints = discover(&http, &issuer).await?;
    Ok(System { kind: Kind::Peer, pid, issuer, endpoints, client_id, client_secret, idle_rss_kib, cli: None, pg: None, log, child })
}

async fn wait_until_ready(http: &Http, child: &mut Child, url: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the server exited ({status}) before answering; its log:\n{}", tail(log));
        }
        if let Ok(reply) = http.send(Req::get(url)).await
            && reply.status == 200
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {START_TIMEOUT:?}; the server's log:\n{}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn discover(http: &Http, issuer: &str) -> anyhow::Result<Endpoints> {
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let reply = http.send(Req::get(&discovery)).await?;
    if reply.status != 200 {
        bail!("discovery answered {}", reply.status);
    }
    let doc = reply.json()?;
    let get = |k: &str| -> anyhow::Result<String> {
        let url = doc.get(k).and_then(|v| v.as_str()).with_context(|| format!("discovery has no {k}"))?;
        http::ensure_loopback(&url.parse().with_context(|| format!("bad {k}"))?)?;
        Ok(url.to_owned())
    };
    Ok(Endpoints {
        authorization: get("authorization_endpoint")?,
        token: get("token_endpoint")?,
        userinfo: get("userinfo_endpoint")?,
        introspection: get("introspection_endpoint")?,
        jwks: get("jwks_uri")?,
        discovery,
        registration: None,
    })
}
