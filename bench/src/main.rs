//! `tessera-bench`: Tessera side by side with a certified OpenID provider, in one run, on one
//! machine, on loopback (issue 3).
//!
//! It starts Tessera on SQLite and on PostgreSQL and the peer (npm `oidc-provider`, in
//! `bench/peer/`), seeds customers, measures the Argon2id hash time, then runs every scenario
//! against every system it applies to, round after round with the systems alternating, and
//! prints one Markdown report (medians over rounds, ratios, targets). See
//! `docs/benchmarks.md` for the figures and how to reproduce them.
//!
//! ```text
//! cargo build --release -p tessera-server
//! cargo run --release -p tessera-bench --              # full run (~20 min)
//! cargo run -p tessera-bench -- --quick                # smoke run for CI (< 1 min)
//! ```
//!
//! Modules: [`systems`] (processes, databases), [`seed`] (customers), [`scenarios`] (the
//! operations), [`load`] (closed / open loop), [`histogram`], [`procstat`] (CPU and RSS from
//! /proc), [`hashing`] (the Argon2id yardstick), [`spike`] (sign-up spike), [`report`].

mod hashing;
mod histogram;
mod http;
mod load;
mod procstat;
mod report;
mod scenarios;
mod seed;
mod spike;
mod systems;

use anyhow::{Context, bail};
use clap::Parser;
use load::{Limits, Op};
use report::{Measurement, RunInfo};
use scenarios::{Scenario, Target};
use seed::Customers;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use systems::{Kind, PgServer, System, TempDir};
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(name = "tessera-bench", about = "Benchmarks Tessera (SQLite, PostgreSQL) side by side with npm oidc-provider on loopback")]
struct Args {
    /// A smoke run for CI: every scenario for about a second, low concurrency, one round;
    /// skips PostgreSQL when it does not answer and the peer when it is not installed.
    #[arg(long)]
    quick: bool,
    /// The `tessera` binary (default: target/release/tessera if present, else target/debug/tessera).
    #[arg(long)]
    tessera: Option<PathBuf>,
    /// Systems to run: sqlite, postgres, peer.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres,peer")]
    systems: Vec<String>,
    /// Scenarios to run (default all): client_credentials, client_credentials_half_peak,
    /// refresh, discovery_jwks, userinfo, introspection, sign_in.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Measured seconds per scenario and system (default 8; quick 1).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds before each measurement (default 1; quick 0.2).
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent connections (virtual users) of the closed loops (default 16; quick 4).
    #[arg(long)]
    connections: Option<usize>,
    /// Rounds over all scenarios and systems; the report shows medians (default 3; quick 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Customers seeded into each Tessera database (default 10000, quick 200; without
    /// `tessera user import` at most 500, created one by one).
    #[arg(long)]
    customers: Option<u64>,
    /// Also run the sign-in and token scenarios against a second PostgreSQL database with
    /// this many customers, side by side with the first (default 1000000; 0 = off; quick off).
    #[arg(long)]
    scale_customers: Option<u64>,
    /// Sign-up spike rate as a multiple of the hashing ceiling (cores ÷ hash time).
    #[arg(long, default_value_t = 20.0)]
    spike_factor: f64,
    /// Seconds the spike lasts (default 3; quick 1).
    #[arg(long)]
    spike_secs: Option<f64>,
    /// The most registrations in one spike (default 4000; quick 300).
    #[arg(long)]
    spike_max: Option<u64>,
    /// Skip the sign-up spike.
    #[arg(long)]
    no_spike: bool,
    /// Operations per measured run at most (every loop also stops by time).
    #[arg(long, default_value_t = 5_000_000)]
    max_ops: u64,
    /// Run bench/peer/install.sh (npm ci) when the peer is not installed.
    #[arg(long)]
    install_peer: bool,
    /// The peer's folder (default: bench/peer of this source tree).
    #[arg(long)]
    peer_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pg_host: String,
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    /// The ID tokens' signing algorithm, the same on both sides: the bench client registers
    /// it as its `id_token_signed_response_alg` on Tessera and on the peer. RS256 is OpenID
    /// Connect's default; ES256 costs a tenth of its signature. Access tokens are ES256 always.
    #[arg(long, default_value = "RS256", value_parser = ["RS256", "ES256"])]
    id_token_alg: String,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the temporary directory (databases, server logs).
    #[arg(long)]
    keep_temp: bool,
    /// Write every open-loop operation (scheduled start as Unix seconds, latency in ms, ok) to
    /// `DIR/<scenario>-<system>-round<N>.txt`, and say how the slow ones cluster in time: a
    /// tail made of a few stalls looks different from one spread evenly.
    #[arg(long, value_name = "DIR")]
    trace_dir: Option<PathBuf>,
}

