//! Journeys and operations beyond the security checklist: expired flows, session lifetimes,
//! consent, machine tokens, dynamic registration, overload, tenancy, events and health.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tessera_core::EventKind;
use tessera_selfservice::hasher::HashingConfig;

#[tokio::test]
async fn an_expired_flow_is_replaced_and_keeps_its_return_target() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&client, &[])).await;
        let page = browser.get(&app, &start.location()).await;
        app.clock.advance(time::Duration::seconds(1801));
        let late = browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        assert_eq!(late.status, StatusCode::OK, "{db:?}: a gentle re-render, not an error");
        assert!(late.body.contains("refreshed the form"), "{}", late.body);
        assert_eq!(late.input("email").as_deref(), Some("ann@example.test"), "the typed email is kept");
        assert_ne!(late.form_action(), page.form_action(), "a successor flow");
        let done = browser.submit(&app, &late, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        assert!(done.location().starts_with(REDIRECT), "{db:?}: the successor still returns to the app: {}", done.location());
        assert!(query_param(&done.location(), "code").is_some());
    }
}

#[tokio::test]
async fn sessions_end_after_idle_timeout_and_absolute_lifetime() {
    for db in databases() {
        let app = TestApp::with_config(db, |c| {
            c.selfservice.session_idle_timeout_secs = 3600;
            c.selfservice.session_lifetime_secs = 3 * 3600;
        })
        .await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        app.tokens_for(&mut browser, &client, "ann@example.test").await;
        // Activity every 50 minutes keeps the session alive past the idle timeout…
        for _ in 0..3 {
            app.clock.advance(time::Duration::minutes(50));
            let silent = app.silent_authorize(&mut browser, &client, &[]).await;
            assert!(query_param(&silent, "code").is_some(), "{db:?}: still signed in: {silent}");
        }
        // …but not past the absolute lifetime.
        app.clock.advance(time::Duration::minutes(40));
        let silent = app.silent_authorize(&mut browser, &client, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}: absolute lifetime");

        let mut idle = Browser::new();
        app.tokens_for(&mut idle, &client, "ann@example.test").await;
        app.clock.advance(time::Duration::minutes(61));
        let silent = app.silent_authorize(&mut idle, &client, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}: idle timeout");
    }
}

#[tokio::test]
async fn third_party_consent_is_asked_once_remembered_and_withdrawable() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.client(ClientOptions { first_party: false, ..ClientOptions::default() }).await;
        let user = app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&client, &[])).await;
        let login = browser.get(&app, &start.location()).await;
        let signed_in = browser.submit(&app, &login, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        let consent_url = signed_in.location();
        assert!(consent_url.starts_with(&app.path("/consent?request=")), "{db:?}: {consent_url}");
        let consent = browser.get(&app, &consent_url).await;
        assert!(consent.body.contains("See your email address") && consent.body.contains("Allow"), "{}", consent.body);
        let denied = browser.submit(&app, &consent, &[("decision", "deny")]).await;
        assert_eq!(query_param(&denied.location(), "error").as_deref(), Some("access_denied"));
        assert_eq!(query_param(&denied.location(), "state").as_deref(), Some("st-123"));

        let again = browser.get(&app, &app.authorize_url(&client, &[])).await;
        let consent = browser.get(&app, &again.location()).await;
        let allowed = browser.submit(&app, &consent, &[("decision", "allow")]).await;
        assert!(query_param(&allowed.location(), "code").is_some(), "{db:?}: {}", allowed.location());
        // Remembered: the next authorization goes straight through.
        let silent = app.silent_authorize(&mut browser, &client, &[]).await;
        assert!(query_param(&silent, "code").is_some(), "{db:?}: {silent}");
        // Withdrawn: asked again, and prompt=none says so.
        let event = tessera_core::NewEvent::new(app.tenant.id, EventKind::ConsentRevoked, app.clock_now());
        assert!(app.rt.store.delete_consent(app.tenant.id, user.id, &client.id, &event).await.unwrap());
        let silent = app.silent_authorize(&mut browser, &client, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("consent_required"), "{db:?}: {silent}");
    }
}

#[tokio::test]
async fn client_credentials_tokens_work_for_machines_only() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let machine =
            app.client(ClientOptions { grant_types: vec!["client_credentials"], redirect_uris: vec![], ..ClientOptions::default() }).await;
        let response = app.token(&machine, &[("grant_type", "client_credentials")]).await;
        assert_eq!(response.status, StatusCode::OK, "{db:?}: {}", response.body);
        let body = response.json();
        assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());
        let (header, claims) = app.verify_jwt(body["access_token"].as_str().unwrap(), Some(&app.issuer())).await.unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(claims["sub"], machine.id.as_str());
        let introspected = app.introspect(&machine, body["access_token"].as_str().unwrap()).await;
        assert_eq!(introspected["active"], true);
        let openid = app.token(&machine, &[("grant_type", "client_credentials"), ("scope", "openid")]).await;
        assert_eq!(openid.oauth_error(), "invalid_scope");
        let user_client = app.default_client().await;
        assert_eq!(app.token(&user_client, &[("grant_type", "client_credentials")]).await.oauth_error(), "unauthorized_client");
    }
}

