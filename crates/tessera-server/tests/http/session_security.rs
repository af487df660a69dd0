//! Checklist F (40-42): session renewal and fixation, cookie attributes and CSRF, logout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::http::StatusCode;

/// A browser that holds only the given session cookie.
fn with_session(value: &str) -> Browser {
    let mut b = Browser::new();
    b.cookies.insert(SESSION_COOKIE.to_owned(), value.to_owned());
    b
}

async fn is_signed_in(app: &TestApp, browser: &mut Browser, client: &TestClient) -> bool {
    query_param(&app.silent_authorize(browser, client, &[]).await, "code").is_some()
}

/// Check 40: every sign-in (first, re-authentication, sign-up, account switch) issues a new
/// session cookie value, and the previous session of that browser no longer works.
#[tokio::test]
async fn session_cookie_is_renewed_at_every_sign_in() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        app.user("mallory@example.test").await;
        let mut browser = Browser::new();
        app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let first = browser.session().expect("a session cookie after sign-in");
        app.clock.advance(time::Duration::seconds(5));
        let code = app.code_for(&mut browser, &client, "ann@example.test", &[("prompt", "login")]).await;
        assert_eq!(app.redeem(&client, &code).await.status, StatusCode::OK);
        let second = browser.session().expect("a session cookie after re-authentication");
        assert_ne!(first, second, "{db:?}: re-authentication issues a new session cookie");
        assert!(is_signed_in(&app, &mut browser, &client).await);
        assert!(
            !is_signed_in(&app, &mut with_session(&first), &client).await,
            "{db:?}: the session replaced by re-authentication is terminated"
        );

        // A session cookie planted by an attacker (their own account) is replaced when the
        // victim signs in, and the victim gets their own identity.
        let mut attacker = Browser::new();
        app.tokens_for(&mut attacker, &client, "mallory@example.test").await;
        let planted = attacker.session().unwrap();
        let mut victim = with_session(&planted);
        app.clock.advance(time::Duration::seconds(5));
        let code = app.code_for(&mut victim, &client, "ann@example.test", &[("prompt", "login")]).await;
        let tokens = app.redeem(&client, &code).await.json();
        let info = app.userinfo(tokens["access_token"].as_str().unwrap()).await.json();
        assert_eq!(info["email"], "ann@example.test", "{db:?}: the victim is themselves");
        assert_ne!(victim.session().unwrap(), planted, "{db:?}: the planted cookie is replaced");

        // Sign-up issues its own new cookie too.
        let mut browser = with_session(&second);
        let start = browser.get(&app, &app.authorize_url(&client, &[("prompt", "create")])).await;
        let page = browser.get(&app, &start.location()).await;
        let done = browser
            .submit(&app, &page, &[("email", "new@example.test"), ("password", PASSWORD), ("given_name", "N"), ("family_name", "O")])
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let after_sign_up = browser.session().unwrap();
        assert!(![first.as_str(), second.as_str()].contains(&after_sign_up.as_str()), "{db:?}: a new cookie at sign-up");
    }
}

/// Check 40: a flow started in the attacker's browser cannot be continued in the victim's —
/// neither displayed with its return target nor submitted — and the attacker's authorization
/// request gets no session out of it.
#[tokio::test]
async fn a_planted_flow_cannot_be_continued_by_another_browser() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut attacker = Browser::new();
        let start = attacker.get(&app, &app.authorize_url(&client, &[("state", "attacker-state")])).await;
        let planted = start.location();
        assert!(planted.starts_with(&app.path("/login?flow=")));
        let attacker_page = attacker.get(&app, &planted).await;
        let attacker_csrf = attacker_page.input("csrf_token").unwrap();

        let mut victim = Browser::new();
        // Opening the planted link gives the victim a fresh flow without the attacker's target.
        let opened = victim.get(&app, &planted).await;
        assert_eq!(opened.status, StatusCode::SEE_OTHER, "{db:?}");
        assert_ne!(opened.location(), planted, "{db:?}: not the attacker's flow");
        let own_page = victim.get(&app, &opened.location()).await;
        assert_eq!(own_page.status, StatusCode::OK);
        let victim_csrf = own_page.input("csrf_token").unwrap();
        assert_ne!(victim_csrf, attacker_csrf);

        // Submitting the attacker's flow id: with the victim's token, with the attacker's token,
        // and with the attacker's token but no cookie at all.
        let creds = [("email", "ann@example.test"), ("password", PASSWORD)];
        for (what, token, browser) in [
            ("victim's token", victim_csrf.as_str(), &mut victim.clone()),
            ("attacker's token", attacker_csrf.as_str(), &mut victim.clone()),
            ("attacker's token, no cookies", attacker_csrf.as_str(), &mut Browser::new()),
        ] {
            let mut form = vec![("csrf_token", token)];
            form.extend_from_slice(&creds);
            let response = browser.post(&app, &planted, &form).await;
            assert_eq!(response.status, StatusCode::FORBIDDEN, "{db:?} {what}: {}", response.body);
            assert!(response.headers.get("location").is_none(), "{db:?} {what}");
            assert!(response.set_cookie(SESSION_COOKIE).is_none(), "{db:?} {what}: no session");
            assert!(browser.session().is_none(), "{db:?} {what}");
        }
        // Signing in on the victim's own (fresh) flow leads to the account page, not to the
        // attacker's authorization request.
        let done = victim.submit(&app, &own_page, &creds).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        assert!(!done.location().starts_with(REDIRECT), "{db:?}: {}", done.location());
        assert_eq!(done.location(), app.path("/account"));
        // The attacker's browser is still anonymous and its request still unfinished.
        assert!(attacker.session().is_none());
        let again = attacker.get(&app, &planted).await;
        assert_eq!(again.status, StatusCode::OK, "{db:?}: the attacker's flow still waits for a sign-in");
        assert!(again.body.contains("Sign in"));
    }
}

