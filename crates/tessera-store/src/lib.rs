//! Storage: one trait per aggregate, combined in [`Store`], with a SQLite implementation (the
//! embedded default) and a PostgreSQL one. Engines depend on these traits only; the binary
//! picks the implementation (`Arc<dyn Store>`).
//!
//! Contract notes that every implementation honours:
//! - every query is scoped by `tenant_id`; nothing crosses tenants;
//! - methods that take an `event` write it in the same transaction as the change;
//! - "atomic" methods are single conditional statements or one transaction, so two nodes
//!   racing on the same row see exactly one winner (no advisory locks, no LISTEN/NOTIFY;
//!   PostgreSQL serialization failures are retried).

use async_trait::async_trait;
use tessera_core::NewEvent;
use tessera_core::model::*;
use time::OffsetDateTime;
use uuid::Uuid;

mod group_commit;
mod migrations;
mod pool;
pub mod postgres;
mod sql;
pub mod sqlite;

pub use migrations::{MIGRATION_NAMES_POSTGRES, MIGRATION_NAMES_SQLITE};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (duplicate email, slug, client id …).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    /// The database could not be reached or answered with an error. The cause is logged,
    /// never shown to a client.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of [`GrantStore::redeem_authorization_code`].
#[derive(Debug, Clone, PartialEq)]
pub enum CodeRedemption {
    /// This call was the one redemption; the code's grant now exists.
    Redeemed(AuthorizationCode),
    /// The code had been redeemed before; its grant (and so every token it produced) has
    /// just been revoked.
    Replayed(AuthorizationCode),
    /// No such code for this tenant.
    Unknown,
}

/// The outcome of [`GrantStore::rotate_refresh_token`].
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The old token is spent, the new one stored.
    Rotated,
    /// The old token had already been rotated: the whole family has just been revoked.
    Replayed { grant_id: Uuid },
    /// No such token, or its grant is revoked.
    Unknown,
}

/// What [`GrantStore::find_refresh_token`] finds: the token, its grant and the grant's
/// customer, read together because every refresh and every introspection needs all three.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenRecord {
    pub token: RefreshToken,
    pub grant: Grant,
    /// The grant's customer; `None` for a grant without one, or when the customer is gone.
    pub user: Option<User>,
}

#[async_trait]
pub trait TenantStore {
    /// Errors with `Conflict("tenant_slug")` when the slug is taken.
    async fn create_tenant(&self, tenant: &Tenant, event: &NewEvent) -> StoreResult<()>;
    async fn find_tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn update_tenant_branding(&self, tenant_id: Uuid, name: &str, branding: &Branding) -> StoreResult<()>;
}

#[async_trait]
pub trait UserStore {
    /// Errors with `Conflict("user_email")` when the canonical email is taken in the tenant,
    /// also when two sign-ups race (the database's unique index decides).
    async fn create_user(&self, user: &User, event: &NewEvent) -> StoreResult<()>;
    async fn find_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Option<User>>;
    async fn find_user_by_email(&self, tenant_id: Uuid, email_canonical: &str) -> StoreResult<Option<User>>;
    /// Newest first; `before` is the last id of the previous page (ids are UUIDv7).
    async fn list_users(&self, tenant_id: Uuid, limit: u32, before: Option<Uuid>) -> StoreResult<Vec<User>>;
    /// Bulk-inserts customers (an import) with multi-row inserts in one transaction, skipping
    /// those whose canonical email already exists in the tenant; returns how many were added.
    /// `event` summarises the batch.
    async fn import_users(&self, tenant_id: Uuid, users: &[User], event: &NewEvent) -> StoreResult<u64>;
    async fn update_user_password_hash(&self, tenant_id: Uuid, user_id: Uuid, hash: &str, now: OffsetDateTime) -> StoreResult<()>;
    /// Disabling also ends the customer's sessions and revokes their grants.
    async fn set_user_disabled(&self, tenant_id: Uuid, user_id: Uuid, disabled: bool, event: &NewEvent) -> StoreResult<()>;
}

#[async_trait]
pub trait ClientStore {
    /// Errors with `Conflict("client_id")` when the client id is taken in the tenant.
    async fn create_client(&self, client: &Client, event: &NewEvent) -> StoreResult<()>;
    async fn find_client(&self, tenant_id: Uuid, client_id: &str) -> StoreResult<Option<Client>>;
    async fn list_clients(&self, tenant_id: Uuid) -> StoreResult<Vec<Client>>;
    /// Deleting a client revokes its grants. Errors with `NotFound` when absent.
    async fn delete_client(&self, tenant_id: Uuid, client_id: &str, event: &NewEvent) -> StoreResult<()>;
}

