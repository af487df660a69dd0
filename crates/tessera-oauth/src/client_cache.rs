//! A short-lived per-node cache of clients: every token request needs its client, and clients
//! change rarely. Entries live [`CLIENT_CACHE_TTL`], so a change made on another node (or by
//! the CLI) is seen everywhere within that time; grants of a deleted client are revoked in the
//! database at once, so only `client_credentials` tokens outlive a deletion by up to the TTL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tessera_core::model::Client;
use tessera_store::{Store, StoreResult};
use uuid::Uuid;

pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(5);

type Entries = HashMap<(Uuid, String), (Instant, Arc<Client>)>;

#[derive(Default)]
pub struct ClientCache {
    entries: RwLock<Entries>,
}

impl ClientCache {
    /// The client, from the cache while fresh. Unknown ids are not cached, so a client created
    /// a moment ago is found at once.
    pub async fn get(&self, store: &dyn Store, tenant_id: Uuid, client_id: &str) -> StoreResult<Option<Arc<Client>>> {
        let key = (tenant_id, client_id.to_owned());
        if let Some((at, client)) = self.entries.read().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < CLIENT_CACHE_TTL
        {
            return Ok(Some(client.clone()));
        }
        let Some(client) = store.find_client(tenant_id, client_id).await? else {
            self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(&key);
            return Ok(None);
        };
        let client = Arc::new(client);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        // Keep the map from growing without bound: drop stale entries when it gets large.
        if entries.len() > 10_000 {
            entries.retain(|_, (at, _)| at.elapsed() < CLIENT_CACHE_TTL);
        }
        entries.insert(key, (Instant::now(), client.clone()));
        Ok(Some(client))
    }

    /// Forgets a client on this node (after this node changed or deleted it).
    pub fn invalidate(&self, tenant_id: Uuid, client_id: &str) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(&(tenant_id, client_id.to_owned()));
    }
}
