//! The scenarios, each an [`Op`] over one system:
//!
//! | scenario | one operation | systems |
//! |---|---|---|
//! | `client_credentials` | `POST token` (client_secret_basic, `scope=api`) → JWT access token | all |
//! | `refresh` | `POST token` with the virtual user's current refresh token; keeps the rotated one | all |
//! | `discovery_jwks` | `GET` discovery, then `GET` JWKS | all |
//! | `userinfo` | `GET userinfo` with a bearer access token | all |
//! | `introspection` | `POST introspect` of an access token (client_secret_basic) | all |
//! | `sign_in` | authorize → sign-in page → form POST → 303s → code → token exchange | Tessera |
//!
//! Tokens are obtained through the real authorization code flow: on Tessera by signing a
//! seeded customer in with a password, on the peer through its interaction (which has no
//! password store and signs the `login_hint` account in at once).

use crate::http::{self, Http, Jar, Reply, Req};
use crate::load::{Op, OpError, OpFuture};
use crate::seed::Customers;
use crate::systems::{Kind, REDIRECT_URI, System};
use hyper::header;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The scope the bench client asks for in `client_credentials` (a resource server's scope).
pub const API_SCOPE: &str = "api";
/// The peer's resource indicator (see `bench/peer/server.mjs`).
pub const PEER_RESOURCE: &str = "urn:tessera-bench:api";
/// The scope of the browser sign-in.
pub const SIGN_IN_SCOPE: &str = "openid profile email offline_access";
/// Redirect hops followed at most in one journey.
const MAX_HOPS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    ClientCredentials,
    /// `client_credentials` open loop at half of the measured closed-loop peak.
    ClientCredentialsHalfPeak,
    Refresh,
    DiscoveryJwks,
    Userinfo,
    Introspection,
    SignIn,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::ClientCredentials,
        Scenario::ClientCredentialsHalfPeak,
        Scenario::Refresh,
        Scenario::DiscoveryJwks,
        Scenario::Userinfo,
        Scenario::Introspection,
        Scenario::SignIn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ClientCredentials => "client_credentials",
            Scenario::ClientCredentialsHalfPeak => "client_credentials_half_peak",
            Scenario::Refresh => "refresh",
            Scenario::DiscoveryJwks => "discovery_jwks",
            Scenario::Userinfo => "userinfo",
            Scenario::Introspection => "introspection",
            Scenario::SignIn => "sign_in",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::ClientCredentials => "client_credentials grant (1 request)",
            Scenario::ClientCredentialsHalfPeak => "client_credentials, open loop at ½ of peak (1 request)",
            Scenario::Refresh => "refresh_token grant with rotation (1 request)",
            Scenario::DiscoveryJwks => "discovery + JWKS GET (2 requests)",
            Scenario::Userinfo => "userinfo with a bearer token (1 request)",
            Scenario::Introspection => "introspection of an access token (1 request)",
            Scenario::SignIn => "browser sign-in + code exchange (5 requests)",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn applies_to(self, kind: Kind) -> bool {
        self != Scenario::SignIn || kind.is_tessera()
    }
}

/// Everything an operation needs to talk to one system; cheap to clone.
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub http: Http,
    pub endpoints: crate::systems::Endpoints,
    pub client_id: String,
    pub client_secret: String,
}

impl Target {
    pub fn new(system: &System, http: Http) -> Self {
        Self {
            kind: system.kind,
            http,
            endpoints: system.endpoints.clone(),
            client_id: system.client_id.clone(),
            client_secret: system.client_secret.clone(),
        }
    }

    fn token_request(&self, fields: &[(&str, &str)]) -> Req {
        Req::post_form(&self.endpoints.token, fields).basic(&self.client_id, &self.client_secret)
    }
}

/// Tokens from a code exchange.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// The algorithm the ID token was signed with, when there is one.
    pub id_token_alg: Option<String>,
}