#[async_trait]
pub trait SessionStore {
    async fn create_session(&self, session: &Session, event: &NewEvent) -> StoreResult<()>;
    /// Only sessions that have not ended.
    async fn find_session_by_token_hash(&self, tenant_id: Uuid, token_hash: &str) -> StoreResult<Option<Session>>;
    async fn touch_session(&self, tenant_id: Uuid, session_id: Uuid, now: OffsetDateTime) -> StoreResult<()>;
    /// Ends the session; idempotent.
    async fn end_session(&self, tenant_id: Uuid, session_id: Uuid, event: &NewEvent) -> StoreResult<()>;
}

#[async_trait]
pub trait FlowStore {
    async fn create_flow(&self, flow: &Flow) -> StoreResult<()>;
    async fn find_flow(&self, tenant_id: Uuid, flow_id: Uuid) -> StoreResult<Option<Flow>>;
    /// Removes the flow; returns false when it was already gone (so a double submit loses).
    async fn delete_flow(&self, tenant_id: Uuid, flow_id: Uuid) -> StoreResult<bool>;
}

#[async_trait]
pub trait AuthorizationRequestStore {
    async fn create_authorization_request(&self, request: &AuthorizationRequest) -> StoreResult<()>;
    async fn find_authorization_request(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<AuthorizationRequest>>;
    /// Returns false when it was already gone: a request completes once.
    async fn delete_authorization_request(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool>;
}

#[async_trait]
pub trait GrantStore {
    async fn create_authorization_code(&self, code: &AuthorizationCode) -> StoreResult<()>;

    /// Redeems a code exactly once. In one transaction: mark the code used (only if unused),
    /// record `new_grant_id` on it and insert the grant built from the code (client, user,
    /// session, scope, auth_time, amr, nonce) with `grant_expires_at`. A second redemption
    /// revokes that grant and reports `Replayed`; concurrent callers see one `Redeemed`.
    async fn redeem_authorization_code(
        &self,
        tenant_id: Uuid,
        code_hash: &str,
        new_grant_id: Uuid,
        grant_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<CodeRedemption>;

    /// Inserts a grant that did not come from a code (`client_credentials`).
    async fn create_grant(&self, grant: &Grant) -> StoreResult<()>;
    async fn find_grant(&self, tenant_id: Uuid, grant_id: Uuid) -> StoreResult<Option<Grant>>;
    /// The grant and its customer (`None` for a machine grant, or when the customer is
    /// gone), in one round trip: what every use of an access token checks.
    async fn find_grant_and_user(&self, tenant_id: Uuid, grant_id: Uuid) -> StoreResult<Option<(Grant, Option<User>)>>;
    /// Revokes the grant: its refresh tokens and the access tokens minted from it stop
    /// working. Idempotent.
    async fn revoke_grant(&self, tenant_id: Uuid, grant_id: Uuid, event: &NewEvent) -> StoreResult<()>;

    /// Stores a refresh token (first of a family, or a successor) with its issuance event.
    async fn create_refresh_token(&self, token: &RefreshToken, event: &NewEvent) -> StoreResult<()>;
    /// The token, its grant and the grant's customer, whatever their state (callers check),
    /// in one round trip.
    async fn find_refresh_token(&self, tenant_id: Uuid, token_hash: &str) -> StoreResult<Option<RefreshTokenRecord>>;

    /// Spends `old_hash` and stores `new_token` atomically. If `old_hash` was already spent
    /// the grant is revoked (`Replayed`) and `replay_event` recorded: a stolen token and its
    /// rightful owner cannot both keep going. Concurrent callers see exactly one `Rotated`.
    async fn rotate_refresh_token(
        &self,
        tenant_id: Uuid,
        old_hash: &str,
        new_token: &RefreshToken,
        issued_event: &NewEvent,
        replay_event: &NewEvent,
    ) -> StoreResult<Rotation>;

    /// Revokes every active grant of a customer with a client (consent withdrawn).
    async fn revoke_grants_for_client(&self, tenant_id: Uuid, user_id: Uuid, client_id: &str, now: OffsetDateTime) -> StoreResult<u64>;
}

#[async_trait]
pub trait ConsentStore {
    async fn find_consent(&self, tenant_id: Uuid, user_id: Uuid, client_id: &str) -> StoreResult<Option<Consent>>;
    /// Creates or replaces the consent.
    async fn save_consent(&self, consent: &Consent, event: &NewEvent) -> StoreResult<()>;
    async fn list_consents(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<Consent>>;
    /// Withdraws the consent and revokes the client's grants for this customer.
    async fn delete_consent(&self, tenant_id: Uuid, user_id: Uuid, client_id: &str, event: &NewEvent) -> StoreResult<bool>;
}

#[async_trait]
pub trait KeyStore {
    /// Every key of a tenant whatever its status, newest first.
    async fn list_signing_keys(&self, tenant_id: Uuid) -> StoreResult<Vec<SigningKey>>;
    async fn create_signing_key(&self, key: &SigningKey, event: &NewEvent) -> StoreResult<()>;
    /// In one transaction: the active key of `alg` becomes retired (published until
    /// `retired_publish_until`), the next key of `alg` becomes active, `new_next` is inserted.
    async fn rotate_signing_keys(
        &self,
        tenant_id: Uuid,
        alg: &str,
        new_next: &SigningKey,
        retired_publish_until: OffsetDateTime,
        event: &NewEvent,
    ) -> StoreResult<()>;
    /// Deletes retired keys whose `publish_until` has passed.
    async fn delete_expired_signing_keys(&self, tenant_id: Uuid, now: OffsetDateTime) -> StoreResult<u64>;
}

#[async_trait]
pub trait InitialAccessTokenStore {
    async fn create_initial_access_token(&self, token: &InitialAccessToken) -> StoreResult<()>;
    /// Only tokens that have not expired.
    async fn find_initial_access_token(
        &self,
        tenant_id: Uuid,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<InitialAccessToken>>;
}

#[async_trait]
pub trait EventStore {
    async fn append_event(&self, event: &NewEvent) -> StoreResult<()>;
    /// Newest first; `before` is the last id of the previous page (ids are UUIDv7).
    async fn list_events(&self, tenant_id: Uuid, limit: u32, before: Option<Uuid>) -> StoreResult<Vec<NewEvent>>;
}

#[async_trait]
pub trait Maintenance {
    /// Applies the embedded migrations that have not run yet.
    async fn migrate(&self) -> StoreResult<()>;
    /// A cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Deletes expired flows, authorization requests, codes and ended sessions.
    async fn delete_expired(&self, now: OffsetDateTime) -> StoreResult<u64>;
    /// Closes the connections (at shutdown; SQLite then checkpoints its write-ahead log).
    async fn close(&self);
}

/// Everything Tessera stores.
pub trait Store:
    TenantStore
    + UserStore
    + ClientStore
    + SessionStore
    + FlowStore
    + AuthorizationRequestStore
    + GrantStore
    + ConsentStore
    + KeyStore
    + InitialAccessTokenStore
    + EventStore
    + Maintenance
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: TenantStore
        + UserStore
        + ClientStore
        + SessionStore
        + FlowStore
        + AuthorizationRequestStore
        + GrantStore
        + ConsentStore
        + KeyStore
        + InitialAccessTokenStore
        + EventStore
        + Maintenance
        + Send
        + Sync
        + 'static
{
}

/// Opens the store a database URL names: `sqlite:…` or `postgres://…`.
pub async fn connect(database_url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PostgresStore::connect(database_url).await?))
    } else if database_url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::connect(database_url).await?))
    } else {
        Err(StoreError::Database("database URL must start with sqlite: or postgres://".into()))
    }
}

/// The PostgreSQL database the unit tests of this crate may use (`TESSERA_TEST_POSTGRES_URL`),
/// or `None` when the PostgreSQL half is to be skipped — which `TESSERA_REQUIRE_POSTGRES=1`
/// (CI) turns into a failure.
#[cfg(test)]
pub(crate) fn test_postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("TESSERA_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        assert!(std::env::var("TESSERA_REQUIRE_POSTGRES").is_err(), "TESSERA_REQUIRE_POSTGRES=1 but TESSERA_TEST_POSTGRES_URL is not set");
        eprintln!("{test}: skipped, set TESSERA_TEST_POSTGRES_URL to run it");
    }
    url
}
