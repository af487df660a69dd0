//! The store contract: one suite of scenarios written against `Arc<dyn Store>`, run against
//! SQLite always and against PostgreSQL when `TESSERA_TEST_POSTGRES_URL` names a database
//! (each test then creates a database of its own next to it and drops it afterwards).
//! PostgreSQL runs twice: with its default READ COMMITTED isolation, and with SERIALIZABLE as
//! the default, which is how CockroachDB and YugabyteDB behave and which makes the races end
//! in serialization failures that the store must retry.
//! Every test gets a fresh database, so none depends on another or on the order they run in.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use sqlx::Connection;
use tessera_core::model::*;
use tessera_core::scope::Scopes;
use tessera_core::{EventKind, NewEvent, Outcome};
use tessera_store::{CodeRedemption, RefreshTokenRecord, Rotation, Store, StoreError};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness

/// A fresh, empty database (not migrated) that a scenario may open as often as it likes, as
/// several nodes of one deployment would.
struct TestDb {
    url: String,
}

impl TestDb {
    /// Connects and migrates, as `tessera serve` does.
    async fn open(&self) -> Arc<dyn Store> {
        let store = self.connect().await;
        store.migrate().await.expect("migrate");
        store
    }

    async fn connect(&self) -> Arc<dyn Store> {
        tessera_store::connect(&self.url).await.expect("connect")
    }

    /// Runs raw SQL against the database behind the store's back (to simulate tampering).
    async fn execute_raw(&self, sql: &'static str) {
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect sqlite");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("raw sql");
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect postgres");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("raw sql");
        }
    }
}

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // The scenario runs in a task of its own so that a failing assertion still lets the
    // harness clean up before the panic is passed on.
    //
    // A file, not `sqlite::memory:`, so that several connections (and several stores) share
    // it. The directory does not exist yet: `connect` must create it.
    let dir = std::env::temp_dir().join(format!("tessera-store-test-{}", Uuid::new_v4().simple()));
    let url = format!("sqlite:{}?mode=rwc", dir.join("tessera.db").display());
    let outcome = tokio::spawn(scenario(TestDb { url })).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Isolation {
    ReadCommitted,
    Serializable,
}

async fn on_postgres<F, Fut>(isolation: Isolation, scenario: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(base_url) = std::env::var("TESSERA_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("TESSERA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "TESSERA_REQUIRE_POSTGRES=1 but TESSERA_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: set TESSERA_TEST_POSTGRES_URL to run the PostgreSQL half of the store contract");
        return;
    };
    let name = format!("tessera_t_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base_url).await.expect("connect to TESSERA_TEST_POSTGRES_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.expect("create test database");
    if isolation == Isolation::Serializable {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} SET default_transaction_isolation TO 'serializable'")))
            .execute(&mut admin)
            .await
            .expect("make serializable the default");
    }
    let url = with_database(&base_url, &name);
    let outcome = tokio::spawn(scenario(TestDb { url })).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `postgres://user@host:port/db?params` with `db` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Declares each scenario once per backend: `sqlite::<name>`, `postgres::<name>` and
/// `postgres_serializable::<name>`.
macro_rules! contract {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::on_postgres(super::Isolation::ReadCommitted, super::$name).await;
                }
            )+
        }
        mod postgres_serializable {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::on_postgres(super::Isolation::Serializable, super::$name).await;
                }
            )+
        }
    };
}

contract![
    migrations_are_idempotent,
    two_nodes_migrate_at_once,
    a_changed_migration_is_refused,
    records_round_trip,
    tenant_slugs_are_unique,
    tenants_are_isolated,
    concurrent_sign_ups_with_one_email_have_one_winner,
    users_are_listed_newest_first_with_paging,
    bulk_import_skips_existing_emails,
    updates_of_missing_rows_are_not_found,
    a_code_is_redeemed_once_and_a_replay_revokes_its_grant,
    concurrent_code_redemptions_have_one_winner,
    refresh_tokens_rotate_and_a_replay_revokes_the_family,
    concurrent_rotations_have_one_winner,
    a_burst_of_independent_writers_all_succeed,
    rotations_written_together_keep_their_own_outcomes,
    expiry_comparisons_are_exact_to_the_microsecond,
    delete_expired_removes_only_what_expired,
    signing_keys_rotate,
    concurrent_key_rotations_leave_one_active_key,
    events_are_listed_newest_first_with_paging,
    concurrent_event_appends_are_all_stored_once,
    disabling_a_user_ends_sessions_and_revokes_grants,
    sessions_end_once,
    flows_and_authorization_requests_complete_once,
    deleting_a_client_revokes_its_grants,
    consents_are_saved_replaced_and_withdrawn,
];

// ---------------------------------------------------------------------------------------------
// SQLite only

/// A steady stream of commits beside steady reads, as a busy node has, must not grow the
/// write-ahead log without end: each checkpoint has to let the next writer start the log
/// over. (A checkpoint run beside the writer, rather than in its commits, never found the log
/// fully copied: new frames had always arrived, and the log grew by 50 MB a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sqlite_write_ahead_log_stays_bounded_under_steady_writes() {
    on_sqlite(|db: TestDb| async move {
        const COMMITS: usize = 3000;
        const BOUND: u64 = 16 << 20;
        let store = db.open().await;
        let first = create_tenant(&store, "reader-target").await;
        let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, writing) = (store.clone(), writing.clone());
                tokio::spawn(async move {
                    while writing.load(std::sync::atomic::Ordering::Relaxed) {
                        store.find_tenant_by_slug("reader-target").await.expect("read");
                    }
                })
            })
            .collect();
        for i in 0..COMMITS {
            create_tenant(&store, &format!("tenant-{i}")).await;
        }
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.await.expect("reader");
        }
        let path = db.url.trim_start_matches("sqlite:").split('?').next().expect("path").to_owned();
        let wal = std::fs::metadata(format!("{path}-wal")).map(|m| m.len()).unwrap_or(0);
        // Each commit writes at least two 4 KiB pages: an unbounded log would hold ≥ 24 MB.
        assert!(wal <= BOUND, "write-ahead log is {wal} bytes after {COMMITS} commits");
        assert_eq!(store.find_tenant_by_slug("reader-target").await.expect("read").map(|t| t.id), Some(first.id));
    })
    .await;
}