/// The effective settings after the `--quick` defaults.
struct Settings {
    quick: bool,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    rounds: usize,
    customers: u64,
    scale_customers: u64,
    spike_secs: f64,
    spike_max: u64,
    hash_samples: usize,
    max_ops: u64,
    trace_dir: Option<PathBuf>,
}

impl Settings {
    fn from(args: &Args) -> Self {
        let q = args.quick;
        Self {
            quick: q,
            duration: Duration::from_secs_f64(args.duration.unwrap_or(if q { 1.0 } else { 8.0 }).max(0.1)),
            warmup: Duration::from_secs_f64(args.warmup.unwrap_or(if q { 0.2 } else { 1.0 }).max(0.0)),
            connections: args.connections.unwrap_or(if q { 4 } else { 16 }).max(1),
            rounds: args.rounds.unwrap_or(if q { 1 } else { 3 }).max(1),
            customers: args.customers.unwrap_or(if q { 200 } else { 10_000 }),
            scale_customers: args.scale_customers.unwrap_or(if q { 0 } else { 1_000_000 }),
            spike_secs: args.spike_secs.unwrap_or(if q { 1.0 } else { 3.0 }),
            spike_max: args.spike_max.unwrap_or(if q { 300 } else { 4000 }),
            hash_samples: if q { 3 } else { 25 },
            max_ops: args.max_ops.max(1),
            trace_dir: args.trace_dir.clone(),
        }
    }

    fn limits(&self) -> Limits {
        Limits { duration: self.duration, max_ops: self.max_ops }
    }
}

/// A system under test with what the scenarios need from it.
struct Sut {
    label: String,
    system: System,
    customers: Option<Arc<Customers>>,
    /// One refresh-token chain per virtual user.
    chains: Arc<Vec<Mutex<Option<String>>>>,
    /// Only the scale comparison runs against it.
    scale_only: bool,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[tessera-bench] {}", msg.as_ref());
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // On Ctrl-C or SIGTERM the run is dropped, and with it every server (killed on drop),
    // the PostgreSQL databases (dropped) and the temporary directory (removed).
    let outcome = tokio::select! {
        result = run() => result,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; cleaned up")),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    let settings = Settings::from(&args);
    http::seed_random()?;
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = bench_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| bench_dir.clone());
    let tessera_bin = resolve_tessera(args.tessera.clone(), &root)?;
    let peer_dir = args.peer_dir.clone().unwrap_or_else(|| bench_dir.join("peer"));
    let scenarios = selected_scenarios(&args.scenarios)?;
    for s in &args.systems {
        if !["sqlite", "postgres", "peer"].contains(&s.as_str()) {
            bail!("unknown system {s:?} (sqlite, postgres, peer)");
        }
    }
    let want = |s: &str| args.systems.iter().any(|x| x == s);
    let mut skipped = Vec::new();
    let clk_tck = procstat::clock_ticks_per_sec();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let version = tessera_version(&tessera_bin).await;
    let profile = build_profile(&tessera_bin, &version);
    let source = git_describe(&root).await;
    say(format!("Tessera binary: {} ({profile} build)", tessera_bin.display()));
    if profile != "release" {
        say("warning: not a release build; figures are not representative (cargo build --release -p tessera-server)");
    }

    // Which systems can run.
    let pg = PgServer { host: args.pg_host.clone(), port: args.pg_port, user: args.pg_user.clone() };
    let mut use_pg = want("postgres");
    if use_pg && !pg.reachable() {
        if settings.quick {
            skipped.push(format!("Tessera on PostgreSQL: PostgreSQL does not answer at {}:{}", pg.host, pg.port));
            use_pg = false;
        } else {
            bail!("PostgreSQL does not answer at {}:{} (psql as {}); start it or pass --systems sqlite,peer", pg.host, pg.port, pg.user);
        }
    }
    let mut use_peer = want("peer");
    if use_peer && !peer_dir.join("node_modules").join("oidc-provider").exists() {
        if args.install_peer {
            install_peer(&peer_dir).await?;
        } else if settings.quick {
            skipped.push(format!("the peer: {} is not installed (run bench/peer/install.sh or pass --install-peer)", peer_dir.display()));
            use_peer = false;
        } else {
            bail!("the peer is not installed in {}: run bench/peer/install.sh or pass --install-peer", peer_dir.display());
        }
    }

