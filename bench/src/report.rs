//! The report: medians over rounds per scenario and system, ratios Tessera ÷ peer, the
//! sign-in / hashing-ceiling comparison, the sign-up spike, the 10k-vs-1M scale comparison,
//! and the verdict on every target of issue 3 — all as Markdown.

use crate::hashing::HashTiming;
use crate::load::LoadStats;
use crate::scenarios::Scenario;
use crate::seed::Seeding;
use crate::spike::SpikeResult;
use crate::systems::Kind;
use std::fmt::Write;

/// One measured run of one scenario against one system.
pub struct Measurement {
    pub scenario: Scenario,
    pub system: String,
    pub kind: Kind,
    pub stats: LoadStats,
    pub cpu_seconds: f64,
    pub db_cpu_seconds: Option<f64>,
    /// PostgreSQL transactions and rows written per operation (approximate).
    pub db_per_op: Option<(f64, f64)>,
    pub driver_cpu_seconds: f64,
    pub peak_rss_kib: Option<u64>,
    pub offered_rate: Option<f64>,
}

/// Medians over the rounds of one scenario × system.
pub struct Summary {
    pub scenario: Scenario,
    pub system: String,
    pub kind: Kind,
    pub ops_per_sec: f64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub cpu_per_1k: Option<f64>,
    pub db_cpu_per_1k: Option<f64>,
    pub driver_cpu_per_1k: Option<f64>,
    pub db_xacts_per_op: Option<f64>,
    pub db_rows_per_op: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub offered_rate: Option<f64>,
    pub first_error: Option<String>,
}

impl Summary {
    /// Operations per CPU-second of the server process (the per-core figure).
    pub fn per_cpu_second(&self) -> Option<f64> {
        self.cpu_per_1k.filter(|c| *c > 0.0).map(|c| 1000.0 / c)
    }