fn expect_status(reply: &Reply, status: u16, what: &str) -> Result<(), OpError> {
    if reply.status == status {
        Ok(())
    } else {
        Err(OpError::status(reply.status, format!("{what}: {}", String::from_utf8_lossy(reply.snippet()))))
    }
}

pub fn client_credentials(target: Target) -> Op {
    Arc::new(move |_vu, _n| {
        let t = target.clone();
        Box::pin(async move {
            let reply = t.http.send(t.token_request(&[("grant_type", "client_credentials"), ("scope", API_SCOPE)])).await?;
            expect_status(&reply, 200, "token")
        }) as OpFuture
    })
}

/// Each virtual user owns one refresh-token chain and always presents its latest token.
pub fn refresh(target: Target, chains: Arc<Vec<Mutex<Option<String>>>>) -> Op {
    Arc::new(move |vu, _n| {
        let t = target.clone();
        let chains = chains.clone();
        Box::pin(async move {
            let slot = chains.get(vu % chains.len().max(1)).ok_or_else(|| OpError::other("no refresh chain"))?;
            let mut current = slot.lock().await;
            let Some(token) = current.clone() else {
                // A broken chain stays broken (and counted); do not spin on it.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return Err(OpError::other("this virtual user's refresh chain broke earlier"));
            };
            let reply = t.http.send(t.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &token)])).await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    // The server may or may not have rotated: the chain is unknown now.
                    *current = None;
                    return Err(e.into());
                }
            };
            if reply.status != 200 {
                *current = None;
                return Err(OpError::status(reply.status, String::from_utf8_lossy(reply.snippet()).into_owned()));
            }
            let next = reply.json_str("refresh_token").map_err(|e| OpError::status(200, format!("no rotated refresh token ({e:#})")))?;
            *current = Some(next);
            Ok(())
        }) as OpFuture
    })
}

pub fn discovery_jwks(target: Target) -> Op {
    Arc::new(move |_vu, _n| {
        let t = target.clone();
        Box::pin(async move {
            let d = t.http.send(Req::get(&t.endpoints.discovery)).await?;
            expect_status(&d, 200, "discovery")?;
            let j = t.http.send(Req::get(&t.endpoints.jwks)).await?;
            expect_status(&j, 200, "jwks")
        }) as OpFuture
    })
}

pub fn userinfo(target: Target, access_token: Arc<String>) -> Op {
    Arc::new(move |_vu, _n| {
        let t = target.clone();
        let at = access_token.clone();
        Box::pin(async move {
            let reply = t.http.send(Req::get(&t.endpoints.userinfo).bearer(&at)).await?;
            expect_status(&reply, 200, "userinfo")
        }) as OpFuture
    })
}

pub fn introspection(target: Target, access_token: Arc<String>) -> Op {
    Arc::new(move |_vu, _n| {
        let t = target.clone();
        let at = access_token.clone();
        Box::pin(async move {
            let req = Req::post_form(&t.endpoints.introspection, &[("token", &at)]).basic(&t.client_id, &t.client_secret);
            let reply = t.http.send(req).await?;
            expect_status(&reply, 200, "introspection")?;
            if reply.json().ok().and_then(|v| v.get("active").and_then(|a| a.as_bool())) == Some(true) {
                Ok(())
            } else {
                Err(OpError::status(200, "the token introspected as inactive"))
            }
        }) as OpFuture
    })
}

/// The full browser sign-in of customer `n mod N`, ending with the code exchange.
pub fn sign_in(target: Target, customers: Arc<Customers>) -> Op {
    Arc::new(move |_vu, n| {
        let t = target.clone();
        let c = customers.clone();
        Box::pin(async move {
            if c.count == 0 {
                return Err(OpError::other("no customers seeded"));
            }
            let email = c.pick(n);
            authorization_code_flow(&t, Some((&email, &c.password)), None).await.map(|_| ())
        }) as OpFuture
    })
}

