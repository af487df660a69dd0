//! The HTTP side of the driver: a hyper 1 client (hyper-util's pooled client over plain
//! HTTP/1.1 with keep-alive) that refuses every address but `127.0.0.1`, a tiny cookie jar for
//! the browser journeys, and form / redirect helpers.

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No single request may take longer than this; it bounds every load loop's tail.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The one host the harness ever sends to.
pub const LOOPBACK: &str = "127.0.0.1";

/// A pooled client; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response with its body read completely.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("expected JSON, got {}", String::from_utf8_lossy(self.snippet())))
    }

    /// The start of the body, for error messages.
    pub fn snippet(&self) -> &[u8] {
        &self.body[..self.body.len().min(300)]
    }

    /// A string field of a JSON body.
    pub fn json_str(&self, field: &str) -> anyhow::Result<String> {
        self.json()?.get(field).and_then(|v| v.as_str()).map(str::to_owned).with_context(|| format!("no {field:?} in the response"))
    }
}

/// One request to build and send.
pub struct Req {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
}

impl Req {
    pub fn get(url: impl Into<String>) -> Self {
        Self { method: Method::GET, url: url.into(), headers: Vec::new(), body: Bytes::new() }
    }

    pub fn post_form(url: impl Into<String>, fields: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        Self {
            method: Method::POST,
            url: url.into(),
            headers: vec![(header::CONTENT_TYPE, "application/x-www-form-urlencoded".to_owned())],
            body: Bytes::from(body),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// `client_secret_basic` (RFC 6749 §2.3.1: both parts form-urlencoded first).
    pub fn basic(self, id: &str, secret: &str) -> Self {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let value = format!("Basic {}", STANDARD.encode(format!("{}:{}", enc(id), enc(secret))));
        self.header(header::AUTHORIZATION, value)
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header(header::AUTHORIZATION, format!("Bearer {token}"))
    }

    pub fn cookies(self, jar: &Jar) -> Self {
        match jar.header() {
            Some(c) => self.header(header::COOKIE, c),
            None => self,
        }
    }
}

impl Http {
    /// `max_idle` connections are kept open for reuse (use the concurrency).
    pub fn new(max_idle: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client }
    }

    /// Sends `req` to 127.0.0.1 and reads the whole response, within [`REQUEST_TIMEOUT`].
    pub async fn send(&self, req: Req) -> anyhow::Result<Reply> {
        let uri: Uri = req.url.parse().with_context(|| format!("bad URL {}", req.url))?;
        ensure_loopback(&uri)?;
        let mut builder = Request::builder().method(req.method).uri(uri);
        for (name, value) in req.headers {
            builder = builder.header(name, HeaderValue::from_str(&value).context("bad header value")?);
        }
        let request = builder.body(Full::new(req.body)).context("building the request")?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| anyhow!("request failed: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| anyhow!("reading the body failed: {e}"))?.to_bytes();
            Ok::<_, anyhow::Error>(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| anyhow!("timed out after {REQUEST_TIMEOUT:?}"))?
    }
}

/// Refuses anything but `http://127.0.0.1:<port>/…`: the harness must never load another host.
pub fn ensure_loopback(uri: &Uri) -> anyhow::Result<()> {
    if uri.scheme_str() != Some("http") || uri.host() != Some(LOOPBACK) {
        bail!("refusing to send to {uri}: the harness only talks to http://{LOOPBACK}");
    }
    Ok(())
}

/// Resolves a `Location` header against the URL that answered with it.
pub fn resolve(base: &str, location: &str) -> anyhow::Result<String> {
    let base = url::Url::parse(base).with_context(|| format!("bad base URL {base}"))?;
    Ok(base.join(location).with_context(|| format!("bad Location {location}"))?.to_string())
}

/// The value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The `value` of `<input … name="NAME" value="…">` in an HTML page.
pub fn hidden_field(html: &[u8], name: &str) -> Option<String> {
    let html = std::str::from_utf8(html).ok()?;
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_owned())
}

/// A browser's cookies, ignoring domain and path: every journey talks to one origin.
#[derive(Default, Clone)]
pub struct Jar {
    cookies: Vec<(String, String)>,
}

impl Jar {
    /// Takes in every `Set-Cookie` of a response (deletions included).
    pub fn absorb(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|p| p.trim().split_once('=')) else { continue };
            let expired =
                parts.map(|a| a.trim().to_ascii_lowercase()).any(|a| a == "max-age=0" || (a.starts_with("expires=") && a.contains("1970")));
            self.cookies.retain(|(n, _)| n != name);
            if !expired && !val.is_empty() {
                self.cookies.push((name.to_owned(), val.to_owned()));
            }
        }
    }

    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
    }
}

