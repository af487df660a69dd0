//! The test harness: a real Tessera (real SQLite, or real PostgreSQL when
//! `TESSERA_TEST_POSTGRES_URL` is set) behind its real router, driven without a socket, with a
//! cookie-keeping "browser" and a manual clock.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tessera_core::ManualClock;
use tessera_core::model::Tenant;
use tessera_oauth::registration::{ClientMetadata, create_client};
use tessera_selfservice::hasher::HashingConfig;
use tessera_server::Runtime;
use tessera_server::config::Config;
use tower::ServiceExt;

pub const REDIRECT: &str = "https://app.example.test/cb";
pub const PASSWORD: &str = "correct horse battery staple";
/// RFC 7636 appendix B.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The databases to run a test on: SQLite always, PostgreSQL when configured.
pub fn databases() -> Vec<Db> {
    let mut dbs = vec![Db::Sqlite];
    if std::env::var("TESSERA_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty()) {
        dbs.push(Db::Postgres);
    }
    dbs
}

pub struct TestApp {
    pub rt: Runtime,
    pub router: Router,
    pub tenant: Tenant,
    pub clock: Arc<ManualClock>,
    pub db: Db,
    dir: PathBuf,
    pg_database: Option<(String, String)>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((admin_url, name)) = self.pg_database.take() {
            // Best effort: the pool may still hold connections, so force them out.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut c).await;
                    }
                });
            })
            .join();
        }
    }
}

/// Settings that keep tests fast without changing behaviour: small Argon2 parameters.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config: Config = toml::from_str("").unwrap();
    config.public_url = "https://id.example.test".into();
    config.data_dir = dir.to_path_buf();
    config.master_key = tessera_server::config::Secret(tessera_oauth::keys::MasterKey::generate_base64().unwrap());
    config.hashing = HashingConfig { memory_kib: 1024, iterations: 1, parallelism: 1, workers: 2, max_queue: 64 };
    config
}

impl TestApp {
    pub async fn new(db: Db) -> Self {
        Self::with_config(db, |_| {}).await
    }