    /// The same, counting the PostgreSQL backends' CPU as the server's.
    pub fn per_cpu_second_with_db(&self) -> Option<f64> {
        let total = self.cpu_per_1k? + self.db_cpu_per_1k.unwrap_or(0.0);
        (total > 0.0).then(|| 1000.0 / total)
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

fn per_1k(seconds: f64, ops: u64) -> Option<f64> {
    (ops > 0).then(|| seconds * 1000.0 / ops as f64)
}

/// Groups measurements by (scenario, system), in first-seen order, and takes medians.
pub fn summarize(measurements: &[Measurement]) -> Vec<Summary> {
    let mut keys: Vec<(Scenario, String)> = Vec::new();
    for m in measurements {
        if !keys.iter().any(|(s, n)| *s == m.scenario && *n == m.system) {
            keys.push((m.scenario, m.system.clone()));
        }
    }
    keys.sort_by_key(|(s, _)| Scenario::ALL.iter().position(|x| x == s));
    keys.into_iter()
        .filter_map(|(scenario, system)| {
            let runs: Vec<&Measurement> = measurements.iter().filter(|m| m.scenario == scenario && m.system == system).collect();
            let first = runs.first()?;
            let ops = |m: &&Measurement| m.stats.ok + m.stats.errors();
            Some(Summary {
                scenario,
                system: system.clone(),
                kind: first.kind,
                ops_per_sec: median(runs.iter().map(|m| m.stats.throughput()).collect()).unwrap_or(0.0),
                p50: median(runs.iter().filter_map(|m| m.stats.latency.quantile_ms(0.50)).collect()),
                p90: median(runs.iter().filter_map(|m| m.stats.latency.quantile_ms(0.90)).collect()),
                p99: median(runs.iter().filter_map(|m| m.stats.latency.quantile_ms(0.99)).collect()),
                ok: runs.iter().map(|m| m.stats.ok).sum(),
                errors: runs.iter().map(|m| m.stats.errors()).sum(),
                dropped: runs.iter().map(|m| m.stats.dropped).sum(),
                cpu_per_1k: median(runs.iter().filter_map(|m| per_1k(m.cpu_seconds, ops(m))).collect()),
                db_cpu_per_1k: median(runs.iter().filter_map(|m| m.db_cpu_seconds.and_then(|s| per_1k(s, ops(m)))).collect()),
                driver_cpu_per_1k: median(runs.iter().filter_map(|m| per_1k(m.driver_cpu_seconds, ops(m))).collect()),
                db_xacts_per_op: median(runs.iter().filter_map(|m| m.db_per_op.map(|d| d.0)).collect()),
                db_rows_per_op: median(runs.iter().filter_map(|m| m.db_per_op.map(|d| d.1)).collect()),
                peak_rss_kib: runs.iter().filter_map(|m| m.peak_rss_kib).max(),
                offered_rate: median(runs.iter().filter_map(|m| m.offered_rate).collect()),
                first_error: runs.iter().find_map(|m| m.stats.first_error.clone()),
            })
        })
        .collect()
}

/// Everything about the run that is not a measurement.
pub struct RunInfo {
    pub command: String,
    pub quick: bool,
    pub tessera_bin: String,
    pub tessera_profile: String,
    pub tessera_version: String,
    pub peer: Option<String>,
    pub skipped: Vec<String>,
    pub cpu_model: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub clk_tck: u64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub connections: usize,
    pub rounds: usize,
    pub id_token_alg: String,
    pub hash: Option<HashTiming>,
    pub idle_rss: Vec<(String, Kind, Option<u64>)>,
    pub seeding: Vec<(String, u64, Seeding)>,
    pub spikes: Vec<(String, SpikeResult)>,
    /// (10k system, 1M system, customers in each).
    pub scale: Option<(String, String, u64, u64)>,
    pub peak_rss_reset: bool,
    pub total_secs: f64,
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn mib(kib: Option<u64>) -> String {
    opt(kib.map(|k| k as f64 / 1024.0), |m| format!("{m:.1}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn times(v: Option<f64>) -> String {
    opt(v, |r| format!("{r:.2}×"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn find<'a>(summaries: &'a [Summary], scenario: Scenario, system: &str) -> Option<&'a Summary> {
    summaries.iter().find(|s| s.scenario == scenario && s.system == system)
}

fn peer_of(summaries: &[Summary], scenario: Scenario) -> Option<&Summary> {
    summaries.iter().find(|s| s.scenario == scenario && s.kind == Kind::Peer)
}

/// The main systems (the scale system appears only in its own section).
fn main_systems(summaries: &[Summary], info: &RunInfo) -> Vec<(String, Kind)> {
    let scale_system = info.scale.as_ref().map(|(_, big, _, _)| big.clone());
    let mut systems: Vec<(String, Kind)> = Vec::new();
    for s in summaries {
        if Some(&s.system) != scale_system.as_ref() && !systems.iter().any(|(n, _)| *n == s.system) {
            systems.push((s.system.clone(), s.kind));
        }
    }
    systems
}

pub fn render(measurements: &[Measurement], info: &RunInfo) -> String {
    let summaries = summarize(measurements);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "## Tessera benchmark{}\n", if info.quick { " (quick mode: a smoke run, not figures)" } else { "" });
    let _ = writeln!(w, "- Command: `{}`", info.command);
    let _ = writeln!(
        w,
        "- Machine: {} cores ({}), {} memory, {}; CLK_TCK {}",
        info.cores, info.cpu_model, info.memory, info.kernel, info.clk_tck
    );
    let _ = writeln!(w, "- Tessera: `{}` — {} build, {}", info.tessera_bin, info.tessera_profile, info.tessera_version);
    if info.tessera_profile != "release" {
        let _ = writeln!(
            w,
            "  - **Not a release build: these figures are not representative.** Build with `cargo build --release -p tessera-server`."
        );
    }
    match &info.peer {
        Some(p) => {
            let _ = writeln!(w, "- Peer: {p}");
        }
        None => {
            let _ = writeln!(w, "- Peer: not run");
        }
    }
    let _ = writeln!(
        w,
        "- Load: closed loop, {} connections, {} s measured after {} s warm-up, {} round(s), systems alternating; tables show the median over rounds",
        info.connections, info.duration_secs, info.warmup_secs, info.rounds
    );
    let _ = writeln!(
        w,
        "- Signing: access tokens ES256, ID tokens {} (the bench client's `id_token_signed_response_alg`, the same on every system)",
        info.id_token_alg
    );
    for s in &info.skipped {
        let _ = writeln!(w, "- Skipped: {s}");
    }
    for (system, count, seeding) in &info.seeding {
        let _ = writeln!(
            w,
            "- Customers in {system}: {count} (seeded with {}: {:.1} s, {:.0} customers/s)",
            seeding.method, seeding.seconds, seeding.per_second
        );
    }
    let _ = writeln!(w, "- Whole run: {:.0} s", info.total_secs);

    let _ = writeln!(w, "\n### Results per scenario and system\n");
    let _ =
        writeln!(w, "| Scenario | System | ops/s | p50 ms | p90 ms | p99 ms | ok | errors | CPU s / 1k ops | ops / CPU-s | peak RSS MiB |");
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &summaries {
        let errors = if s.dropped > 0 { format!("{} (+{} dropped)", s.errors, s.dropped) } else { s.errors.to_string() };
        let name = match s.offered_rate {
            Some(r) => format!("{} (offered {r:.0}/s)", s.scenario.name()),
            None => s.scenario.name().to_owned(),
        };
        let _ = writeln!(
            w,
            "| {name} | {} | {} | {} | {} | {} | {} | {errors} | {} | {} | {} |",
            s.system,
            num(s.ops_per_sec),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            s.ok,
            opt(s.cpu_per_1k, |c| format!("{c:.3}")),
            opt(s.per_cpu_second(), num),
            mib(s.peak_rss_kib),
        );
    }
    let _ = writeln!(
        w,
        "\nOperations: {}.",
        Scenario::ALL.iter().map(|s| format!("`{}` = {}", s.name(), s.describe())).collect::<Vec<_>>().join("; ")
    );
    let _ = writeln!(
        w,
        "CPU is the server process's utime + stime (/proc/<pid>/stat) over the measured window; ops / CPU-s = 1000 ÷ CPU s per 1k ops, the per-core figure. Peak RSS is VmHWM{}.",
        if info.peak_rss_reset { ", reset before each run (clear_refs)" } else { " since start (could not be reset)" }
    );
    let errors: Vec<String> = summaries
        .iter()
        .filter(|s| s.errors > 0)
        .map(|s| format!("- {} / {}: {}", s.scenario.name(), s.system, s.first_error.clone().unwrap_or_default()))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(w, "\nFirst error of each run with errors:\n{}", errors.join("\n"));
    }

    let _ = writeln!(w, "\n### Idle memory\n");
    let _ = writeln!(w, "| System | RSS right after start |");
    let _ = writeln!(w, "|---|---:|");
    for (system, _, kib) in &info.idle_rss {
        let _ = writeln!(w, "| {system} | {} MiB ({} MB) |", mib(*kib), opt(kib.map(|k| k as f64 * 1024.0 / 1e6), |m| format!("{m:.1}")));
    }

    // Ratios.
    let systems = main_systems(&summaries, info);
    let tessera: Vec<&(String, Kind)> = systems.iter().filter(|(_, k)| k.is_tessera()).collect();
    let has_peer = systems.iter().any(|(_, k)| *k == Kind::Peer);
    if has_peer && !tessera.is_empty() {
        let _ = writeln!(w, "\n### Tessera ÷ peer\n");
        let mut header = "| Scenario |".to_owned();
        let mut rule = "|---|".to_owned();
        for (name, _) in &tessera {
            header.push_str(&format!(" {name}: throughput | {name}: per CPU-s | {name}: p50 latency |"));
            rule.push_str("---:|---:|---:|");
        }
        let _ = writeln!(w, "{header}\n{rule}");
        for scenario in Scenario::ALL {
            let Some(peer) = peer_of(&summaries, scenario) else { continue };
            let mut row = format!("| {} |", scenario.name());
            for (name, _) in &tessera {
                let t = find(&summaries, scenario, name);
                let thr = ratio(t.map(|t| t.ops_per_sec), Some(peer.ops_per_sec));
                let cpu = ratio(t.and_then(Summary::per_cpu_second), peer.per_cpu_second());
                let lat = ratio(t.and_then(|t| t.p50), peer.p50);
                row.push_str(&format!(" {} | {} | {} |", times(thr), times(cpu), times(lat)));
            }
            let _ = writeln!(w, "{row}");
        }
        let _ = writeln!(w, "\nAbove 1× is better for Tessera in throughput and per CPU-s; below 1× is better for latency.");
    }

    // Sign-in against the hashing ceiling.
    let mut sign_in_rows = Vec::new();
    if let Some(hash) = &info.hash {
        let hash_s = hash.median().as_secs_f64();
        let ceiling = info.cores as f64 / hash_s;
        let _ = writeln!(w, "\n### Password sign-in and the Argon2id ceiling\n");
        let _ = writeln!(
            w,
            "Argon2id at m = 19456 KiB, t = 2, p = 1 takes **{:.1} ms** here (median of {} hashes in {} sittings — before the load and before each round — fastest {:.1} ms), so {} cores can do at most **{:.1} sign-ins/s** ({:.1} per core).\n",
            hash_s * 1000.0,
            hash.samples(),
            hash.sittings(),
            hash.min().as_secs_f64() * 1000.0,
            info.cores,
            ceiling,
            1.0 / hash_s
        );
        let loaded_s = hash.all_cores_median().as_secs_f64();
        let loaded_ceiling = info.cores as f64 / loaded_s;
        let _ = writeln!(
            w,
            "With all {} cores hashing at once, as under a sign-in load, a hash takes **{:.1} ms** (median): a ceiling of **{:.1} sign-ins/s** with every core hashing. The two yardsticks differ by the machine's noise, or by shared caches and memory bandwidth where the cores compete.\n",
            info.cores,
            loaded_s * 1000.0,
            loaded_ceiling
        );
        let _ = writeln!(
            w,
            "| System | sign-ins/s | per core | fraction of the ceiling | fraction of the all-cores ceiling | sign-ins per server CPU-s | fraction of 1 ÷ hash time |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
        for s in summaries.iter().filter(|s| s.scenario == Scenario::SignIn) {
            let fraction = s.ops_per_sec / ceiling;
            let cpu_fraction = s.per_cpu_second().map(|p| p * hash_s);
            sign_in_rows.push((s.system.clone(), s.ops_per_sec / loaded_ceiling, fraction, cpu_fraction));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {:.2} | {} | {} |",
                s.system,
                num(s.ops_per_sec),
                num(s.ops_per_sec / info.cores as f64),
                fraction,
                s.ops_per_sec / loaded_ceiling,
                opt(s.per_cpu_second(), num),
                opt(cpu_fraction, |f| format!("{f:.2}"))
            );
        }
        let _ = writeln!(
            w,
            "\nThe load generator runs on the same cores (see \"Where the CPU went\"), so the wall-clock fraction understates what the server alone could do; the CPU-s fraction is the server's own efficiency."
        );
        let _ = writeln!(
            w,
            "\nThe verdict below takes the **all-cores ceiling**: it is the most hashes per second this machine does, measured, whereas cores ÷ the single-thread time assumes cores that do not slow each other down. Argon2id fills 19 MiB per hash; where one hash fits the shared cache and two do not, a lone hash is faster than any hash of a sign-in load."
        );
    }

    // Spike.
    let mut spike_verdicts = Vec::new();
    if !info.spikes.is_empty() {
        let _ = writeln!(w, "\n### Sign-up spike\n");
        let _ = writeln!(
            w,
            "| System | offered | rate | accepted | 503 + Retry-After | 503 without | other 5xx | 4xx | transport | accepted p50 / p99 ms | rejected p99 ms | stored once / missing / dup / rejected-but-stored | RSS before → peak MiB | CPU s |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|");
        for (system, r) in &info.spikes {
            let v = &r.verification;
            let _ = writeln!(
                w,
                "| {system} | {} in {:.1} s | {:.0}/s | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} / {} / {}{} | {} → {} | {:.1} |",
                r.offered,
                r.window.as_secs_f64(),
                r.rate,
                r.accepted,
                r.busy_with_retry_after,
                r.busy_without_retry_after,
                r.other_5xx,
                r.client_errors,
                r.transport,
                ms(r.accepted_latency.quantile_ms(0.5)),
                ms(r.accepted_latency.quantile_ms(0.99)),
                ms(r.rejected_latency.quantile_ms(0.99)),
                v.stored_once,
                v.missing,
                v.duplicated,
                v.rejected_but_stored,
                if v.checked { "" } else { " (incomplete)" },
                mib(r.rss_before_kib),
                mib(r.peak_rss_kib),
                r.cpu_seconds
            );
            spike_verdicts.push((system.clone(), r));
        }
        for (system, r) in &info.spikes {
            if let Some(e) = &r.first_error {
                let _ = writeln!(w, "\n{system}: first non-accepted answer: {e}");
            }
            let _ = writeln!(
                w,
                "\n{system}: {} forms could not be opened beforehand, {} starts dropped; the spike took {:.1} s to drain. {}",
                r.prepare_failed,
                r.dropped,
                r.elapsed.as_secs_f64(),
                r.verification.note
            );
        }
    }

    // Scale.
    let mut scale_verdicts = Vec::new();
    if let Some((small, big, n_small, n_big)) = &info.scale {
        let _ = writeln!(w, "\n### Scale: {n_small} vs {n_big} customers (PostgreSQL)\n");
        let _ = writeln!(
            w,
            "| Scenario | p50 ms ({n_small}) | p50 ms ({n_big}) | ratio | p99 ms ({n_small}) | p99 ms ({n_big}) | ratio | ops/s ratio |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for scenario in Scenario::ALL {
            let (Some(a), Some(b)) = (find(&summaries, scenario, small), find(&summaries, scenario, big)) else { continue };
            let p50 = ratio(b.p50, a.p50);
            let p99 = ratio(b.p99, a.p99);
            scale_verdicts.push((scenario, p50, p99));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                scenario.name(),
                ms(a.p50),
                ms(b.p50),
                times(p50),
                ms(a.p99),
                ms(b.p99),
                times(p99),
                times(ratio(Some(b.ops_per_sec), Some(a.ops_per_sec)))
            );
        }
    }

    // CPU accounting.
    let _ = writeln!(w, "\n### Where the CPU went (CPU s per 1k ops, medians)\n");
    let _ =
        writeln!(w, "| Scenario | System | server | PostgreSQL backends | load generator | ≈ DB transactions / op | ≈ rows written / op |");
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|");
    for s in &summaries {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.scenario.name(),
            s.system,
            opt(s.cpu_per_1k, |c| format!("{c:.3}")),
            opt(s.db_cpu_per_1k, |c| format!("{c:.3}")),
            opt(s.driver_cpu_per_1k, |c| format!("{c:.3}")),
            opt(s.db_xacts_per_op, |c| format!("{c:.1}")),
            opt(s.db_rows_per_op, |c| format!("{c:.1}"))
        );
    }
    let _ = writeln!(
        w,
        "\nDB transactions and rows come from pg_stat_database (PostgreSQL systems only; a statement outside a transaction is one transaction), flushed about once a second, hence approximate."
    );

    // Targets.
    let _ = writeln!(w, "\n### Targets of issue 3\n");
    if info.quick || info.tessera_profile != "release" {
        let _ = writeln!(
            w,
            "_A quick run or a non-release build: the verdicts below only show that the harness works, they are not measurements._\n"
        );
    }
    let _ = writeln!(w, "| Target | System | Measured | Verdict |");
    let _ = writeln!(w, "|---|---|---|---|");
    let cc_peer = peer_of(&summaries, Scenario::ClientCredentials);
    let rt_peer = peer_of(&summaries, Scenario::Refresh);
    for (name, _) in &tessera {
        let cc = find(&summaries, Scenario::ClientCredentials, name);
        let per_cpu = ratio(cc.and_then(Summary::per_cpu_second), cc_peer.and_then(Summary::per_cpu_second));
        let per_cpu_db = ratio(cc.and_then(Summary::per_cpu_second_with_db), cc_peer.and_then(Summary::per_cpu_second));
        let thr = ratio(cc.map(|s| s.ops_per_sec), cc_peer.map(|s| s.ops_per_sec));
        let _ = writeln!(
            w,
            "| client_credentials per core ≥ 5× peer (reach 10×) | {name} | {} per server CPU-s{} (throughput {}) | {} |",
            times(per_cpu),
            if cc.and_then(|c| c.db_cpu_per_1k).is_some() { format!(", {} counting PostgreSQL", times(per_cpu_db)) } else { String::new() },
            times(thr),
            verdict(per_cpu.map(|r| r >= 5.0))
        );
    }
    for (name, _) in &tessera {
        let rt = find(&summaries, Scenario::Refresh, name);
        let thr = ratio(rt.map(|s| s.ops_per_sec), rt_peer.map(|s| s.ops_per_sec));
        let per_cpu = ratio(rt.and_then(Summary::per_cpu_second), rt_peer.and_then(Summary::per_cpu_second));
        let _ = writeln!(
            w,
            "| refresh with rotation, persisted, ≥ 2× peer's in-memory refresh | {name} | {} throughput ({} per server CPU-s) | {} |",
            times(thr),
            times(per_cpu),
            verdict(thr.map(|r| r >= 2.0))
        );
    }
    for (system, all_cores_fraction, single_fraction, cpu_fraction) in &sign_in_rows {
        let _ = writeln!(
            w,
            "| password sign-in per core ≥ 0.85 of the Argon2id ceiling | {system} | {all_cores_fraction:.2} of the all-cores ceiling ({single_fraction:.2} of cores ÷ single-thread hash time, {} per server CPU-s) | {} |",
            opt(*cpu_fraction, |f| format!("{f:.2}")),
            verdict(Some(*all_cores_fraction >= 0.85))
        );
    }
    for (name, _) in &tessera {
        let half = find(&summaries, Scenario::ClientCredentialsHalfPeak, name);
        let _ = writeln!(
            w,
            "| token endpoint p99 at ½ of peak throughput ≤ 5 ms | {name} | p99 {} ms at {} req/s offered | {} |",
            ms(half.and_then(|h| h.p99)),
            opt(half.and_then(|h| h.offered_rate), |r| format!("{r:.0}")),
            verdict(half.and_then(|h| h.p99).map(|p| p <= 5.0))
        );
    }
    if scale_verdicts.is_empty() {
        let _ = writeln!(w, "| sign-in and token latency at 1M customers within 1.2× of 10k | Tessera (PostgreSQL) | – | not measured |");
    }
    for (scenario, p50, p99) in &scale_verdicts {
        let _ = writeln!(
            w,
            "| latency at the large population within 1.2× of the small one | {} | p50 {} (p99 {}) | {} |",
            scenario.name(),
            times(*p50),
            times(*p99),
            verdict(p50.map(|r| r <= 1.2))
        );
    }
    if let Some(hash) = &info.hash {
        let hash_s = hash.median().as_secs_f64();
        let workers = info.cores as f64;
        // Queue bound: at most 16 waiters per worker plus the running ones.
        let queue_bound_ms = (16.0 * workers + workers) * hash_s / workers * 1000.0;
        let pool_mib = workers * f64::from(crate::hashing::MEMORY_KIB) / 1024.0;
        for (system, r) in &spike_verdicts {
            let no_5xx = r.other_5xx == 0 && r.busy_without_retry_after == 0;
            let p99 = r.accepted_latency.quantile_ms(0.99);
            let bounded = p99.map(|p| p <= 2.0 * queue_bound_ms + 1000.0);
            let growth_mib = match (r.rss_before_kib, r.peak_rss_kib) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1024.0),
                _ => None,
            };
            let mem_ok = growth_mib.map(|g| g <= pool_mib + 64.0);
            let all = [Some(no_5xx), Some(r.verification.passed()), bounded, mem_ok];
            let met = if all.contains(&Some(false)) {
                Some(false)
            } else if all.iter().all(Option::is_some) {
                Some(true)
            } else {
                None
            };
            let _ = writeln!(
                w,
                "| sign-up spike at {:.0}× hashing capacity: no 5xx but 503 + Retry-After, each accepted stored once, p99 bounded, memory bounded | {system} | {} other 5xx, {} 503 without Retry-After; stored exactly once: {}; accepted p99 {} ms (queue bound {:.0} ms); RSS growth {} MiB (pool {:.0} MiB) | {} |",
                r.rate * hash_s / workers,
                r.other_5xx,
                r.busy_without_retry_after,
                if r.verification.passed() { "yes" } else { "no" },
                ms(p99),
                queue_bound_ms,
                opt(growth_mib, |g| format!("{g:.1}")),
                pool_mib,
                verdict(met)
            );
        }
    }
    for (system, kind, kib) in &info.idle_rss {
        if kind.is_tessera() {
            let mb = kib.map(|k| k as f64 * 1024.0 / 1e6);
            let _ =
                writeln!(w, "| idle RSS ≤ 30 MB | {system} | {} MB | {} |", opt(mb, |m| format!("{m:.1}")), verdict(mb.map(|m| m <= 30.0)));
        }
    }
    for (system, _, seeding) in &info.seeding {
        if system.contains("PostgreSQL") && seeding.method.contains("import") && seeding.added >= 1000 {
            let _ = writeln!(
                w,
                "| bulk seeding ≥ 20,000 customers/s into PostgreSQL | {system} | {:.0} customers/s ({} customers) | {} |",
                seeding.per_second,
                seeding.added,
                verdict(Some(seeding.per_second >= 20_000.0))
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn measurement(scenario: Scenario, system: &str, kind: Kind, ok: u64, secs: f64, cpu: f64) -> Measurement {
        let mut stats = LoadStats::default();
        for _ in 0..ok {
            stats.record(&Ok(()), Duration::from_millis(2));
        }
        stats.elapsed = Duration::from_secs_f64(secs);
        Measurement {
            scenario,
            system: system.into(),
            kind,
            stats,
            cpu_seconds: cpu,
            db_cpu_seconds: None,
            db_per_op: None,
            driver_cpu_seconds: 0.1,
            peak_rss_kib: Some(20_000),
            offered_rate: None,
        }
    }

    #[test]
    fn medians_ratios_and_targets() {
        let ms = vec![
            measurement(Scenario::ClientCredentials, "T", Kind::TesseraSqlite, 1000, 1.0, 0.1),
            measurement(Scenario::ClientCredentials, "T", Kind::TesseraSqlite, 3000, 1.0, 0.3),
            measurement(Scenario::ClientCredentials, "T", Kind::TesseraSqlite, 2000, 1.0, 0.2),
            measurement(Scenario::ClientCredentials, "P", Kind::Peer, 500, 1.0, 0.5),
        ];
        let s = summarize(&ms);
        assert_eq!(s.len(), 2);
        assert!((s[0].ops_per_sec - 2000.0).abs() < 1e-6);
        assert!((s[0].per_cpu_second().expect("cpu") - 10_000.0).abs() < 1e-6);
        let info = RunInfo {
            command: "tessera-bench --quick".into(),
            quick: true,
            tessera_bin: "target/debug/tessera".into(),
            tessera_profile: "debug".into(),
            tessera_version: "tessera 0.1.0".into(),
            peer: Some("oidc-provider".into()),
            skipped: vec![],
            cpu_model: "cpu".into(),
            cores: 2,
            memory: "1 GiB".into(),
            kernel: "Linux".into(),
            clk_tck: 100,
            duration_secs: 1.0,
            warmup_secs: 0.2,
            connections: 4,
            rounds: 3,
            id_token_alg: "ES256".into(),
            hash: None,
            idle_rss: vec![("T".into(), Kind::TesseraSqlite, Some(20_000))],
            seeding: vec![],
            spikes: vec![],
            scale: None,
            peak_rss_reset: true,
            total_secs: 3.0,
        };
        let text = render(&ms, &info);
        assert!(text.contains("| Scenario | System | ops/s |"), "{text}");
        assert!(text.contains("ID tokens ES256"), "{text}");
        assert!(text.contains("10.00×"), "per-CPU ratio 10000 / 1000: {text}");
        assert!(text.contains("Not a release build"));
        assert!(text.contains("| idle RSS ≤ 30 MB | T | 20.5 MB | **met** |"), "{text}");
    }
}
