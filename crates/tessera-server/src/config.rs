//! Operator configuration: defaults → TOML file → `TESSERA_*` environment → flags, then one
//! validation step. Unknown keys are errors (a typo must fail loudly). Tenant settings live in
//! the database, not here.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use tessera_oauth::OAuthConfig;
use tessera_selfservice::SelfServiceConfig;
use tessera_selfservice::hasher::HashingConfig;

/// A secret that never prints.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<unset>" } else { "<redacted>" })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// The URL customers and apps reach Tessera at; issuers are `<public_url>/t/<slug>`.
    pub public_url: String,
    /// `sqlite:<path>` (embedded default) or `postgres://…`.
    pub database_url: String,
    /// Base64 of 32 random bytes; encrypts signing keys at rest.
    pub master_key: Secret,
    /// Where the embedded defaults keep their files (SQLite database, dev master key).
    pub data_dir: PathBuf,
    /// Development conveniences: http public URLs on any host, a generated master key.
    pub dev_mode: bool,
    /// Proxies whose `X-Forwarded-For` is trusted.
    pub trusted_proxies: Vec<IpAddr>,
    /// `text` or `json`.
    pub log_format: String,
    /// One log line per request (method, path, status, latency, request id). Off unless asked
    /// for or in `dev_mode`: at ten thousand tokens a second it cost 8 % of the CPU, and
    /// requests are counted in `/metrics` and sign-ins, tokens and changes recorded as events.
    pub access_log: bool,
    /// Tenant created at start when missing.
    pub bootstrap_tenant: String,
    pub tokens: OAuthConfig,
    pub selfservice: SelfServiceConfig,
    pub hashing: HashingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://localhost:8080".into(),
            database_url: String::new(),
            master_key: Secret::default(),
            data_dir: PathBuf::from("./data"),
            dev_mode: false,
            trusted_proxies: Vec::new(),
            log_format: "text".into(),
            access_log: false,
            bootstrap_tenant: "default".into(),
            tokens: OAuthConfig::default(),
            selfservice: SelfServiceConfig::default(),
            hashing: HashingConfig::default(),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub dev_mode: bool,
}

impl Config {
    pub fn load(file: Option<&PathBuf>, overrides: Overrides) -> anyhow::Result<Self> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<Config>(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        if let Some(v) = overrides.database_url {
            config.database_url = v;
        }
        if let Some(v) = overrides.listen {
            config.listen = v;
        }
        if let Some(v) = overrides.public_url {
            config.public_url = v;
        }
        config.dev_mode |= overrides.dev_mode;
        config.finish()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("TESSERA_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = var("TESSERA_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("TESSERA_PUBLIC_URL") {
            self.public_url = v;
        }
        if let Some(v) = var("TESSERA_MASTER_KEY") {
            self.master_key = Secret(v);
        }
        if let Some(v) = var("TESSERA_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("TESSERA_LOG_FORMAT") {
            self.log_format = v;
        }
        if let Some(v) = var("TESSERA_ACCESS_LOG") {
            self.access_log = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("TESSERA_DEV_MODE") {
            self.dev_mode = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = var("TESSERA_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().with_context(|| format!("TESSERA_TRUSTED_PROXIES: {s} is not an IP address")))
                .collect::<anyhow::Result<_>>()?;
        }
        Ok(())
    }

    /// Fills derived values and validates.
    fn finish(&mut self) -> anyhow::Result<()> {
        if self.database_url.is_empty() {
            self.database_url = format!("sqlite:{}?mode=rwc", self.data_dir.join("tessera.db").display());
        }
        self.public_url = self.public_url.trim_end_matches('/').to_owned();
        let url = url::Url::parse(&self.public_url).with_context(|| format!("public_url {:?} is not a URL", self.public_url))?;
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            bail!("public_url must not contain a query, fragment or credentials");
        }
        let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if local || self.dev_mode => {}
            "http" => bail!("public_url must use https outside dev mode (http is allowed for localhost and 127.0.0.1)"),
            other => bail!("public_url has unsupported scheme {other}"),
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json");
        }
        if !tessera_core::slug::is_valid_slug(&self.bootstrap_tenant) {
            bail!("bootstrap_tenant must be a valid slug");
        }
        self.tokens.public_url = self.public_url.clone();
        // http://localhost redirect URIs are for development machines only.
        self.tokens.allow_http_localhost_redirects = self.dev_mode || local;
        self.tokens.validate().map_err(anyhow::Error::msg)?;
        self.selfservice.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(toml_text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let mut c: Config = toml::from_str(toml_text)?;
        c.apply_env(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))?;
        c.finish()?;
        Ok(c)
    }

    #[test]
    fn defaults_serve_a_newcomer() {
        let c = load_from("", &[]).expect("defaults");
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://localhost:8080");
        assert!(c.database_url.starts_with("sqlite:"));
    }

    #[test]
    fn unknown_keys_and_bad_urls_fail_loudly() {
        assert!(load_from("lisen = \"x\"", &[]).is_err());
        assert!(load_from("[tokens]\naccess_token_ttl = 5", &[]).is_err());
        assert!(load_from("public_url = \"http://id.example.com\"", &[]).is_err());
        assert!(load_from("public_url = \"http://id.example.com\"\ndev_mode = true", &[]).is_ok());
        assert!(load_from("public_url = \"https://id.example.com/\"", &[]).is_ok());
        assert!(load_from("[tokens]\naccess_token_ttl_secs = 5", &[]).is_err());
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_from("listen = \"0.0.0.0:1\"", &[("TESSERA_LISTEN", "127.0.0.1:9"), ("TESSERA_PUBLIC_URL", "https://id.example.com")])
            .expect("config");
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.tokens.issuer("acme"), "https://id.example.com/t/acme");
        assert!(format!("{:?}", load_from("master_key = \"c2VjcmV0\"", &[]).expect("c")).contains("<redacted>"));
    }

    #[test]
    fn the_access_log_is_off_unless_asked_for() {
        assert!(!load_from("", &[]).expect("defaults").access_log);
        assert!(load_from("access_log = true", &[]).expect("file").access_log);
        assert!(load_from("", &[("TESSERA_ACCESS_LOG", "1")]).expect("env").access_log);
        assert!(!load_from("access_log = true", &[("TESSERA_ACCESS_LOG", "0")]).expect("env wins").access_log);
    }
}