    pub async fn with_config(db: Db, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = std::env::temp_dir().join(format!("tessera-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = test_config(&dir);
        let mut pg_database = None;
        config.database_url = match db {
            Db::Sqlite => format!("sqlite:{}?mode=rwc", dir.join("tessera.db").display()),
            Db::Postgres => {
                let admin_url = std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap();
                let name = format!("tessera_http_{}", uuid::Uuid::new_v4().simple());
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut c).await.unwrap();
                let url = replace_db_name(&admin_url, &name);
                pg_database = Some((admin_url, name));
                url
            }
        };
        tweak(&mut config);
        let config = reload(config);
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let rt = Runtime::start(config, clock.clone()).await.unwrap();
        let (tenant, _) = tessera_server::bootstrap::ensure_tenant(&rt, "acme", "Acme Shop").await.unwrap();
        let router = tessera_web::app(rt.app_state(None));
        Self { rt, router, tenant, clock, db, dir, pg_database }
    }

    pub fn clock_now(&self) -> time::OffsetDateTime {
        tessera_core::Clock::now(self.clock.as_ref())
    }

    pub fn issuer(&self) -> String {
        format!("https://id.example.test/t/{}", self.tenant.slug)
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/t/{}{rest}", self.tenant.slug)
    }

    /// Sends a request as if from 203.0.113.7.
    pub async fn send(&self, mut req: Request<Body>) -> TestResponse {
        let peer: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        TestResponse { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub async fn post_form(&self, uri: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> TestResponse {
        let mut req = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(encode_form(form))).unwrap()).await
    }

    /// POST to the token endpoint with HTTP Basic client authentication.
    pub async fn token(&self, client: &TestClient, form: &[(&str, &str)]) -> TestResponse {
        let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", client.id, client.secret.clone().unwrap_or_default())));
        match &client.secret {
            Some(_) => self.post_form(&self.path("/oauth2/token"), form, &[("authorization", &basic)]).await,
            None => {
                let mut with_id = form.to_vec();
                with_id.push(("client_id", &client.id));
                self.post_form(&self.path("/oauth2/token"), &with_id, &[]).await
            }
        }
    }

    pub async fn client(&self, options: ClientOptions) -> TestClient {
        let metadata = ClientMetadata {
            redirect_uris: options.redirect_uris.iter().map(|s| s.to_string()).collect(),
            post_logout_redirect_uris: options.post_logout_redirect_uris.iter().map(|s| s.to_string()).collect(),
            client_name: Some("Test App".into()),
            grant_types: Some(options.grant_types.iter().map(|s| s.to_string()).collect()),
            response_types: None,
            token_endpoint_auth_method: Some(if options.public { "none" } else { "client_secret_basic" }.into()),
            scope: None,
            id_token_signed_response_alg: options.id_token_alg.map(str::to_owned),
        };
        let created = create_client(&self.rt.oauth, &self.tenant, &metadata, options.first_party).await.unwrap();
        TestClient { id: created.client.client_id, secret: created.secret }
    }

    /// A confidential first-party client with the default redirect.
    pub async fn default_client(&self) -> TestClient {
        self.client(ClientOptions::default()).await
    }

    pub async fn user(&self, email: &str) -> tessera_core::model::User {
        let form = tessera_selfservice::registration::SignUpForm {
            email: email.into(),
            password: PASSWORD.into(),
            given_name: "Ann".into(),
            family_name: "Lee".into(),
        };
        tessera_selfservice::registration::sign_up(&self.rt.selfservice, &self.tenant, &form, &Default::default(), "admin").await.unwrap()
    }

    pub fn authorize_url(&self, client: &TestClient, extra: &[(&str, &str)]) -> String {
        let mut params: Vec<(&str, &str)> = vec![
            ("client_id", &client.id),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "openid profile email offline_access"),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            params.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        format!("{}?{}", self.path("/oauth2/authorize"), encode_form(&params))
    }

    /// Signs `email` in through the hosted pages for an authorization request and returns the
    /// final redirect to the client.
    pub async fn login_for_code(&self, browser: &mut Browser, client: &TestClient, email: &str, extra: &[(&str, &str)]) -> String {
        let first = browser.get(self, &self.authorize_url(client, extra)).await;
        assert_eq!(first.status, StatusCode::SEE_OTHER, "authorize: {}", first.body);
        let location = first.location();
        if !location.starts_with(&self.path("/login")) {
            return location;
        }
        let page = browser.get(self, &location).await;
        assert_eq!(page.status, StatusCode::OK);
        let done = browser.submit(self, &page, &[("email", email), ("password", PASSWORD)]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "login: {}", done.body);
        let mut location = done.location();
        while location.starts_with('/') {
            let next = browser.get(self, &location).await;
            if next.status == StatusCode::OK && location.contains("/consent") {
                let decided = browser.submit(self, &next, &[("decision", "allow")]).await;
                location = decided.location();
                continue;
            }
            location = next.location();
        }
        location
    }

    /// The whole code flow: sign-in, code, token exchange. Returns the token response JSON.
    pub async fn tokens_for(&self, browser: &mut Browser, client: &TestClient, email: &str) -> Value {
        let redirect = self.login_for_code(browser, client, email, &[]).await;
        let code = query_param(&redirect, "code").expect("code in redirect");
        let response = self
            .token(
                client,
                &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)],
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "token: {}", response.body);
        response.json()
    }
}

