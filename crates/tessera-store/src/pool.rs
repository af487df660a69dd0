//! The stores' connection pools, in place of `sqlx::Pool`.
//!
//! sqlx 0.9's pool checks every connection as it comes back: dropping a `PoolConnection` spawns
//! a task that pings the connection — a round trip to PostgreSQL, a hop to and from SQLite's
//! worker thread — before anyone may use it again, so every statement paid for two. A
//! `SELECT 1` one after another took 168 µs through sqlx's pool and 60 µs on a held
//! connection on PostgreSQL, 75 µs and 18 µs on SQLite (docs/adr/0006). The ping is there for
//! a connection dropped in the middle of its work: a cancelled request, an error inside a
//! transaction. Here a connection whose work finished ([`Conn::done`]) goes straight back;
//! only one dropped before that is pinged first, which flushes the rollback of a transaction
//! it left open (so no row stays locked while it idles) and keeps a broken connection from
//! the next caller.
//!
//! The queue is last-in first-out: under light load the same few connections serve every
//! request, with their statement caches (and SQLite's page cache) warm.

use deadpool::managed::{self, Metrics, Object, PoolError, QueueMode, RecycleError, RecycleResult, Timeouts};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use sqlx::{Connection, Database, Either, Execute, Executor};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::{StoreError, StoreResult};

/// How a pool opens and checks its connections.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub max_connections: usize,
    /// How long a caller waits for a connection before the store answers an error.
    pub acquire_timeout: Duration,
    /// A connection idle this long is pinged before it is handed out: the server may have
    /// restarted or a proxy dropped it meanwhile. `None`: never (an in-process SQLite
    /// connection cannot go stale).
    pub ping_if_idle_for: Option<Duration>,
    /// A connection this old is closed and replaced as it comes up for reuse, so that a
    /// load balancer or failover in front of the database sees connections move.
    pub max_lifetime: Option<Duration>,
}

/// A pool of connections `C` (`SqliteConnection`, `PgConnection`).
pub(crate) struct Pool<C: Connection + 'static> {
    inner: managed::Pool<Manager<C>>,
}

impl<C: Connection + 'static> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<C: Connection + 'static> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.status();
        f.debug_struct("Pool").field("size", &status.size).field("available", &status.available).finish()
    }
}

/// One pooled connection with whether its last user finished with it.
pub(crate) struct Slot<C> {
    connection: C,
    clean: bool,
}

pub(crate) struct Manager<C: Connection + 'static> {
    options: C::Options,
    settings: PoolSettings,
}

impl<C: Connection + 'static> managed::Manager for Manager<C>
where
    C::Options: Clone,
{
    type Type = Slot<C>;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Slot<C>, sqlx::Error> {
        Ok(Slot { connection: C::connect_with(&self.options).await?, clean: true })
    }

    async fn recycle(&self, slot: &mut Slot<C>, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if self.settings.max_lifetime.is_some_and(|max| metrics.age() >= max) {
            return Err(RecycleError::message("the connection reached its lifetime"));
        }
        // Normally done when it came back dirty (see `Conn::drop`); here only when that could
        // not run (no runtime to spawn on, or the ping failed and the close did too).
        let stale = self.settings.ping_if_idle_for.is_some_and(|idle| metrics.last_used() >= idle);
        if !slot.clean || stale {
            slot.connection.ping().await?;
            slot.clean = true;
        }
        Ok(())
    }
}

