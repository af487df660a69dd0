//! Bulk import of customers (migrations from another system, load-test seeding). Lines are
//! validated one by one — canonical email, an Argon2 PHC hash — and inserted in multi-row
//! batches, so a million customers take seconds, not hours of hashing.

use crate::Runtime;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use tessera_core::email::canonicalize_email;
use tessera_core::model::{Tenant, User};
use tessera_core::{EventKind, NewEvent};
use uuid::Uuid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    email: String,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    family_name: Option<String>,
    #[serde(default)]
    email_verified: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub imported: u64,
    pub skipped: u64,
    pub invalid: u64,
    /// The first few invalid lines (line number and reason), never their content.
    pub errors: Vec<String>,
    pub seconds: f64,
    pub per_second: f64,
}

fn parse_line(tenant: &Tenant, line: &str, now: time::OffsetDateTime) -> Result<User, String> {
    let parsed: ImportLine = serde_json::from_str(line).map_err(|e| format!("not a valid import record: {e}"))?;
    let canonical = canonicalize_email(&parsed.email).map_err(|e| e.to_string())?;
    if let Some(hash) = &parsed.password_hash
        && !(hash.starts_with("$argon2id$") || hash.starts_with("$argon2i$") || hash.starts_with("$argon2d$"))
    {
        return Err("password_hash must be an Argon2 PHC string".into());
    }
    Ok(User {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        email: parsed.email.trim().to_owned(),
        email_canonical: canonical.as_str().to_owned(),
        email_verified: parsed.email_verified,
        password_hash: parsed.password_hash,
        given_name: parsed.given_name.filter(|n| !n.trim().is_empty()),
        family_name: parsed.family_name.filter(|n| !n.trim().is_empty()),
        disabled: false,
        created_at: now,
        updated_at: now,
    })
}

pub async fn import_users(rt: &Runtime, tenant: &Tenant, path: &str, batch_size: usize) -> anyhow::Result<ImportReport> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("opening {path}"))?))
    };
    let started = std::time::Instant::now();
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(batch_size);
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(tenant, &line, rt.oauth.clock.now()) {
            Ok(user) => batch.push(user),
            Err(reason) => {
                report.invalid += 1;
                if report.errors.len() < 20 {
                    report.errors.push(format!("line {}: {reason}", number + 1));
                }
            }
        }
        if batch.len() >= batch_size {
            flush(rt, tenant, &mut batch, &mut report).await?;
        }
    }
    flush(rt, tenant, &mut batch, &mut report).await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.per_second = report.imported as f64 / report.seconds.max(1e-9);
    Ok(report)
}

async fn flush(rt: &Runtime, tenant: &Tenant, batch: &mut Vec<User>, report: &mut ImportReport) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let event = NewEvent::new(tenant.id, EventKind::UsersImported, rt.oauth.clock.now()).data(serde_json::json!({ "count": batch.len() }));
    let added = rt.store.import_users(tenant.id, batch, &event).await?;
    report.imported += added;
    report.skipped += batch.len() as u64 - added;
    batch.clear();
    Ok(())
}
