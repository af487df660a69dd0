//! The Prometheus recorder behind `/metrics`, and the upkeep that keeps it bounded.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::time::Duration;

/// How often recorded latency samples are folded into the histograms.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Request latency buckets, in seconds. Histograms rather than the exporter's default
/// summaries: buckets add up across the nodes behind a load balancer, quantiles do not.
pub const LATENCY_BUCKETS_SECS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A recorder with Tessera's buckets, not yet installed.
pub fn recorder() -> Result<PrometheusRecorder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".to_owned()), LATENCY_BUCKETS_SECS)
        .map(PrometheusBuilder::build_recorder)
}

/// Installs the recorder process-wide and starts its upkeep on the current runtime.
///
/// The exporter keeps every recorded sample until upkeep (or a scrape) folds it into its
/// histogram; a node nobody scrapes would otherwise hold every request's latency forever
/// (tens of MB an hour at a few thousand requests a second).
pub fn install() -> anyhow::Result<(PrometheusHandle, tokio::task::JoinHandle<()>)> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let upkeep = tokio::spawn(run_upkeep(handle.clone(), UPKEEP_PERIOD));
    Ok((handle, upkeep))
}

async fn run_upkeep(handle: PrometheusHandle, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_latency_is_a_histogram_that_adds_up_across_nodes() {
        let recorder = recorder().expect("recorder");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for ms in [0.3, 2.0, 7.0, 7.5] {
                metrics::histogram!("tessera_http_request_duration_seconds", "route" => "/x").record(ms / 1000.0);
            }
        });
        handle.run_upkeep();
        let text = handle.render();
        assert!(text.contains("# TYPE tessera_http_request_duration_seconds histogram"), "{text}");
        let bucket = |le: &str| {
            let prefix = format!("tessera_http_request_duration_seconds_bucket{{route=\"/x\",le=\"{le}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::to_owned)
        };
        assert_eq!(bucket("0.0005").as_deref(), Some("1"), "{text}");
        assert_eq!(bucket("0.005").as_deref(), Some("2"), "{text}");
        assert_eq!(bucket("0.01").as_deref(), Some("4"), "{text}");
        assert_eq!(bucket("+Inf").as_deref(), Some("4"), "{text}");
    }
}