impl<C: Connection + 'static> Pool<C>
where
    C::Options: Clone,
{
    /// A pool that opens its connections with `options` as they are needed.
    pub(crate) fn new(options: C::Options, settings: PoolSettings) -> StoreResult<Self> {
        let timeouts = Timeouts { wait: Some(settings.acquire_timeout), create: Some(settings.acquire_timeout), recycle: None };
        let inner = managed::Pool::builder(Manager { options, settings: settings.clone() })
            .max_size(settings.max_connections)
            .timeouts(timeouts)
            .queue_mode(QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(format!("building the connection pool: {e}").into()))?;
        Ok(Self { inner })
    }

    /// A connection for one unit of work. Call [`Conn::done`] when the work finished as it
    /// should; a connection dropped without it is checked before it is used again.
    pub(crate) async fn acquire(&self) -> StoreResult<Conn<C>> {
        self.take().await.map_err(|e| match e {
            sqlx::Error::PoolTimedOut => StoreError::Database("timed out waiting for a database connection".into()),
            other => crate::sql::db_err(other),
        })
    }

    async fn take(&self) -> Result<Conn<C>, sqlx::Error> {
        let mut object = self.inner.get().await.map_err(pool_error)?;
        object.clean = false;
        Ok(Conn { object: Some(object) })
    }

    /// Closes every connection not in use, each the way its database wants (SQLite then
    /// checkpoints its log), and refuses new work. Connections in use close as they return.
    pub(crate) async fn close(&self) {
        self.inner.close();
        let idle = self.inner.retain(|_, _| false).removed;
        for slot in idle {
            let _ = slot.connection.close().await;
        }
    }
}

fn pool_error(e: PoolError<sqlx::Error>) -> sqlx::Error {
    match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        PoolError::Closed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(format!("database connection pool: {other}")),
    }
}

/// `&pool` runs one statement on a connection of the pool, as `&sqlx::Pool` does, and gives
/// the connection straight back once the statement finished.
impl<'p, C> Executor<'p> for &'_ Pool<C>
where
    C: Connection + 'static,
    C::Options: Clone,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    type Database = C::Database;

    /// Reads the whole result before it yields the first item, so that the connection is
    /// free again as soon as possible; the stores never stream large results.
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<<C::Database as Database>::QueryResult, <C::Database as Database>::Row>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Self::Database>,
    {
        let pool = self.clone();
        let all = async move {
            let mut conn = pool.take().await?;
            let items: Vec<_> = (&mut *conn).fetch_many(query).try_collect().await?;
            conn.done();
            Ok::<_, sqlx::Error>(futures_util::stream::iter(items.into_iter().map(Ok)))
        };
        futures_util::stream::once(all).try_flatten().boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<<C::Database as Database>::Row>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Self::Database>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.take().await?;
            let row = (&mut *conn).fetch_optional(query).await?;
            conn.done();
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [<C::Database as Database>::TypeInfo],
    ) -> BoxFuture<'e, Result<<C::Database as Database>::Statement, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.take().await?;
            let statement = (&mut *conn).prepare_with(sql, parameters).await?;
            conn.done();
            Ok(statement)
        })
    }
}

/// A connection taken from a [`Pool`]; dereferences to the connection, so `&mut *conn` is an
/// sqlx executor and `conn.begin()` starts a transaction on it.
pub(crate) struct Conn<C: Connection + 'static>
where
    C::Options: Clone,
{
    object: Option<Object<Manager<C>>>,
}

impl<C: Connection + 'static> Conn<C>
where
    C::Options: Clone,
{
    /// The work finished cleanly (no transaction left open, no result half read): the
    /// connection goes straight back to the pool.
    pub(crate) fn done(mut self) {
        if let Some(object) = self.object.as_mut() {
            object.clean = true;
        }
    }
}

impl<C: Connection + 'static> Deref for Conn<C>
where
    C::Options: Clone,
{
    type Target = C;

    fn deref(&self) -> &C {
        match &self.object {
            Some(object) => &object.connection,
            None => unreachable!("a connection is only taken out of its guard on drop"),
        }
    }
}

impl<C: Connection + 'static> DerefMut for Conn<C>
where
    C::Options: Clone,
{
    fn deref_mut(&mut self) -> &mut C {
        match &mut self.object {
            Some(object) => &mut object.connection,
            None => unreachable!("a connection is only taken out of its guard on drop"),
        }
    }
}