    // The Argon2id yardstick, before anything else loads the machine.
    let mut hash = if scenarios.contains(&Scenario::SignIn) || !args.no_spike || want("sqlite") || use_pg {
        say("measuring the Argon2id hash time");
        Some(hashing::measure(settings.hash_samples, cores).await?)
    } else {
        None
    };

    let temp = TempDir::new(args.keep_temp)?;
    let customers = Arc::new(Customers { count: settings.customers, password: format!("Bench-{}-pass", http::random_token(12)) });
    let customer_hash = hashing::phc(&customers.password)?;
    let mut suts: Vec<Sut> = Vec::new();
    let mut seeding = Vec::new();
    let mut idle_rss = Vec::new();
    let mut scale = None;

    let mut tessera_systems: Vec<(Kind, String, u64, bool)> = Vec::new();
    if want("sqlite") {
        tessera_systems.push((Kind::TesseraSqlite, Kind::TesseraSqlite.label().to_owned(), settings.customers, false));
    }
    if use_pg {
        tessera_systems.push((Kind::TesseraPostgres, Kind::TesseraPostgres.label().to_owned(), settings.customers, false));
    }
    let scale_wanted = use_pg && settings.scale_customers > settings.customers;
    let has_import = {
        let probe = systems::TesseraCli { bin: tessera_bin.clone(), env: Vec::new() };
        probe.has_command(&["user", "import"]).await
    };
    if scale_wanted {
        if has_import {
            let label = format!("Tessera (PostgreSQL, {} customers)", settings.scale_customers);
            scale = Some((Kind::TesseraPostgres.label().to_owned(), label.clone(), settings.customers, settings.scale_customers));
            tessera_systems.push((Kind::TesseraPostgres, label, settings.scale_customers, true));
        } else {
            skipped.push("the scale comparison: this Tessera build has no `tessera user import`".into());
        }
    }

    for (kind, label, count, scale_only) in tessera_systems {
        let count = if has_import || count <= seed::MAX_WITHOUT_IMPORT {
            count
        } else {
            skipped.push(format!("{label}: {count} customers need `tessera user import`; seeded {}", seed::MAX_WITHOUT_IMPORT));
            seed::MAX_WITHOUT_IMPORT
        };
        say(format!("starting {label}"));
        let system = match kind {
            Kind::TesseraSqlite => {
                let url = format!("sqlite:{}?mode=rwc", temp.path.join("tessera.db").display());
                systems::start_tessera(kind, &tessera_bin, &url, &temp.path, None, &args.id_token_alg).await?
            }
            _ => {
                let db = pg.create_database()?;
                let url = db.url();
                systems::start_tessera(kind, &tessera_bin, &url, &temp.path, Some(db), &args.id_token_alg).await?
            }
        };
        say(format!("{label} answers at {} (pid {})", system.issuer, system.pid));
        idle_rss.push((label.clone(), kind, system.idle_rss_kib));
        let cli = system.cli.clone().context("a Tessera system has a CLI")?;
        say(format!("seeding {count} customers into {label}"));
        let seeded = seed::seed(&cli, &customers, 0, count, &customer_hash, &temp.path).await?;
        seeding.push((label.clone(), count, seeded));
        let sys_customers = Arc::new(Customers { count, password: customers.password.clone() });
        suts.push(Sut { label, system, customers: Some(sys_customers), chains: Arc::new(Vec::new()), scale_only });
    }
    let mut peer_version = None;
    if use_peer {
        say("starting the peer (oidc-provider)");
        let system = systems::start_peer(&peer_dir, &temp.path, &args.id_token_alg).await?;
        say(format!("the peer answers at {} (pid {})", system.issuer, system.pid));
        idle_rss.push((Kind::Peer.label().to_owned(), Kind::Peer, system.idle_rss_kib));
        peer_version = Some(peer_description(&peer_dir).await);
        suts.push(Sut { label: Kind::Peer.label().to_owned(), system, customers: None, chains: Arc::new(Vec::new()), scale_only: false });
    }
    if suts.is_empty() {
        bail!("no system to run");
    }

