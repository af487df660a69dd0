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

/// What every handler shares. Cloned for every request (axum's `State`), so it is one `Arc`:
/// a clone is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

pub struct AppParts {
    pub oauth: OAuthEngine,
    pub selfservice: SelfService,
    pub pages: crate::pages::Pages,
    pub config: WebConfig,
    pub metrics: Option<PrometheusHandle>,
    tenants: TenantCache,
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

impl AppState {
    pub fn new(oauth: OAuthEngine, selfservice: SelfService, config: WebConfig, metrics: Option<PrometheusHandle>) -> Self {
        Self(Arc::new(AppParts {
            oauth,
            selfservice,
            pages: crate::pages::Pages::new(),
            config,
            metrics,
            tenants: RwLock::new(HashMap::new()),
        }))
    }
}

impl AppParts {
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
