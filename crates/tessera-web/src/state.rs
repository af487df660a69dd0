//! The state every handler receives. No globals: tests build as many apps as they like.

use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tessera_core::model::Tenant;
use tessera_oauth::OAuthEngine;
use tessera_selfservice::SelfService;
use tessera_store::StoreResult;

/// Tenant settings change rarely; every node re-reads them after this long.
const TENANT_CACHE_TTL: Duration = Duration::from_secs(15);

/// Tenants by slug with the time they were loaded.
type TenantCache = RwLock<HashMap<String, (Instant, Arc<Tenant>)>>;

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Public base URL (no trailing slash). Links and issuers derive from it, never from the
    /// request's Host header.
    pub public_url: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl WebConfig {
    /// Cookies get `Secure` and the `__Host-` prefix when served over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

#[derive(Clone)]
pub struct AppState {
    pub oauth: OAuthEngine,
    pub selfservice: SelfService,
    pub pages: Arc<crate::pages::Pages>,
    pub config: Arc<WebConfig>,
    pub metrics: Option<PrometheusHandle>,
    tenants: Arc<TenantCache>,
}

impl AppState {
    pub fn new(oauth: OAuthEngine, selfservice: SelfService, config: WebConfig, metrics: Option<PrometheusHandle>) -> Self {
        Self {
            oauth,
            selfservice,
            pages: Arc::new(crate::pages::Pages::new()),
            config: Arc::new(config),
            metrics,
            tenants: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// A tenant by slug, cached briefly per node.
    pub async fn tenant(&self, slug: &str) -> StoreResult<Option<Arc<Tenant>>> {
        if let Some((at, tenant)) = self.tenants.read().unwrap_or_else(|p| p.into_inner()).get(slug)
            && at.elapsed() < TENANT_CACHE_TTL
        {
            return Ok(Some(tenant.clone()));
        }
        if !tessera_core::slug::is_valid_slug(slug) {
            return Ok(None);
        }
        let Some(tenant) = self.oauth.store.find_tenant_by_slug(slug).await? else {
            return Ok(None);
        };
        let tenant = Arc::new(tenant);
        self.tenants.write().unwrap_or_else(|p| p.into_inner()).insert(slug.to_owned(), (Instant::now(), tenant.clone()));
        Ok(Some(tenant))
    }
}
