//! The embedded default: SQLite through sqlx. Owns the connection setup (WAL, foreign keys,
//! busy timeout), the write-transaction discipline (`BEGIN IMMEDIATE`) and the one thing SQLite
//! stores differently from PostgreSQL: points in time. The SQL itself lives in `sql.rs`.

use crate::migrations::EmbeddedMigration;
use crate::pool::{Pool, PoolSettings};
use crate::sql::{PendingRotation, db_err, unique_or_db};
use crate::{StoreError, StoreResult};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous, SqliteTypeInfo};
use sqlx::{Database, Encode, Sqlite, SqliteConnection, Transaction, Type};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tessera_core::NewEvent;
use tessera_core::model::RefreshToken;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Every writer waits this long for the write lock before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the log is copied ahead of the writer's checkpoint while writes come in (SQLite's
/// 1,000-page threshold fills in about 40 ms of a token load), and how often it is looked at
/// when they do not.
const COPY_AHEAD_BUSY: Duration = Duration::from_millis(50);
const COPY_AHEAD_IDLE: Duration = Duration::from_secs(1);

/// WAL lets readers run beside the one writer, so a few reading connections help.
const MAX_READERS: usize = 4;

/// How points in time are stored: UTC, always six fraction digits. sqlx's own encoding is
/// RFC 3339 with the fraction trimmed (`…:00Z`, `…:00.5Z`), whose text order is not time
/// order ('Z' sorts after '.'), which would break `expires_at > $n` within a second.
const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A point in time as SQLite stores it (see [`TIME_FORMAT`]); sub-microsecond precision is
/// dropped, as PostgreSQL's TIMESTAMPTZ does.
pub(crate) struct SqliteTime(OffsetDateTime);

impl Type<Sqlite> for SqliteTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for SqliteTime {
    fn encode_by_ref(&self, buf: &mut <Sqlite as Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let text = self.0.to_offset(UtcOffset::UTC).format(TIME_FORMAT)?;
        <String as Encode<Sqlite>>::encode(text, buf)
    }
}

/// The SQLite implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Where reads run.
    pool: Pool<SqliteConnection>,
    /// One connection for every write. SQLite admits one writer at a time anyway; with more
    /// writing connections the losers wait in SQLite's busy handler, which *sleeps* (1, 2, 5,
    /// 10 … 100 ms) and wakes to retry, costing latency and CPU. Here they wait in the pool's
    /// queue and get the connection the moment it is free. The busy timeout still covers
    /// other processes (the CLI) writing to the same file.
    writer: Pool<SqliteConnection>,
    /// Group-committed writes (see `group_commit.rs`).
    events: crate::group_commit::GroupCommit<tessera_core::NewEvent, ()>,
    rotations: crate::group_commit::GroupCommit<crate::sql::PendingRotation, bool>,
    /// The log copier (`copy_log_ahead`), stopped by `close()` or when the last clone of the
    /// store is dropped.
    _background: Option<Arc<crate::sql::Background>>,
}

