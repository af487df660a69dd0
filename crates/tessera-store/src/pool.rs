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

/// How often the reaper looks for connections idle or old enough to close.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// How a pool opens and checks its connections.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    pub max_connections: usize,
    /// The most a caller waits for a connection — for a free one, for a new one to open, and
    /// for a check of an idle one, all together — before the store answers an error. Also how
    /// long a check may take before its connection is given up.
    pub acquire_timeout: Duration,
    /// A connection idle this long is pinged before it is handed out: the server may have
    /// restarted or a proxy dropped it meanwhile. `None`: never (an in-process SQLite
    /// connection cannot go stale).
    pub ping_if_idle_for: Option<Duration>,
    /// A connection this old is closed and replaced, so that a load balancer or failover in
    /// front of the database sees connections move. `None`: kept.
    pub max_lifetime: Option<Duration>,
    /// A connection idle this long is closed, so that a burst's connections do not stay open
    /// on the database for ever. `None`: kept.
    pub idle_timeout: Option<Duration>,
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
        // A dirty one is normally checked as it comes back (see `Conn::drop`); here only when
        // that could not run (no runtime to spawn on).
        let stale = self.settings.ping_if_idle_for.is_some_and(|idle| metrics.last_used() >= idle);
        if !slot.clean || stale {
            match tokio::time::timeout(self.settings.acquire_timeout, slot.connection.ping()).await {
                Ok(answered) => answered?,
                Err(_) => return Err(RecycleError::message("the connection did not answer its check")),
            }
            slot.clean = true;
        }
        Ok(())
    }
}

impl<C: Connection + 'static> Pool<C>
where
    C::Options: Clone,
{
    /// A pool that opens its connections with `options` as they are needed, and (on a tokio
    /// runtime, with an idle timeout or a lifetime) closes those idle or old enough.
    pub(crate) fn new(options: C::Options, settings: PoolSettings) -> StoreResult<Self> {
        let limit = Some(settings.acquire_timeout);
        let inner = managed::Pool::builder(Manager { options, settings: settings.clone() })
            .max_size(settings.max_connections)
            .timeouts(Timeouts { wait: limit, create: limit, recycle: limit })
            .queue_mode(QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(format!("building the connection pool: {e}").into()))?;
        let pool = Self { inner };
        pool.start_reaper(settings.idle_timeout, settings.max_lifetime);
        Ok(pool)
    }

    /// A connection for one unit of work. Call [`Conn::done`] when the work finished as it
    /// should; a connection dropped without it is checked before it is used again.
    pub(crate) async fn acquire(&self) -> StoreResult<Conn<C>> {
        self.take().await.map_err(crate::sql::db_err)
    }

    async fn take(&self) -> Result<Conn<C>, sqlx::Error> {
        // One deadline for the whole of it: deadpool bounds the wait, the opening and the
        // check each on their own, which could add up to three times the timeout.
        let deadline = self.inner.manager().settings.acquire_timeout;
        let got = tokio::time::timeout(deadline, self.inner.get()).await.map_err(|_| sqlx::Error::PoolTimedOut)?;
        let mut object = got.map_err(pool_error)?;
        object.clean = false;
        Ok(Conn { object: Some(object) })
    }

    /// Closes every connection not in use, each the way its database wants (SQLite's last one
    /// checkpoints the log and removes it), and refuses new work; a connection still in use is
    /// dropped as it returns.
    pub(crate) async fn close(&self) {
        // Taken out first: closing the pool drops its idle connections without closing them.
        let idle = self.inner.retain(|_, _| false).removed;
        self.inner.close();
        for slot in idle {
            let _ = slot.connection.close().await;
        }
    }

    /// Closes idle connections past `idle_timeout` or `max_lifetime` every [`REAP_EVERY`],
    /// until the pool is closed or dropped.
    fn start_reaper(&self, idle_timeout: Option<Duration>, max_lifetime: Option<Duration>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if idle_timeout.is_none() && max_lifetime.is_none() {
            return;
        }
        let weak = self.inner.weak();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                if pool.is_closed() {
                    return;
                }
                let keep = |m: &Metrics| idle_timeout.is_none_or(|t| m.last_used() < t) && max_lifetime.is_none_or(|t| m.age() < t);
                let expired = pool.retain(|_, metrics| keep(&metrics)).removed;
                drop(pool);
                for slot in expired {
                    let _ = slot.connection.close().await;
                }
            }
        });
    }
}

