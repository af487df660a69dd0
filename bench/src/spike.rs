//! The sign-up spike (Tessera only): many registrations at once, far beyond what the
//! hashing pool can absorb. Each registration is a browser of its own whose sign-up form was
//! opened beforehand (flow + CSRF cookie); the form POSTs are then fired open loop at
//! `factor ×` the machine's hashing ceiling for a short window.
//!
//! Counted: accepted (2xx/3xx), `503` with and without `Retry-After`, any other 5xx (must be
//! none), 4xx, transport errors; latency of the accepted ones; the server's CPU and peak RSS.
//! Afterwards every accepted e-mail must be stored exactly once and no rejected one at all,
//! checked with `tessera user list` against the same database.

use crate::histogram::Histogram;
use crate::http::{self, Http, Jar, Req};
use crate::load::{self, Limits, LoadStats, Op, OpError, OpFuture};
use crate::procstat;
use crate::scenarios::Target;
use crate::systems::System;
use anyhow::{Context, bail};
use hyper::header;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `tessera user list` shows at most this many customers, newest first.
const LIST_LIMIT: u64 = 1000;

pub struct SpikePlan {
    pub rate: f64,
    pub window: Duration,
    pub registrations: u64,
}

#[derive(Default)]
pub struct SpikeResult {
    pub offered: u64,
    pub rate: f64,
    pub window: Duration,
    pub prepare_failed: u64,
    pub accepted: u64,
    pub busy_with_retry_after: u64,
    pub busy_without_retry_after: u64,
    pub other_5xx: u64,
    pub client_errors: u64,
    pub transport: u64,
    pub dropped: u64,
    pub elapsed: Duration,
    pub accepted_latency: Histogram,
    pub rejected_latency: Histogram,
    pub first_error: Option<String>,
    pub cpu_seconds: f64,
    pub rss_before_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    pub verification: Verification,
}

#[derive(Default)]
pub struct Verification {
    /// Whether the store could be checked completely.
    pub checked: bool,
    pub stored_once: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub rejected_but_stored: u64,
    pub note: String,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.checked && self.missing == 0 && self.duplicated == 0 && self.rejected_but_stored == 0
    }
}

/// A sign-up form opened in a browser of its own.
struct OpenForm {
    url: String,
    cookies: String,
    csrf: String,
}

#[derive(Default)]
struct Outcomes {
    accepted: Vec<u64>,
    rejected: Vec<u64>,
    with_retry_after: u64,
    without_retry_after: u64,
    rejected_latency: Histogram,
}

pub async fn run(system: &System, plan: &SpikePlan, clk_tck: u64) -> anyhow::Result<SpikeResult> {
    let registration = system.endpoints.registration.clone().context("the spike needs Tessera's sign-up page")?;
    let cli = system.cli.clone().context("the spike needs the Tessera CLI")?;
    let tag = format!("{:x}", http::random_u64() % 0xffff_ffff);
    let count = plan.registrations.max(1);

    // 1. Open every form first (not measured).
    let prep_http = Http::new(16);
    let prep_target = Target::new(system, prep_http.clone());
    let forms: Arc<Mutex<Vec<Option<OpenForm>>>> = Arc::new(Mutex::new((0..count).map(|_| None).collect()));
    let open: Op = {
        let forms = forms.clone();
        Arc::new(move |_vu, n| {
            let t = prep_target.clone();
            let url = registration.clone();
            let forms = forms.clone();
            Box::pin(async move {
                let form = open_form(&t, &url).await?;
                let mut slots = forms.lock().map_err(|_| OpError::other("lock poisoned"))?;
                if let Some(slot) = slots.get_mut(n as usize) {
                    *slot = Some(form);
                }
                Ok(())
            }) as OpFuture
        })
    };
    let prepared = load::closed_loop(16, Limits { duration: Duration::from_secs(300), max_ops: count }, open).await;
    if prepared.ok == 0 {
        bail!("no sign-up form could be opened: {}", prepared.first_error.unwrap_or_default());
    }
    let forms: Arc<Vec<Option<OpenForm>>> = Arc::new(std::mem::take(&mut *forms.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?));

    // 2. Fire every POST open loop, each on a connection of its own as separate browsers would.
    let http = Http::new(0);
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let submit: Op = {
        let forms = forms.clone();
        let outcomes = outcomes.clone();
        let tag = tag.clone();
        Arc::new(move |_vu, n| {
            let http = http.clone();
            let forms = forms.clone();
            let outcomes = outcomes.clone();
            let tag = tag.clone();
            Box::pin(async move {
                let Some(Some(form)) = forms.get(n as usize) else {
                    return Err(OpError::other("this registration's form could not be opened"));
                };
                let email = spike_email(&tag, n);
                let password = format!("Spike-{}-{}", http::random_token(12), n);
                let started = std::time::Instant::now();
                let req = Req::post_form(
                    &form.url,
                    &[
                        ("email", &email),
                        ("given_name", "Spike"),
                        ("family_name", "Visitor"),
                        ("password", &password),
                        ("csrf_token", &form.csrf),
                    ],
                )
                .header(header::COOKIE, form.cookies.clone());
                let reply = http.send(req).await?;
                let mut o = outcomes.lock().map_err(|_| OpError::other("lock poisoned"))?;
                match reply.status {
                    200..=399 => {
                        o.accepted.push(n);
                        Ok(())
                    }
                    503 => {
                        o.rejected.push(n);
                        o.rejected_latency.record(started.elapsed());
                        if reply.headers.contains_key(header::RETRY_AFTER) {
                            o.with_retry_after += 1;
                        } else {
                            o.without_retry_after += 1;
                        }
                        Err(OpError::status(503, "busy"))
                    }
                    s => Err(OpError::status(s, String::from_utf8_lossy(reply.snippet()).into_owned())),
                }
            }) as OpFuture
        })
    };
    let cpu_before = procstat::cpu_ticks(system.pid)?;
    let rss_before_kib = procstat::status_kib(system.pid, "VmRSS").ok();
    let peak_resettable = procstat::reset_peak_rss(system.pid);
    let limits = Limits { duration: plan.window, max_ops: count };
    let stats: LoadStats = load::open_loop(plan.rate, count as usize, None, 1, limits, false, submit).await;
    let cpu_after = procstat::cpu_ticks(system.pid)?;
    let peak_rss_kib = if peak_resettable { procstat::status_kib(system.pid, "VmHWM").ok() } else { None };

    let o = std::mem::take(&mut *outcomes.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?);
    let mut result = SpikeResult {
        offered: stats.ok + stats.errors() + stats.dropped,
        rate: plan.rate,
        window: plan.window,
        prepare_failed: count - prepared.ok,
        accepted: stats.ok,
        busy_with_retry_after: o.with_retry_after,
        busy_without_retry_after: o.without_retry_after,
        other_5xx: stats.s5xx.saturating_sub(o.with_retry_after + o.without_retry_after),
        client_errors: stats.s4xx,
        transport: stats.transport,
        dropped: stats.dropped,
        elapsed: stats.elapsed,
        accepted_latency: stats.latency.clone(),
        rejected_latency: o.rejected_latency.clone(),
        first_error: stats.first_error.clone(),
        cpu_seconds: (cpu_after - cpu_before) as f64 / clk_tck as f64,
        rss_before_kib,
        peak_rss_kib,
        verification: Verification::default(),
    };

    // 3. Every accepted sign-up stored exactly once, no rejected one stored.
    result.verification = verify(&cli, &tag, &o.accepted, &o.rejected).await?;
    Ok(result)
}