/// `close()` closes every connection the store holds — readers, the writer and the log
/// copier's — before it returns, so that SQLite checkpoints its log into the database file and
/// removes it: a node that exits right after shutting down leaves one clean file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_sqlite_store_leaves_no_write_ahead_log() {
    on_sqlite(|db: TestDb| async move {
        let store = db.open().await;
        for i in 0..50 {
            create_tenant(&store, &format!("tenant-{i}")).await;
        }
        assert!(store.find_tenant_by_slug("tenant-7").await.expect("read").is_some());
        let path = db.url.trim_start_matches("sqlite:").split('?').next().expect("path").to_owned();
        let wal = format!("{path}-wal");
        assert!(std::path::Path::new(&wal).exists(), "the store writes through its log");
        store.close().await;
        assert!(!std::path::Path::new(&wal).exists(), "close() returned with the log still there");
        let reopened = db.open().await;
        assert!(reopened.find_tenant_by_slug("tenant-49").await.expect("read").is_some(), "nothing lost");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Fixtures. Times are UTC with microsecond precision, as the engines pass them in.

fn t0() -> OffsetDateTime {
    datetime!(2030-01-01 12:00:00.250000 UTC)
}

fn event(tenant_id: Uuid, kind: EventKind) -> NewEvent {
    NewEvent::new(tenant_id, kind, t0())
}

async fn create_tenant(store: &Arc<dyn Store>, slug: &str) -> Tenant {
    let tenant = Tenant {
        id: Uuid::now_v7(),
        slug: slug.to_owned(),
        name: format!("Tenant {slug}"),
        branding: Branding {
            logo_url: Some("https://example.com/logo.svg".into()),
            primary_color: Some("#112233".into()),
            background_color: None,
        },
        created_at: t0(),
    };
    store.create_tenant(&tenant, &event(tenant.id, EventKind::TenantCreated)).await.expect("create tenant");
    tenant
}

fn new_user(tenant_id: Uuid, email: &str) -> User {
    User {
        id: Uuid::now_v7(),
        tenant_id,
        email: email.to_owned(),
        email_canonical: email.to_lowercase(),
        email_verified: false,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        given_name: Some("Ada".into()),
        family_name: None,
        disabled: false,
        created_at: t0(),
        updated_at: t0(),
    }
}

async fn create_user(store: &Arc<dyn Store>, tenant_id: Uuid, email: &str) -> User {
    let user = new_user(tenant_id, email);
    store.create_user(&user, &event(tenant_id, EventKind::UserRegistered).user(user.id)).await.expect("create user");
    user
}

fn new_client(tenant_id: Uuid, client_id: &str) -> Client {
    Client {
        id: Uuid::now_v7(),
        tenant_id,
        client_id: client_id.to_owned(),
        secret_hash: Some("secret-hash".into()),
        name: format!("Client {client_id}"),
        redirect_uris: vec!["https://app.example.com/cb".into(), "http://127.0.0.1/cb".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scopes: Scopes::parse("openid email profile"),
        first_party: false,
        public: true,
        id_token_signed_response_alg: "RS256".into(),
        created_at: t0(),
    }
}

async fn create_client(store: &Arc<dyn Store>, tenant_id: Uuid, client_id: &str) -> Client {
    let client = new_client(tenant_id, client_id);
    store.create_client(&client, &event(tenant_id, EventKind::ClientCreated).client(client_id)).await.expect("create client");
    client
}

fn new_session(tenant_id: Uuid, user_id: Uuid, token_hash: &str) -> Session {
    Session {
        id: Uuid::now_v7(),
        tenant_id,
        token_hash: token_hash.to_owned(),
        user_id,
        auth_time: t0(),
        amr: vec!["pwd".into()],
        created_at: t0(),
        last_seen_at: t0(),
        expires_at: t0() + Duration::days(14),
        ended_at: None,
    }
}

async fn create_session(store: &Arc<dyn Store>, tenant_id: Uuid, user_id: Uuid, token_hash: &str) -> Session {
    let session = new_session(tenant_id, user_id, token_hash);
    store.create_session(&session, &event(tenant_id, EventKind::SignIn).user(user_id)).await.expect("create session");
    session
}

fn new_flow(tenant_id: Uuid) -> Flow {
    Flow {
        id: Uuid::now_v7(),
        tenant_id,
        kind: FlowKind::Registration,
        csrf_token_hash: "csrf-hash".into(),
        authorization_request_id: Some(Uuid::now_v7()),
        login_hint: Some("ada@example.com".into()),
        created_at: t0(),
        expires_at: t0() + Duration::minutes(30),
    }
}

fn new_authorization_request(tenant_id: Uuid) -> AuthorizationRequest {
    AuthorizationRequest {
        id: Uuid::now_v7(),
        tenant_id,
        client_id: "app".into(),
        redirect_uri: "https://app.example.com/cb".into(),
        scope: Scopes::parse("openid email"),
        state: Some("xyz".into()),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        prompt: vec!["login".into(), "consent".into()],
        max_age: Some(3600),
        login_hint: None,
        id_token_hint_subject: Some(Uuid::now_v7()),
        acr_values: None,
        ui_locales: Some("fr-CA fr en".into()),
        browser_binding: Some("binding-hash".into()),
        created_at: t0(),
        expires_at: t0() + Duration::minutes(10),
    }
}

fn new_code(tenant_id: Uuid, user_id: Uuid, session_id: Option<Uuid>, code_hash: &str) -> AuthorizationCode {
    AuthorizationCode {
        code_hash: code_hash.to_owned(),
        tenant_id,
        client_id: "app".into(),
        user_id,
        session_id,
        redirect_uri: "https://app.example.com/cb".into(),
        scope: Scopes::parse("openid email offline_access"),
        nonce: Some("nonce".into()),
        code_challenge: Some("challenge".into()),
        auth_time: t0() - Duration::seconds(5),
        amr: vec!["pwd".into(), "otp".into()],
        created_at: t0(),
        expires_at: t0() + Duration::seconds(60),
        used_at: None,
        grant_id: None,
    }
}

fn new_grant(tenant_id: Uuid, user_id: Option<Uuid>, client_id: &str) -> Grant {
    Grant {
        id: Uuid::now_v7(),
        tenant_id,
        client_id: client_id.to_owned(),
        user_id,
        session_id: None,
        scope: Scopes::parse("openid offline_access"),
        auth_time: user_id.map(|_| t0()),
        amr: vec!["pwd".into()],
        nonce: None,
        created_at: t0(),
        expires_at: t0() + Duration::days(30),
        revoked_at: None,
    }
}

async fn create_grant(store: &Arc<dyn Store>, tenant_id: Uuid, user_id: Option<Uuid>, client_id: &str) -> Grant {
    let grant = new_grant(tenant_id, user_id, client_id);
    store.create_grant(&grant).await.expect("create grant");
    grant
}

fn new_refresh_token(grant: &Grant, token_hash: &str) -> RefreshToken {
    RefreshToken { token_hash: token_hash.to_owned(), tenant_id: grant.tenant_id, grant_id: grant.id, created_at: t0(), rotated_at: None }
}

fn new_key(tenant_id: Uuid, kid: &str, alg: &str, status: KeyStatus, created_at: OffsetDateTime) -> SigningKey {
    SigningKey {
        id: Uuid::now_v7(),
        tenant_id,
        kid: kid.to_owned(),
        alg: alg.to_owned(),
        status,
        private_key_encrypted: vec![0, 1, 2, 254, 255],
        public_jwk: json!({ "kty": "RSA", "kid": kid, "n": "sXch", "e": "AQAB" }),
        created_at,
        publish_until: None,
    }
}

async fn create_key(store: &Arc<dyn Store>, key: &SigningKey) {
    store.create_signing_key(key, &event(key.tenant_id, EventKind::SigningKeyCreated)).await.expect("create signing key");
}

async fn is_revoked(store: &Arc<dyn Store>, tenant_id: Uuid, grant_id: Uuid) -> bool {
    let grant = store.find_grant(tenant_id, grant_id).await.expect("find grant").expect("grant exists");
    grant.revoked_at.is_some()
}

async fn event_kinds(store: &Arc<dyn Store>, tenant_id: Uuid) -> Vec<EventKind> {
    let events = store.list_events(tenant_id, 1000, None).await.expect("list events");
    events.into_iter().map(|e| e.kind).collect()
}

fn count(kinds: &[EventKind], kind: EventKind) -> usize {
    kinds.iter().filter(|k| **k == kind).count()
}

// ---------------------------------------------------------------------------------------------
// Migrations

/// Not per backend: the two migration folders must hold the same file names, and the names
/// the binary embeds must be exactly those.
#[test]
fn migration_folders_match_each_other_and_the_embedded_lists() {
    let list = |dialect: &str| -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("read migrations folder")
            .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sqlite = list("sqlite");
    let postgres = list("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres must hold the same files");
    assert_eq!(tessera_store::MIGRATION_NAMES_SQLITE, sqlite.as_slice());
    assert_eq!(tessera_store::MIGRATION_NAMES_POSTGRES, postgres.as_slice());
    assert!(sqlite.iter().all(|name| name.ends_with(".sql")));
}

/// Not per backend: what only SQLite has. A file database is switched to WAL (a setting the
/// file keeps, so another connection sees it), and `sqlite::memory:` keeps its data from one
/// call to the next although every SQLite connection to `:memory:` is a database of its own.
#[tokio::test]
async fn sqlite_uses_wal_and_memory_databases_keep_their_data() {
    let memory = tessera_store::connect("sqlite::memory:").await.expect("connect");
    memory.migrate().await.expect("migrate");
    create_tenant(&memory, "acme").await;
    for _ in 0..3 {
        assert!(memory.find_tenant_by_slug("acme").await.expect("find").is_some());
    }

    let dir = std::env::temp_dir().join(format!("tessera-store-test-{}", Uuid::new_v4().simple()));
    let url = format!("sqlite:{}?mode=rwc", dir.join("nested").join("tessera.db").display());
    let store = tessera_store::connect(&url).await.expect("connect creates the directories");
    store.migrate().await.expect("migrate");
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.expect("pragma");
    drop(conn);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(mode, "wal");
}

async fn migrations_are_idempotent(db: TestDb) {
    let store = db.open().await;
    store.migrate().await.expect("second migrate");
    store.ping().await.expect("ping");
    drop(store);
    // A restart of the node migrates again.
    let store = db.open().await;
    create_tenant(&store, "acme").await;
}

async fn two_nodes_migrate_at_once(db: TestDb) {
    let nodes = [db.connect().await, db.connect().await, db.connect().await];
    let results = futures_join_all(nodes.iter().map(|node| {
        let node = node.clone();
        async move { node.migrate().await }
    }))
    .await;
    for result in results {
        result.expect("every node migrates");
    }
    create_tenant(&nodes[0], "acme").await;
    assert!(nodes[1].find_tenant_by_slug("acme").await.expect("find").is_some());
}

async fn a_changed_migration_is_refused(db: TestDb) {
    drop(db.open().await);
    db.execute_raw("UPDATE _tessera_migrations SET checksum = 'edited after release'").await;
    let store = db.connect().await;
    match store.migrate().await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("0001_initial.sql"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Runs futures concurrently on the runtime's threads and collects their outputs in order.
async fn futures_join_all<I, F, T>(futures: I) -> Vec<T>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task panicked"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Round trips and tenants

async fn records_round_trip(db: TestDb) {
    let store = db.open().await;
    let tenant = create_tenant(&store, "acme").await;
    let t = tenant.id;
    assert_eq!(store.find_tenant_by_slug("acme").await.expect("find"), Some(tenant.clone()));
    assert_eq!(store.list_tenants().await.expect("list"), vec![tenant.clone()]);

    let branding = Branding { logo_url: None, primary_color: Some("#000000".into()), background_color: Some("#ffffff".into()) };
    store.update_tenant_branding(t, "Acme Inc.", &branding).await.expect("update branding");
    let updated = store.find_tenant_by_slug("acme").await.expect("find").expect("tenant");
    assert_eq!((updated.name.as_str(), &updated.branding), ("Acme Inc.", &branding));

    let mut user = create_user(&store, t, "Ada@Example.com").await;
    assert_eq!(store.find_user(t, user.id).await.expect("find"), Some(user.clone()));
    assert_eq!(store.find_user_by_email(t, "ada@example.com").await.expect("find"), Some(user.clone()));
    let later = t0() + Duration::microseconds(1);
    store.update_user_password_hash(t, user.id, "$argon2id$new", later).await.expect("rehash");
    user.password_hash = Some("$argon2id$new".into());
    user.updated_at = later;
    assert_eq!(store.find_user(t, user.id).await.expect("find"), Some(user.clone()));

    let client = create_client(&store, t, "app").await;
    assert_eq!(store.find_client(t, "app").await.expect("find"), Some(client.clone()));
    assert_eq!(store.list_clients(t).await.expect("list"), vec![client.clone()]);

    let session = create_session(&store, t, user.id, "session-hash").await;
    assert_eq!(store.find_session_by_token_hash(t, "session-hash").await.expect("find"), Some(session.clone()));

    let flow = new_flow(t);
    store.create_flow(&flow).await.expect("create flow");
    assert_eq!(store.find_flow(t, flow.id).await.expect("find"), Some(flow.clone()));

    let request = new_authorization_request(t);
    store.create_authorization_request(&request).await.expect("create request");
    assert_eq!(store.find_authorization_request(t, request.id).await.expect("find"), Some(request.clone()));

    let grant = Grant { session_id: Some(session.id), nonce: Some("n".into()), ..new_grant(t, Some(user.id), "app") };
    store.create_grant(&grant).await.expect("create grant");
    assert_eq!(store.find_grant(t, grant.id).await.expect("find"), Some(grant.clone()));
    let machine = create_grant(&store, t, None, "app").await;
    assert_eq!(store.find_grant(t, machine.id).await.expect("find"), Some(machine.clone()));
    assert_eq!(store.find_grant_and_user(t, grant.id).await.expect("find"), Some((grant.clone(), Some(user.clone()))));
    assert_eq!(store.find_grant_and_user(t, machine.id).await.expect("find"), Some((machine.clone(), None)));

    let token = new_refresh_token(&grant, "refresh-hash");
    store.create_refresh_token(&token, &event(t, EventKind::TokenIssued)).await.expect("create token");
    let found = RefreshTokenRecord { token, grant: grant.clone(), user: Some(user.clone()) };
    assert_eq!(store.find_refresh_token(t, "refresh-hash").await.expect("find"), Some(found));
    // A machine grant's token carries no customer.
    let machine_token = new_refresh_token(&machine, "machine-hash");
    store.create_refresh_token(&machine_token, &event(t, EventKind::TokenIssued)).await.expect("create token");
    let found = store.find_refresh_token(t, "machine-hash").await.expect("find").expect("machine token");
    assert_eq!((found.token, found.grant, found.user), (machine_token, machine.clone(), None));

    let consent =
        Consent { tenant_id: t, user_id: user.id, client_id: "app".into(), scopes: Scopes::parse("openid email"), granted_at: t0() };
    store.save_consent(&consent, &event(t, EventKind::ConsentGranted)).await.expect("save consent");
    assert_eq!(store.find_consent(t, user.id, "app").await.expect("find"), Some(consent.clone()));

    let key = SigningKey { publish_until: Some(t0() + Duration::days(1)), ..new_key(t, "k1", "EdDSA", KeyStatus::Retired, t0()) };
    create_key(&store, &key).await;
    assert_eq!(store.list_signing_keys(t).await.expect("list"), vec![key]);

    let iat = InitialAccessToken { token_hash: "iat-hash".into(), tenant_id: t, created_at: t0(), expires_at: t0() + Duration::hours(1) };
    store.create_initial_access_token(&iat).await.expect("create iat");
    assert_eq!(store.find_initial_access_token(t, "iat-hash", t0()).await.expect("find"), Some(iat));

    let mut full = event(t, EventKind::SignIn).failure("invalid_credentials").user(user.id).client("app");
    full.ip = Some("203.0.113.7".into());
    full.user_agent = Some("Mozilla/5.0".into());
    full.data = json!({ "attempt": 3, "method": "pwd" });
    store.append_event(&full).await.expect("append");
    let latest = store.list_events(t, 1, None).await.expect("list");
    assert_eq!(latest, vec![full]);
    assert_eq!(latest[0].outcome, Outcome::Failure);
}

async fn tenant_slugs_are_unique(db: TestDb) {
    let store = db.open().await;
    let first = create_tenant(&store, "acme").await;
    let again = Tenant { id: Uuid::now_v7(), ..first };
    let result = store.create_tenant(&again, &event(again.id, EventKind::TenantCreated)).await;
    assert!(matches!(result, Err(StoreError::Conflict("tenant_slug"))), "{result:?}");
    assert_eq!(store.list_tenants().await.expect("list").len(), 1);
}

async fn tenants_are_isolated(db: TestDb) {
    let store = db.open().await;
    let a = create_tenant(&store, "a").await.id;
    let b = create_tenant(&store, "b").await.id;

    let user = create_user(&store, a, "ada@example.com").await;
    create_client(&store, a, "app").await;
    let session = create_session(&store, a, user.id, "session-a").await;
    let flow = new_flow(a);
    store.create_flow(&flow).await.expect("flow");
    let request = new_authorization_request(a);
    store.create_authorization_request(&request).await.expect("request");
    store.create_authorization_code(&new_code(a, user.id, Some(session.id), "code-a")).await.expect("code");
    let grant = create_grant(&store, a, Some(user.id), "app").await;
    store.create_refresh_token(&new_refresh_token(&grant, "refresh-a"), &event(a, EventKind::TokenIssued)).await.expect("token");
    let consent = Consent { tenant_id: a, user_id: user.id, client_id: "app".into(), scopes: Scopes::parse("openid"), granted_at: t0() };
    store.save_consent(&consent, &event(a, EventKind::ConsentGranted)).await.expect("consent");
    create_key(&store, &new_key(a, "ka", "RS256", KeyStatus::Active, t0())).await;
    let iat = InitialAccessToken { token_hash: "iat-a".into(), tenant_id: a, created_at: t0(), expires_at: t0() + Duration::hours(1) };
    store.create_initial_access_token(&iat).await.expect("iat");

    // Nothing of tenant A is visible through tenant B…
    assert_eq!(store.find_user(b, user.id).await.expect("find"), None);
    assert_eq!(store.find_user_by_email(b, "ada@example.com").await.expect("find"), None);
    assert!(store.list_users(b, 100, None).await.expect("list").is_empty());
    assert_eq!(store.find_client(b, "app").await.expect("find"), None);
    assert!(store.list_clients(b).await.expect("list").is_empty());
    assert_eq!(store.find_session_by_token_hash(b, "session-a").await.expect("find"), None);
    assert_eq!(store.find_flow(b, flow.id).await.expect("find"), None);
    assert_eq!(store.find_authorization_request(b, request.id).await.expect("find"), None);
    assert_eq!(store.find_grant(b, grant.id).await.expect("find"), None);
    assert_eq!(store.find_grant_and_user(b, grant.id).await.expect("find"), None);
    assert_eq!(store.find_refresh_token(b, "refresh-a").await.expect("find"), None);
    assert_eq!(store.find_consent(b, user.id, "app").await.expect("find"), None);
    assert!(store.list_consents(b, user.id).await.expect("list").is_empty());
    assert!(store.list_signing_keys(b).await.expect("list").is_empty());
    assert_eq!(store.find_initial_access_token(b, "iat-a", t0()).await.expect("find"), None);
    assert!(store.list_events(b, 100, None).await.expect("list").iter().all(|e| e.tenant_id == b));

    // …and nothing done through tenant B touches tenant A's rows.
    let redemption = store.redeem_authorization_code(b, "code-a", Uuid::now_v7(), t0() + Duration::days(1), t0()).await;
    assert_eq!(redemption.expect("redeem"), CodeRedemption::Unknown);
    let stray = RefreshToken { tenant_id: b, ..new_refresh_token(&grant, "refresh-b") };
    let rotation = store
        .rotate_refresh_token(b, "refresh-a", &stray, &event(b, EventKind::TokenIssued), &event(b, EventKind::RefreshTokenReused))
        .await;
    assert_eq!(rotation.expect("rotate"), Rotation::Unknown);
    assert!(!store.delete_flow(b, flow.id).await.expect("delete"));
    assert!(!store.delete_authorization_request(b, request.id).await.expect("delete"));
    assert!(matches!(store.delete_client(b, "app", &event(b, EventKind::ClientDeleted)).await, Err(StoreError::NotFound)));
    assert!(matches!(store.set_user_disabled(b, user.id, true, &event(b, EventKind::UserDisabled)).await, Err(StoreError::NotFound)));
    store.revoke_grant(b, grant.id, &event(b, EventKind::GrantRevoked)).await.expect("revoke");
    store.end_session(b, session.id, &event(b, EventKind::SignOut)).await.expect("end");
    assert_eq!(store.revoke_grants_for_client(b, user.id, "app", t0()).await.expect("revoke"), 0);
    assert!(!store.delete_consent(b, user.id, "app", &event(b, EventKind::ConsentRevoked)).await.expect("delete"));

    assert!(!is_revoked(&store, a, grant.id).await);
    assert!(store.find_session_by_token_hash(a, "session-a").await.expect("find").is_some());
    assert!(store.find_flow(a, flow.id).await.expect("find").is_some());
    assert!(store.find_consent(a, user.id, "app").await.expect("find").is_some());
    assert!(!store.find_user(a, user.id).await.expect("find").expect("user").disabled);

    // A row of tenant B cannot point at tenant A's customer.
    let foreign = new_session(b, user.id, "session-b");
    assert!(store.create_session(&foreign, &event(b, EventKind::SignIn)).await.is_err());

    // The same email and client id are free in another tenant.
    create_user(&store, b, "ada@example.com").await;
    create_client(&store, b, "app").await;
}

// ---------------------------------------------------------------------------------------------
// Users

async fn concurrent_sign_ups_with_one_email_have_one_winner(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let results = futures_join_all((0..20).map(|i| {
        let store = store.clone();
        async move {
            let user = new_user(t, &format!("Ada.Lovelace+{i}@example.com"));
            let user = User { email_canonical: "adalovelace@example.com".into(), ..user };
            store.create_user(&user, &event(t, EventKind::UserRegistered).user(user.id)).await
        }
    }))
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| matches!(r, Err(StoreError::Conflict("user_email")))).count();
    assert_eq!((won, conflicts), (1, 19), "{results:?}");
    // The losers' events were rolled back with their inserts.
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::UserRegistered), 1);
    assert_eq!(store.list_users(t, 100, None).await.expect("list").len(), 1);
}

async fn users_are_listed_newest_first_with_paging(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let other = create_tenant(&store, "other").await.id;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_user(&store, t, &format!("user{i}@example.com")).await.id);
    }
    create_user(&store, other, "user0@example.com").await;
    ids.sort();
    ids.reverse();

    let page1: Vec<Uuid> = store.list_users(t, 2, None).await.expect("page 1").iter().map(|u| u.id).collect();
    assert_eq!(page1, ids[0..2]);
    let page2: Vec<Uuid> = store.list_users(t, 2, Some(page1[1])).await.expect("page 2").iter().map(|u| u.id).collect();
    assert_eq!(page2, ids[2..4]);
    let page3: Vec<Uuid> = store.list_users(t, 2, Some(page2[1])).await.expect("page 3").iter().map(|u| u.id).collect();
    assert_eq!(page3, ids[4..5]);
    assert!(store.list_users(t, 2, Some(page3[0])).await.expect("page 4").is_empty());
}