#[tokio::test]
async fn dynamic_registration_needs_an_initial_access_token() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let metadata = serde_json::json!({ "redirect_uris": [REDIRECT], "client_name": "Dyn", "grant_types": ["authorization_code", "refresh_token"] });
        let register = |token: Option<String>| {
            let mut req = Request::post(app.path("/oauth2/register")).header("content-type", "application/json");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            req.body(Body::from(metadata.to_string())).unwrap()
        };
        let refused = app.send(register(None)).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{db:?}");
        assert_eq!(app.send(register(Some("made-up".into()))).await.status, StatusCode::UNAUTHORIZED);
        let token = tessera_oauth::registration::create_initial_access_token(&app.rt.oauth, &app.tenant).await.unwrap();
        let created = app.send(register(Some(token.clone()))).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let body = created.json();
        assert!(body["client_secret"].as_str().is_some_and(|s| s.len() >= 43));
        let stored = app.rt.store.find_client(app.tenant.id, body["client_id"].as_str().unwrap()).await.unwrap().unwrap();
        assert!(!stored.first_party, "dynamically registered clients see the consent page");
        assert_ne!(stored.secret_hash.as_deref(), body["client_secret"].as_str(), "only a hash is stored");
        let bad = app
            .send(
                Request::post(app.path("/oauth2/register"))
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::from("{\"redirect_uris\":[\"http://evil.test/cb\"]}"))
                    .unwrap(),
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.json()["error"], "invalid_redirect_uri");
        app.clock.advance(time::Duration::days(2));
        assert_eq!(app.send(register(Some(token))).await.status, StatusCode::UNAUTHORIZED, "initial access tokens expire");
    }
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let app = TestApp::with_config(Db::Sqlite, |c| {
        // One slow worker and no waiting room: the second concurrent sign-in is turned away.
        c.hashing = HashingConfig { memory_kib: 16 * 1024, iterations: 8, parallelism: 1, workers: 1, max_queue: 1 };
    })
    .await;
    let client = app.default_client().await;
    app.user("ann@example.test").await;
    let mut pages = Vec::new();
    for _ in 0..8 {
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&client, &[])).await;
        let page = browser.get(&app, &start.location()).await;
        pages.push((browser, page));
    }
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = pages
        .into_iter()
        .map(|(mut browser, page)| {
            let app = app.clone();
            tokio::spawn(async move { browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await })
        })
        .collect();
    let mut busy = 0;
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::SEE_OTHER => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.header("retry-after").is_some(), "503 carries Retry-After");
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok={ok} busy={busy}");
}

#[tokio::test]
async fn tenants_do_not_leak_into_each_other() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let tokens = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let (other, _) = tessera_server::bootstrap::ensure_tenant(&app.rt, "globex", "Globex").await.unwrap();
        let at = tokens["access_token"].as_str().unwrap();
        let req = Request::get(format!("/t/{}/oauth2/userinfo", other.slug))
            .header("authorization", format!("Bearer {at}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED, "{db:?}: acme's token at globex");
        let url = app.authorize_url(&client, &[]).replace("/t/acme/", "/t/globex/");
        let page = app.get(&url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{db:?}: acme's client is unknown at globex");
        assert!(page.header("location").is_none());
        let unknown = app.get("/t/nope/.well-known/openid-configuration").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.header("content-type"), Some("application/problem+json"));
    }
}

#[tokio::test]
async fn every_step_is_recorded_as_an_event() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&client, &[("prompt", "create")])).await;
        let page = browser.get(&app, &start.location()).await;
        let done = browser
            .submit(&app, &page, &[("email", "eve@example.test"), ("password", PASSWORD), ("given_name", "Eve"), ("family_name", "Ng")])
            .await;
        let code = query_param(&done.location(), "code").unwrap();
        let tokens = app.redeem(&client, &code).await.json();
        let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
        app.refresh(&client, &rt).await;
        app.refresh(&client, &rt).await; // replay
        let events = app.rt.store.list_events(app.tenant.id, 100, None).await.unwrap();
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        for expected in [EventKind::UserRegistered, EventKind::SignIn, EventKind::TokenIssued, EventKind::RefreshTokenReused] {
            assert!(kinds.contains(&expected), "{db:?}: {expected:?} missing in {kinds:?}");
        }
        let sign_in = events.iter().find(|e| e.kind == EventKind::SignIn).unwrap();
        assert_eq!(sign_in.ip.as_deref(), Some("203.0.113.7"));
        assert!(sign_in.user_id.is_some());
        assert!(events.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let serialized = serde_json::to_string(&events).unwrap();
        assert!(!serialized.contains(PASSWORD) && !serialized.contains(&rt) && !serialized.contains(&code), "no secrets in events");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::new(Db::Sqlite).await;
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    // The harness runs without a metrics recorder; production installs one.
    assert_eq!(app.get("/metrics").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_old_password_hash_is_upgraded_at_sign_in() {
    let app = TestApp::new(Db::Sqlite).await;
    let client = app.default_client().await;
    let user = app.user("ann@example.test").await;
    // Pretend the hash was made with weaker parameters than configured.
    let weak = {
        use argon2::PasswordHasher;
        let params = argon2::Params::new(512, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(PASSWORD.as_bytes())
            .unwrap()
            .to_string()
    };
    app.rt.store.update_user_password_hash(app.tenant.id, user.id, &weak, app.clock_now()).await.unwrap();
    let mut browser = Browser::new();
    app.tokens_for(&mut browser, &client, "ann@example.test").await;
    let upgraded = app.rt.store.find_user(app.tenant.id, user.id).await.unwrap().unwrap().password_hash.unwrap();
    assert_ne!(upgraded, weak);
    assert!(upgraded.contains("m=1024,t=1,p=1"), "{upgraded}");
}
