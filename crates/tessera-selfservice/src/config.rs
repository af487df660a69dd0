//! Self-service settings.

use serde::{Deserialize, Serialize};
use tessera_core::password_policy::PasswordPolicy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfServiceConfig {
    /// How long a sign-in or sign-up form stays valid; a later submit starts a successor.
    pub flow_ttl_secs: i64,
    /// A session ends after this much inactivity…
    pub session_idle_timeout_secs: i64,
    /// …and after this long whatever its activity.
    pub session_lifetime_secs: i64,
    /// Ask for given and family name at sign-up.
    pub require_names: bool,
    pub password: PasswordPolicy,
}

impl Default for SelfServiceConfig {
    fn default() -> Self {
        Self {
            flow_ttl_secs: 1800,
            session_idle_timeout_secs: 3 * 24 * 3600,
            session_lifetime_secs: 30 * 24 * 3600,
            require_names: true,
            password: PasswordPolicy::default(),
        }
    }
}

impl SelfServiceConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(60..=86_400).contains(&self.flow_ttl_secs) {
            return Err("selfservice.flow_ttl_secs must be between 60 and 86400".into());
        }
        if self.session_idle_timeout_secs < 60 || self.session_lifetime_secs < self.session_idle_timeout_secs {
            return Err("selfservice.session_idle_timeout_secs must be at least 60 and at most session_lifetime_secs".into());
        }
        if self.password.min_length < 8 || self.password.max_length < 64 || self.password.max_length > 4096 {
            return Err("selfservice.password.min_length must be at least 8 and max_length between 64 and 4096".into());
        }
        Ok(())
    }
}