async fn bulk_import_skips_existing_emails(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    create_user(&store, t, "taken@example.com").await;
    // 2,500 rows span several multi-row statements; one collides with an existing customer and
    // one with an earlier row of the same batch.
    let mut batch: Vec<User> = (0..2500).map(|i| new_user(t, &format!("bulk{i}@example.com"))).collect();
    batch.push(new_user(t, "taken@example.com"));
    batch.push(new_user(t, "bulk7@example.com"));
    let added = store.import_users(t, &batch, &event(t, EventKind::UsersImported)).await.expect("import");
    assert_eq!(added, 2500);
    assert_eq!(store.list_users(t, 5000, None).await.expect("list").len(), 2501);
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::UsersImported), 1);
    let foreign = vec![new_user(Uuid::now_v7(), "x@example.com")];
    assert!(store.import_users(t, &foreign, &event(t, EventKind::UsersImported)).await.is_err(), "rows of another tenant are refused");
}

async fn updates_of_missing_rows_are_not_found(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let nobody = Uuid::now_v7();
    assert!(matches!(store.update_tenant_branding(nobody, "x", &Branding::default()).await, Err(StoreError::NotFound)));
    assert!(matches!(store.update_user_password_hash(t, nobody, "h", t0()).await, Err(StoreError::NotFound)));
    assert!(matches!(store.set_user_disabled(t, nobody, true, &event(t, EventKind::UserDisabled)).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_client(t, "nope", &event(t, EventKind::ClientDeleted)).await, Err(StoreError::NotFound)));
    // Failed operations leave no event behind.
    assert_eq!(event_kinds(&store, t).await, vec![EventKind::TenantCreated]);
}