fn pool_error(e: PoolError<sqlx::Error>) -> sqlx::Error {
    match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(deadpool::managed::TimeoutType::Create) => {
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "opening a database connection timed out"))
        }
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
    /// be idle again. One that fails the ping, or does not answer it in time (a database out
    /// of reach, a statement still waiting for a lock), is closed instead, and its place in
    /// the pool freed.
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
        // The check may take as long as an acquire may wait; a pool already gone takes nothing back.
        let Some(check_timeout) = Object::pool(&object).map(|pool| pool.manager().settings.acquire_timeout) else {
            return;
        };
        runtime.spawn(async move {
            match tokio::time::timeout(check_timeout, object.connection.ping()).await {
                Ok(Ok(())) => object.clean = true,
                failed => {
                    tracing::debug!(answered = failed.is_ok(), "a connection returned mid-work failed its check; closing it");
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

    pub(super) fn settings(max_connections: usize) -> PoolSettings {
        PoolSettings {
            max_connections,
            acquire_timeout: Duration::from_secs(2),
            ping_if_idle_for: None,
            max_lifetime: None,
            idle_timeout: None,
        }
    }

    /// A fresh directory for a test's SQLite file.
    pub(super) fn sqlite_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-pool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    pub(super) fn sqlite_options(dir: &std::path::Path) -> SqliteConnectOptions {
        SqliteConnectOptions::from_str(&format!("sqlite:{}/p.db?mode=rwc", dir.display()))
            .expect("options")
            .journal_mode(SqliteJournalMode::Wal)
    }

    fn sqlite_file_pool(settings: PoolSettings) -> (Pool<SqliteConnection>, std::path::PathBuf) {
        let dir = sqlite_dir();
        (Pool::new(sqlite_options(&dir), settings).expect("pool"), dir)
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

#[cfg(test)]
mod cancellation_and_failure_tests {
    //! What a connection is like after its user vanished mid-work, and what the pool does when
    //! the database stops answering. (Written by a reviewer of ADR 6, kept as regression tests.)
    use super::tests::{settings, sqlite_dir, sqlite_options};
    use super::*;
    use sqlx::{PgConnection, SqliteConnection};
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Poll;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Polls `f` at most `n` times (letting other threads run between polls), then drops it:
    /// a cancellation at the n-th `.await` point.
    async fn poll_n_then_drop<F: Future>(f: F, n: usize, jitter_us: u64) -> Option<F::Output> {
        let mut f = Box::pin(f);
        for _ in 0..n {
            let polled = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await;
            if let Poll::Ready(out) = polled {
                return Some(out);
            }
            if jitter_us > 0 {
                std::thread::sleep(Duration::from_micros(jitter_us));
            }
            tokio::task::yield_now().await;
        }
        None
    }

    async fn sqlite_tx(pool: &Pool<SqliteConnection>, id: i64) -> Result<(), sqlx::Error> {
        let mut conn = pool.take().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO t VALUES ($1)").bind(id).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO t VALUES ($1)").bind(-id).execute(&mut *tx).await?;
        tx.commit().await?;
        conn.done();
        Ok(())
    }

    /// Cancels a write transaction (and a pooled read) at every await point, then checks the
    /// next user of the one connection is not inside a transaction and sees only its own rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_work_cancelled_at_any_point_leaves_a_clean_connection() {
        let dir = sqlite_dir();
        let pool = Pool::<SqliteConnection>::new(sqlite_options(&dir), settings(1)).expect("pool");
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&pool).await.expect("create");
        let mut id = 0i64;
        let mut cancelled = 0;
        for jitter in [0u64, 20, 100, 400] {
            for n in 1..=30 {
                id += 1;
                match poll_n_then_drop(sqlite_tx(&pool, id), n, jitter).await {
                    Some(r) => r.expect("tx"),
                    None => cancelled += 1,
                }
                // a pooled read cancelled mid-way
                let _ = poll_n_then_drop(sqlx::query_scalar::<_, i64>("SELECT x FROM t").fetch_all(&pool), n, jitter).await;
                let _ = poll_n_then_drop(sqlx::query_scalar::<_, i64>("SELECT x FROM t").fetch_optional(&pool), n, jitter).await;
                // the next user
                let mut conn = pool.acquire().await.expect("acquire");
                assert!(!sqlx::Connection::is_in_transaction(&*conn), "depth leaked (n={n}, jitter={jitter})");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("already in a transaction (n={n}, jitter={jitter}): {e}"));
                sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.expect("rollback");
                let own: i64 = sqlx::query_scalar("SELECT $1").bind(4242i64 + id).fetch_one(&mut *conn).await.expect("own");
                assert_eq!(own, 4242 + id);
                conn.done();
            }
        }
        let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM t a WHERE NOT EXISTS (SELECT 1 FROM t b WHERE b.x = -a.x)")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(orphans, 0, "half transactions");
        assert!(cancelled > 10, "the sweep cancelled work mid-way ({cancelled} times)");
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn pg_tx(pool: &Pool<PgConnection>, table: &str, id: i64) -> Result<(), sqlx::Error> {
        let mut conn = pool.take().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} VALUES ($1)"))).bind(id).execute(&mut *tx).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} VALUES ($1)"))).bind(-id).execute(&mut *tx).await?;
        tx.commit().await?;
        conn.done();
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_work_cancelled_at_any_point_leaves_a_clean_connection() {
        let Some(url) = crate::test_postgres_url("postgres_work_cancelled_at_any_point_leaves_a_clean_connection") else { return };
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let pool = Pool::<PgConnection>::new(options, settings(1)).expect("pool");
        let table = format!("pool_cancel_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE TABLE {table} (x BIGINT)"))).execute(&pool).await.expect("create");
        let mut id = 0i64;
        let mut cancelled = 0;
        for jitter in [0u64, 20, 100, 400] {
            for n in 1..=30 {
                id += 1;
                match poll_n_then_drop(pg_tx(&pool, &table, id), n, jitter).await {
                    Some(r) => r.expect("tx"),
                    None => cancelled += 1,
                }
                let big = "SELECT generate_series(1, 20000)::int8";
                let _ = poll_n_then_drop(sqlx::query_scalar::<_, i64>(big).fetch_all(&pool), n, jitter).await;
                let _ = poll_n_then_drop(sqlx::query_scalar::<_, i64>(big).fetch_optional(&pool), n, jitter).await;
                let mut conn = pool.acquire().await.expect("acquire");
                let a: i64 = sqlx::query_scalar("SELECT txid_current()").fetch_one(&mut *conn).await.expect("txid");
                let b: i64 = sqlx::query_scalar("SELECT txid_current()").fetch_one(&mut *conn).await.expect("txid");
                assert_ne!(a, b, "the next user runs inside someone else's transaction (n={n}, jitter={jitter})");
                let own: i64 = sqlx::query_scalar("SELECT $1::int8").bind(4242i64 + id).fetch_one(&mut *conn).await.expect("own");
                assert_eq!(own, 4242 + id, "stale rows (n={n}, jitter={jitter})");
                conn.done();
            }
        }
        let orphans: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} a WHERE NOT EXISTS (SELECT 1 FROM {table} b WHERE b.x = -a.x)"
        )))
        .fetch_one(&pool)
        .await
        .expect("count");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(&pool).await;
        assert_eq!(orphans, 0, "half transactions");
        assert!(cancelled > 10, "the sweep cancelled work mid-way ({cancelled} times)");
        pool.close().await;
    }

    /// A connection dropped mid-transaction where no runtime is current goes back dirty; the
    /// next acquire's recycle must flush its rollback.
    #[tokio::test]
    async fn a_connection_dropped_mid_work_without_a_runtime_is_checked_before_reuse() {
        let dir = sqlite_dir();
        let pool = Pool::<SqliteConnection>::new(sqlite_options(&dir), settings(1)).expect("pool");
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&pool).await.expect("create");
        let mut conn = pool.acquire().await.expect("acquire");
        {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await.expect("begin");
            sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.expect("insert");
            drop(tx); // queues the rollback, as a `?` inside write_tx! does
        }
        std::thread::spawn(move || drop(conn)).join().expect("drop on a thread without a runtime");
        let mut conn = pool.acquire().await.expect("acquire");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut *conn).await.expect("count");
        assert!(!sqlx::Connection::is_in_transaction(&*conn));
        assert_eq!(n, 0);
        conn.done();
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Closing the pool closes its idle connections the way SQLite wants, the last one
    /// checkpointing the log and removing it, before `close` returns (a node that exits right
    /// after leaves a clean database file).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_pool_closes_its_connections_before_it_returns() {
        for _ in 0..5 {
            let dir = sqlite_dir();
            let pool = Pool::<SqliteConnection>::new(sqlite_options(&dir), settings(4)).expect("pool");
            sqlx::query("CREATE TABLE t (x INTEGER)").execute(&pool).await.expect("create");
            for i in 0..200 {
                sqlx::query("INSERT INTO t VALUES ($1)").bind(i).execute(&pool).await.expect("insert");
            }
            let wal = dir.join("p.db-wal");
            assert!(wal.exists());
            pool.close().await;
            assert!(!wal.exists(), "close returned with the log still there");
            assert!(pool.acquire().await.is_err(), "a closed pool takes no new work");
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// A TCP proxy to `target` that, once `blackhole` is set, stops forwarding but keeps the
    /// sockets open: a peer that vanished without a reset (partition, NAT or firewall state lost).
    async fn blackhole_proxy(target: String) -> (std::net::SocketAddr, Arc<AtomicBool>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, f.clone()));
                tokio::spawn(pump(sr, cw, f.clone()));
            }
        });
        (addr, flag)
    }

    async fn pump(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, flag: Arc<AtomicBool>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if flag.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn pg_via(url: &str, proxy: std::net::SocketAddr) -> sqlx::postgres::PgConnectOptions {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        options.host("127.0.0.1").port(proxy.port()).ssl_mode(sqlx::postgres::PgSslMode::Disable)
    }

    fn pg_target(url: &str) -> String {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        format!("{}:{}", options.get_host(), options.get_port())
    }

    /// A pool of PostgreSQL connections through [`blackhole_proxy`], with a 500 ms acquire
    /// timeout; set the flag to silence the database.
    async fn pool_behind_a_proxy(
        url: &str,
        max_connections: usize,
        ping_if_idle_for: Option<Duration>,
    ) -> (Pool<PgConnection>, Arc<AtomicBool>) {
        let (proxy, blackhole) = blackhole_proxy(pg_target(url)).await;
        let settings = PoolSettings { acquire_timeout: Duration::from_millis(500), ping_if_idle_for, ..settings(max_connections) };
        (Pool::<PgConnection>::new(pg_via(url, proxy), settings).expect("pool"), blackhole)
    }

    /// PostgreSQL: `acquire_timeout` bounds the whole `acquire`, the check of an idle
    /// connection included, when the database stops answering without closing the socket.
    #[tokio::test]
    async fn acquiring_from_a_silent_postgres_gives_up_after_the_timeout() {
        let Some(url) = crate::test_postgres_url("acquiring_from_a_silent_postgres_gives_up_after_the_timeout") else { return };
        let (pool, blackhole) = pool_behind_a_proxy(&url, 1, Some(Duration::from_millis(50))).await;
        let v: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.expect("first use");
        assert_eq!(v, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        blackhole.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(5), pool.acquire()).await;
        let took = started.elapsed();
        assert!(matches!(outcome, Ok(Err(_))), "acquire (acquire_timeout 500 ms) had not failed after {took:?}");
        assert!(took < Duration::from_millis(1500), "gave up after {took:?}");
    }

    /// PostgreSQL: a connection dropped mid-work whose check the database never answers is
    /// closed after the timeout, and its place in the pool freed for a new connection.
    #[tokio::test]
    async fn a_connection_whose_check_goes_unanswered_gives_its_place_back() {
        let Some(url) = crate::test_postgres_url("a_connection_whose_check_goes_unanswered_gives_its_place_back") else { return };
        let (pool, blackhole) = pool_behind_a_proxy(&url, 2, None).await;
        let a = pool.acquire().await.expect("a");
        let b = pool.acquire().await.expect("b");
        blackhole.store(true, Ordering::SeqCst);
        drop(a); // mid-work: checked in a task of its own
        drop(b);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = pool.inner.status();
        assert_eq!(status.size, 0, "both silent connections were closed: {status:?}");
        blackhole.store(false, Ordering::SeqCst);
        let fresh = pool.acquire().await.expect("a new connection takes a freed place");
        fresh.done();
    }
}
