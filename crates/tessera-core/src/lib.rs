//! Tessera's domain: the types every other crate speaks, and the rules that need no IO
//! (identifier canonicalisation, password policy, redirect URI matching, PKCE, secrets).

pub mod clock;
pub mod email;
pub mod event;
pub mod model;
pub mod password_policy;
pub mod pkce;
pub mod redirect_uri;
pub mod scope;
pub mod secret;
pub mod slug;

pub use clock::{Clock, ManualClock, SystemClock};
pub use event::{EventKind, NewEvent, Outcome};