async fn disabling_a_user_ends_sessions_and_revokes_grants(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let bystander = create_user(&store, t, "bob@example.com").await;
    create_session(&store, t, user.id, "s1").await;
    create_session(&store, t, user.id, "s2").await;
    create_session(&store, t, bystander.id, "s3").await;
    let g1 = create_grant(&store, t, Some(user.id), "app").await;
    let g2 = create_grant(&store, t, Some(user.id), "other-app").await;
    let g3 = create_grant(&store, t, Some(bystander.id), "app").await;

    let later = t0() + Duration::minutes(1);
    store.set_user_disabled(t, user.id, true, &NewEvent::new(t, EventKind::UserDisabled, later).user(user.id)).await.expect("disable");
    let found = store.find_user(t, user.id).await.expect("find").expect("user");
    assert!(found.disabled);
    assert_eq!(found.updated_at, later);
    assert_eq!(store.find_session_by_token_hash(t, "s1").await.expect("find"), None);
    assert_eq!(store.find_session_by_token_hash(t, "s2").await.expect("find"), None);
    assert_eq!(store.find_grant(t, g1.id).await.expect("find").expect("grant").revoked_at, Some(later));
    assert!(is_revoked(&store, t, g2.id).await);
    // Someone else's sessions and grants are untouched.
    assert!(store.find_session_by_token_hash(t, "s3").await.expect("find").is_some());
    assert!(!is_revoked(&store, t, g3.id).await);

    // Enabling again does not bring anything back.
    store.set_user_disabled(t, user.id, false, &event(t, EventKind::UserEnabled)).await.expect("enable");
    assert!(!store.find_user(t, user.id).await.expect("find").expect("user").disabled);
    assert_eq!(store.find_session_by_token_hash(t, "s1").await.expect("find"), None);
    assert!(is_revoked(&store, t, g1.id).await);
    let kinds = event_kinds(&store, t).await;
    assert_eq!((count(&kinds, EventKind::UserDisabled), count(&kinds, EventKind::UserEnabled)), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Codes, grants, refresh tokens

async fn a_code_is_redeemed_once_and_a_replay_revokes_its_grant(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let session = create_session(&store, t, user.id, "s").await;
    let code = new_code(t, user.id, Some(session.id), "code-hash");
    store.create_authorization_code(&code).await.expect("create code");
    let duplicate = store.create_authorization_code(&code).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");

    let grant_id = Uuid::now_v7();
    let now = t0() + Duration::seconds(2);
    let expires = t0() + Duration::days(30);
    let redeemed = store.redeem_authorization_code(t, "code-hash", grant_id, expires, now).await.expect("redeem");
    let expected_code = AuthorizationCode { used_at: Some(now), grant_id: Some(grant_id), ..code.clone() };
    assert_eq!(redeemed, CodeRedemption::Redeemed(expected_code.clone()));
    let grant = store.find_grant(t, grant_id).await.expect("find").expect("the redemption created the grant");
    assert_eq!(
        grant,
        Grant {
            id: grant_id,
            tenant_id: t,
            client_id: code.client_id.clone(),
            user_id: Some(user.id),
            session_id: Some(session.id),
            scope: code.scope.clone(),
            auth_time: Some(code.auth_time),
            amr: code.amr.clone(),
            nonce: code.nonce.clone(),
            created_at: now,
            expires_at: expires,
            revoked_at: None,
        }
    );

    let replay_at = now + Duration::seconds(1);
    let replay = store.redeem_authorization_code(t, "code-hash", Uuid::now_v7(), expires, replay_at).await.expect("replay");
    assert_eq!(replay, CodeRedemption::Replayed(expected_code));
    assert_eq!(store.find_grant(t, grant_id).await.expect("find").expect("grant").revoked_at, Some(replay_at));

    let unknown = store.redeem_authorization_code(t, "no-such-code", Uuid::now_v7(), expires, now).await.expect("unknown");
    assert_eq!(unknown, CodeRedemption::Unknown);
}

async fn concurrent_code_redemptions_have_one_winner(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    store.create_authorization_code(&new_code(t, user.id, None, "code-hash")).await.expect("create code");

    let results = futures_join_all((0..10).map(|_| {
        let store = store.clone();
        async move {
            let grant_id = Uuid::now_v7();
            store.redeem_authorization_code(t, "code-hash", grant_id, t0() + Duration::days(1), t0()).await
        }
    }))
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result.expect("no database error") {
            CodeRedemption::Redeemed(code) => winners.push(code.grant_id.expect("grant id")),
            CodeRedemption::Replayed(_) => {}
            CodeRedemption::Unknown => panic!("the code exists"),
        }
    }
    assert_eq!(winners.len(), 1);
    // Nine replays: the one grant is revoked.
    assert!(is_revoked(&store, t, winners[0]).await);
}

async fn refresh_tokens_rotate_and_a_replay_revokes_the_family(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let grant = create_grant(&store, t, Some(user.id), "app").await;
    store.create_refresh_token(&new_refresh_token(&grant, "r1"), &event(t, EventKind::TokenIssued)).await.expect("first token");
    let issued = || event(t, EventKind::TokenIssued);
    let reused = || event(t, EventKind::RefreshTokenReused);

    let r2 = RefreshToken { created_at: t0() + Duration::minutes(5), ..new_refresh_token(&grant, "r2") };
    assert_eq!(store.rotate_refresh_token(t, "r1", &r2, &issued(), &reused()).await.expect("rotate"), Rotation::Rotated);
    let old = store.find_refresh_token(t, "r1").await.expect("find").expect("old token stays");
    assert_eq!(old.token.rotated_at, Some(r2.created_at));
    let new = store.find_refresh_token(t, "r2").await.expect("find").expect("new token");
    assert_eq!((new.token, new.grant.revoked_at, new.user.map(|u| u.id)), (r2.clone(), None, Some(user.id)));

    // A successor for another grant is refused, and the old token stays usable.
    let other = create_grant(&store, t, Some(user.id), "app").await;
    let r3 = RefreshToken { created_at: t0() + Duration::minutes(6), ..new_refresh_token(&grant, "r3") };
    let wrong = new_refresh_token(&other, "wrong");
    assert!(store.rotate_refresh_token(t, "r2", &wrong, &issued(), &reused()).await.is_err());
    assert_eq!(store.find_refresh_token(t, "r2").await.expect("find").expect("r2").token.rotated_at, None);

    // r1 comes back: the whole family ends.
    let replay = store.rotate_refresh_token(t, "r1", &r3, &issued(), &reused()).await.expect("replay");
    assert_eq!(replay, Rotation::Replayed { grant_id: grant.id });
    assert!(is_revoked(&store, t, grant.id).await);
    assert!(!is_revoked(&store, t, other.id).await);
    // r2, unspent, is now useless too.
    assert_eq!(store.rotate_refresh_token(t, "r2", &r3, &issued(), &reused()).await.expect("rotate"), Rotation::Unknown);
    assert_eq!(store.rotate_refresh_token(t, "nope", &r3, &issued(), &reused()).await.expect("rotate"), Rotation::Unknown);
    assert_eq!(store.find_refresh_token(t, "r3").await.expect("find"), None);

    let kinds = event_kinds(&store, t).await;
    assert_eq!(count(&kinds, EventKind::TokenIssued), 2);
    assert_eq!(count(&kinds, EventKind::RefreshTokenReused), 1);

    // Revoking is idempotent and recorded once.
    store.revoke_grant(t, other.id, &event(t, EventKind::GrantRevoked)).await.expect("revoke");
    store.revoke_grant(t, other.id, &event(t, EventKind::GrantRevoked)).await.expect("revoke again");
    assert!(is_revoked(&store, t, other.id).await);
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::GrantRevoked), 1);
}