    // The sign-up spike, once per Tessera system (not the scale one), while the servers are
    // fresh: its memory is judged against the idle RSS, before sign-ins have grown the heap.
    let mut spikes = Vec::new();
    if !args.no_spike
        && let Some(hash) = &hash
    {
        let ceiling = cores as f64 / hash.median().as_secs_f64();
        let rate = args.spike_factor * ceiling;
        let registrations = ((rate * settings.spike_secs).ceil() as u64).clamp(1, settings.spike_max);
        let window = Duration::from_secs_f64(registrations as f64 / rate);
        let plan = spike::SpikePlan { rate, window, registrations };
        for sut in suts.iter().filter(|s| s.system.kind.is_tessera() && !s.scale_only) {
            say(format!("sign-up spike on {}: {registrations} registrations at {rate:.0}/s", sut.label));
            let result = spike::run(&sut.system, &plan, clk_tck).await?;
            spikes.push((sut.label.clone(), result));
        }
    }

    // One refresh-token chain per virtual user and system.
    if scenarios.contains(&Scenario::Refresh) {
        for sut in &mut suts {
            say(format!("opening {} refresh-token chains on {}", settings.connections, sut.label));
            let target = Target::new(&sut.system, http::Http::new(4));
            let mut chains = Vec::new();
            for vu in 0..settings.connections {
                let tokens = obtain_tokens(&target, sut.customers.as_deref(), vu as u64).await?;
                // Every system must sign what the comparison says it signs.
                if tokens.id_token_alg.as_deref() != Some(args.id_token_alg.as_str()) {
                    bail!("{} signed its ID token with {:?}, not {}", sut.label, tokens.id_token_alg, args.id_token_alg);
                }
                let rt = tokens.refresh_token.context("the code exchange gave no refresh token")?;
                chains.push(Mutex::new(Some(rt)));
            }
            sut.chains = Arc::new(chains);
        }
    }

    let peak_rss_reset = suts.first().map(|s| procstat::reset_peak_rss(s.system.pid)).unwrap_or(false);
    let mut measurements: Vec<Measurement> = Vec::new();
    for round in 0..settings.rounds {
        say(format!("round {} of {}", round + 1, settings.rounds));
        // Another sitting of the yardstick while the servers idle between rounds: a shared
        // machine's noise comes and goes, and medians over the whole run ride it out.
        if let Some(hash) = hash.as_mut()
            && scenarios.contains(&Scenario::SignIn)
        {
            hash.extend(hashing::measure(settings.hash_samples, cores).await?);
        }
        let mut peaks: HashMap<String, f64> = HashMap::new();
        for &scenario in &scenarios {
            let n = suts.len();
            for i in 0..n {
                // Alternate which system goes first from round to round.
                let sut = &mut suts[(i + round) % n];
                if !scenario.applies_to(sut.system.kind) || (sut.scale_only && !scale_scenario(scenario)) {
                    continue;
                }
                if !sut.system.is_running() {
                    bail!("{} stopped; its log:\n{}", sut.label, systems::tail(&sut.system.log));
                }
                let rate = match scenario {
                    Scenario::ClientCredentialsHalfPeak => match peaks.get(&sut.label) {
                        Some(p) => Some(p / 2.0),
                        None => continue,
                    },
                    _ => None,
                };
                let mut m = measure(sut, scenario, &settings, rate, clk_tck).await?;
                if let (Some(dir), Some(trace)) = (&settings.trace_dir, m.stats.trace.take()) {
                    let path = dir.join(format!("{}-{}-round{}.txt", scenario.name(), slug(&sut.label), round + 1));
                    say(format!("  trace: {} → {}", load::trace_summary(&trace), path.display()));
                    load::write_trace(&path, &trace)?;
                }
                say(format!(
                    "  {:<28} {:<40} {:>9.1} ops/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}",
                    scenario.name(),
                    sut.label,
                    m.stats.throughput(),
                    m.stats.latency.quantile_ms(0.5).unwrap_or(0.0),
                    m.stats.latency.quantile_ms(0.99).unwrap_or(0.0),
                    m.stats.errors()
                ));
                if scenario == Scenario::ClientCredentials {
                    peaks.insert(sut.label.clone(), m.stats.throughput());
                }
                measurements.push(m);
            }
        }
    }

