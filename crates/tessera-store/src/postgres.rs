//! PostgreSQL through sqlx, for deployments with more than one node. Owns the pool and the
//! retry of transactions that the server aborted to keep them serializable (SQLSTATE 40001,
//! and deadlocks, 40P01), which also keeps the code portable to CockroachDB and YugabyteDB.
//! The SQL itself lives in `sql.rs`.

use crate::migrations::EmbeddedMigration;
use crate::pool::{Pool, PoolSettings};
use crate::sql::db_err;
use crate::sql::{PendingRotation, unique_or_db};
use crate::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use tessera_core::NewEvent;
use tessera_core::model::RefreshToken;
use time::OffsetDateTime;
use uuid::Uuid;

const MAX_CONNECTIONS: usize = 16;

/// A request that cannot get a connection soon fails (and `/readyz` says so) rather than
/// piling up behind a saturated pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection idle for longer than this is pinged before it is used again.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// Connections are replaced after this long (sqlx's own default), so that a failover or a
/// pooler in front of the database sees them move.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Connections idle this long are closed (sqlx's own default): a burst's extra backends do not
/// stay on the database for ever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The PostgreSQL implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool<PgConnection>,
    /// The same pool: PostgreSQL lets writers wait on row locks, not on one database lock.
    writer: Pool<PgConnection>,
    /// Group-committed writes (see `group_commit.rs`).
    events: crate::group_commit::GroupCommit<tessera_core::NewEvent, ()>,
    rotations: crate::group_commit::GroupCommit<crate::sql::PendingRotation, bool>,
    /// None on PostgreSQL (the field exists for the shared constructor).
    _background: Option<std::sync::Arc<crate::sql::Background>>,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names (one connection is opened now, so
    /// a wrong URL fails here). Does not migrate: call [`crate::Maintenance::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse().map_err(db_err)?;
        let pool = Pool::<PgConnection>::new(
            options,
            PoolSettings {
                max_connections: MAX_CONNECTIONS,
                acquire_timeout: ACQUIRE_TIMEOUT,
                // A connection in steady use is known to be alive; one that sat idle (the
                // server may have restarted or a proxy dropped it) is pinged, and replaced if
                // the ping fails.
                ping_if_idle_for: Some(PING_IF_IDLE_FOR),
                max_lifetime: Some(MAX_LIFETIME),
                idle_timeout: Some(IDLE_TIMEOUT),
            },
        )?;
        pool.acquire().await?.done();
        Ok(Self::from_pools(pool.clone(), pool))
    }

    const MIGRATIONS: &'static [EmbeddedMigration] = crate::migrations::POSTGRES;

    async fn begin_write_on(writer: &mut PgConnection) -> StoreResult<Transaction<'_, Postgres>> {
        sqlx::Connection::begin(writer).await.map_err(db_err)
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

    /// Spends every unspent token of a rotation batch whose grant is active, in one `UPDATE`
    /// over the batch's keys bound as arrays: one statement text whatever the batch's size, so
    /// each connection parses and plans it once (a `VALUES` or `OR` list is a new statement
    /// for every size, which the per-connection statement cache keeps evicting). Returns the
    /// spent ones' `token_hash, tenant_id, grant_id`.
    ///
    /// The batch drives the join by the token's key, and the grant's state stays a scalar
    /// subquery: a plan driven from the grant side would read the family's every token
    /// through the `(tenant_id, grant_id)` index (`the_rotation_batch_is_found_by_the_token_key`
    /// holds the plan).
    async fn spend_refresh_tokens(
        connection: &mut PgConnection,
        now: OffsetDateTime,
        batch: &[PendingRotation],
    ) -> StoreResult<Vec<PgRow>> {
        let (hashes, tenants): (Vec<&str>, Vec<Uuid>) = batch.iter().map(|r| (r.old_hash.as_str(), r.tenant_id)).unzip();
        sqlx::query(SPEND_REFRESH_TOKENS).bind(now).bind(hashes).bind(tenants).fetch_all(connection).await.map_err(db_err)
    }

    /// Stores the successors and the events of a batch's rotations that happened: one
    /// statement (two inserts into two tables, which CockroachDB allows in one statement too).
    async fn insert_successors(tx: &mut Transaction<'_, Postgres>, winners: &[&PendingRotation]) -> StoreResult<()> {
        let tokens: Vec<&RefreshToken> = winners.iter().map(|r| &r.new_token).collect();
        let events: Vec<&NewEvent> = winners.iter().map(|r| &r.issued_event).collect();
        let query = sqlx::query(INSERT_SUCCESSORS_AND_EVENTS);
        let query = bind_events(bind_refresh_tokens(query, &tokens), &events)?;
        query.execute(&mut **tx).await.map_err(unique_or_db("refresh_token_or_event"))?;
        Ok(())
    }

    /// Inserts events with their columns bound as arrays (one statement text for any count).
    async fn insert_event_rows<'c, E>(executor: E, events: &[&NewEvent]) -> StoreResult<()>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        bind_events(sqlx::query(INSERT_EVENTS), events)?.execute(executor).await.map_err(unique_or_db("event_id"))?;
        Ok(())
    }

    /// Inserts refresh tokens with their columns bound as arrays.
    async fn insert_refresh_token_rows<'c, E>(executor: E, tokens: &[&RefreshToken]) -> StoreResult<()>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        bind_refresh_tokens(sqlx::query(INSERT_REFRESH_TOKENS), tokens).execute(executor).await.map_err(unique_or_db("refresh_token"))?;
        Ok(())
    }
}