/// Fast, non-cryptographic randomness for benchmark-only values (PKCE verifiers, state,
/// e-mail suffixes): SplitMix64 over a counter seeded once from the OS.
static SEED: AtomicU64 = AtomicU64::new(0);

pub fn seed_random() -> anyhow::Result<()> {
    let buf: [u8; 8] = os_random(8)?.try_into().map_err(|_| anyhow!("short read from /dev/urandom"))?;
    SEED.store(u64::from_le_bytes(buf) | 1, Ordering::Relaxed);
    Ok(())
}

/// `n` bytes from the OS (for secrets the servers keep, such as the master key).
pub fn os_random(n: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?.read_exact(&mut buf).context("reading /dev/urandom")?;
    Ok(buf)
}

pub fn random_u64() -> u64 {
    let mut z = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let bytes: Vec<u8> = (0..n.div_ceil(8)).flat_map(|_| random_u64().to_le_bytes()).take(n).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `alg` of a compact JWS's protected header (not verified: the harness only checks
/// which algorithm a system signed with).
pub fn jws_alg(token: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_algorithm_of_a_jws_header() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        assert_eq!(jws_alg(&format!("{header}.e30.sig")).as_deref(), Some("ES256"));
        assert_eq!(jws_alg("not a token"), None);
    }

    #[test]
    fn only_loopback_is_allowed() {
        assert!(ensure_loopback(&"http://127.0.0.1:8080/x".parse().expect("uri")).is_ok());
        for bad in ["http://localhost:8080/", "https://127.0.0.1/", "http://10.0.0.1/", "http://example.com/"] {
            assert!(ensure_loopback(&bad.parse().expect("uri")).is_err(), "{bad}");
        }
    }

    #[test]
    fn jar_keeps_sets_and_deletions() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/; HttpOnly"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2; Max-Age=3600"));
        let mut jar = Jar::default();
        jar.absorb(&h);
        assert_eq!(jar.header().as_deref(), Some("a=1; b=2"));
        let mut del = HeaderMap::new();
        del.append(header::SET_COOKIE, HeaderValue::from_static("a=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"));
        jar.absorb(&del);
        assert_eq!(jar.get("a"), None);
        assert_eq!(jar.get("b"), Some("2"));
    }

    #[test]
    fn pages_and_redirects() {
        let html = br#"<form><input type="hidden" name="csrf_token" value="abc_DEF-1"><input name="email"></form>"#;
        assert_eq!(hidden_field(html, "csrf_token").as_deref(), Some("abc_DEF-1"));
        assert_eq!(resolve("http://127.0.0.1:1/t/x/a?b=1", "/t/x/login?flow=2").expect("join"), "http://127.0.0.1:1/t/x/login?flow=2");
        assert_eq!(query_param("http://127.0.0.1:9/cb?code=xyz&state=s", "code").as_deref(), Some("xyz"));
        // base64url(SHA-256(verifier)), as computed by `openssl dgst -sha256 -binary | base64`.
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K9uhvrXGXJNmgYwnMjQ9hn1NEM"), "Fcr39gTuFx-Y4OUSkAVdz2_BeHSBEXfqgH1Sz3nhnPI");
        assert_eq!(random_token(32).len(), 43);
    }
}