    let info = RunInfo {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick: settings.quick,
        tessera_bin: tessera_bin.display().to_string(),
        tessera_profile: profile,
        tessera_version: format!("{version}; source tree at the start of the run: {source}"),
        peer: peer_version,
        skipped,
        cpu_model: cpu_model(),
        cores,
        memory: memory_total(),
        kernel: kernel(),
        clk_tck,
        duration_secs: settings.duration.as_secs_f64(),
        warmup_secs: settings.warmup.as_secs_f64(),
        connections: settings.connections,
        rounds: settings.rounds,
        id_token_alg: args.id_token_alg.clone(),
        hash,
        idle_rss,
        seeding,
        spikes,
        scale,
        peak_rss_reset,
        total_secs: started.elapsed().as_secs_f64(),
    };
    let text = report::render(&measurements, &info);
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    for sut in suts {
        sut.system.stop().await;
    }
    Ok(())
}

/// A system's label as a file name: `Tessera (PostgreSQL)` → `tessera-postgresql`.
fn slug(label: &str) -> String {
    let words: Vec<String> =
        label.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase).collect();
    words.join("-")
}

/// The scenarios of the scale comparison (sign-in and tokens).
fn scale_scenario(s: Scenario) -> bool {
    matches!(s, Scenario::ClientCredentials | Scenario::Refresh | Scenario::Userinfo | Scenario::Introspection | Scenario::SignIn)
}

/// Warm-up, then one measured run with the server's CPU and peak RSS around it.
async fn measure(sut: &Sut, scenario: Scenario, settings: &Settings, rate: Option<f64>, clk_tck: u64) -> anyhow::Result<Measurement> {
    let conc = settings.connections;
    let target = Target::new(&sut.system, http::Http::new(conc.max(16)));
    let op: Op = match scenario {
        Scenario::ClientCredentials | Scenario::ClientCredentialsHalfPeak => scenarios::client_credentials(target.clone()),
        Scenario::Refresh => scenarios::refresh(target.clone(), sut.chains.clone()),
        Scenario::DiscoveryJwks => scenarios::discovery_jwks(target.clone()),
        Scenario::Userinfo | Scenario::Introspection => {
            let tokens = obtain_tokens(&target, sut.customers.as_deref(), 0).await?;
            let at = Arc::new(tokens.access_token);
            if scenario == Scenario::Userinfo {
                scenarios::userinfo(target.clone(), at)
            } else {
                scenarios::introspection(target.clone(), at)
            }
        }
        Scenario::SignIn => scenarios::sign_in(target.clone(), sut.customers.clone().context("no customers on this system")?),
    };
    if !settings.warmup.is_zero() {
        load::closed_loop(conc, Limits { duration: settings.warmup, max_ops: settings.max_ops }, op.clone()).await;
    }
    let pid = sut.system.pid;
    let db_before = sut.system.pg.as_ref().map(|db| backend_ticks(&db.backend_pids()));
    let activity_before = sut.system.pg.as_ref().and_then(|db| db.activity());
    let cpu_before = procstat::cpu_ticks(pid)?;
    let own_before = procstat::own_cpu_ticks()?;
    let resettable = procstat::reset_peak_rss(pid);
    let stats = match rate {
        Some(r) => load::open_loop(r, 256, Some(conc), conc, settings.limits(), settings.trace_dir.is_some(), op).await,
        None => load::closed_loop(conc, settings.limits(), op).await,
    };
    let cpu_after = procstat::cpu_ticks(pid)?;
    let own_after = procstat::own_cpu_ticks()?;
    let peak_rss_kib = if resettable { procstat::status_kib(pid, "VmHWM").ok() } else { None };
    let activity_after = sut.system.pg.as_ref().and_then(|db| db.activity());
    let ops = (stats.ok + stats.errors()).max(1) as f64;
    let db_per_op = match (activity_before, activity_after) {
        (Some(a), Some(b)) => {
            Some((b.transactions.saturating_sub(a.transactions) as f64 / ops, b.rows_written.saturating_sub(a.rows_written) as f64 / ops))
        }
        _ => None,
    };
    let db_cpu_seconds = match (&sut.system.pg, db_before) {
        (Some(db), Some(before)) => {
            let after = backend_ticks(&db.backend_pids());
            let used: u64 = after.iter().map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0))).sum();
            Some(used as f64 / clk_tck as f64)
        }
        _ => None,
    };
    Ok(Measurement {
        scenario,
        system: sut.label.clone(),
        kind: sut.system.kind,
        stats,
        cpu_seconds: cpu_after.saturating_sub(cpu_before) as f64 / clk_tck as f64,
        db_cpu_seconds,
        db_per_op,
        driver_cpu_seconds: own_after.saturating_sub(own_before) as f64 / clk_tck as f64,
        peak_rss_kib,
        offered_rate: rate,
    })
}

