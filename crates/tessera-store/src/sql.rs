//! The SQL both backends share. Every statement is written once: SQLite accepts PostgreSQL's
//! numbered `$n` placeholders, and both speak `RETURNING` and `ON CONFLICT`. `impl_store!`
//! expands every storage trait for a backend (`sqlite.rs`, `postgres.rs`); what differs
//! between them stays in those modules, as inherent items of the store type that the expanded
//! code calls:
//!
//! - `pool: pool::Pool<Connection>` (field): where reads run (`pool.rs`: `&pool` is an sqlx
//!   executor for one statement);
//! - `writer: pool::Pool<Connection>` (field): where writes run — the same pool on
//!   PostgreSQL, a pool of one connection on SQLite, whose one writer at a time then waits in
//!   the pool's queue instead of in SQLite's sleeping busy handler;
//! - `begin_write_on(&mut Connection)`: a transaction that takes the write lock up front
//!   (SQLite's `BEGIN IMMEDIATE`) or a plain `BEGIN` (PostgreSQL);
//! - `is_retryable(&StoreError)`: whether a failed transaction may simply run again
//!   (PostgreSQL serialization failures and deadlocks);
//! - `ts(OffsetDateTime)` / `get_ts` / `get_opt_ts`: how a point in time is bound and read;
//! - `MIGRATIONS`: the embedded migrations of the dialect.
//!
//! Write paths that touch more than one row run in `write_tx!`; single-statement writes run on
//! the pool inside `retrying!`. Both run the work again when the backend calls the failure
//! transient (a PostgreSQL serialization failure or deadlock), so that the same code holds
//! under SERIALIZABLE isolation (CockroachDB, YugabyteDB, or a PostgreSQL configured so).
//! Reads run on the pool directly.

use crate::{StoreError, StoreResult};
use std::future::Future;
use std::time::Duration;

/// The columns of `users`, in the order `map_user_columns` takes them.
pub(crate) const USER_COLUMNS: [&str; 11] = [
    "id",
    "tenant_id",
    "email",
    "email_canonical",
    "email_verified",
    "password_hash",
    "given_name",
    "family_name",
    "disabled",
    "created_at",
    "updated_at",
];

/// The same columns as a join selects them from `users u` (see `joined_user_select!`).
pub(crate) const JOINED_USER_COLUMNS: [&str; 11] = [
    "u_id",
    "u_tenant_id",
    "u_email",
    "u_email_canonical",
    "u_email_verified",
    "u_password_hash",
    "u_given_name",
    "u_family_name",
    "u_disabled",
    "u_created_at",
    "u_updated_at",
];

/// The select list that puts `users u` under the names of `JOINED_USER_COLUMNS` (a macro so
/// that it can be `concat!`ed into a statement at compile time).
macro_rules! joined_user_select {
    () => {
        "u.id AS u_id, u.tenant_id AS u_tenant_id, u.email AS u_email, u.email_canonical AS u_email_canonical, \
         u.email_verified AS u_email_verified, u.password_hash AS u_password_hash, u.given_name AS u_given_name, \
         u.family_name AS u_family_name, u.disabled AS u_disabled, u.created_at AS u_created_at, u.updated_at AS u_updated_at"
    };
}
pub(crate) use joined_user_select;

/// The most events one group-committed insert carries (11 binds each, far below both
/// databases' limits).
pub(crate) const MAX_EVENT_BATCH: usize = 512;

/// The most rotations one group-committed transaction carries (19 binds each).
pub(crate) const MAX_ROTATION_BATCH: usize = 128;

/// One refresh-token rotation waiting for its batch (see `group_commit.rs`).
#[derive(Debug, Clone)]
pub(crate) struct PendingRotation {
    pub tenant_id: uuid::Uuid,
    pub old_hash: String,
    pub new_token: tessera_core::model::RefreshToken,
    pub issued_event: tessera_core::NewEvent,
}

/// For each requested (tenant, token hash) in order, whether this request spends it: the batch
/// spent it and no earlier request of the batch claimed it. Two requests for one token in one
/// batch are a race that only one may win, as if they had come one after the other.
pub(crate) fn first_claims<'a>(
    requested: impl Iterator<Item = (uuid::Uuid, &'a str)>,
    spent: &std::collections::HashSet<(uuid::Uuid, String)>,
) -> Vec<bool> {
    let mut claimed = std::collections::HashSet::new();
    requested.map(|(tenant, hash)| spent.contains(&(tenant, hash.to_owned())) && claimed.insert((tenant, hash))).collect()
}

/// A rotation whose successor token names another grant or tenant than the token it replaces:
/// a caller's bug, refused before anything is written.
pub(crate) fn foreign_successor() -> StoreError {
    StoreError::Database("the successor refresh token must belong to the same grant and tenant".into())
}

/// How often a transaction that failed with a retryable error is run again.
pub(crate) const MAX_RETRIES: u32 = 5;

/// A task that lives as long as the store that started it: stopped by the store's `close()`
/// (it then finishes its work and closes what it holds), aborted when the last clone of the
/// store is dropped.
#[derive(Debug)]
pub(crate) struct Background {
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: std::sync::Arc<tokio::sync::Notify>,
}

impl Background {
    /// Starts `work`, which should return soon after its `stop` signal is notified.
    pub(crate) fn start<F, Fut>(work: F) -> Self
    where
        F: FnOnce(std::sync::Arc<tokio::sync::Notify>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(work(stop.clone()));
        Self { task: std::sync::Mutex::new(Some(task)), stop }
    }

