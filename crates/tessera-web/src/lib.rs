//! Tessera's HTTP surface: the public router (OpenID Connect endpoints, hosted pages) and the
//! operational endpoints. Handlers are thin: extract, call one use-case of an engine, map the
//! result. Errors become HTTP in exactly one module ([`error`]).

pub mod error;
pub mod pages;
pub mod request;
mod routes;
pub mod state;

pub use routes::app;
pub use state::{AppState, WebConfig};