/// Runs the authorization code flow with PKCE in a fresh browser and exchanges the code.
///
/// On Tessera `credentials` are typed into the hosted sign-in form; on the peer the
/// interaction signs `login_hint` in by itself and the API resource is requested too (so its
/// refreshes give JWT access tokens).
pub async fn authorization_code_flow(t: &Target, credentials: Option<(&str, &str)>, login_hint: Option<&str>) -> Result<TokenSet, OpError> {
    let mut jar = Jar::default();
    let verifier = http::random_token(32);
    let state = http::random_token(16);
    let url = {
        // Built in a block: the serializer is not `Send` and must not live across an await.
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &t.client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", SIGN_IN_SCOPE)
            .append_pair("state", &state)
            .append_pair("nonce", &http::random_token(16))
            .append_pair("code_challenge", &http::pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        if t.kind == Kind::Peer {
            query.append_pair("prompt", "consent").append_pair("resource", PEER_RESOURCE);
        }
        if let Some(hint) = login_hint {
            query.append_pair("login_hint", hint);
        }
        format!("{}?{}", t.endpoints.authorization, query.finish())
    };

    let mut step = follow(t, &mut jar, Req::get(&url), &url).await?;
    let mut posted = false;
    let callback = loop {
        match step {
            Step::Callback(location) => break location,
            Step::Page { url, reply } => {
                let Some((email, password)) = credentials.filter(|_| !posted) else {
                    return Err(OpError::status(
                        reply.status,
                        format!("unexpected page at {url}: {}", String::from_utf8_lossy(reply.snippet())),
                    ));
                };
                let csrf = http::hidden_field(&reply.body, "csrf_token")
                    .ok_or_else(|| OpError::status(reply.status, "the sign-in page has no csrf_token"))?;
                let form = Req::post_form(&url, &[("email", email), ("password", password), ("csrf_token", &csrf)]);
                posted = true;
                step = follow(t, &mut jar, form, &url).await?;
            }
        }
    };
    if http::query_param(&callback, "state").as_deref() != Some(state.as_str()) {
        return Err(OpError::other("the callback's state does not match"));
    }
    let code = http::query_param(&callback, "code").ok_or_else(|| {
        OpError::other(format!("no code in the callback ({})", http::query_param(&callback, "error").unwrap_or_default()))
    })?;
    let reply = t
        .http
        .send(t.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ]))
        .await?;
    expect_status(&reply, 200, "code exchange")?;
    Ok(TokenSet {
        access_token: reply.json_str("access_token")?,
        refresh_token: reply.json().ok().and_then(|v| v.get("refresh_token").and_then(|r| r.as_str()).map(str::to_owned)),
        id_token_alg: reply.json_str("id_token").ok().and_then(|t| http::jws_alg(&t)),
    })
}

/// Where a chain of redirects ended.
enum Step {
    /// At the client's redirect URI (not requested).
    Callback(String),
    /// At a page (status 200 or an error page).
    Page { url: String, reply: Reply },
}

/// Sends `req` and follows `Location` headers (GET, cookies kept) up to [`MAX_HOPS`].
async fn follow(t: &Target, jar: &mut Jar, req: Req, url: &str) -> Result<Step, OpError> {
    let mut url = url.to_owned();
    let mut reply = t.http.send(req.cookies(jar)).await?;
    for _ in 0..MAX_HOPS {
        jar.absorb(&reply.headers);
        if !(300..400).contains(&reply.status) {
            return Ok(Step::Page { url, reply });
        }
        let location = reply.header(&header::LOCATION).ok_or_else(|| OpError::status(reply.status, "redirect without Location"))?;
        let next = http::resolve(&url, location)?;
        if next.starts_with(REDIRECT_URI) {
            return Ok(Step::Callback(next));
        }
        url = next;
        reply = t.http.send(Req::get(&url).cookies(jar)).await?;
    }
    Err(OpError::other(format!("more than {MAX_HOPS} redirects")))
}