async fn concurrent_rotations_have_one_winner(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let grant = create_grant(&store, t, Some(user.id), "app").await;
    store.create_refresh_token(&new_refresh_token(&grant, "r1"), &event(t, EventKind::TokenIssued)).await.expect("first token");

    let results = futures_join_all((0..10).map(|i| {
        let store = store.clone();
        let successor = new_refresh_token(&grant, &format!("r2-{i}"));
        async move {
            store
                .rotate_refresh_token(t, "r1", &successor, &event(t, EventKind::TokenIssued), &event(t, EventKind::RefreshTokenReused))
                .await
        }
    }))
    .await;
    let mut rotated = 0;
    for result in results {
        match result.expect("never a database error") {
            Rotation::Rotated => rotated += 1,
            Rotation::Replayed { grant_id } => assert_eq!(grant_id, grant.id),
            Rotation::Unknown => {}
        }
    }
    assert_eq!(rotated, 1);
    // The losers were replays of a spent token: the family is revoked.
    assert!(is_revoked(&store, t, grant.id).await);
}

/// Many customers refreshing at once: every rotation of its own family succeeds, none fails
/// for a lock another writer held (SQLite serializes them in its writer pool, PostgreSQL on
/// rows), and each stores its successor.
async fn a_burst_of_independent_writers_all_succeed(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let mut grants = Vec::new();
    for i in 0..40 {
        let grant = create_grant(&store, t, Some(user.id), "app").await;
        store
            .create_refresh_token(&new_refresh_token(&grant, &format!("first-{i}")), &event(t, EventKind::TokenIssued))
            .await
            .expect("token");
        grants.push(grant);
    }
    let results = futures_join_all(grants.iter().enumerate().map(|(i, grant)| {
        let store = store.clone();
        let successor = new_refresh_token(grant, &format!("second-{i}"));
        async move {
            store
                .rotate_refresh_token(
                    t,
                    &format!("first-{i}"),
                    &successor,
                    &event(t, EventKind::TokenIssued),
                    &event(t, EventKind::RefreshTokenReused),
                )
                .await
        }
    }))
    .await;
    for result in results {
        assert_eq!(result.expect("never a database error"), Rotation::Rotated);
    }
    for (i, grant) in grants.iter().enumerate() {
        let found = store.find_refresh_token(t, &format!("second-{i}")).await.expect("find").expect("successor stored");
        assert_eq!(found.grant.id, grant.id);
    }
}