impl<C: Connection + 'static> Drop for Conn<C>
where
    C::Options: Clone,
{
    /// A connection dropped before its work finished is pinged before it goes back: the ping
    /// sends the rollback sqlx queued for an open transaction and waits for the connection to
    /// be idle again. One that fails the ping is closed instead.
    fn drop(&mut self) {
        let Some(mut object) = self.object.take() else {
            return;
        };
        if object.clean {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // goes back dirty; `recycle` pings it before the next use
        };
        runtime.spawn(async move {
            match object.connection.ping().await {
                Ok(()) => object.clean = true,
                Err(e) => {
                    tracing::debug!(error = %e, "a connection returned mid-work failed its check; closing it");
                    drop(Object::take(object));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{PgConnection, SqliteConnection};
    use std::str::FromStr;

    fn settings(max_connections: usize) -> PoolSettings {
        PoolSettings { max_connections, acquire_timeout: Duration::from_secs(2), ping_if_idle_for: None, max_lifetime: None }
    }

    fn sqlite_file_pool(settings: PoolSettings) -> (Pool<SqliteConnection>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tessera-pool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{}/p.db?mode=rwc", dir.display()))
            .expect("options")
            .journal_mode(SqliteJournalMode::Wal);
        (Pool::new(options, settings).expect("pool"), dir)
    }

    #[tokio::test]
    async fn a_connection_whose_work_is_done_is_reused_at_once() {
        let (pool, dir) = sqlite_file_pool(settings(4));
        for _ in 0..50 {
            sqlx::query("SELECT 1").execute(&pool).await.expect("select");
            let mut conn = pool.acquire().await.expect("acquire");
            sqlx::query("SELECT 2").execute(&mut *conn).await.expect("select");
            conn.done();
        }
        let status = pool.inner.status();
        assert_eq!((status.size, status.available), (1, 1), "one connection served every statement in turn");
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_transaction_dropped_mid_work_is_rolled_back_before_the_connection_serves_again() {
        let (pool, dir) = sqlite_file_pool(settings(1));
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&pool).await.expect("create");
        {
            let mut conn = pool.acquire().await.expect("acquire");
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.expect("begin");
            sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.expect("insert");
            // Dropped without commit and without `done`: a request cancelled mid-transaction.
        }
        let mut conn = pool.acquire().await.expect("the connection comes back");
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.expect("a new transaction starts");
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut *tx).await.expect("count");
        assert_eq!(count, 0, "the abandoned insert was rolled back");
        tx.commit().await.expect("commit");
        conn.done();
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_caller_waits_no_longer_than_the_acquire_timeout() {
        let (pool, dir) = sqlite_file_pool(PoolSettings { acquire_timeout: Duration::from_millis(200), ..settings(1) });
        let held = pool.acquire().await.expect("acquire");
        let started = std::time::Instant::now();
        let waited = pool.acquire().await;
        let waited_for = started.elapsed();
        assert!(matches!(&waited, Err(StoreError::Database(e)) if e.to_string().contains("timed out")), "{:?}", waited.err());
        assert!(waited_for >= Duration::from_millis(200) && waited_for < Duration::from_secs(2), "waited {waited_for:?}");
        held.done();
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// PostgreSQL: the row lock of a transaction abandoned on a pooled connection is released
    /// at once, not when that connection is next used (which, on an idle node, may be never).
    #[tokio::test]
    async fn an_abandoned_postgres_transaction_releases_its_locks_at_once() {
        let Some(url) = crate::test_postgres_url("an_abandoned_postgres_transaction_releases_its_locks_at_once") else {
            return;
        };
        let table = format!("pool_lock_{}", uuid::Uuid::new_v4().simple());
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let pool = Pool::<PgConnection>::new(options, settings(2)).expect("pool");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE TABLE {table} (id INT PRIMARY KEY, v INT); INSERT INTO {table} VALUES (1, 0)")))
            .execute(&pool)
            .await
            .expect("set up");
        {
            let mut conn = pool.acquire().await.expect("acquire");
            let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
            sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET v = 1 WHERE id = 1")))
                .execute(&mut *tx)
                .await
                .expect("lock the row");
        }
        let mut other = <PgConnection as Connection>::connect(&url).await.expect("connect");
        sqlx::query("SET lock_timeout = '3s'").execute(&mut other).await.expect("set");
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET v = 2 WHERE id = 1"))).execute(&mut other).await;
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(&mut other).await;
        assert!(updated.is_ok(), "the abandoned transaction still held the row: {updated:?}");
        let v: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.expect("the pool still serves");
        assert_eq!(v, 1);
        pool.close().await;
    }
}