impl SqliteStore {
    /// Opens (with `mode=rwc` in the URL: creates) the database a `sqlite:` URL names, e.g.
    /// `sqlite:./data/tessera.db?mode=rwc`, creating the file's directory when missing.
    /// `sqlite::memory:` gives a database that lives as long as this store (one connection).
    /// Does not migrate: call [`crate::Maintenance::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db_err)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Checkpoints stay in the writer's commits (SQLite's default, every 1,000 pages):
            // only there does nothing write between the checkpoint and the next transaction,
            // which can then start the log over. Checkpoints beside the writer alone never
            // caught up with it, and the log grew without end (docs/adr/0004); they now only
            // copy ahead of it (`copy_log_ahead`).
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // An in-process connection cannot go stale: never pinged for having been idle.
        let settings = |max_connections| PoolSettings {
            max_connections,
            acquire_timeout: BUSY_TIMEOUT * 2,
            ping_if_idle_for: None,
            max_lifetime: None,
            // Kept open: cheap in-process, and `:memory:` lives only as long as its connection.
            idle_timeout: None,
        };
        if in_memory {
            // Every connection to `:memory:` is a database of its own, and it vanishes with
            // its last connection: keep exactly one, forever, for reads and writes alike.
            let pool = Pool::<SqliteConnection>::new(options, settings(1))?;
            pool.acquire().await?.done();
            return Ok(Self::from_pools(pool.clone(), pool));
        }
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir).await.map_err(|e| StoreError::Database(Box::new(e)))?;
        }
        // The writer connects first: it creates the file (`mode=rwc`) and switches it to WAL.
        let writer = Pool::<SqliteConnection>::new(options.clone(), settings(1))?;
        writer.acquire().await?.done();
        let pool = Pool::new(options.clone(), settings(MAX_READERS))?;
        // A connection of its own: a checkpoint holds its connection through the copy and two
        // `fsync`s, which would otherwise take one of the readers' every 50 ms.
        let copier = sqlx::ConnectOptions::connect(&options).await.map_err(db_err)?;
        let background = crate::sql::Background::start(|stop| copy_log_ahead(copier, stop));
        Ok(Self { _background: Some(Arc::new(background)), ..Self::from_pools(pool, writer) })
    }

    const MIGRATIONS: &'static [EmbeddedMigration] = crate::migrations::SQLITE;

    /// `BEGIN IMMEDIATE` takes the write lock up front. A plain (deferred) `BEGIN` that reads
    /// first and writes later cannot wait for a lock another writer holds: in WAL mode its
    /// snapshot may be stale, so SQLite fails it with SQLITE_BUSY at once, busy timeout or not.
    async fn begin_write_on(writer: &mut SqliteConnection) -> StoreResult<Transaction<'_, Sqlite>> {
        sqlx::Connection::begin_with(writer, "BEGIN IMMEDIATE").await.map_err(db_err)
    }

    /// Writers are serialized by the writer pool and the write lock, so nothing is worth
    /// running again.
    fn is_retryable(_: &StoreError) -> bool {
        false
    }

    fn ts(t: OffsetDateTime) -> SqliteTime {
        SqliteTime(t)
    }

    fn get_ts(row: &SqliteRow, column: &str) -> StoreResult<OffsetDateTime> {
        let text: String = Self::get(row, column)?;
        parse_time(column, &text)
    }

    fn get_opt_ts(row: &SqliteRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
        let text: Option<String> = Self::get(row, column)?;
        text.map(|text| parse_time(column, &text)).transpose()
    }

    /// Spends every unspent token of a rotation batch whose grant is active, in one `UPDATE`;
    /// returns the spent ones' `token_hash, tenant_id, grant_id`.
    async fn spend_refresh_tokens(
        connection: &mut SqliteConnection,
        now: OffsetDateTime,
        batch: &[PendingRotation],
    ) -> StoreResult<Vec<SqliteRow>> {
        let mut update = sqlx::QueryBuilder::<Sqlite>::new("UPDATE refresh_tokens SET rotated_at = ");
        update.push_bind(Self::ts(now)).push(" WHERE rotated_at IS NULL AND (");
        for (i, r) in batch.iter().enumerate() {
            if i > 0 {
                update.push(" OR ");
            }
            update.push("(token_hash = ").push_bind(r.old_hash.as_str()).push(" AND tenant_id = ").push_bind(r.tenant_id).push(")");
        }
        // The grant's state as a scalar subquery, never a join the planner could drive from
        // the grant side (see the PostgreSQL twin).
        update.push(
            ") AND (SELECT g.revoked_at IS NULL FROM grants g WHERE g.tenant_id = refresh_tokens.tenant_id \
             AND g.id = refresh_tokens.grant_id) RETURNING token_hash, tenant_id, grant_id",
        );
        update.build().fetch_all(connection).await.map_err(db_err)
    }

    /// Stores the successors and the events of a batch's rotations that happened.
    async fn insert_successors(tx: &mut Transaction<'_, Sqlite>, winners: &[&PendingRotation]) -> StoreResult<()> {
        let successors: Vec<&RefreshToken> = winners.iter().map(|r| &r.new_token).collect();
        Self::insert_refresh_token_rows(&mut **tx, &successors).await?;
        let events: Vec<&NewEvent> = winners.iter().map(|r| &r.issued_event).collect();
        Self::insert_event_rows(&mut **tx, &events).await
    }

    /// One multi-row insert of events (a group-committed batch, or a batch's rotations).
    async fn insert_event_rows<'c, E>(executor: E, events: &[&NewEvent]) -> StoreResult<()>
    where
        E: sqlx::Executor<'c, Database = Sqlite>,
    {
        let data = events.iter().map(|e| crate::sql::to_json!(e.data)).collect::<StoreResult<Vec<String>>>()?;
        let mut builder = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, tenant_id, kind, outcome, reason, occurred_at, user_id, client_id, ip, user_agent, data) ",
        );
        builder.push_values(events.iter().zip(data), |mut row, (event, data)| {
            row.push_bind(event.id)
                .push_bind(event.tenant_id)
                .push_bind(event.kind.as_str())
                .push_bind(event.outcome.as_str())
                .push_bind(event.reason.clone())
                .push_bind(Self::ts(event.occurred_at))
                .push_bind(event.user_id)
                .push_bind(event.client_id.clone())
                .push_bind(event.ip.clone())
                .push_bind(event.user_agent.clone())
                .push_bind(data);
        });
        builder.build().execute(executor).await.map_err(unique_or_db("event_id"))?;
        Ok(())
    }

    /// One multi-row insert of refresh tokens (one, or a rotation batch's successors).
    async fn insert_refresh_token_rows<'c, E>(executor: E, tokens: &[&RefreshToken]) -> StoreResult<()>
    where
        E: sqlx::Executor<'c, Database = Sqlite>,
    {
        let mut insert =
            sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO refresh_tokens (token_hash, tenant_id, grant_id, created_at, rotated_at) ");
        insert.push_values(tokens, |mut row, token| {
            row.push_bind(token.token_hash.as_str())
                .push_bind(token.tenant_id)
                .push_bind(token.grant_id)
                .push_bind(Self::ts(token.created_at))
                .push_bind(token.rotated_at.map(Self::ts));
        });
        insert.build().execute(executor).await.map_err(unique_or_db("refresh_token"))?;
        Ok(())
    }
}