/// Check 40 (gap): an authorization request id started by an attacker can be attached to the
/// victim's browser through `/login?request=…` or `/oauth2/continue?request=…`; a signed-in
/// victim then completes the attacker's request (attacker-chosen PKCE challenge, state, nonce).
#[tokio::test]
async fn a_planted_authorization_request_cannot_be_completed_by_another_browser() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut attacker = Browser::new();
        let attacker_challenge = s256(&"m".repeat(43));
        let start = attacker.get(&app, &app.authorize_url(&client, &[("code_challenge", &attacker_challenge)])).await;
        let page = attacker.get(&app, &start.location()).await;
        // The sign-up link of the page names the request.
        let request_id = page.body.split("request=").nth(1).unwrap().chars().take(36).collect::<String>();

        let mut victim = Browser::new();
        app.tokens_for(&mut victim, &client, "ann@example.test").await;
        for path in [format!("/oauth2/continue?request={request_id}"), format!("/login?request={request_id}")] {
            let mut response = victim.get(&app, &app.path(&path)).await;
            if response.status == StatusCode::SEE_OTHER && response.location().starts_with(&app.path("/login?flow=")) {
                let page = victim.get(&app, &response.location()).await;
                response = victim.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
            }
            assert!(
                query_param(&response.location(), "code").is_none(),
                "{db:?} {path}: the victim's browser completed the attacker's request: {}",
                response.location()
            );
        }
    }
}

fn with_csrf<'a>(fields: &[(&'a str, &'a str)], token: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut form = fields.to_vec();
    if let Some(t) = token {
        form.push(("csrf_token", t));
    }
    form
}

fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie.split(';').skip(1).map(|a| a.trim().to_owned()).collect()
}