/// Rotations that arrive together are written together, yet each keeps its own outcome: one
/// that cannot be stored (its successor's hash is taken) fails alone and leaves its old token
/// unspent, and a replay among them still revokes only its own family.
async fn rotations_written_together_keep_their_own_outcomes(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let mut grants = Vec::new();
    for i in 0..30 {
        let grant = create_grant(&store, t, Some(user.id), "app").await;
        store
            .create_refresh_token(&new_refresh_token(&grant, &format!("old-{i}")), &event(t, EventKind::TokenIssued))
            .await
            .expect("token");
        grants.push(grant);
    }
    // Family 0 has been rotated once already: presenting old-0 again is a replay.
    let first = new_refresh_token(&grants[0], "already-rotated");
    store
        .rotate_refresh_token(t, "old-0", &first, &event(t, EventKind::TokenIssued), &event(t, EventKind::RefreshTokenReused))
        .await
        .expect("rotate");
    // Family 1's successor collides with the token family 2 already holds.
    let results = futures_join_all(grants.iter().enumerate().map(|(i, grant)| {
        let store = store.clone();
        let successor = match i {
            1 => new_refresh_token(grant, "old-2"),
            _ => new_refresh_token(grant, &format!("new-{i}")),
        };
        async move {
            store
                .rotate_refresh_token(
                    t,
                    &format!("old-{i}"),
                    &successor,
                    &event(t, EventKind::TokenIssued),
                    &event(t, EventKind::RefreshTokenReused),
                )
                .await
        }
    }))
    .await;
    for (i, result) in results.into_iter().enumerate() {
        match i {
            0 => assert_eq!(result.expect("replay"), Rotation::Replayed { grant_id: grants[0].id }),
            1 => assert!(matches!(result, Err(StoreError::Conflict(_))), "a taken successor hash: {result:?}"),
            _ => assert_eq!(result.expect("rotation"), Rotation::Rotated, "family {i}"),
        }
    }
    assert!(is_revoked(&store, t, grants[0].id).await);
    assert_eq!(store.find_refresh_token(t, "old-1").await.expect("find").expect("old-1").token.rotated_at, None);
    assert!(!is_revoked(&store, t, grants[1].id).await);
    for (i, grant) in grants.iter().enumerate().skip(2) {
        assert!(!is_revoked(&store, t, grant.id).await, "family {i}");
        let found = store.find_refresh_token(t, &format!("new-{i}")).await.expect("find").expect("successor stored");
        assert_eq!(found.grant.id, grant.id);
    }
    let kinds = event_kinds(&store, t).await;
    // 30 first tokens, the earlier rotation of family 0, and 28 rotations now.
    assert_eq!(count(&kinds, EventKind::TokenIssued), 30 + 1 + 28);
    assert_eq!(count(&kinds, EventKind::RefreshTokenReused), 1);
}

// ---------------------------------------------------------------------------------------------
// Time

