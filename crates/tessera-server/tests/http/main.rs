//! HTTP tests through the real router, on SQLite and (when configured) PostgreSQL.

mod support;

mod flows;