fn spike_email(tag: &str, n: u64) -> String {
    format!("spike-{tag}-{n}@bench.example.org")
}

async fn open_form(t: &Target, registration: &str) -> Result<OpenForm, OpError> {
    let mut jar = Jar::default();
    let mut url = registration.to_owned();
    for _ in 0..4 {
        let reply = t.http.send(Req::get(&url).cookies(&jar)).await?;
        jar.absorb(&reply.headers);
        match reply.status {
            200 => {
                let csrf =
                    http::hidden_field(&reply.body, "csrf_token").ok_or_else(|| OpError::status(200, "no csrf_token on the page"))?;
                let cookies = jar.header().ok_or_else(|| OpError::status(200, "no CSRF cookie was set"))?;
                return Ok(OpenForm { url, cookies, csrf });
            }
            300..=399 => {
                let location = reply.header(&header::LOCATION).ok_or_else(|| OpError::status(reply.status, "redirect without Location"))?;
                url = http::resolve(&url, location)?;
            }
            s => return Err(OpError::status(s, String::from_utf8_lossy(reply.snippet()).into_owned())),
        }
    }
    Err(OpError::other("too many redirects opening the sign-up form"))
}

async fn verify(cli: &crate::systems::TesseraCli, tag: &str, accepted: &[u64], rejected: &[u64]) -> anyhow::Result<Verification> {
    let limit = LIST_LIMIT.to_string();
    let out = cli.run(&["user", "list", "--tenant", "default", "--json", "--limit", &limit], &[]).await?;
    let users: serde_json::Value = serde_json::from_str(out.trim()).context("user list printed no JSON")?;
    let listed = users.as_array().context("user list did not print an array")?;
    let mut stored: HashMap<String, u64> = HashMap::new();
    for u in listed {
        if let Some(email) = u.get("email").and_then(|e| e.as_str()) {
            *stored.entry(email.to_ascii_lowercase()).or_default() += 1;
        }
    }
    let prefix = format!("spike-{tag}-");
    let ours = stored.iter().filter(|(e, _)| e.starts_with(&prefix)).map(|(_, c)| c).sum::<u64>();
    let mut v = Verification::default();
    for &n in accepted {
        match stored.get(&spike_email(tag, n)).copied().unwrap_or(0) {
            0 => v.missing += 1,
            1 => v.stored_once += 1,
            _ => v.duplicated += 1,
        }
    }
    v.rejected_but_stored = rejected.iter().filter(|&&n| stored.contains_key(&spike_email(tag, n))).count() as u64;
    // The listing is complete only if it did not hit its limit with our customers in it.
    v.checked = (listed.len() as u64) < LIST_LIMIT || ours < (listed.len() as u64);
    v.note = format!(
        "{} customers listed, {ours} from this spike; {} accepted, {} stored once, {} missing, {} duplicated, {} rejected but stored",
        listed.len(),
        accepted.len(),
        v.stored_once,
        v.missing,
        v.duplicated,
        v.rejected_but_stored
    );
    if !v.checked {
        v.note.push_str(" (the listing hit its limit: raise --spike-max or lower --spike-factor to check completely)");
    }
    Ok(v)
}