fn backend_ticks(pids: &[u32]) -> HashMap<u32, u64> {
    pids.iter().filter_map(|&p| procstat::cpu_ticks(p).ok().map(|t| (p, t))).collect()
}

/// Tokens from one authorization code flow: a seeded customer's password sign-in on
/// Tessera, the interaction's automatic sign-in of `vu-<n>` on the peer.
async fn obtain_tokens(target: &Target, customers: Option<&Customers>, n: u64) -> anyhow::Result<scenarios::TokenSet> {
    let result = match customers {
        Some(c) => {
            let email = c.pick(n);
            scenarios::authorization_code_flow(target, Some((&email, &c.password)), None).await
        }
        None => scenarios::authorization_code_flow(target, None, Some(&format!("vu-{n}"))).await,
    };
    result.map_err(|e| anyhow::anyhow!("obtaining tokens failed: {} {}", e.status.map(|s| s.to_string()).unwrap_or_default(), e.detail))
}

fn selected_scenarios(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(Scenario::ALL.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        let s = Scenario::parse(n).with_context(|| {
            format!("unknown scenario {n:?} ({})", Scenario::ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "))
        })?;
        out.push(s);
    }
    // The half-peak run needs the peak of the same round.
    if out.contains(&Scenario::ClientCredentialsHalfPeak) && !out.contains(&Scenario::ClientCredentials) {
        out.push(Scenario::ClientCredentials);
    }
    out.sort_by_key(|s| Scenario::ALL.iter().position(|x| x == s));
    Ok(out)
}

fn resolve_tessera(flag: Option<PathBuf>, root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        if !path.is_file() {
            bail!("{} is not a file", path.display());
        }
        return Ok(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    for profile in ["release", "debug"] {
        let candidate = target.join(profile).join("tessera");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no tessera binary under {}: run `cargo build --release -p tessera-server` or pass --tessera", target.display())
}

/// The build profile `tessera --version` names ("0.1.0 (release build)"); for binaries older
/// than that, guessed from the path under `target/`.
fn build_profile(bin: &Path, version: &str) -> String {
    for profile in ["release", "debug"] {
        if version.contains(&format!("({profile} build)")) {
            return profile.into();
        }
    }
    let path = bin.display().to_string();
    if path.contains("/release/") {
        "release".into()
    } else if path.contains("/debug/") {
        "debug".into()
    } else {
        "unknown".into()
    }
}

async fn install_peer(peer_dir: &Path) -> anyhow::Result<()> {
    say("installing the peer (bench/peer/install.sh)");
    let status = tokio::process::Command::new("bash")
        .arg(peer_dir.join("install.sh"))
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .context("running bench/peer/install.sh")?;
    if !status.success() {
        bail!("bench/peer/install.sh failed ({status})");
    }
    Ok(())
}

async fn tessera_version(bin: &Path) -> String {
    match tokio::process::Command::new(bin).arg("--version").output().await {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "version unknown".into(),
    }
}

/// The commit of the source tree (with `+changes` when the tree differs from it).
async fn git_describe(root: &Path) -> String {
    let run = |args: &'static [&'static str]| {
        let root = root.to_path_buf();
        async move { tokio::process::Command::new("git").args(args).current_dir(root).output().await.ok().filter(|o| o.status.success()) }
    };
    let Some(head) = run(&["rev-parse", "--short", "HEAD"]).await else { return "not a git checkout".into() };
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).await.map(|o| !o.stdout.is_empty()).unwrap_or(false);
    format!("commit {}{}", String::from_utf8_lossy(&head.stdout).trim(), if dirty { " +changes" } else { "" })
}

async fn peer_description(peer_dir: &Path) -> String {
    let package = peer_dir.join("node_modules/oidc-provider/package.json");
    let version = std::fs::read_to_string(package)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let node = match tokio::process::Command::new("node").arg("--version").output().await {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Err(_) => "?".into(),
    };
    format!("npm oidc-provider {version} on Node {node}, default in-memory adapter (nothing persisted), one process")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into())
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|r| format!("Linux {}", r.trim())).unwrap_or_else(|_| "Linux".into())
}