/// Check 41: session and CSRF cookies are `__Host-`, Secure, HttpOnly, SameSite=Lax, Path=/,
/// host-only, 128+ random bits; every state-changing form carries a CSRF token that is checked.
#[tokio::test]
async fn cookies_are_host_only_secure_and_forms_are_csrf_protected() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        let third_party = app.client(ClientOptions { first_party: false, ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&client, &[])).await;
        let csrf_cookie = start.set_cookie(CSRF_COOKIE).unwrap_or_else(|| panic!("{db:?}: CSRF cookie: {:?}", start.set_cookies()));
        let page = browser.get(&app, &start.location()).await;
        let done = browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        let session_cookie = done.set_cookie(SESSION_COOKIE).unwrap_or_else(|| panic!("{db:?}: session cookie: {:?}", done.set_cookies()));
        for (name, cookie) in [(SESSION_COOKIE, &session_cookie), (CSRF_COOKIE, &csrf_cookie)] {
            let attrs = attributes(cookie);
            for required in ["Secure", "HttpOnly", "Path=/"] {
                assert!(attrs.iter().any(|a| a == required), "{db:?} {name}: {required} missing in {cookie}");
            }
            assert!(attrs.iter().any(|a| a == "SameSite=Lax" || a == "SameSite=Strict"), "{db:?} {name}: SameSite in {cookie}");
            assert!(!attrs.iter().any(|a| a.to_ascii_lowercase().starts_with("domain")), "{db:?} {name}: host-only: {cookie}");
            let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
            let bytes = b64url_decode(value).unwrap_or_else(|| panic!("{db:?} {name}: base64url value"));
            assert!(bytes.len() >= 16, "{db:?} {name}: {} random bytes", bytes.len());
        }
        // No other cookie is set without the same protections.
        for cookie in done.set_cookies().iter().chain(start.set_cookies().iter()) {
            assert!(cookie.starts_with("__Host-"), "{db:?}: every cookie is __Host-: {cookie}");
        }

        // Every state-changing form carries a CSRF token.
        let mut fresh = Browser::new();
        let login_start = fresh.get(&app, &app.path("/login")).await.location();
        let login = fresh.get(&app, &login_start).await;
        let registration_start = fresh.get(&app, &app.path("/registration")).await.location();
        let registration = fresh.get(&app, &registration_start).await;
        let consent_start = browser.get(&app, &app.authorize_url(&third_party, &[])).await;
        let consent = browser.get(&app, &consent_start.location()).await;
        let account = browser.get(&app, &app.path("/account")).await;
        let logout = browser.get(&app, &app.path("/oauth2/logout")).await;
        for (what, page) in
            [("login", &login), ("registration", &registration), ("consent", &consent), ("account", &account), ("logout", &logout)]
        {
            assert_eq!(page.status, StatusCode::OK, "{db:?} {what}");
            let token = page.input("csrf_token").unwrap_or_else(|| panic!("{db:?} {what}: no CSRF token in the form"));
            assert_eq!(token.len(), 43, "{db:?} {what}");
        }

        // …and the token is checked: missing or wrong tokens are refused.
        let wrong = "x".repeat(43);
        for bad in [None, Some(wrong.as_str())] {
            let with_token = |fields: &[(&'static str, &'static str)]| with_csrf(fields, bad);
            let creds = with_token(&[("email", "ann@example.test"), ("password", PASSWORD)]);
            let r = fresh.post(&app, &login.form_action().unwrap(), &creds).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?} login {bad:?}");
            assert!(fresh.session().is_none());
            let signup = with_token(&[("email", "csrf@example.test"), ("password", PASSWORD), ("given_name", "C"), ("family_name", "S")]);
            let r = fresh.post(&app, &registration.form_action().unwrap(), &signup).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?} registration {bad:?}");
            assert!(app.rt.store.find_user_by_email(app.tenant.id, "csrf@example.test").await.unwrap().is_none(), "{db:?}: no account");
            let r = browser.post(&app, &consent.form_action().unwrap(), &with_token(&[("decision", "allow")])).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{db:?} consent {bad:?}");
            let r = browser.post(&app, &logout.form_action().unwrap(), &with_token(&[])).await;
            assert_eq!(r.status, StatusCode::OK, "{db:?} logout {bad:?}: asks for confirmation instead");
            assert!(is_signed_in(&app, &mut browser, &client).await, "{db:?} logout {bad:?}: still signed in");
        }
    }
}

/// Check 42: logout ends the server-side session: the old cookie replayed is anonymous, the
/// browser is told to drop it, and logging out without cookies leaves nothing to resume.
#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let hint = t["id_token"].as_str().unwrap();
        let old_cookie = browser.session().unwrap();
        let url = format!("{}?{}", app.path("/oauth2/logout"), encode_form(&[("id_token_hint", hint)]));
        let out = browser.get(&app, &url).await;
        assert!(out.status.is_success() || out.status == StatusCode::SEE_OTHER, "{db:?}: {}", out.body);
        let cleared = out.set_cookie(SESSION_COOKIE).unwrap_or_else(|| panic!("{db:?}: the cookie is cleared: {:?}", out.set_cookies()));
        assert!(cleared.contains("Max-Age=0"), "{db:?}: {cleared}");
        assert!(browser.session().is_none());
        // Replaying the old cookie: anonymous everywhere.
        let mut replay = with_session(&old_cookie);
        let silent = app.silent_authorize(&mut replay, &client, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}: replayed cookie after logout");
        let account = replay.get(&app, &app.path("/account")).await;
        assert_eq!(account.status, StatusCode::SEE_OTHER, "{db:?}: the account page needs a sign-in");
        assert!(account.location().starts_with(&app.path("/login")));
        let interactive = replay.get(&app, &app.authorize_url(&client, &[])).await;
        assert!(interactive.location().starts_with(&app.path("/login?flow=")), "{db:?}: {}", interactive.location());

        // Logging out through the account page's form (POST with CSRF) works the same way.
        let mut browser = Browser::new();
        app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let old_cookie = browser.session().unwrap();
        let account = browser.get(&app, &app.path("/account")).await;
        let out = browser.submit(&app, &account, &[]).await;
        assert!(out.status.is_success(), "{db:?}: {} {}", out.status, out.body);
        assert!(browser.session().is_none(), "{db:?}: the browser drops the cookie");
        assert!(!is_signed_in(&app, &mut with_session(&old_cookie), &client).await, "{db:?}: server-side session ended");

        // A logout request that arrives without cookies fails gracefully and still clears.
        let mut cookieless = Browser::new();
        let out = cookieless.get(&app, &url).await;
        assert!(!out.status.is_server_error(), "{db:?}: {}", out.status);
        assert!(out.set_cookie(SESSION_COOKIE).is_some_and(|c| c.contains("Max-Age=0")), "{db:?}: cleared anyway");
        assert!(!is_signed_in(&app, &mut cookieless, &client).await, "{db:?}: nothing to resume in that browser");
    }
}