/// Copies the write-ahead log into the database file beside the writer, so that the checkpoint
/// inside the writer's commit (which restarts the log, docs/adr/0004) finds little left to copy
/// and `fsync`: every write queued behind that commit waits for it. A `PASSIVE` checkpoint
/// never blocks the writer or a reader; when it holds the checkpoint lock at the moment a
/// commit wants it, that commit skips its checkpoint and a later one does it. Looks again soon
/// while the log grows, rarely while it does not; runs until `stop` (the store's `close()`),
/// then closes its connection, or until its store is dropped.
async fn copy_log_ahead(mut connection: SqliteConnection, stop: Arc<tokio::sync::Notify>) {
    let mut last_frame: Option<i64> = None;
    loop {
        // (busy, frames in the log, frames copied); busy = 1 and -1s when another checkpoint
        // held the lock, -1s when the database is not in WAL mode.
        let result = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut connection).await;
        let growing = match result {
            Ok((0, frames, _)) if frames >= 0 => {
                let growing = last_frame.is_some_and(|before| before != frames);
                last_frame = Some(frames);
                growing
            }
            Ok((0, _, _)) => false,
            // Another checkpoint ran: the log is busy.
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "copying the write-ahead log ahead failed");
                false
            }
        };
        tokio::select! {
            () = stop.notified() => break,
            () = tokio::time::sleep(if growing { COPY_AHEAD_BUSY } else { COPY_AHEAD_IDLE }) => {}
        }
    }
    let _ = sqlx::Connection::close(connection).await;
}

fn parse_time(column: &str, text: &str) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}: {text:?}")))
}

crate::sql::impl_store!(SqliteStore, ::sqlx::Sqlite);