const SPEND_REFRESH_TOKENS: &str = "UPDATE refresh_tokens SET rotated_at = $1 \
     FROM UNNEST($2::text[], $3::uuid[]) AS b (token_hash, tenant_id) \
     WHERE refresh_tokens.token_hash = b.token_hash AND refresh_tokens.tenant_id = b.tenant_id \
     AND refresh_tokens.rotated_at IS NULL \
     AND (SELECT g.revoked_at IS NULL FROM grants g \
          WHERE g.tenant_id = refresh_tokens.tenant_id AND g.id = refresh_tokens.grant_id) \
     RETURNING refresh_tokens.token_hash, refresh_tokens.tenant_id, refresh_tokens.grant_id";

/// `$1`…`$5`: the refresh tokens' columns.
macro_rules! refresh_token_rows {
    () => {
        "INSERT INTO refresh_tokens (token_hash, tenant_id, grant_id, created_at, rotated_at) \
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::timestamptz[])"
    };
}

/// `$N`…`$N+10` (`N` = 1, or 6 after the refresh tokens): the events' columns.
macro_rules! event_rows {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $f:literal, $g:literal, $h:literal, $i:literal, $j:literal, $k:literal) => {
        concat!(
            "INSERT INTO events (id, tenant_id, kind, outcome, reason, occurred_at, user_id, client_id, ip, user_agent, data) \
             SELECT * FROM UNNEST($",
            $a,
            "::uuid[], $",
            $b,
            "::uuid[], $",
            $c,
            "::text[], $",
            $d,
            "::text[], $",
            $e,
            "::text[], $",
            $f,
            "::timestamptz[], $",
            $g,
            "::uuid[], $",
            $h,
            "::text[], $",
            $i,
            "::text[], $",
            $j,
            "::text[], $",
            $k,
            "::text[])"
        )
    };
}

const INSERT_REFRESH_TOKENS: &str = refresh_token_rows!();
const INSERT_EVENTS: &str = event_rows!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
const INSERT_SUCCESSORS_AND_EVENTS: &str =
    concat!("WITH successors AS (", refresh_token_rows!(), ") ", event_rows!(6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16));

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds the five columns of `refresh_token_rows!` as arrays.
fn bind_refresh_tokens<'q>(query: PgQuery<'q>, tokens: &[&RefreshToken]) -> PgQuery<'q> {
    query
        .bind(tokens.iter().map(|t| t.token_hash.clone()).collect::<Vec<String>>())
        .bind(tokens.iter().map(|t| t.tenant_id).collect::<Vec<Uuid>>())
        .bind(tokens.iter().map(|t| t.grant_id).collect::<Vec<Uuid>>())
        .bind(tokens.iter().map(|t| t.created_at).collect::<Vec<OffsetDateTime>>())
        .bind(tokens.iter().map(|t| t.rotated_at).collect::<Vec<Option<OffsetDateTime>>>())
}

