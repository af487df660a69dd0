//! Seeding customers into a Tessera database, through the admin CLI against the same
//! database as the running server:
//!
//! - `tessera user import --tenant default --file F` from JSON lines
//!   `{"email", "password_hash", "given_name", "family_name"}` when the build has it (every
//!   line carries the same precomputed Argon2id hash, so a million lines cost one hash);
//! - otherwise `tessera user create`, one process and one hash per customer, which is only
//!   practical for small counts.

use crate::systems::TesseraCli;
use anyhow::{Context, bail};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The most customers seeded one `user create` at a time.
pub const MAX_WITHOUT_IMPORT: u64 = 500;

/// The seeded customers: `customer-<i>@bench.example.org` for `i` in `0..count`, all with
/// one password.
#[derive(Debug, Clone)]
pub struct Customers {
    pub count: u64,
    pub password: String,
}

impl Customers {
    pub fn email(i: u64) -> String {
        format!("customer-{i}@bench.example.org")
    }

    /// The customer for operation `n`: `n × P mod count` with a large prime `P`, a
    /// permutation of the population (every customer once per `count` operations) that does
    /// not walk neighbouring rows.
    pub fn pick(&self, n: u64) -> String {
        const P: u128 = 2_654_435_761;
        let count = u128::from(self.count.max(1));
        let step = if count % P == 0 { 1 } else { P };
        Self::email((u128::from(n) * step % count) as u64)
    }
}

/// How a seeding went.
#[derive(Debug, Clone)]
pub struct Seeding {
    pub method: &'static str,
    pub added: u64,
    pub seconds: f64,
    /// As the import command reported it (its own insert rate), or added ÷ wall time.
    pub per_second: f64,
}

/// Adds customers `from..to`. `phc` is the precomputed hash of `customers.password`.
pub async fn seed(cli: &TesseraCli, customers: &Customers, from: u64, to: u64, phc: &str, dir: &Path) -> anyhow::Result<Seeding> {
    if to <= from {
        return Ok(Seeding { method: "none", added: 0, seconds: 0.0, per_second: 0.0 });
    }
    if cli.has_command(&["user", "import"]).await {
        import(cli, from, to, phc, dir).await
    } else if to - from <= MAX_WITHOUT_IMPORT {
        create_one_by_one(cli, customers, from, to).await
    } else {
        bail!(
            "seeding {} customers needs `tessera user import`, which this build lacks (at most {MAX_WITHOUT_IMPORT} are created one by one)",
            to - from
        )
    }
}

async fn import(cli: &TesseraCli, from: u64, to: u64, phc: &str, dir: &Path) -> anyhow::Result<Seeding> {
    let file = dir.join(format!("customers-{from}-{to}.jsonl"));
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?);
        for i in from..to {
            let line = serde_json::json!({
                "email": Customers::email(i),
                "password_hash": phc,
                "given_name": "Bench",
                "family_name": format!("Customer {i}"),
            });
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    let started = std::time::Instant::now();
    let path = file.display().to_string();
    let result = cli.run(&["user", "import", "--tenant", "default", "--file", &path, "--json"], &[]).await;
    let _ = std::fs::remove_file(&file);
    let out = result?;
    let wall = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_str(out.trim()).context("user import printed no JSON")?;
    let imported = report.get("imported").and_then(|v| v.as_u64()).context("user import reported no `imported`")?;
    if imported != to - from {
        bail!("user import added {imported} of {} customers: {report}", to - from);
    }
    let per_second = report.get("per_second").and_then(|v| v.as_f64()).unwrap_or(imported as f64 / wall);
    Ok(Seeding { method: "tessera user import", added: imported, seconds: wall, per_second })
}

async fn create_one_by_one(cli: &TesseraCli, customers: &Customers, from: u64, to: u64) -> anyhow::Result<Seeding> {
    let started = std::time::Instant::now();
    // Two at a time: each process spends one Argon2id hash.
    let slots = Arc::new(tokio::sync::Semaphore::new(2));
    let mut tasks = tokio::task::JoinSet::new();
    for i in from..to {
        let cli = cli.clone();
        let slots = slots.clone();
        let password = customers.password.clone();
        tasks.spawn(async move {
            let _permit = slots.acquire_owned().await?;
            let email = Customers::email(i);
            let family = format!("Customer {i}");
            cli.run(
                &["user", "create", "--tenant", "default", "--email", &email, "--given-name", "Bench", "--family-name", &family, "--json"],
                &[("TESSERA_USER_PASSWORD", &password)],
            )
            .await
            .map(|_| ())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("seeding task failed")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let added = to - from;
    Ok(Seeding { method: "tessera user create", added, seconds, per_second: added as f64 / seconds.max(1e-9) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_spread_over_the_population() {
        let c = Customers { count: 1000, password: String::new() };
        let picked: std::collections::HashSet<String> = (0..1000).map(|n| c.pick(n)).collect();
        assert_eq!(picked.len(), 1000, "a permutation picks everyone once");
        assert!(picked.iter().all(|e| e.starts_with("customer-") && e.ends_with("@bench.example.org")));
    }
}