async fn expiry_comparisons_are_exact_to_the_microsecond(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let whole = datetime!(2030-01-01 12:00:00 UTC);
    let half = datetime!(2030-01-01 12:00:00.5 UTC);
    for (hash, expires_at) in [("whole", whole), ("half", half)] {
        let token = InitialAccessToken { token_hash: hash.into(), tenant_id: t, created_at: whole - Duration::hours(1), expires_at };
        store.create_initial_access_token(&token).await.expect("create");
    }
    let found = |hash: &'static str, now: OffsetDateTime| {
        let store = store.clone();
        async move { store.find_initial_access_token(t, hash, now).await.expect("find").is_some() }
    };
    // A text comparison of "…:00Z" with "…:00.5Z" would get these wrong ('Z' sorts after '.').
    assert!(!found("whole", half).await, "expired half a second ago");
    assert!(found("half", whole).await, "expires in half a second");
    assert!(found("half", half - Duration::microseconds(1)).await);
    assert!(!found("half", half).await, "expiry is exclusive");
    assert!(found("whole", whole - Duration::microseconds(1)).await);
    assert!(!found("whole", whole).await);
    assert!(found("whole", datetime!(2030-01-01 11:59:59.999999 UTC)).await);
    assert!(!found("whole", datetime!(2030-01-01 12:00:00.000001 UTC)).await);
    assert!(!found("half", datetime!(2030-01-01 12:00:01 UTC)).await);
    assert!(found("half", datetime!(2029-12-31 23:59:59.9 UTC)).await);
    // A time with another offset means the same instant.
    let half_in_paris = half.to_offset(time::macros::offset!(+1));
    assert!(!found("half", half_in_paris).await);
    assert!(found("half", half_in_paris - Duration::microseconds(1)).await);
}

async fn delete_expired_removes_only_what_expired(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let now = datetime!(2030-01-01 12:00:00.5 UTC);
    let expired = datetime!(2030-01-01 12:00:00 UTC);
    let alive = datetime!(2030-01-01 12:00:01 UTC);

    let mut flows = Vec::new();
    let mut requests = Vec::new();
    for expires_at in [expired, alive] {
        let flow = Flow { expires_at, ..new_flow(t) };
        store.create_flow(&flow).await.expect("flow");
        flows.push(flow.id);
        let request = AuthorizationRequest { expires_at, ..new_authorization_request(t) };
        store.create_authorization_request(&request).await.expect("request");
        requests.push(request.id);
        let code = AuthorizationCode { expires_at, ..new_code(t, user.id, None, &format!("code-{expires_at}")) };
        store.create_authorization_code(&code).await.expect("code");
        let session = Session { expires_at, ..new_session(t, user.id, &format!("session-{expires_at}")) };
        store.create_session(&session, &event(t, EventKind::SignIn)).await.expect("session");
    }
    let ended = create_session(&store, t, user.id, "ended").await;
    store.end_session(t, ended.id, &event(t, EventKind::SignOut)).await.expect("end");

    // One expired flow, request, code and session, plus the ended session.
    assert_eq!(store.delete_expired(now).await.expect("sweep"), 5);
    assert_eq!(store.find_flow(t, flows[0]).await.expect("find"), None);
    assert!(store.find_flow(t, flows[1]).await.expect("find").is_some());
    assert_eq!(store.find_authorization_request(t, requests[0]).await.expect("find"), None);
    assert!(store.find_authorization_request(t, requests[1]).await.expect("find").is_some());
    let live_code = format!("code-{alive}");
    assert!(matches!(
        store.redeem_authorization_code(t, &format!("code-{expired}"), Uuid::now_v7(), alive, now).await,
        Ok(CodeRedemption::Unknown)
    ));
    assert!(matches!(store.redeem_authorization_code(t, &live_code, Uuid::now_v7(), alive, now).await, Ok(CodeRedemption::Redeemed(_))));
    assert!(store.find_session_by_token_hash(t, &format!("session-{alive}")).await.expect("find").is_some());
    assert_eq!(store.delete_expired(now).await.expect("sweep again"), 0);
}

// ---------------------------------------------------------------------------------------------
// Keys

async fn signing_keys_rotate(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let k1 = new_key(t, "k1", "RS256", KeyStatus::Active, t0());
    let k2 = new_key(t, "k2", "RS256", KeyStatus::Next, t0() + Duration::seconds(1));
    let ec = new_key(t, "ec", "ES256", KeyStatus::Active, t0() + Duration::seconds(2));
    for key in [&k1, &k2, &ec] {
        create_key(&store, key).await;
    }
    let duplicate_kid = SigningKey { id: Uuid::now_v7(), ..k1.clone() };
    let result = store.create_signing_key(&duplicate_kid, &event(t, EventKind::SigningKeyCreated)).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");

    let k3 = new_key(t, "k3", "RS256", KeyStatus::Next, t0() + Duration::seconds(3));
    let publish_until = t0() + Duration::hours(2);
    store.rotate_signing_keys(t, "RS256", &k3, publish_until, &event(t, EventKind::SigningKeyRotated)).await.expect("rotate");
    let keys = store.list_signing_keys(t).await.expect("list");
    let summary: Vec<(&str, KeyStatus, Option<OffsetDateTime>)> =
        keys.iter().map(|k| (k.kid.as_str(), k.status, k.publish_until)).collect();
    assert_eq!(
        summary,
        vec![
            ("k3", KeyStatus::Next, None),
            ("ec", KeyStatus::Active, None),
            ("k2", KeyStatus::Active, None),
            ("k1", KeyStatus::Retired, Some(publish_until)),
        ],
        "newest first; the other algorithm untouched"
    );

    // Without a next key there is nothing to promote: refused, nothing changed.
    let lone = new_key(t, "ec2", "ES256", KeyStatus::Next, t0() + Duration::seconds(4));
    let refused = store.rotate_signing_keys(t, "EdDSA", &lone, publish_until, &event(t, EventKind::SigningKeyRotated)).await;
    assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
    assert_eq!(store.list_signing_keys(t).await.expect("list").len(), 4);

    assert_eq!(store.delete_expired_signing_keys(t, publish_until - Duration::microseconds(1)).await.expect("delete"), 0);
    assert_eq!(store.delete_expired_signing_keys(t, publish_until).await.expect("delete"), 1);
    let kids: Vec<String> = store.list_signing_keys(t).await.expect("list").into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, ["k3", "ec", "k2"]);
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::SigningKeyRotated), 1);
}

/// Rotation reads the current keys before it changes them. Racing rotations must neither fail
/// with a database error (SQLite: a deferred transaction cannot upgrade to a writer while
/// another one writes) nor leave two active keys (PostgreSQL: a rotation that lost the race
/// finds its conditional updates matching nothing and rolls back).
async fn concurrent_key_rotations_leave_one_active_key(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    create_key(&store, &new_key(t, "k1", "RS256", KeyStatus::Active, t0())).await;
    create_key(&store, &new_key(t, "k2", "RS256", KeyStatus::Next, t0() + Duration::seconds(1))).await;

    let results =
        futures_join_all(
            (0..6).map(|i| {
                let store = store.clone();
                let next = new_key(t, &format!("n{i}"), "RS256", KeyStatus::Next, t0() + Duration::seconds(10 + i));
                async move {
                    store.rotate_signing_keys(t, "RS256", &next, t0() + Duration::hours(1), &event(t, EventKind::SigningKeyRotated)).await
                }
            }),
        )
        .await;
    let rotations = results.iter().filter(|r| r.is_ok()).count();
    for result in &results {
        assert!(matches!(result, Ok(()) | Err(StoreError::Conflict("signing_key_rotation"))), "{result:?}");
    }
    assert!(rotations >= 1);
    let keys = store.list_signing_keys(t).await.expect("list");
    let with = |status| keys.iter().filter(|k| k.status == status).count();
    assert_eq!((with(KeyStatus::Active), with(KeyStatus::Next)), (1, 1), "{keys:#?}");
    assert_eq!(with(KeyStatus::Retired), rotations);
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::SigningKeyRotated), rotations);
}

// ---------------------------------------------------------------------------------------------
// Events

