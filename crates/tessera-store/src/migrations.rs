//! The schema migrations embedded in the binary: one folder per dialect
//! (`migrations/sqlite`, `migrations/postgres`) holding the same file names, applied in order
//! by the forward-only runner in `sql::impl_store!` (`Maintenance::migrate`).
//!
//! Both folders are embedded from one list of names, so a file missing from either folder is
//! a compile error; the contract tests compare the list with the folders' listings, so a file
//! missing from the list fails the tests.

/// One embedded migration: its file name (the key recorded in `_tessera_migrations`) and SQL.
pub(crate) struct EmbeddedMigration {
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

macro_rules! embed_migrations {
    ($($name:literal),+ $(,)?) => {
        /// The SQLite migration file names, in the order they are applied.
        pub const MIGRATION_NAMES_SQLITE: &[&str] = &[$($name),+];
        /// The PostgreSQL migration file names, in the order they are applied.
        pub const MIGRATION_NAMES_POSTGRES: &[&str] = &[$($name),+];

        pub(crate) static SQLITE: &[EmbeddedMigration] = &[$(EmbeddedMigration {
            name: $name,
            sql: include_str!(concat!("../migrations/sqlite/", $name)),
        }),+];

        pub(crate) static POSTGRES: &[EmbeddedMigration] = &[$(EmbeddedMigration {
            name: $name,
            sql: include_str!(concat!("../migrations/postgres/", $name)),
        }),+];
    };
}

// Append new files at the end; never edit or reorder an applied one (the runner refuses to
// start when an applied migration's checksum changed).
embed_migrations!["0001_initial.sql"];

/// The bookkeeping table; the same statement is valid in both dialects. `name` is the primary
/// key, so when two nodes migrate at once the insert of the name decides which one applies it.
pub(crate) const MIGRATION_TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS _tessera_migrations (
    name        TEXT NOT NULL PRIMARY KEY,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)";

/// SHA-384 of the migration text, hex encoded (sqlx's migration checksum, reused so the crate
/// needs no hash dependency of its own).
pub(crate) fn checksum(sql: &'static str) -> String {
    use sqlx::SqlSafeStr;
    let migration =
        sqlx::migrate::Migration::new(0, std::borrow::Cow::Borrowed(""), sqlx::migrate::MigrationType::Simple, sql.into_sql_str(), false);
    migration.checksum.iter().map(|b| format!("{b:02x}")).collect()
}
