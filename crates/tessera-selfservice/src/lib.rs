//! Self-service flows — sign-in and sign-up as stored objects bound to one browser — with
//! the password strategy, the bounded password-hashing pool and server-side sessions.
//! No HTTP here: the web crate renders the flows and maps the results.

pub mod config;
pub mod flow;
pub mod hasher;
pub mod login;
pub mod registration;
pub mod session;

pub use config::SelfServiceConfig;
pub use hasher::{HashError, PasswordHasherPool};

use std::sync::Arc;
use tessera_core::Clock;
use tessera_store::Store;

/// What every self-service use-case needs.
#[derive(Clone)]
pub struct SelfService {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub hasher: Arc<PasswordHasherPool>,
    pub config: Arc<SelfServiceConfig>,
}