    /// Asks the task to stop and waits (a few seconds at most) until it has.
    pub(crate) async fn stop(&self) {
        self.stop.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

/// Maps a unique violation to `Conflict(label)`, anything else to `Database`.
pub(crate) fn unique_or_db(label: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        if e.as_database_error().is_some_and(|d| d.is_unique_violation()) { StoreError::Conflict(label) } else { db_err(e) }
    }
}

/// The SQLSTATE (PostgreSQL) or result code (SQLite) behind a `Database` error.
pub(crate) fn error_code(e: &StoreError) -> Option<String> {
    let StoreError::Database(source) = e else {
        return None;
    };
    let sqlx_error = source.downcast_ref::<sqlx::Error>()?;
    Some(sqlx_error.as_database_error()?.code()?.into_owned())
}

/// `Err(NotFound)` when a statement that targets one row changed none.
pub(crate) fn expect_found(rows_affected: u64) -> StoreResult<()> {
    if rows_affected == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Awaits `f`. Exists so that the async blocks `retrying!` and `write_tx!` build get their
/// output type (`StoreResult<_>`) from this bound, which lets `?` inside them convert errors.
pub(crate) async fn run<T, F>(f: F) -> StoreResult<T>
where
    F: Future<Output = StoreResult<T>>,
{
    f.await
}

/// Exponential backoff with jitter, so that two transactions that just collided do not
/// collide again in lockstep.
pub(crate) async fn backoff(attempt: u32) {
    let base_ms = 5u64 << attempt.min(6);
    let jitter_ms = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % (base_ms + 1);
    tokio::time::sleep(Duration::from_millis(base_ms + jitter_ms)).await;
}

/// Runs `$body` (an async block's body yielding `StoreResult<_>`) again while it fails with an
/// error `is_retryable` calls transient, at most `MAX_RETRIES` more times. Used bare for
/// single-statement writes (PostgreSQL does not retry an implicit transaction that lost a
/// serialization conflict either) and through `write_tx!` for transactions.
macro_rules! retrying {
    ($body:block) => {{
        let mut attempt: u32 = 0;
        loop {
            let result = $crate::sql::run(async { $body }).await;
            match result {
                Err(e) if attempt < $crate::sql::MAX_RETRIES && Self::is_retryable(&e) => {
                    attempt += 1;
                    ::tracing::debug!(attempt, error = %e, "retrying after a transient database error");
                    $crate::sql::backoff(attempt).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retrying;

/// Runs `$body` in a write transaction of `$store`, with the transaction bound to `$tx`;
/// commits when the body returns `Ok` (also through an early `return Ok(..)`), rolls back on
/// `Err` (by dropping the transaction), and runs the whole transaction again when
/// `is_retryable` says the failure was transient. The body may therefore run more than once:
/// it must only borrow what it captures.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:block) => {
        $crate::sql::retrying!({
            let mut connection = $store.writer.acquire().await?;
            let mut $tx = Self::begin_write_on(&mut connection).await?;
            let value = $crate::sql::run(async { $body }).await?;
            $tx.commit().await.map_err($crate::sql::db_err)?;
            connection.done();
            Ok(value)
        })
    };
}
pub(crate) use write_tx;

/// Reads a TEXT column holding JSON into whatever type the context expects.
macro_rules! json_col {
    ($row:expr, $col:literal) => {
        ::serde_json::from_str(&Self::get::<String>($row, $col)?)
            .map_err(|e| $crate::StoreError::Corrupt(format!(concat!("column ", $col, ": {}"), e)))
    };
}
pub(crate) use json_col;

/// Reads a TEXT column holding a snake_case enum name (`EventKind`, `Outcome`) through the
/// enum's serde representation, which is the one `as_str` writes.
macro_rules! enum_col {
    ($row:expr, $col:literal) => {
        ::serde_json::from_value(::serde_json::Value::String(Self::get::<String>($row, $col)?))
            .map_err(|e| $crate::StoreError::Corrupt(format!(concat!("column ", $col, ": {}"), e)))
    };
}
pub(crate) use enum_col;

/// Encodes a value as JSON text for a TEXT column.
macro_rules! to_json {
    ($value:expr) => {
        ::serde_json::to_string(&$value).map_err(|e| $crate::StoreError::Corrupt(format!("cannot encode JSON: {e}")))
    };
}
pub(crate) use to_json;

/// Implements every storage trait of `lib.rs` for `$store` over the sqlx database `$db`.
///
/// Each backend provides, besides its pools and type conversions, the statements whose best
/// form differs between the two: `insert_event_rows` and `insert_refresh_token_rows` (a
/// `VALUES` list on SQLite, arrays bound once on PostgreSQL), and the rotation batch's
/// `spend_refresh_tokens` and `insert_successors`.
macro_rules! impl_store {
    ($store:ident, $db:ty) => {
        /// The storage traits, expanded from `sql::impl_store!`. A child module, so that its
        /// imports cannot clash with the backend's; it still sees the backend's private items.
        mod shared {
            use super::$store;
            use $crate::sql::{db_err, enum_col, expect_found, json_col, retrying, to_json, unique_or_db, write_tx};
            use $crate::{
                AuthorizationRequestStore, ClientStore, CodeRedemption, ConsentStore, EventStore, FlowStore,
                GrantStore, InitialAccessTokenStore, KeyStore, Maintenance, RefreshTokenRecord, Rotation, SessionStore, StoreError,
                StoreResult, TenantStore, UserStore,
            };
            use ::tessera_core::NewEvent;
            use ::tessera_core::model::*;
            use ::time::OffsetDateTime;
            use ::uuid::Uuid;

            type DbRow = <$db as ::sqlx::Database>::Row;
            type DbPool = $crate::pool::Pool<<$db as ::sqlx::Database>::Connection>;

            /// Row mapping and the inserts more than one method needs.
            impl $store {
                pub(super) fn get<'r, T>(row: &'r DbRow, column: &str) -> StoreResult<T>
                where
                    T: ::sqlx::Decode<'r, $db> + ::sqlx::Type<$db>,
                {
                    ::sqlx::Row::try_get(row, column).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
                }

                fn map_tenant(row: &DbRow) -> StoreResult<Tenant> {
                    Ok(Tenant {
                        id: Self::get(row, "id")?,
                        slug: Self::get(row, "slug")?,
                        name: Self::get(row, "name")?,
                        branding: json_col!(row, "branding")?,
                        created_at: Self::get_ts(row, "created_at")?,
                    })
                }

                fn map_user(row: &DbRow) -> StoreResult<User> {
                    Self::map_user_columns(row, &$crate::sql::USER_COLUMNS)
                }

                /// A customer read from `columns` (in the order of [`USER_COLUMNS`]), so that a
                /// join can carry one under other names.
                fn map_user_columns(row: &DbRow, columns: &[&str; 11]) -> StoreResult<User> {
                    let [id, tenant_id, email, email_canonical, email_verified, password_hash, given_name, family_name, disabled, created_at, updated_at] =
                        *columns;
                    Ok(User {
                        id: Self::get(row, id)?,
                        tenant_id: Self::get(row, tenant_id)?,
                        email: Self::get(row, email)?,
                        email_canonical: Self::get(row, email_canonical)?,
                        email_verified: Self::get(row, email_verified)?,
                        password_hash: Self::get(row, password_hash)?,
                        given_name: Self::get(row, given_name)?,
                        family_name: Self::get(row, family_name)?,
                        disabled: Self::get(row, disabled)?,
                        created_at: Self::get_ts(row, created_at)?,
                        updated_at: Self::get_ts(row, updated_at)?,
                    })
                }

                /// The customer a `LEFT JOIN users u` (selected with `joined_user_select!`) found,
                /// if it found one.
                fn map_joined_user(row: &DbRow) -> StoreResult<Option<User>> {
                    let user_id: Option<Uuid> = Self::get(row, "u_id")?;
                    user_id.map(|_| Self::map_user_columns(row, &$crate::sql::JOINED_USER_COLUMNS)).transpose()
                }

                fn map_client(row: &DbRow) -> StoreResult<Client> {
                    Ok(Client {
                        id: Self::get(row, "id")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        client_id: Self::get(row, "client_id")?,
                        secret_hash: Self::get(row, "secret_hash")?,
                        name: Self::get(row, "name")?,
                        redirect_uris: json_col!(row, "redirect_uris")?,
                        post_logout_redirect_uris: json_col!(row, "post_logout_redirect_uris")?,
                        grant_types: json_col!(row, "grant_types")?,
                        scopes: json_col!(row, "scopes")?,
                        first_party: Self::get(row, "first_party")?,
                        public: Self::get(row, "is_public")?,
                        id_token_signed_response_alg: Self::get(row, "id_token_signed_response_alg")?,
                        created_at: Self::get_ts(row, "created_at")?,
                    })
                }

                fn map_session(row: &DbRow) -> StoreResult<Session> {
                    Ok(Session {
                        id: Self::get(row, "id")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        token_hash: Self::get(row, "token_hash")?,
                        user_id: Self::get(row, "user_id")?,
                        auth_time: Self::get_ts(row, "auth_time")?,
                        amr: json_col!(row, "amr")?,
                        created_at: Self::get_ts(row, "created_at")?,
                        last_seen_at: Self::get_ts(row, "last_seen_at")?,
                        expires_at: Self::get_ts(row, "expires_at")?,
                        ended_at: Self::get_opt_ts(row, "ended_at")?,
                    })
                }

                fn map_flow(row: &DbRow) -> StoreResult<Flow> {
                    let kind: String = Self::get(row, "kind")?;
                    Ok(Flow {
                        id: Self::get(row, "id")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        kind: FlowKind::parse(&kind)
                            .ok_or_else(|| StoreError::Corrupt(format!("column kind: unknown flow kind {kind:?}")))?,
                        csrf_token_hash: Self::get(row, "csrf_token_hash")?,
                        authorization_request_id: Self::get(row, "authorization_request_id")?,
                        login_hint: Self::get(row, "login_hint")?,
                        created_at: Self::get_ts(row, "created_at")?,
                        expires_at: Self::get_ts(row, "expires_at")?,
                    })
                }

                fn map_code(row: &DbRow) -> StoreResult<AuthorizationCode> {
                    Ok(AuthorizationCode {
                        code_hash: Self::get(row, "code_hash")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        client_id: Self::get(row, "client_id")?,
                        user_id: Self::get(row, "user_id")?,
                        session_id: Self::get(row, "session_id")?,
                        redirect_uri: Self::get(row, "redirect_uri")?,
                        scope: json_col!(row, "scope")?,
                        nonce: Self::get(row, "nonce")?,
                        code_challenge: Self::get(row, "code_challenge")?,
                        auth_time: Self::get_ts(row, "auth_time")?,
                        amr: json_col!(row, "amr")?,
                        created_at: Self::get_ts(row, "created_at")?,
                        expires_at: Self::get_ts(row, "expires_at")?,
                        used_at: Self::get_opt_ts(row, "used_at")?,
                        grant_id: Self::get(row, "grant_id")?,
                    })
                }

                fn map_grant(row: &DbRow) -> StoreResult<Grant> {
                    Ok(Grant {
                        id: Self::get(row, "id")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        client_id: Self::get(row, "client_id")?,
                        user_id: Self::get(row, "user_id")?,
                        session_id: Self::get(row, "session_id")?,
                        scope: json_col!(row, "scope")?,
                        auth_time: Self::get_opt_ts(row, "auth_time")?,
                        amr: json_col!(row, "amr")?,
                        nonce: Self::get(row, "nonce")?,
                        created_at: Self::get_ts(row, "created_at")?,
                        expires_at: Self::get_ts(row, "expires_at")?,
                        revoked_at: Self::get_opt_ts(row, "revoked_at")?,
                    })
                }

                fn map_consent(row: &DbRow) -> StoreResult<Consent> {
                    Ok(Consent {
                        tenant_id: Self::get(row, "tenant_id")?,
                        user_id: Self::get(row, "user_id")?,
                        client_id: Self::get(row, "client_id")?,
                        scopes: json_col!(row, "scopes")?,
                        granted_at: Self::get_ts(row, "granted_at")?,
                    })
                }

                fn map_signing_key(row: &DbRow) -> StoreResult<SigningKey> {
                    let status: String = Self::get(row, "status")?;
                    Ok(SigningKey {
                        id: Self::get(row, "id")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        kid: Self::get(row, "kid")?,
                        alg: Self::get(row, "alg")?,
                        status: KeyStatus::parse(&status)
                            .ok_or_else(|| StoreError::Corrupt(format!("column status: unknown key status {status:?}")))?,
                        private_key_encrypted: Self::get(row, "private_key_encrypted")?,
                        public_jwk: json_col!(row, "public_jwk")?,
                        created_at: Self::get_ts(row, "created_at")?,
                        publish_until: Self::get_opt_ts(row, "publish_until")?,
                    })
                }

                fn map_event(row: &DbRow) -> StoreResult<NewEvent> {
                    Ok(NewEvent {
                        id: Self::get(row, "id")?,
                        tenant_id: Self::get(row, "tenant_id")?,
                        kind: enum_col!(row, "kind")?,
                        outcome: enum_col!(row, "outcome")?,
                        reason: Self::get(row, "reason")?,
                        occurred_at: Self::get_ts(row, "occurred_at")?,
                        user_id: Self::get(row, "user_id")?,
                        client_id: Self::get(row, "client_id")?,
                        ip: Self::get(row, "ip")?,
                        user_agent: Self::get(row, "user_agent")?,
                        data: json_col!(row, "data")?,
                    })
                }

                async fn insert_event<'c, E>(executor: E, event: &NewEvent) -> StoreResult<()>
                where
                    E: ::sqlx::Executor<'c, Database = $db>,
                {
                    Self::insert_event_rows(executor, &[event]).await
                }

                /// The store over its reading and writing pools, with its group-commit writers
                /// started on the current runtime.
                pub(crate) fn from_pools(pool: DbPool, writer: DbPool) -> Self {
                    Self { events: Self::event_writer(writer.clone()), rotations: Self::rotation_writer(writer.clone()), writer, pool, _background: None }
                }

                /// The group-commit writer of this store's event appends.
                pub(crate) fn event_writer(writer: DbPool) -> $crate::group_commit::GroupCommit<NewEvent, ()> {
                    $crate::group_commit::GroupCommit::start($crate::sql::MAX_EVENT_BATCH, move |events: Vec<NewEvent>| {
                        let writer = writer.clone();
                        async move {
                            let rows: Vec<&NewEvent> = events.iter().collect();
                            retrying!({ Self::insert_event_rows(&writer, &rows).await }).map_err($crate::group_commit::BatchFailure::of)?;
                            Ok(vec![(); events.len()])
                        }
                    })
                }

                /// The group-commit writer of this store's refresh-token rotations.
                pub(crate) fn rotation_writer(writer: DbPool) -> $crate::group_commit::GroupCommit<$crate::sql::PendingRotation, bool> {
                    $crate::group_commit::GroupCommit::start($crate::sql::MAX_ROTATION_BATCH, move |batch: Vec<$crate::sql::PendingRotation>| {
                        let writer = writer.clone();
                        async move { Self::rotate_batch(&writer, &batch).await }
                    })
                }

                /// Spends, in one transaction, every old token of the batch that is unspent and
                /// whose grant is active, and stores its successor and its event; `true` for the
                /// rotations that happened. The others — spent before, revoked, unknown, or a
                /// second request for a token this batch already spends — are left untouched for
                /// `rotate_one` to judge, so that a replay is handled exactly as without batching.
                /// A handful of statements for the whole batch instead of four per rotation.
                async fn rotate_batch(
                    writer: &DbPool,
                    batch: &[$crate::sql::PendingRotation],
                ) -> Result<Vec<bool>, $crate::group_commit::BatchFailure> {
                    use $crate::group_commit::BatchFailure;
                    let Some(now) = batch.iter().map(|r| r.new_token.created_at).max() else {
                        return Ok(Vec::new());
                    };
                    // `Ok(Err(fault))`: an item's fault, found before the commit and rolled back.
                    let outcome: StoreResult<StoreResult<Vec<bool>>> = retrying!({
                        let mut connection = writer.acquire().await?;
                        let mut tx = Self::begin_write_on(&mut connection).await?;
                        let rows = Self::spend_refresh_tokens(&mut *tx, now, batch).await?;
                        let mut spent = ::std::collections::HashSet::with_capacity(rows.len());
                        for row in &rows {
                            let hash: String = Self::get(row, "token_hash")?;
                            let tenant_id: Uuid = Self::get(row, "tenant_id")?;
                            let grant_id: Uuid = Self::get(row, "grant_id")?;
                            if batch.iter().any(|r| r.tenant_id == tenant_id && r.old_hash == hash && r.new_token.grant_id != grant_id) {
                                // A caller bug. Rolling back keeps every old token of the batch
                                // usable; written one by one, only the faulty rotation fails.
                                return Ok(Err($crate::sql::foreign_successor()));
                            }
                            spent.insert((tenant_id, hash));
                        }
                        let won = $crate::sql::first_claims(batch.iter().map(|r| (r.tenant_id, r.old_hash.as_str())), &spent);
                        let winners: Vec<&$crate::sql::PendingRotation> = batch.iter().zip(&won).filter(|(_, w)| **w).map(|(r, _)| r).collect();
                        if !winners.is_empty() {
                            Self::insert_successors(&mut tx, &winners).await?;
                        }
                        tx.commit().await.map_err(db_err)?;
                        connection.done();
                        Ok(Ok(won))
                    });
                    match outcome {
                        Ok(Ok(won)) => Ok(won),
                        Ok(Err(fault)) => Err(BatchFailure::Item(fault)),
                        Err(e) => Err(BatchFailure::of(e)),
                    }
                }

                /// The rotation of one token outside any batch: spends it if it is unspent, or,
                /// if it was spent before, revokes its whole family and records `replay_event`.
                async fn rotate_one(
                    &self,
                    tenant_id: Uuid,
                    old_hash: &str,
                    new_token: &RefreshToken,
                    issued_event: &NewEvent,
                    replay_event: &NewEvent,
                ) -> StoreResult<Rotation> {
                    let now = new_token.created_at;
                    write_tx!(self, |tx| {
                        // As with codes, the conditional update decides: one caller spends the
                        // token, the others find `rotated_at` set.
                        let spent = ::sqlx::query(
                            "UPDATE refresh_tokens SET rotated_at = $3 \
                             WHERE tenant_id = $1 AND token_hash = $2 AND rotated_at IS NULL \
                             AND grant_id IN (SELECT id FROM grants WHERE tenant_id = $1 AND revoked_at IS NULL) \
                             RETURNING grant_id",
                        )
                        .bind(tenant_id)
                        .bind(old_hash)
                        .bind(Self::ts(now))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        if let Some(row) = spent {
                            let grant_id: Uuid = Self::get(&row, "grant_id")?;
                            if new_token.grant_id != grant_id || new_token.tenant_id != tenant_id {
                                // A caller bug; rolling back keeps the old token usable.
                                return Err($crate::sql::foreign_successor());
                            }
                            Self::insert_refresh_token(&mut *tx, new_token).await?;
                            Self::insert_event(&mut *tx, issued_event).await?;
                            return Ok(Rotation::Rotated);
                        }
                        let row = ::sqlx::query(
                            "SELECT r.grant_id, r.rotated_at, g.revoked_at \
                             FROM refresh_tokens r JOIN grants g ON g.tenant_id = r.tenant_id AND g.id = r.grant_id \
                             WHERE r.tenant_id = $1 AND r.token_hash = $2",
                        )
                        .bind(tenant_id)
                        .bind(old_hash)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        let Some(row) = row else {
                            return Ok(Rotation::Unknown);
                        };
                        let grant_id: Uuid = Self::get(&row, "grant_id")?;
                        let rotated_at = Self::get_opt_ts(&row, "rotated_at")?;
                        let revoked_at = Self::get_opt_ts(&row, "revoked_at")?;
                        if revoked_at.is_some() || rotated_at.is_none() {
                            return Ok(Rotation::Unknown);
                        }
                        // A spent token came back: either its rightful holder or a thief has the
                        // successor, and we cannot tell which, so the whole family ends.
                        Self::revoke_grant_row(&mut *tx, tenant_id, grant_id, now).await?;
                        Self::insert_event(&mut *tx, replay_event).await?;
                        Ok(Rotation::Replayed { grant_id })
                    })
                }

                async fn insert_grant<'c, E>(executor: E, grant: &Grant) -> StoreResult<()>
                where
                    E: ::sqlx::Executor<'c, Database = $db>,
                {
                    let scope = to_json!(grant.scope)?;
                    let amr = to_json!(grant.amr)?;
                    ::sqlx::query(
                        "INSERT INTO grants (id, tenant_id, client_id, user_id, session_id, scope, auth_time, amr, \
                         nonce, created_at, expires_at, revoked_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(grant.id)
                    .bind(grant.tenant_id)
                    .bind(&grant.client_id)
                    .bind(grant.user_id)
                    .bind(grant.session_id)
                    .bind(scope)
                    .bind(grant.auth_time.map(Self::ts))
                    .bind(amr)
                    .bind(&grant.nonce)
                    .bind(Self::ts(grant.created_at))
                    .bind(Self::ts(grant.expires_at))
                    .bind(grant.revoked_at.map(Self::ts))
                    .execute(executor)
                    .await
                    .map_err(unique_or_db("grant_id"))?;
                    Ok(())
                }

                async fn insert_refresh_token<'c, E>(executor: E, token: &RefreshToken) -> StoreResult<()>
                where
                    E: ::sqlx::Executor<'c, Database = $db>,
                {
                    Self::insert_refresh_token_rows(executor, &[token]).await
                }

                /// Revokes one grant if it is still active; the number of grants revoked (0 or 1).
                async fn revoke_grant_row<'c, E>(executor: E, tenant_id: Uuid, grant_id: Uuid, now: OffsetDateTime) -> StoreResult<u64>
                where
                    E: ::sqlx::Executor<'c, Database = $db>,
                {
                    let done = ::sqlx::query(
                        "UPDATE grants SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                    )
                    .bind(tenant_id)
                    .bind(grant_id)
                    .bind(Self::ts(now))
                    .execute(executor)
                    .await
                    .map_err(db_err)?;
                    Ok(done.rows_affected())
                }

                /// Creates the bookkeeping table. On PostgreSQL two nodes running `CREATE TABLE IF
                /// NOT EXISTS` at the same instant can both miss the table and one then fails on the
                /// catalog's unique index (23505, 42P07, or 42710 for the table's row type); running
                /// it again then finds the table.
                async fn create_migration_table(&self) -> StoreResult<()> {
                    let mut attempt = 0;
                    loop {
                        let result = ::sqlx::raw_sql($crate::migrations::MIGRATION_TABLE_DDL)
                            .execute(&self.writer)
                            .await
                            .map_err(db_err);
                        match result {
                            Err(e)
                                if attempt < 3
                                    && matches!($crate::sql::error_code(&e).as_deref(), Some("23505" | "42P07" | "42710")) =>
                            {
                                attempt += 1;
                                $crate::sql::backoff(attempt).await;
                            }
                            other => return other.map(|_| ()),
                        }
                    }
                }
            }

            #[::async_trait::async_trait]
            impl TenantStore for $store {
                async fn create_tenant(&self, tenant: &Tenant, event: &NewEvent) -> StoreResult<()> {
                    let branding = to_json!(tenant.branding)?;
                    write_tx!(self, |tx| {
                        ::sqlx::query("INSERT INTO tenants (id, slug, name, branding, created_at) VALUES ($1, $2, $3, $4, $5)")
                            .bind(tenant.id)
                            .bind(&tenant.slug)
                            .bind(&tenant.name)
                            .bind(&branding)
                            .bind(Self::ts(tenant.created_at))
                            .execute(&mut *tx)
                            .await
                            .map_err(unique_or_db("tenant_slug"))?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn find_tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
                    // Tenants are the one table looked up without a tenant: the slug names one.
                    let row = ::sqlx::query("SELECT * FROM tenants WHERE slug = $1")
                        .bind(slug)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_tenant).transpose()
                }

                async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
                    let rows = ::sqlx::query("SELECT * FROM tenants ORDER BY created_at, slug")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(Self::map_tenant).collect()
                }

                async fn update_tenant_branding(&self, tenant_id: Uuid, name: &str, branding: &Branding) -> StoreResult<()> {
                    let branding = to_json!(branding)?;
                    let done = retrying!({
                        ::sqlx::query("UPDATE tenants SET name = $2, branding = $3 WHERE id = $1")
                            .bind(tenant_id)
                            .bind(name)
                            .bind(&branding)
                            .execute(&self.writer)
                            .await
                            .map_err(db_err)
                    })?;
                    expect_found(done.rows_affected())
                }
            }

            #[::async_trait::async_trait]
            impl UserStore for $store {
                async fn create_user(&self, user: &User, event: &NewEvent) -> StoreResult<()> {
                    write_tx!(self, |tx| {
                        ::sqlx::query(
                            "INSERT INTO users (id, tenant_id, email, email_canonical, email_verified, password_hash, \
                             given_name, family_name, disabled, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        )
                        .bind(user.id)
                        .bind(user.tenant_id)
                        .bind(&user.email)
                        .bind(&user.email_canonical)
                        .bind(user.email_verified)
                        .bind(&user.password_hash)
                        .bind(&user.given_name)
                        .bind(&user.family_name)
                        .bind(user.disabled)
                        .bind(Self::ts(user.created_at))
                        .bind(Self::ts(user.updated_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(unique_or_db("user_email"))?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn import_users(&self, tenant_id: Uuid, users: &[User], event: &NewEvent) -> StoreResult<u64> {
                    // 11 binds a row: 1,000 rows stay far below both databases' parameter limits.
                    const ROWS_PER_STATEMENT: usize = 1000;
                    if users.iter().any(|u| u.tenant_id != tenant_id) {
                        return Err($crate::StoreError::Corrupt("import_users: a customer of another tenant".into()));
                    }
                    write_tx!(self, |tx| {
                        let mut added = 0u64;
                        for chunk in users.chunks(ROWS_PER_STATEMENT) {
                            let mut builder = ::sqlx::QueryBuilder::<$db>::new(
                                "INSERT INTO users (id, tenant_id, email, email_canonical, email_verified, password_hash, \
                                 given_name, family_name, disabled, created_at, updated_at) ",
                            );
                            builder.push_values(chunk, |mut row, user| {
                                row.push_bind(user.id)
                                    .push_bind(user.tenant_id)
                                    .push_bind(user.email.clone())
                                    .push_bind(user.email_canonical.clone())
                                    .push_bind(user.email_verified)
                                    .push_bind(user.password_hash.clone())
                                    .push_bind(user.given_name.clone())
                                    .push_bind(user.family_name.clone())
                                    .push_bind(user.disabled)
                                    .push_bind(Self::ts(user.created_at))
                                    .push_bind(Self::ts(user.updated_at));
                            });
                            builder.push(" ON CONFLICT (tenant_id, email_canonical) DO NOTHING");
                            added += builder.build().execute(&mut *tx).await.map_err(db_err)?.rows_affected();
                        }
                        Self::insert_event(&mut *tx, event).await?;
                        Ok(added)
                    })
                }

                async fn find_user(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Option<User>> {
                    let row = ::sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant_id)
                        .bind(user_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_user).transpose()
                }

                async fn find_user_by_email(&self, tenant_id: Uuid, email_canonical: &str) -> StoreResult<Option<User>> {
                    let row = ::sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND email_canonical = $2")
                        .bind(tenant_id)
                        .bind(email_canonical)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_user).transpose()
                }

                async fn list_users(&self, tenant_id: Uuid, limit: u32, before: Option<Uuid>) -> StoreResult<Vec<User>> {
                    // UUIDv7 ids sort by creation time, so the id is both the order and the cursor.
                    let rows = match before {
                        Some(before) => {
                            ::sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
                                .bind(tenant_id)
                                .bind(before)
                                .bind(i64::from(limit))
                                .fetch_all(&self.pool)
                                .await
                        }
                        None => ::sqlx::query("SELECT * FROM users WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2")
                            .bind(tenant_id)
                            .bind(i64::from(limit))
                            .fetch_all(&self.pool)
                            .await,
                    }
                    .map_err(db_err)?;
                    rows.iter().map(Self::map_user).collect()
                }

                async fn update_user_password_hash(
                    &self,
                    tenant_id: Uuid,
                    user_id: Uuid,
                    hash: &str,
                    now: OffsetDateTime,
                ) -> StoreResult<()> {
                    let done = retrying!({
                        ::sqlx::query(
                            "UPDATE users SET password_hash = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
                        )
                        .bind(tenant_id)
                        .bind(user_id)
                        .bind(hash)
                        .bind(Self::ts(now))
                        .execute(&self.writer)
                        .await
                        .map_err(db_err)
                    })?;
                    expect_found(done.rows_affected())
                }

                async fn set_user_disabled(
                    &self,
                    tenant_id: Uuid,
                    user_id: Uuid,
                    disabled: bool,
                    event: &NewEvent,
                ) -> StoreResult<()> {
                    let now = event.occurred_at;
                    write_tx!(self, |tx| {
                        let done = ::sqlx::query(
                            "UPDATE users SET disabled = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
                        )
                        .bind(tenant_id)
                        .bind(user_id)
                        .bind(disabled)
                        .bind(Self::ts(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        expect_found(done.rows_affected())?;
                        if disabled {
                            // A disabled customer keeps no way in: no browser session, no refresh
                            // token, no access token that introspection would still accept.
                            ::sqlx::query(
                                "UPDATE sessions SET ended_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND ended_at IS NULL",
                            )
                            .bind(tenant_id)
                            .bind(user_id)
                            .bind(Self::ts(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                            ::sqlx::query(
                                "UPDATE grants SET revoked_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
                            )
                            .bind(tenant_id)
                            .bind(user_id)
                            .bind(Self::ts(now))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        }
                        Self::insert_event(&mut *tx, event).await
                    })
                }
            }

            #[::async_trait::async_trait]
            impl ClientStore for $store {
                async fn create_client(&self, client: &Client, event: &NewEvent) -> StoreResult<()> {
                    let redirect_uris = to_json!(client.redirect_uris)?;
                    let post_logout_redirect_uris = to_json!(client.post_logout_redirect_uris)?;
                    let grant_types = to_json!(client.grant_types)?;
                    let scopes = to_json!(client.scopes)?;
                    write_tx!(self, |tx| {
                        ::sqlx::query(
                            "INSERT INTO clients (id, tenant_id, client_id, secret_hash, name, redirect_uris, \
                             post_logout_redirect_uris, grant_types, scopes, first_party, is_public, \
                             id_token_signed_response_alg, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                        )
                        .bind(client.id)
                        .bind(client.tenant_id)
                        .bind(&client.client_id)
                        .bind(&client.secret_hash)
                        .bind(&client.name)
                        .bind(&redirect_uris)
                        .bind(&post_logout_redirect_uris)
                        .bind(&grant_types)
                        .bind(&scopes)
                        .bind(client.first_party)
                        .bind(client.public)
                        .bind(&client.id_token_signed_response_alg)
                        .bind(Self::ts(client.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(unique_or_db("client_id"))?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn find_client(&self, tenant_id: Uuid, client_id: &str) -> StoreResult<Option<Client>> {
                    let row = ::sqlx::query("SELECT * FROM clients WHERE tenant_id = $1 AND client_id = $2")
                        .bind(tenant_id)
                        .bind(client_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_client).transpose()
                }

                async fn list_clients(&self, tenant_id: Uuid) -> StoreResult<Vec<Client>> {
                    let rows = ::sqlx::query("SELECT * FROM clients WHERE tenant_id = $1 ORDER BY created_at, client_id")
                        .bind(tenant_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(Self::map_client).collect()
                }

                async fn delete_client(&self, tenant_id: Uuid, client_id: &str, event: &NewEvent) -> StoreResult<()> {
                    let now = event.occurred_at;
                    write_tx!(self, |tx| {
                        let done = ::sqlx::query("DELETE FROM clients WHERE tenant_id = $1 AND client_id = $2")
                            .bind(tenant_id)
                            .bind(client_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        expect_found(done.rows_affected())?;
                        ::sqlx::query(
                            "UPDATE grants SET revoked_at = $3 WHERE tenant_id = $1 AND client_id = $2 AND revoked_at IS NULL",
                        )
                        .bind(tenant_id)
                        .bind(client_id)
                        .bind(Self::ts(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        // A client registered later under the same id must ask for consent again.
                        ::sqlx::query("DELETE FROM consents WHERE tenant_id = $1 AND client_id = $2")
                            .bind(tenant_id)
                            .bind(client_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }
            }

            #[::async_trait::async_trait]
            impl SessionStore for $store {
                async fn create_session(&self, session: &Session, event: &NewEvent) -> StoreResult<()> {
                    let amr = to_json!(session.amr)?;
                    write_tx!(self, |tx| {
                        ::sqlx::query(
                            "INSERT INTO sessions (id, tenant_id, token_hash, user_id, auth_time, amr, created_at, \
                             last_seen_at, expires_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        )
                        .bind(session.id)
                        .bind(session.tenant_id)
                        .bind(&session.token_hash)
                        .bind(session.user_id)
                        .bind(Self::ts(session.auth_time))
                        .bind(&amr)
                        .bind(Self::ts(session.created_at))
                        .bind(Self::ts(session.last_seen_at))
                        .bind(Self::ts(session.expires_at))
                        .bind(session.ended_at.map(Self::ts))
                        .execute(&mut *tx)
                        .await
                        .map_err(unique_or_db("session_token"))?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn find_session_by_token_hash(&self, tenant_id: Uuid, token_hash: &str) -> StoreResult<Option<Session>> {
                    let row = ::sqlx::query(
                        "SELECT * FROM sessions WHERE tenant_id = $1 AND token_hash = $2 AND ended_at IS NULL",
                    )
                    .bind(tenant_id)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                    row.as_ref().map(Self::map_session).transpose()
                }

                async fn touch_session(&self, tenant_id: Uuid, session_id: Uuid, now: OffsetDateTime) -> StoreResult<()> {
                    retrying!({
                        ::sqlx::query(
                            "UPDATE sessions SET last_seen_at = $3 WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL",
                        )
                        .bind(tenant_id)
                        .bind(session_id)
                        .bind(Self::ts(now))
                        .execute(&self.writer)
                        .await
                        .map_err(db_err)
                    })?;
                    Ok(())
                }

                async fn end_session(&self, tenant_id: Uuid, session_id: Uuid, event: &NewEvent) -> StoreResult<()> {
                    write_tx!(self, |tx| {
                        let done = ::sqlx::query(
                            "UPDATE sessions SET ended_at = $3 WHERE tenant_id = $1 AND id = $2 AND ended_at IS NULL",
                        )
                        .bind(tenant_id)
                        .bind(session_id)
                        .bind(Self::ts(event.occurred_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        // Idempotent: ending an ended (or unknown) session records nothing.
                        if done.rows_affected() > 0 {
                            Self::insert_event(&mut *tx, event).await?;
                        }
                        Ok(())
                    })
                }
            }

            #[::async_trait::async_trait]
            impl FlowStore for $store {
                async fn create_flow(&self, flow: &Flow) -> StoreResult<()> {
                    retrying!({
                        ::sqlx::query(
                            "INSERT INTO flows (id, tenant_id, kind, csrf_token_hash, authorization_request_id, login_hint, \
                             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(flow.id)
                        .bind(flow.tenant_id)
                        .bind(flow.kind.as_str())
                        .bind(&flow.csrf_token_hash)
                        .bind(flow.authorization_request_id)
                        .bind(&flow.login_hint)
                        .bind(Self::ts(flow.created_at))
                        .bind(Self::ts(flow.expires_at))
                        .execute(&self.writer)
                        .await
                        .map_err(unique_or_db("flow_id"))
                    })?;
                    Ok(())
                }

                async fn find_flow(&self, tenant_id: Uuid, flow_id: Uuid) -> StoreResult<Option<Flow>> {
                    let row = ::sqlx::query("SELECT * FROM flows WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant_id)
                        .bind(flow_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_flow).transpose()
                }

                async fn delete_flow(&self, tenant_id: Uuid, flow_id: Uuid) -> StoreResult<bool> {
                    let done = retrying!({
                        ::sqlx::query("DELETE FROM flows WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(flow_id)
                            .execute(&self.writer)
                            .await
                            .map_err(db_err)
                    })?;
                    Ok(done.rows_affected() > 0)
                }
            }

            #[::async_trait::async_trait]
            impl AuthorizationRequestStore for $store {
                async fn create_authorization_request(&self, request: &AuthorizationRequest) -> StoreResult<()> {
                    let json = to_json!(request)?;
                    retrying!({
                        ::sqlx::query(
                            "INSERT INTO authorization_requests (id, tenant_id, request, expires_at) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(request.id)
                        .bind(request.tenant_id)
                        .bind(&json)
                        .bind(Self::ts(request.expires_at))
                        .execute(&self.writer)
                        .await
                        .map_err(unique_or_db("authorization_request_id"))
                    })?;
                    Ok(())
                }

                async fn find_authorization_request(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<AuthorizationRequest>> {
                    let row = ::sqlx::query("SELECT request FROM authorization_requests WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant_id)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(|row| json_col!(row, "request")).transpose()
                }

                async fn delete_authorization_request(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<bool> {
                    let done = retrying!({
                        ::sqlx::query("DELETE FROM authorization_requests WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(id)
                            .execute(&self.writer)
                            .await
                            .map_err(db_err)
                    })?;
                    Ok(done.rows_affected() > 0)
                }
            }

            #[::async_trait::async_trait]
            impl GrantStore for $store {
                async fn create_authorization_code(&self, code: &AuthorizationCode) -> StoreResult<()> {
                    let scope = to_json!(code.scope)?;
                    let amr = to_json!(code.amr)?;
                    retrying!({
                        ::sqlx::query(
                            "INSERT INTO authorization_codes (code_hash, tenant_id, client_id, user_id, session_id, \
                             redirect_uri, scope, nonce, code_challenge, auth_time, amr, created_at, expires_at, used_at, \
                             grant_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                        )
                        .bind(&code.code_hash)
                        .bind(code.tenant_id)
                        .bind(&code.client_id)
                        .bind(code.user_id)
                        .bind(code.session_id)
                        .bind(&code.redirect_uri)
                        .bind(&scope)
                        .bind(&code.nonce)
                        .bind(&code.code_challenge)
                        .bind(Self::ts(code.auth_time))
                        .bind(&amr)
                        .bind(Self::ts(code.created_at))
                        .bind(Self::ts(code.expires_at))
                        .bind(code.used_at.map(Self::ts))
                        .bind(code.grant_id)
                        .execute(&self.writer)
                        .await
                        .map_err(unique_or_db("authorization_code"))
                    })?;
                    Ok(())
                }

                async fn redeem_authorization_code(
                    &self,
                    tenant_id: Uuid,
                    code_hash: &str,
                    new_grant_id: Uuid,
                    grant_expires_at: OffsetDateTime,
                    now: OffsetDateTime,
                ) -> StoreResult<CodeRedemption> {
                    write_tx!(self, |tx| {
                        // The conditional update is the decision: of concurrent redemptions exactly
                        // one finds `used_at` still NULL (PostgreSQL makes the others wait for the
                        // row and re-check; SQLite's BEGIN IMMEDIATE runs them one after another).
                        let redeemed = ::sqlx::query(
                            "UPDATE authorization_codes SET used_at = $3, grant_id = $4 \
                             WHERE tenant_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING *",
                        )
                        .bind(tenant_id)
                        .bind(code_hash)
                        .bind(Self::ts(now))
                        .bind(new_grant_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        if let Some(row) = redeemed {
                            let code = Self::map_code(&row)?;
                            let grant = Grant::from_code(&code, new_grant_id, now, grant_expires_at);
                            Self::insert_grant(&mut *tx, &grant).await?;
                            return Ok(CodeRedemption::Redeemed(code));
                        }
                        let row = ::sqlx::query("SELECT * FROM authorization_codes WHERE tenant_id = $1 AND code_hash = $2")
                            .bind(tenant_id)
                            .bind(code_hash)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        let Some(row) = row else {
                            return Ok(CodeRedemption::Unknown);
                        };
                        let code = Self::map_code(&row)?;
                        // A code seen twice may have been stolen: whatever the first redemption
                        // obtained stops working (RFC 6749 §4.1.2).
                        if let Some(grant_id) = code.grant_id {
                            Self::revoke_grant_row(&mut *tx, tenant_id, grant_id, now).await?;
                        }
                        Ok(CodeRedemption::Replayed(code))
                    })
                }

                async fn create_grant(&self, grant: &Grant) -> StoreResult<()> {
                    retrying!({ Self::insert_grant(&self.writer, grant).await })
                }

                async fn find_grant(&self, tenant_id: Uuid, grant_id: Uuid) -> StoreResult<Option<Grant>> {
                    let row = ::sqlx::query("SELECT * FROM grants WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant_id)
                        .bind(grant_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_grant).transpose()
                }

                async fn find_grant_and_user(&self, tenant_id: Uuid, grant_id: Uuid) -> StoreResult<Option<(Grant, Option<User>)>> {
                    let row = ::sqlx::query(::std::concat!(
                        "SELECT g.*, ",
                        $crate::sql::joined_user_select!(),
                        " FROM grants g LEFT JOIN users u ON u.tenant_id = g.tenant_id AND u.id = g.user_id \
                         WHERE g.tenant_id = $1 AND g.id = $2",
                    ))
                    .bind(tenant_id)
                    .bind(grant_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    Ok(Some((Self::map_grant(&row)?, Self::map_joined_user(&row)?)))
                }

                async fn revoke_grant(&self, tenant_id: Uuid, grant_id: Uuid, event: &NewEvent) -> StoreResult<()> {
                    write_tx!(self, |tx| {
                        let revoked = Self::revoke_grant_row(&mut *tx, tenant_id, grant_id, event.occurred_at).await?;
                        // Idempotent: revoking a revoked (or unknown) grant records nothing.
                        if revoked > 0 {
                            Self::insert_event(&mut *tx, event).await?;
                        }
                        Ok(())
                    })
                }

                async fn create_refresh_token(&self, token: &RefreshToken, event: &NewEvent) -> StoreResult<()> {
                    write_tx!(self, |tx| {
                        Self::insert_refresh_token(&mut *tx, token).await?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn find_refresh_token(&self, tenant_id: Uuid, token_hash: &str) -> StoreResult<Option<RefreshTokenRecord>> {
                    let row = ::sqlx::query(::std::concat!(
                        "SELECT r.token_hash, r.created_at AS token_created_at, r.rotated_at, g.*, ",
                        $crate::sql::joined_user_select!(),
                        // The token is found by its key first (`LIMIT 1` keeps the planner from
                        // flattening the subquery): on tables without statistics yet, as after a
                        // fresh install, PostgreSQL otherwise starts from the tenant's grants and
                        // reads each family's every token through the grant index.
                        " FROM (SELECT token_hash, tenant_id, grant_id, created_at, rotated_at FROM refresh_tokens \
                         WHERE tenant_id = $1 AND token_hash = $2 LIMIT 1) r \
                         JOIN grants g ON g.tenant_id = r.tenant_id AND g.id = r.grant_id \
                         LEFT JOIN users u ON u.tenant_id = g.tenant_id AND u.id = g.user_id",
                    ))
                    .bind(tenant_id)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let grant = Self::map_grant(&row)?;
                    let token = RefreshToken {
                        token_hash: Self::get(&row, "token_hash")?,
                        tenant_id: grant.tenant_id,
                        grant_id: grant.id,
                        created_at: Self::get_ts(&row, "token_created_at")?,
                        rotated_at: Self::get_opt_ts(&row, "rotated_at")?,
                    };
                    Ok(Some(RefreshTokenRecord { token, grant, user: Self::map_joined_user(&row)? }))
                }

                async fn rotate_refresh_token(
                    &self,
                    tenant_id: Uuid,
                    old_hash: &str,
                    new_token: &RefreshToken,
                    issued_event: &NewEvent,
                    replay_event: &NewEvent,
                ) -> StoreResult<Rotation> {
                    if new_token.tenant_id == tenant_id {
                        let pending = $crate::sql::PendingRotation {
                            tenant_id,
                            old_hash: old_hash.to_owned(),
                            new_token: new_token.clone(),
                            issued_event: issued_event.clone(),
                        };
                        if self.rotations.submit(pending).await? {
                            return Ok(Rotation::Rotated);
                        }
                    }
                    self.rotate_one(tenant_id, old_hash, new_token, issued_event, replay_event).await
                }

                async fn revoke_grants_for_client(
                    &self,
                    tenant_id: Uuid,
                    user_id: Uuid,
                    client_id: &str,
                    now: OffsetDateTime,
                ) -> StoreResult<u64> {
                    let done = retrying!({
                        ::sqlx::query(
                            "UPDATE grants SET revoked_at = $4 \
                             WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3 AND revoked_at IS NULL",
                        )
                        .bind(tenant_id)
                        .bind(user_id)
                        .bind(client_id)
                        .bind(Self::ts(now))
                        .execute(&self.writer)
                        .await
                        .map_err(db_err)
                    })?;
                    Ok(done.rows_affected())
                }
            }

            #[::async_trait::async_trait]
            impl ConsentStore for $store {
                async fn find_consent(&self, tenant_id: Uuid, user_id: Uuid, client_id: &str) -> StoreResult<Option<Consent>> {
                    let row = ::sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3")
                        .bind(tenant_id)
                        .bind(user_id)
                        .bind(client_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.as_ref().map(Self::map_consent).transpose()
                }

                async fn save_consent(&self, consent: &Consent, event: &NewEvent) -> StoreResult<()> {
                    let scopes = to_json!(consent.scopes)?;
                    write_tx!(self, |tx| {
                        ::sqlx::query(
                            "INSERT INTO consents (tenant_id, user_id, client_id, scopes, granted_at) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (tenant_id, user_id, client_id) \
                             DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
                        )
                        .bind(consent.tenant_id)
                        .bind(consent.user_id)
                        .bind(&consent.client_id)
                        .bind(&scopes)
                        .bind(Self::ts(consent.granted_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn list_consents(&self, tenant_id: Uuid, user_id: Uuid) -> StoreResult<Vec<Consent>> {
                    let rows = ::sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND user_id = $2 ORDER BY client_id")
                        .bind(tenant_id)
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(Self::map_consent).collect()
                }

                async fn delete_consent(
                    &self,
                    tenant_id: Uuid,
                    user_id: Uuid,
                    client_id: &str,
                    event: &NewEvent,
                ) -> StoreResult<bool> {
                    write_tx!(self, |tx| {
                        let deleted = ::sqlx::query("DELETE FROM consents WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3")
                            .bind(tenant_id)
                            .bind(user_id)
                            .bind(client_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?
                            .rows_affected();
                        let revoked = ::sqlx::query(
                            "UPDATE grants SET revoked_at = $4 \
                             WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3 AND revoked_at IS NULL",
                        )
                        .bind(tenant_id)
                        .bind(user_id)
                        .bind(client_id)
                        .bind(Self::ts(event.occurred_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                        if deleted > 0 || revoked > 0 {
                            Self::insert_event(&mut *tx, event).await?;
                        }
                        Ok(deleted > 0)
                    })
                }
            }

            #[::async_trait::async_trait]
            impl KeyStore for $store {
                async fn list_signing_keys(&self, tenant_id: Uuid) -> StoreResult<Vec<SigningKey>> {
                    let rows = ::sqlx::query("SELECT * FROM signing_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC")
                        .bind(tenant_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    rows.iter().map(Self::map_signing_key).collect()
                }

                async fn create_signing_key(&self, key: &SigningKey, event: &NewEvent) -> StoreResult<()> {
                    let public_jwk = to_json!(key.public_jwk)?;
                    write_tx!(self, |tx| {
                        ::sqlx::query(
                            "INSERT INTO signing_keys (id, tenant_id, kid, alg, status, private_key_encrypted, public_jwk, \
                             created_at, publish_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(key.id)
                        .bind(key.tenant_id)
                        .bind(&key.kid)
                        .bind(&key.alg)
                        .bind(key.status.as_str())
                        .bind(&key.private_key_encrypted)
                        .bind(&public_jwk)
                        .bind(Self::ts(key.created_at))
                        .bind(key.publish_until.map(Self::ts))
                        .execute(&mut *tx)
                        .await
                        .map_err(unique_or_db("signing_key"))?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn rotate_signing_keys(
                    &self,
                    tenant_id: Uuid,
                    alg: &str,
                    new_next: &SigningKey,
                    retired_publish_until: OffsetDateTime,
                    event: &NewEvent,
                ) -> StoreResult<()> {
                    let public_jwk = to_json!(new_next.public_jwk)?;
                    write_tx!(self, |tx| {
                        let rows = ::sqlx::query(
                            "SELECT id, status FROM signing_keys \
                             WHERE tenant_id = $1 AND alg = $2 AND status IN ('active', 'next') \
                             ORDER BY created_at DESC, id DESC",
                        )
                        .bind(tenant_id)
                        .bind(alg)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        let mut active = Vec::new();
                        let mut next = None;
                        for row in &rows {
                            let id: Uuid = Self::get(row, "id")?;
                            match Self::get::<String>(row, "status")?.as_str() {
                                "active" => active.push(id),
                                _ if next.is_none() => next = Some(id),
                                _ => {}
                            }
                        }
                        // Without a published successor there would be no key to sign with.
                        let next = next.ok_or(StoreError::NotFound)?;
                        // Each change is conditional on the status just read; if a concurrent
                        // rotation got there first one of them matches nothing, and this one rolls
                        // back rather than leave two active keys behind.
                        for id in active {
                            let done = ::sqlx::query(
                                "UPDATE signing_keys SET status = 'retired', publish_until = $3 \
                                 WHERE tenant_id = $1 AND id = $2 AND status = 'active'",
                            )
                            .bind(tenant_id)
                            .bind(id)
                            .bind(Self::ts(retired_publish_until))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                            if done.rows_affected() != 1 {
                                return Err(StoreError::Conflict("signing_key_rotation"));
                            }
                        }
                        let done = ::sqlx::query(
                            "UPDATE signing_keys SET status = 'active' WHERE tenant_id = $1 AND id = $2 AND status = 'next'",
                        )
                        .bind(tenant_id)
                        .bind(next)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        if done.rows_affected() != 1 {
                            return Err(StoreError::Conflict("signing_key_rotation"));
                        }
                        ::sqlx::query(
                            "INSERT INTO signing_keys (id, tenant_id, kid, alg, status, private_key_encrypted, public_jwk, \
                             created_at, publish_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(new_next.id)
                        .bind(new_next.tenant_id)
                        .bind(&new_next.kid)
                        .bind(&new_next.alg)
                        .bind(new_next.status.as_str())
                        .bind(&new_next.private_key_encrypted)
                        .bind(&public_jwk)
                        .bind(Self::ts(new_next.created_at))
                        .bind(new_next.publish_until.map(Self::ts))
                        .execute(&mut *tx)
                        .await
                        .map_err(unique_or_db("signing_key"))?;
                        Self::insert_event(&mut *tx, event).await
                    })
                }

                async fn delete_expired_signing_keys(&self, tenant_id: Uuid, now: OffsetDateTime) -> StoreResult<u64> {
                    let done = retrying!({
                        ::sqlx::query(
                            "DELETE FROM signing_keys WHERE tenant_id = $1 AND status = 'retired' AND publish_until <= $2",
                        )
                        .bind(tenant_id)
                        .bind(Self::ts(now))
                        .execute(&self.writer)
                        .await
                        .map_err(db_err)
                    })?;
                    Ok(done.rows_affected())
                }
            }

            #[::async_trait::async_trait]
            impl InitialAccessTokenStore for $store {
                async fn create_initial_access_token(&self, token: &InitialAccessToken) -> StoreResult<()> {
                    retrying!({
                        ::sqlx::query(
                            "INSERT INTO initial_access_tokens (token_hash, tenant_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(&token.token_hash)
                        .bind(token.tenant_id)
                        .bind(Self::ts(token.created_at))
                        .bind(Self::ts(token.expires_at))
                        .execute(&self.writer)
                        .await
                        .map_err(unique_or_db("initial_access_token"))
                    })?;
                    Ok(())
                }

                async fn find_initial_access_token(
                    &self,
                    tenant_id: Uuid,
                    token_hash: &str,
                    now: OffsetDateTime,
                ) -> StoreResult<Option<InitialAccessToken>> {
                    let row = ::sqlx::query(
                        "SELECT * FROM initial_access_tokens WHERE tenant_id = $1 AND token_hash = $2 AND expires_at > $3",
                    )
                    .bind(tenant_id)
                    .bind(token_hash)
                    .bind(Self::ts(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    Ok(Some(InitialAccessToken {
                        token_hash: Self::get(&row, "token_hash")?,
                        tenant_id: Self::get(&row, "tenant_id")?,
                        created_at: Self::get_ts(&row, "created_at")?,
                        expires_at: Self::get_ts(&row, "expires_at")?,
                    }))
                }
            }

            #[::async_trait::async_trait]
            impl EventStore for $store {
                async fn append_event(&self, event: &NewEvent) -> StoreResult<()> {
                    self.events.submit(event.clone()).await
                }

                async fn list_events(&self, tenant_id: Uuid, limit: u32, before: Option<Uuid>) -> StoreResult<Vec<NewEvent>> {
                    let rows = match before {
                        Some(before) => {
                            ::sqlx::query("SELECT * FROM events WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
                                .bind(tenant_id)
                                .bind(before)
                                .bind(i64::from(limit))
                                .fetch_all(&self.pool)
                                .await
                        }
                        None => ::sqlx::query("SELECT * FROM events WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2")
                            .bind(tenant_id)
                            .bind(i64::from(limit))
                            .fetch_all(&self.pool)
                            .await,
                    }
                    .map_err(db_err)?;
                    rows.iter().map(Self::map_event).collect()
                }
            }

            #[::async_trait::async_trait]
            impl Maintenance for $store {
                async fn migrate(&self) -> StoreResult<()> {
                    self.create_migration_table().await?;
                    for migration in Self::MIGRATIONS {
                        let checksum = $crate::migrations::checksum(migration.sql);
                        // The insert of the name decides who applies a migration: a second node
                        // waits on the first one's uncommitted row, then finds it and only checks
                        // the checksum. DDL is transactional in both databases, so a failed
                        // migration leaves neither its changes nor its row behind.
                        let applied = write_tx!(self, |tx| {
                            let inserted = ::sqlx::query(
                                "INSERT INTO _tessera_migrations (name, checksum) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                            )
                            .bind(migration.name)
                            .bind(&checksum)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?
                            .rows_affected();
                            if inserted == 1 {
                                ::sqlx::raw_sql(migration.sql).execute(&mut *tx).await.map_err(db_err)?;
                                return Ok(true);
                            }
                            let recorded: String = ::sqlx::query_scalar("SELECT checksum FROM _tessera_migrations WHERE name = $1")
                                .bind(migration.name)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(db_err)?;
                            if recorded != checksum {
                                return Err(StoreError::Corrupt(format!(
                                    "migration {} was changed after it was applied; migrations are forward-only, add a new one",
                                    migration.name
                                )));
                            }
                            Ok(false)
                        })?;
                        if applied {
                            ::tracing::info!(migration = migration.name, "applied migration");
                        }
                    }
                    let recorded: Vec<String> = ::sqlx::query_scalar("SELECT name FROM _tessera_migrations ORDER BY name")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    for name in recorded {
                        if !Self::MIGRATIONS.iter().any(|m| m.name == name) {
                            // A newer release migrated this database (a rolling upgrade, or a
                            // rollback of the binary): carry on, the schema only grew.
                            ::tracing::warn!(migration = %name, "database has a migration this binary does not know");
                        }
                    }
                    Ok(())
                }

                async fn ping(&self) -> StoreResult<()> {
                    ::sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err)?;
                    Ok(())
                }

                async fn close(&self) {
                    // SQLite checkpoints its log and removes it when its last connection
                    // closes; every connection this store holds closes here, the log copier's too.
                    if let Some(background) = &self._background {
                        background.stop().await;
                    }
                    self.writer.close().await;
                    self.pool.close().await;
                }

                async fn delete_expired(&self, now: OffsetDateTime) -> StoreResult<u64> {
                    // The sweep covers every tenant, so these are the statements without a
                    // tenant filter; each is its own short transaction so that a large backlog
                    // does not hold SQLite's write lock for the whole sweep.
                    const SWEEPS: [&str; 4] = [
                        "DELETE FROM flows WHERE expires_at <= $1",
                        "DELETE FROM authorization_requests WHERE expires_at <= $1",
                        "DELETE FROM authorization_codes WHERE expires_at <= $1",
                        "DELETE FROM sessions WHERE ended_at IS NOT NULL OR expires_at <= $1",
                    ];
                    let mut deleted = 0;
                    for statement in SWEEPS {
                        let done = retrying!({
                            ::sqlx::query(statement)
                                .bind(Self::ts(now))
                                .execute(&self.writer)
                                .await
                                .map_err(db_err)
                        })?;
                        deleted += done.rows_affected();
                    }
                    Ok(deleted)
                }
            }
        }
    };
}
pub(crate) use impl_store;

#[cfg(test)]
mod tests {
    use super::first_claims;
    use std::collections::HashSet;
    use uuid::Uuid;

    #[test]
    fn a_token_spent_by_a_batch_goes_to_its_first_request_of_its_own_tenant() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let spent: HashSet<(Uuid, String)> = [(a, "h1".to_owned()), (a, "h2".to_owned())].into_iter().collect();
        let requested = [(a, "h1"), (a, "h1"), (b, "h2"), (a, "h2"), (a, "h3")];
        assert_eq!(first_claims(requested.into_iter(), &spent), [true, false, false, true, false]);
    }
}