/// Binds the eleven columns of `event_rows!` as arrays.
fn bind_events<'q>(query: PgQuery<'q>, events: &[&NewEvent]) -> StoreResult<PgQuery<'q>> {
    let data = events.iter().map(|e| crate::sql::to_json!(e.data)).collect::<StoreResult<Vec<String>>>()?;
    let text = |f: fn(&NewEvent) -> Option<&String>| events.iter().map(|e| f(e).cloned()).collect::<Vec<Option<String>>>();
    Ok(query
        .bind(events.iter().map(|e| e.id).collect::<Vec<Uuid>>())
        .bind(events.iter().map(|e| e.tenant_id).collect::<Vec<Uuid>>())
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<&'static str>>())
        .bind(events.iter().map(|e| e.outcome.as_str()).collect::<Vec<&'static str>>())
        .bind(text(|e| e.reason.as_ref()))
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<OffsetDateTime>>())
        .bind(events.iter().map(|e| e.user_id).collect::<Vec<Option<Uuid>>>())
        .bind(text(|e| e.client_id.as_ref()))
        .bind(text(|e| e.ip.as_ref()))
        .bind(text(|e| e.user_agent.as_ref()))
        .bind(data))
}

crate::sql::impl_store!(PostgresStore, ::sqlx::Postgres);

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The batch's spend must find each token by its key even on tables without statistics
    /// (a fresh install), in the plan a connection settles on after a few executions (the
    /// generic plan) as in the first ones: driven from the grant side, it would read a long
    /// family's every token through `(tenant_id, grant_id)`.
    #[tokio::test]
    async fn the_rotation_batch_is_found_by_the_token_key() {
        let Some(base) = crate::test_postgres_url("the_rotation_batch_is_found_by_the_token_key") else {
            return;
        };
        let name = format!("tessera_plan_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.expect("create database");
        let (without_query, query) = base.split_once('?').map_or((base.as_str(), None), |(a, q)| (a, Some(q)));
        let (server, _) = without_query.rsplit_once('/').expect("a database URL");
        let url = format!("{server}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
        let outcome = tokio::spawn(async move {
            let store = PostgresStore::connect(&url).await.expect("connect store");
            crate::Maintenance::migrate(&store).await.expect("migrate");
            let mut conn = PgConnection::connect(&url).await.expect("connect");
            let tenant = Uuid::now_v7();
            let grant = Uuid::now_v7();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "INSERT INTO tenants VALUES ('{tenant}', 'plan', 'Plan', '{{}}', now());
                 INSERT INTO grants (id, tenant_id, client_id, scope, amr, created_at, expires_at)
                     VALUES ('{grant}', '{tenant}', 'app', 'openid', '[]', now(), now() + interval '1 day');
                 INSERT INTO refresh_tokens (token_hash, tenant_id, grant_id, created_at, rotated_at)
                     SELECT 'family-' || i, '{tenant}', '{grant}', now(), now() FROM generate_series(1, 20000) i;
                 PREPARE spend (timestamptz, text[], uuid[]) AS {SPEND_REFRESH_TOKENS};"
            )))
            .execute(&mut conn)
            .await
            .expect("set up a long family");
            for mode in ["force_custom_plan", "force_generic_plan"] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}"))).execute(&mut conn).await.expect("set");
                let plan: (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN (FORMAT JSON) EXECUTE spend (now(), ARRAY['family-7'], ARRAY['{tenant}'::uuid])"
                )))
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("explain ({mode}): {e}"));
                let text = plan.0.to_string();
                assert!(text.contains("refresh_tokens_pkey"), "{mode}: the token is not found by its key: {text}");
                assert!(!text.contains("refresh_tokens_grant_idx"), "{mode}: the plan reads the family: {text}");
            }
        })
        .await;
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
