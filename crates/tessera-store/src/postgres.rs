//! PostgreSQL through sqlx, for deployments with more than one node. Owns the pool and the
//! retry of transactions that the server aborted to keep them serializable (SQLSTATE 40001,
//! and deadlocks, 40P01), which also keeps the code portable to CockroachDB and YugabyteDB.
//! The SQL itself lives in `sql.rs`.

use crate::migrations::EmbeddedMigration;
use crate::sql::db_err;
use crate::{StoreError, StoreResult};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use time::OffsetDateTime;

const MAX_CONNECTIONS: u32 = 16;

/// A request that cannot get a connection soon fails (and `/readyz` says so) rather than
/// piling up behind a saturated pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The PostgreSQL implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL lets writers wait on row locks, not on one database lock.
    writer: PgPool,
    events: crate::events::EventBatcher,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names (one connection is opened now, so
    /// a wrong URL fails here). Does not migrate: call [`crate::Maintenance::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool =
            PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect(url).await.map_err(db_err)?;
        Ok(Self { events: Self::event_batcher(pool.clone()), writer: pool.clone(), pool })
    }

    const MIGRATIONS: &'static [EmbeddedMigration] = crate::migrations::POSTGRES;

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }

    /// Serialization failures and deadlocks abort a transaction that did nothing wrong; the
    /// same transaction run again normally succeeds.
    fn is_retryable(e: &StoreError) -> bool {
        matches!(crate::sql::error_code(e).as_deref(), Some("40001" | "40P01"))
    }

    fn ts(t: OffsetDateTime) -> OffsetDateTime {
        t
    }

    fn get_ts(row: &PgRow, column: &str) -> StoreResult<OffsetDateTime> {
        Self::get(row, column)
    }

    fn get_opt_ts(row: &PgRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
        Self::get(row, column)
    }
}

crate::sql::impl_store!(PostgresStore, ::sqlx::Postgres);
