//! HTTP tests through the real router, on SQLite and (when configured) PostgreSQL.

mod support;

mod authorize_security;
mod code_security;
mod flows;
mod identifier_security;
mod journeys;
mod login_security;
mod oidc_behaviour;
mod session_security;
mod token_security;
