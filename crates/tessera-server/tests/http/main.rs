//! HTTP tests through the real router, on SQLite and (when configured) PostgreSQL.

mod support;

mod authorize_security;
mod code_security;
mod flows;
mod token_security;