async fn events_are_listed_newest_first_with_paging(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let other = create_tenant(&store, "other").await.id;
    for i in 0..5 {
        store.append_event(&event(t, EventKind::SignIn).data(json!({ "n": i }))).await.expect("append");
        store.append_event(&event(other, EventKind::SignIn)).await.expect("append");
    }
    let all = store.list_events(t, 100, None).await.expect("list");
    assert_eq!(all.len(), 6, "five sign-ins and the tenant's creation");
    assert!(all.iter().all(|e| e.tenant_id == t));
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].data, json!({ "n": 4 }));
    assert_eq!(all[5].kind, EventKind::TenantCreated);

    let page1 = store.list_events(t, 4, None).await.expect("page 1");
    let page2 = store.list_events(t, 4, Some(page1[3].id)).await.expect("page 2");
    assert_eq!(page1, all[0..4]);
    assert_eq!(page2, all[4..6]);
    assert!(store.list_events(t, 4, Some(page2[1].id)).await.expect("page 3").is_empty());
    assert!(store.list_events(t, 0, None).await.expect("empty page").is_empty());

    let duplicate = store.append_event(&all[0]).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
}

/// Appends are group-committed (several callers share one insert): each caller still learns
/// its own outcome, and a duplicate among them fails alone.
async fn concurrent_event_appends_are_all_stored_once(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let first = event(t, EventKind::SignIn);
    store.append_event(&first).await.expect("first");
    let results = futures_join_all((0..300).map(|i| {
        let store = store.clone();
        let e = if i == 150 { first.clone() } else { event(t, EventKind::TokenIssued).data(json!({ "n": i })) };
        async move { store.append_event(&e).await }
    }))
    .await;
    let failed: Vec<_> = results.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
    assert_eq!(failed, vec![150], "only the duplicate fails: {:?}", results.iter().filter(|r| r.is_err()).collect::<Vec<_>>());
    assert!(matches!(results[150], Err(StoreError::Conflict(_))));
    let kinds = event_kinds(&store, t).await;
    assert_eq!(count(&kinds, EventKind::TokenIssued), 299);
    assert_eq!(count(&kinds, EventKind::SignIn), 1);
}

// ---------------------------------------------------------------------------------------------
// Sessions, flows, requests, clients, consents

async fn sessions_end_once(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let session = create_session(&store, t, user.id, "s").await;
    let duplicate = store.create_session(&Session { id: Uuid::now_v7(), ..session.clone() }, &event(t, EventKind::SignIn)).await;
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");

    let seen = t0() + Duration::minutes(3);
    store.touch_session(t, session.id, seen).await.expect("touch");
    let found = store.find_session_by_token_hash(t, "s").await.expect("find").expect("session");
    assert_eq!(found.last_seen_at, seen);

    store.end_session(t, session.id, &event(t, EventKind::SignOut)).await.expect("end");
    store.end_session(t, session.id, &event(t, EventKind::SignOut)).await.expect("end again");
    store.end_session(t, Uuid::now_v7(), &event(t, EventKind::SignOut)).await.expect("end unknown");
    assert_eq!(store.find_session_by_token_hash(t, "s").await.expect("find"), None);
    store.touch_session(t, session.id, seen).await.expect("touching an ended session is harmless");
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::SignOut), 1);
}

async fn flows_and_authorization_requests_complete_once(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let flow = new_flow(t);
    store.create_flow(&flow).await.expect("create");
    let request = new_authorization_request(t);
    store.create_authorization_request(&request).await.expect("create");

    let deletes = futures_join_all((0..5).map(|_| {
        let store = store.clone();
        async move { store.delete_flow(t, flow.id).await.expect("delete") }
    }))
    .await;
    assert_eq!(deletes.iter().filter(|won| **won).count(), 1, "a double submit loses");
    assert_eq!(store.find_flow(t, flow.id).await.expect("find"), None);

    assert!(store.delete_authorization_request(t, request.id).await.expect("delete"));
    assert!(!store.delete_authorization_request(t, request.id).await.expect("delete again"));
    assert_eq!(store.find_authorization_request(t, request.id).await.expect("find"), None);
}

async fn deleting_a_client_revokes_its_grants(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    create_client(&store, t, "app").await;
    create_client(&store, t, "keep").await;
    let taken = store.create_client(&new_client(t, "app"), &event(t, EventKind::ClientCreated)).await;
    assert!(matches!(taken, Err(StoreError::Conflict("client_id"))), "{taken:?}");

    let g1 = create_grant(&store, t, Some(user.id), "app").await;
    let g2 = create_grant(&store, t, None, "app").await;
    let kept = create_grant(&store, t, Some(user.id), "keep").await;
    let consent = Consent { tenant_id: t, user_id: user.id, client_id: "app".into(), scopes: Scopes::parse("openid"), granted_at: t0() };
    store.save_consent(&consent, &event(t, EventKind::ConsentGranted)).await.expect("consent");

    store.delete_client(t, "app", &event(t, EventKind::ClientDeleted)).await.expect("delete");
    assert_eq!(store.find_client(t, "app").await.expect("find"), None);
    assert!(is_revoked(&store, t, g1.id).await && is_revoked(&store, t, g2.id).await);
    assert!(!is_revoked(&store, t, kept.id).await);
    assert_eq!(store.find_consent(t, user.id, "app").await.expect("find"), None);
    let again = store.delete_client(t, "app", &event(t, EventKind::ClientDeleted)).await;
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::ClientDeleted), 1);
    let kids: Vec<String> = store.list_clients(t).await.expect("list").into_iter().map(|c| c.client_id).collect();
    assert_eq!(kids, ["keep"]);
}

async fn consents_are_saved_replaced_and_withdrawn(db: TestDb) {
    let store = db.open().await;
    let t = create_tenant(&store, "acme").await.id;
    let user = create_user(&store, t, "ada@example.com").await;
    let consent = |client: &str, scopes: &str, at: OffsetDateTime| Consent {
        tenant_id: t,
        user_id: user.id,
        client_id: client.into(),
        scopes: Scopes::parse(scopes),
        granted_at: at,
    };
    store.save_consent(&consent("b-app", "openid", t0()), &event(t, EventKind::ConsentGranted)).await.expect("save");
    store.save_consent(&consent("a-app", "openid", t0()), &event(t, EventKind::ConsentGranted)).await.expect("save");
    let replaced = consent("b-app", "openid email", t0() + Duration::hours(1));
    store.save_consent(&replaced, &event(t, EventKind::ConsentGranted)).await.expect("replace");
    let listed = store.list_consents(t, user.id).await.expect("list");
    assert_eq!(listed, vec![consent("a-app", "openid", t0()), replaced.clone()]);

    let g1 = create_grant(&store, t, Some(user.id), "b-app").await;
    let g2 = create_grant(&store, t, Some(user.id), "b-app").await;
    let kept = create_grant(&store, t, Some(user.id), "a-app").await;
    assert!(store.delete_consent(t, user.id, "b-app", &event(t, EventKind::ConsentRevoked)).await.expect("delete"));
    assert!(is_revoked(&store, t, g1.id).await && is_revoked(&store, t, g2.id).await);
    assert!(!is_revoked(&store, t, kept.id).await);
    assert!(!store.delete_consent(t, user.id, "b-app", &event(t, EventKind::ConsentRevoked)).await.expect("again"));
    assert_eq!(store.find_consent(t, user.id, "b-app").await.expect("find"), None);
    assert_eq!(count(&event_kinds(&store, t).await, EventKind::ConsentRevoked), 1);

    let g3 = create_grant(&store, t, Some(user.id), "a-app").await;
    assert_eq!(store.revoke_grants_for_client(t, user.id, "a-app", t0()).await.expect("revoke"), 2);
    assert!(is_revoked(&store, t, g3.id).await);
    assert_eq!(store.revoke_grants_for_client(t, user.id, "a-app", t0()).await.expect("revoke again"), 0);
}
