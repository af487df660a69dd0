//! Bootstrap data lives in code and is idempotent: creating a tenant that exists is a no-op,
//! and two nodes starting at once settle on one tenant through the unique slug.

use crate::Runtime;
use anyhow::bail;
use tessera_core::model::{Branding, KeyStatus, Tenant};
use tessera_core::{EventKind, NewEvent};
use tessera_store::StoreError;
use uuid::Uuid;

/// Creates the tenant with its signing keys unless it exists; returns it either way.
pub async fn ensure_tenant(rt: &Runtime, slug: &str, name: &str) -> anyhow::Result<(Tenant, bool)> {
    if !tessera_core::slug::is_valid_slug(slug) {
        bail!("a tenant slug is 1-63 lowercase letters, digits and inner hyphens");
    }
    if let Some(existing) = rt.store.find_tenant_by_slug(slug).await? {
        ensure_keys(rt, &existing).await?;
        return Ok((existing, false));
    }
    let now = rt.oauth.clock.now();
    let tenant =
        Tenant { id: Uuid::now_v7(), slug: slug.to_owned(), name: name.to_owned(), branding: Branding::default(), created_at: now };
    let event = NewEvent::new(tenant.id, EventKind::TenantCreated, now).data(serde_json::json!({ "slug": slug }));
    match rt.store.create_tenant(&tenant, &event).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            let existing = rt.store.find_tenant_by_slug(slug).await?.ok_or_else(|| anyhow::anyhow!("tenant vanished during creation"))?;
            ensure_keys(rt, &existing).await?;
            return Ok((existing, false));
        }
        Err(e) => return Err(e.into()),
    }
    tessera_oauth::keys::bootstrap_tenant_keys(rt.store.as_ref(), rt.oauth.keys.master(), tenant.id, now).await?;
    Ok((tenant, true))
}

/// Repairs a tenant whose key creation was interrupted: every algorithm gets an active and a
/// next key. Rare, so the cost of listing keys at start is fine.
async fn ensure_keys(rt: &Runtime, tenant: &Tenant) -> anyhow::Result<()> {
    let keys = rt.store.list_signing_keys(tenant.id).await?;
    let now = rt.oauth.clock.now();
    for alg in tessera_oauth::keys::SUPPORTED_ALGS {
        for status in [KeyStatus::Active, KeyStatus::Next] {
            if !keys.iter().any(|k| k.alg == alg && k.status == status) {
                let key = tessera_oauth::keys::new_signing_key(rt.oauth.keys.master(), tenant.id, alg, status, now)?;
                let event = NewEvent::new(tenant.id, EventKind::SigningKeyCreated, now)
                    .data(serde_json::json!({ "kid": key.kid, "alg": alg, "repair": true }));
                rt.store.create_signing_key(&key, &event).await?;
            }
        }
    }
    Ok(())
}