fn reload(config: Config) -> Config {
    // Apply the same derivations as `Config::load` (public URL into the token settings, …).
    let mut c = config;
    c.tokens.public_url = c.public_url.clone();
    let local = url::Url::parse(&c.public_url).is_ok_and(|u| matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")));
    c.tokens.allow_http_localhost_redirects = c.dev_mode || local;
    c
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map(|(b, q)| (b, Some(q))).unwrap_or((url, None));
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&#x2f;", "/").replace("&quot;", "\"").replace("&#x27;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[derive(Clone)]
pub struct ClientOptions {
    pub redirect_uris: Vec<&'static str>,
    pub post_logout_redirect_uris: Vec<&'static str>,
    pub grant_types: Vec<&'static str>,
    pub public: bool,
    pub first_party: bool,
    pub id_token_alg: Option<&'static str>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            redirect_uris: vec![REDIRECT],
            post_logout_redirect_uris: vec!["https://app.example.test/bye"],
            grant_types: vec!["authorization_code", "refresh_token"],
            public: false,
            first_party: true,
            id_token_alg: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl TestResponse {
    pub fn location(&self) -> String {
        self.headers.get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of a hidden or text input in the page.
    pub fn input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\"");
        let start = self.body.find(&marker)?;
        let tail = &self.body[start..];
        let end = tail.find('>')?;
        let tag = &tail[..end];
        let v = tag.split("value=\"").nth(1)?;
        Some(html_unescape(v.split('"').next()?))
    }

    /// The `action` of the first form.
    pub fn form_action(&self) -> Option<String> {
        let v = self.body.split("action=\"").nth(1)?;
        Some(html_unescape(v.split('"').next()?))
    }
}

/// A cookie jar that behaves like a browser for our host.
#[derive(Default, Clone)]
pub struct Browser {
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn store(&mut self, response: &TestResponse) {
        for value in response.headers.get_all(header::SET_COOKIE) {
            let raw = value.to_str().unwrap();
            let (pair, attrs) = raw.split_once(';').unwrap_or((raw, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub async fn get(&mut self, app: &TestApp, uri: &str) -> TestResponse {
        let uri = uri.strip_prefix("https://id.example.test").unwrap_or(uri);
        let req = Request::get(uri).header(header::COOKIE, self.cookie_header()).body(Body::empty()).unwrap();
        let response = app.send(req).await;
        self.store(&response);
        response
    }

    pub async fn post(&mut self, app: &TestApp, uri: &str, form: &[(&str, &str)]) -> TestResponse {
        let uri = uri.strip_prefix("https://id.example.test").unwrap_or(uri);
        let req = Request::post(uri)
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode_form(form)))
            .unwrap();
        let response = app.send(req).await;
        self.store(&response);
        response
    }

    /// Submits the page's form with its CSRF token plus `fields`.
    pub async fn submit(&mut self, app: &TestApp, page: &TestResponse, fields: &[(&str, &str)]) -> TestResponse {
        let action = page.form_action().expect("page has a form");
        let csrf = page.input("csrf_token").expect("form has a CSRF token");
        let mut form = vec![("csrf_token", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(app, &action, &form).await
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the security tests.

/// The session cookie of tenant `acme` on an https public URL.
pub const SESSION_COOKIE: &str = "__Host-tessera_session_acme";
/// The CSRF cookie on an https public URL.
pub const CSRF_COOKIE: &str = "__Host-tessera_csrf";

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// The S256 code challenge of a verifier (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// Header and claims of a compact JWS, without verifying anything (for inspection only).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || serde_json::from_slice::<Value>(&b64url_decode(parts.next().expect("JWT part")).expect("base64url")).expect("JSON");
    let header = next();
    let claims = next();
    (header, claims)
}

/// A token from a header and claims, "signed" with the given signature bytes.
pub fn forge_jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()), b64url(signature))
}

/// Replaces every UUID-shaped substring by `<uuid>` (flow ids, request ids).
pub fn mask_uuids(s: &str) -> String {
    fn is_uuid(b: &[u8]) -> bool {
        b.len() == 36 && b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let ch = s[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Asserts an error page: an HTML page with a 4xx status and no redirect anywhere.
#[track_caller]
pub fn assert_error_page(response: &TestResponse, context: &str) {
    assert!(response.status.is_client_error(), "{context}: expected an error page, got {} {}", response.status, response.location());
    assert!(response.headers.get(header::LOCATION).is_none(), "{context}: must not redirect, got {}", response.location());
    assert!(response.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{context}: an HTML page");
}

/// The `error` of a redirect to the client, asserting the redirect goes to `redirect_base`.
#[track_caller]
pub fn redirect_error(response: &TestResponse, redirect_base: &str) -> String {
    assert_eq!(response.status, StatusCode::SEE_OTHER, "expected a redirect: {}", response.body);
    let location = response.location();
    assert!(location.starts_with(redirect_base), "redirect to {location}, expected {redirect_base}");
    query_param(&location, "error").unwrap_or_else(|| panic!("no error in {location}"))
}

impl TestResponse {
    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }

    /// The `Set-Cookie` header that sets cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The `error` member of a JSON error body.
    pub fn oauth_error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

impl Browser {
    /// The session cookie's value, if the browser holds one.
    pub fn session(&self) -> Option<String> {
        self.cookies.get(SESSION_COOKIE).cloned()
    }

    pub fn csrf(&self) -> Option<String> {
        self.cookies.get(CSRF_COOKIE).cloned()
    }
}

impl TestApp {
    /// GET userinfo with a bearer token.
    pub async fn userinfo(&self, token: &str) -> TestResponse {
        let req = Request::get(self.path("/oauth2/userinfo"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    pub async fn discovery(&self) -> Value {
        let response = self.get(&self.path("/.well-known/openid-configuration")).await;
        assert_eq!(response.status, StatusCode::OK);
        response.json()
    }

    pub async fn jwks(&self) -> Value {
        let response = self.get(&self.path("/jwks.json")).await;
        assert_eq!(response.status, StatusCode::OK);
        response.json()
    }

    /// Verifies a JWT against the published JWKS (signature, `kid`, the algorithm of the key)
    /// and the exact issuer; `audience` is checked when given. Expiry is checked by callers
    /// (the test clock is not the wall clock). Returns the header and the claims.
    pub async fn verify_jwt(&self, token: &str, audience: Option<&str>) -> Result<(jsonwebtoken::Header, Value), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        let kid = header.kid.clone().ok_or("no kid")?;
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(self.jwks().await).map_err(|e| format!("jwks: {e}"))?;
        let jwk = jwks.find(&kid).ok_or_else(|| format!("kid {kid} is not published"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat"]);
        validation.set_issuer(&[self.issuer()]);
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| format!("verify: {e}"))?;
        Ok((header, data.claims))
    }

    /// Signs in (or rides the session) and returns the authorization code.
    pub async fn code_for(&self, browser: &mut Browser, client: &TestClient, email: &str, extra: &[(&str, &str)]) -> String {
        let redirect = self.login_for_code(browser, client, email, extra).await;
        query_param(&redirect, "code").unwrap_or_else(|| panic!("no code in {redirect}"))
    }

    /// The standard code redemption (registered redirect, RFC 7636 verifier).
    pub async fn redeem(&self, client: &TestClient, code: &str) -> TestResponse {
        self.token(client, &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)])
            .await
    }

    pub async fn refresh(&self, client: &TestClient, refresh_token: &str) -> TestResponse {
        self.token(client, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
    }

    /// RFC 7662 introspection by `client`; returns the JSON body.
    pub async fn introspect(&self, client: &TestClient, token: &str) -> Value {
        let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", client.id, client.secret.clone().unwrap_or_default())));
        let response = self.post_form(&self.path("/oauth2/introspect"), &[("token", token)], &[("authorization", &basic)]).await;
        assert_eq!(response.status, StatusCode::OK, "introspect: {}", response.body);
        response.json()
    }

    /// Disables a customer the way the admin CLI does.
    pub async fn disable(&self, user: &tessera_core::model::User) {
        let event =
            tessera_core::NewEvent::new(self.tenant.id, tessera_core::EventKind::UserDisabled, tessera_core::Clock::now(&*self.clock))
                .user(user.id);
        self.rt.store.set_user_disabled(self.tenant.id, user.id, true, &event).await.unwrap();
    }

    /// A customer with a given password.
    pub async fn user_with_password(&self, email: &str, password: &str) -> tessera_core::model::User {
        let form = tessera_selfservice::registration::SignUpForm {
            email: email.into(),
            password: password.into(),
            given_name: "Ann".into(),
            family_name: "Lee".into(),
        };
        tessera_selfservice::registration::sign_up(&self.rt.selfservice, &self.tenant, &form, &Default::default(), "admin").await.unwrap()
    }

    /// An authorization request with `prompt=none` from this browser: the redirect's query.
    pub async fn silent_authorize(&self, browser: &mut Browser, client: &TestClient, extra: &[(&str, &str)]) -> String {
        let mut params = vec![("prompt", "none")];
        params.extend_from_slice(extra);
        let response = browser.get(self, &self.authorize_url(client, &params)).await;
        assert_eq!(response.status, StatusCode::SEE_OTHER, "prompt=none must redirect: {}", response.body);
        let location = response.location();
        assert!(location.starts_with(REDIRECT), "prompt=none redirects to the client: {location}");
        location
    }
}

/// Form fields or headers as name/value pairs.
pub type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Median of durations, in seconds.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = samples.len();
    if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 }
}
