//! Checklist D (26-30): prompt and max_age, claims, discovery and keys, RP-initiated logout.
//! (31, back-channel logout, does not exist.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;

async fn id_claims(app: &TestApp, client: &TestClient, token_response: &Value) -> Value {
    app.verify_jwt(token_response["id_token"].as_str().expect("id_token"), Some(&client.id)).await.unwrap().1
}

async fn redeem_json(app: &TestApp, client: &TestClient, code: &str) -> Value {
    let response = app.redeem(client, code).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    response.json()
}

/// Check 26: `prompt=none` without a session is `login_required`, with one a silent code for
/// the same `sub`; an `id_token_hint` for someone else never yields a token for the session's
/// customer.
#[tokio::test]
async fn prompt_none_and_id_token_hint() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        let third_party = app.client(ClientOptions { first_party: false, ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        app.user("bob@example.test").await;
        let mut browser = Browser::new();
        let silent = app.silent_authorize(&mut browser, &client, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}");
        assert!(query_param(&silent, "code").is_none());

        let first = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let ann_sub = id_claims(&app, &client, &first).await["sub"].clone();
        let silent = app.silent_authorize(&mut browser, &client, &[]).await;
        let code = query_param(&silent, "code").unwrap_or_else(|| panic!("{db:?}: silent success expected: {silent}"));
        let again = redeem_json(&app, &client, &code).await;
        assert_eq!(id_claims(&app, &client, &again).await["sub"], ann_sub, "{db:?}: same sub");
        // A third-party app without consent cannot get a silent code.
        let silent = app.silent_authorize(&mut browser, &third_party, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("consent_required"), "{db:?}");

        // Bob's ID token as hint while Ann is signed in.
        let mut bob_browser = Browser::new();
        let bob = app.tokens_for(&mut bob_browser, &client, "bob@example.test").await;
        let bob_hint = bob["id_token"].as_str().unwrap();
        let silent = app.silent_authorize(&mut browser, &client, &[("id_token_hint", bob_hint)]).await;
        assert!(query_param(&silent, "code").is_none(), "{db:?}: no code for Ann under Bob's hint");
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}");
        // Interactively, signing in as Ann again does not satisfy a hint for Bob…
        let start = browser.get(&app, &app.authorize_url(&client, &[("id_token_hint", bob_hint)])).await;
        assert!(start.location().starts_with(&app.path("/login?flow=")), "{db:?}: {}", start.location());
        let page = browser.get(&app, &start.location()).await;
        let done = browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        assert!(!done.location().starts_with(REDIRECT), "{db:?}: no code for the wrong customer: {}", done.location());
        // …signing in as Bob does, and the token is Bob's.
        let page = browser.get(&app, &done.location()).await;
        let done = browser.submit(&app, &page, &[("email", "bob@example.test"), ("password", PASSWORD)]).await;
        let code = query_param(&done.location(), "code").unwrap_or_else(|| panic!("{db:?}: {}", done.location()));
        let tokens = redeem_json(&app, &client, &code).await;
        assert_eq!(id_claims(&app, &client, &tokens).await["sub"], id_claims(&app, &client, &bob).await["sub"], "{db:?}");
    }
}

/// Check 27: `prompt=login` and an exceeded `max_age` force a new sign-in with a later
/// `auth_time`; a generous `max_age` does not prompt.
#[tokio::test]
async fn prompt_login_and_max_age_force_a_fresh_sign_in() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let first = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let first_auth_time = id_claims(&app, &client, &first).await["auth_time"].as_i64().unwrap();

        app.clock.advance(time::Duration::seconds(5));
        let start = browser.get(&app, &app.authorize_url(&client, &[("max_age", "10000")])).await;
        let code =
            query_param(&start.location(), "code").unwrap_or_else(|| panic!("{db:?}: max_age=10000 must not prompt: {}", start.location()));
        let t = redeem_json(&app, &client, &code).await;
        assert_eq!(id_claims(&app, &client, &t).await["auth_time"].as_i64().unwrap(), first_auth_time, "{db:?}");

        let mut last = first_auth_time;
        for (what, extra) in [("prompt=login", ("prompt", "login")), ("max_age=1", ("max_age", "1"))] {
            app.clock.advance(time::Duration::seconds(5));
            let start = browser.get(&app, &app.authorize_url(&client, &[extra])).await;
            assert!(start.location().starts_with(&app.path("/login?flow=")), "{db:?} {what}: must ask to sign in: {}", start.location());
            let page = browser.get(&app, &start.location()).await;
            let done = browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
            let code = query_param(&done.location(), "code").unwrap_or_else(|| panic!("{db:?} {what}: {}", done.location()));
            let t = redeem_json(&app, &client, &code).await;
            let auth_time = id_claims(&app, &client, &t).await["auth_time"].as_i64().unwrap();
            assert!(auth_time > last, "{db:?} {what}: auth_time {auth_time} must be after {last}");
            last = auth_time;
        }
        // prompt=none with an exceeded max_age is login_required, not a stale code.
        app.clock.advance(time::Duration::seconds(5));
        let silent = app.silent_authorize(&mut browser, &client, &[("max_age", "1")]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}");
    }
}

/// Check 28: claims by scope from userinfo (GET, POST with header, POST with body), the
/// profile `name`, honest `email_verified`, unsupported scopes dropped without error.
#[tokio::test]
async fn claims_follow_the_scopes() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("Ann.Lee@Example.test").await;
        let mut browser = Browser::new();
        let full = app.tokens_for(&mut browser, &client, "ann.lee@example.test").await;
        let at = full["access_token"].as_str().unwrap();
        let get = app.userinfo(at).await;
        assert_eq!(get.status, StatusCode::OK, "{}", get.body);
        assert_eq!(get.header("cache-control"), Some("no-store"));
        let post_header = app
            .send(
                Request::post(app.path("/oauth2/userinfo"))
                    .header("authorization", format!("Bearer {at}"))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        let post_body = app.post_form(&app.path("/oauth2/userinfo"), &[("access_token", at)], &[]).await;
        for (what, r) in [("POST header", &post_header), ("POST body", &post_body)] {
            assert_eq!(r.status, StatusCode::OK, "{db:?} {what}: {}", r.body);
            assert_eq!(r.json(), get.json(), "{db:?} {what}: same claims as GET");
        }
        let info = get.json();
        let id = id_claims(&app, &client, &full).await;
        assert_eq!(info["sub"], id["sub"]);
        assert_eq!(info["email"], json!("Ann.Lee@Example.test"), "{db:?}: the stored address");
        assert_eq!(info["email_verified"], json!(false), "{db:?}: never claimed verified");
        assert_eq!(id["email_verified"], json!(false));
        assert_eq!(info["name"], json!("Ann Lee"), "{db:?}: name with the profile scope");
        assert_eq!((info["given_name"].clone(), info["family_name"].clone()), (json!("Ann"), json!("Lee")));
        // Both header and body is an error, not a guess.
        let both =
            app.post_form(&app.path("/oauth2/userinfo"), &[("access_token", at)], &[("authorization", &format!("Bearer {at}"))]).await;
        assert_eq!(both.status, StatusCode::BAD_REQUEST, "{db:?}");

        for (scope, present, absent) in [
            ("openid", vec!["sub"], vec!["email", "email_verified", "name", "given_name"]),
            ("openid email", vec!["sub", "email", "email_verified"], vec!["name", "given_name", "family_name"]),
            ("openid profile", vec!["sub", "name", "given_name", "family_name"], vec!["email", "email_verified"]),
            ("openid address phone", vec!["sub"], vec!["address", "phone_number", "email", "name"]),
        ] {
            let code = app.code_for(&mut browser, &client, "ann.lee@example.test", &[("scope", scope)]).await;
            let t = redeem_json(&app, &client, &code).await;
            assert!(!t["scope"].as_str().unwrap().contains("address"), "{db:?}: unsupported scopes are dropped: {}", t["scope"]);
            let info = app.userinfo(t["access_token"].as_str().unwrap()).await.json();
            let id = id_claims(&app, &client, &t).await;
            for claim in &present {
                assert!(info.get(*claim).is_some(), "{db:?} {scope}: userinfo has {claim}: {info}");
            }
            for claim in &absent {
                assert!(info.get(*claim).is_none(), "{db:?} {scope}: userinfo must not have {claim}: {info}");
                assert!(id.get(*claim).is_none(), "{db:?} {scope}: ID token must not have {claim}");
            }
        }
        // The claims request parameter is not supported: ignored, never an error.
        let claims_param = r#"{"userinfo":{"name":{"essential":true}},"id_token":{"email":{"essential":true}}}"#;
        let code = app.code_for(&mut browser, &client, "ann.lee@example.test", &[("claims", claims_param)]).await;
        let t = redeem_json(&app, &client, &code).await;
        assert_eq!(app.userinfo(t["access_token"].as_str().unwrap()).await.json()["name"], json!("Ann Lee"));
    }
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// Check 29: one issuer everywhere, only implemented features advertised (and each of them
/// working), distinct kids, and rotated keys published until their tokens have expired.
#[tokio::test]
async fn discovery_is_truthful_and_rotated_keys_stay_published() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let d = app.discovery().await;
        let issuer = d["issuer"].as_str().unwrap().to_owned();
        assert_eq!(issuer, app.issuer());
        let rfc8414 = app.get("/.well-known/oauth-authorization-server/t/acme").await;
        assert_eq!(rfc8414.json()["issuer"], json!(issuer), "{db:?}: RFC 8414 metadata");
        assert_eq!(d["response_types_supported"], json!(["code"]));
        assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
        for (key, value) in
            [("request_parameter_supported", false), ("claims_parameter_supported", false), ("backchannel_logout_supported", false)]
        {
            assert_eq!(d[key], json!(value), "{db:?}: {key}");
        }
        let auth_methods: Vec<&str> =
            d["token_endpoint_auth_methods_supported"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(!auth_methods.contains(&"private_key_jwt") && !auth_methods.contains(&"client_secret_jwt"), "{auth_methods:?}");
        for endpoint in
            ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "end_session_endpoint", "revocation_endpoint"]
        {
            let url = d[endpoint].as_str().unwrap();
            assert!(url.starts_with(&format!("{issuer}/")), "{db:?}: {endpoint} under the issuer: {url}");
        }
        let jwks_path = d["jwks_uri"].as_str().unwrap().strip_prefix("https://id.example.test").unwrap().to_owned();
        let jwks = app.get(&jwks_path).await.json();
        let published = kids(&jwks);
        assert_eq!(published.iter().collect::<HashSet<_>>().len(), published.len(), "{db:?}: distinct kids");
        for key in jwks["keys"].as_array().unwrap() {
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(key.get(private).is_none(), "{db:?}: no private key material in the JWKS");
            }
        }

        // Every advertised signing algorithm really signs ID tokens the JWKS verifies.
        for alg in d["id_token_signing_alg_values_supported"].as_array().unwrap() {
            let alg = alg.as_str().unwrap();
            let c = app
                .client(ClientOptions { id_token_alg: Some(Box::leak(alg.to_owned().into_boxed_str())), ..ClientOptions::default() })
                .await;
            let mut browser = Browser::new();
            let t = app.tokens_for(&mut browser, &c, "ann@example.test").await;
            let (header, claims) =
                app.verify_jwt(t["id_token"].as_str().unwrap(), Some(&c.id)).await.unwrap_or_else(|e| panic!("{db:?} {alg}: {e}"));
            assert_eq!(format!("{:?}", header.alg), alg, "{db:?}");
            assert_eq!(claims["iss"], json!(issuer));
        }

        // The same issuer in the authorization response, ID token, access token, introspection.
        let mut browser = Browser::new();
        let redirect = app.login_for_code(&mut browser, &client, "ann@example.test", &[]).await;
        assert_eq!(query_param(&redirect, "iss"), Some(issuer.clone()));
        let old = redeem_json(&app, &client, &query_param(&redirect, "code").unwrap()).await;
        let (old_id, old_at) = (old["id_token"].as_str().unwrap().to_owned(), old["access_token"].as_str().unwrap().to_owned());
        assert_eq!(jwt_parts(&old_id).1["iss"], json!(issuer));
        assert_eq!(jwt_parts(&old_at).1["iss"], json!(issuer));
        assert_eq!(app.introspect(&client, &old_at).await["iss"], json!(issuer));

        // Rotation: the old keys stay published, the new signing keys were published before.
        let old_id_kid = jwt_parts(&old_id).0["kid"].as_str().unwrap().to_owned();
        let old_at_kid = jwt_parts(&old_at).0["kid"].as_str().unwrap().to_owned();
        let lifetime = app.rt.oauth.config.max_signed_token_lifetime();
        for alg in ["RS256", "ES256"] {
            let now = tessera_core::Clock::now(&*app.clock);
            tessera_oauth::keys::rotate(app.rt.store.as_ref(), app.rt.oauth.keys.master(), app.tenant.id, alg, lifetime, now)
                .await
                .unwrap();
        }
        app.rt.oauth.keys.invalidate(app.tenant.id);
        let after = kids(&app.jwks().await);
        assert!(after.contains(&old_id_kid) && after.contains(&old_at_kid), "{db:?}: retired keys stay published");
        assert_eq!(after.iter().collect::<HashSet<_>>().len(), after.len(), "{db:?}: distinct kids after rotation");
        app.verify_jwt(&old_id, Some(&client.id)).await.unwrap_or_else(|e| panic!("{db:?}: old ID token: {e}"));
        assert_eq!(app.userinfo(&old_at).await.status, StatusCode::OK, "{db:?}: old access token");
        let new = app.tokens_for(&mut Browser::new(), &client, "ann@example.test").await;
        let (new_id, new_at) = (new["id_token"].as_str().unwrap(), new["access_token"].as_str().unwrap());
        for (what, token, old_kid) in [("ID token", new_id, &old_id_kid), ("access token", new_at, &old_at_kid)] {
            let kid = jwt_parts(token).0["kid"].as_str().unwrap().to_owned();
            assert_ne!(&kid, old_kid, "{db:?} {what}: signed with the new key");
            assert!(published.contains(&kid), "{db:?} {what}: the new key was published before it signed");
        }
        app.verify_jwt(new_id, Some(&client.id)).await.unwrap();
        assert_eq!(app.userinfo(new_at).await.status, StatusCode::OK);

        // Housekeeping keeps a retired key while its last tokens are valid…
        let token_ttl = app.rt.oauth.config.access_token_ttl_secs.max(app.rt.oauth.config.id_token_ttl_secs);
        app.clock.advance(time::Duration::seconds(token_ttl - 1));
        app.rt.store.delete_expired_signing_keys(app.tenant.id, tessera_core::Clock::now(&*app.clock)).await.unwrap();
        app.rt.oauth.keys.invalidate(app.tenant.id);
        let later = kids(&app.jwks().await);
        assert!(later.contains(&old_id_kid) && later.contains(&old_at_kid), "{db:?}: still published while tokens live");
        assert_eq!(app.userinfo(&old_at).await.status, StatusCode::OK, "{db:?}: the old access token is still valid");
        app.verify_jwt(&old_id, Some(&client.id)).await.unwrap();
        // …and drops it once they have all expired.
        app.clock.advance(lifetime);
        app.rt.store.delete_expired_signing_keys(app.tenant.id, tessera_core::Clock::now(&*app.clock)).await.unwrap();
        app.rt.oauth.keys.invalidate(app.tenant.id);
        let finally = kids(&app.jwks().await);
        assert!(!finally.contains(&old_id_kid) && !finally.contains(&old_at_kid), "{db:?}: retired keys removed in the end");
        assert!(finally.contains(&jwt_parts(new_id).0["kid"].as_str().unwrap().to_owned()));
    }
}

fn logout_url(app: &TestApp, params: &[(&str, &str)]) -> String {
    format!("{}?{}", app.path("/oauth2/logout"), encode_form(params))
}

async fn signed_in(app: &TestApp, client: &TestClient, email: &str) -> (Browser, String) {
    let mut browser = Browser::new();
    let t = app.tokens_for(&mut browser, client, email).await;
    (browser, t["id_token"].as_str().unwrap().to_owned())
}

async fn session_alive(app: &TestApp, browser: &mut Browser, client: &TestClient) -> bool {
    query_param(&app.silent_authorize(browser, client, &[]).await, "code").is_some()
}

/// Check 30: RP-initiated logout redirects only to a `post_logout_redirect_uri` registered
/// exactly for the hinted client; without a hint (or with someone else's) it asks first.
#[tokio::test]
async fn rp_initiated_logout_redirects_only_where_registered() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let bye = "https://app.example.test/bye";
        let a = app.default_client().await;
        let b =
            app.client(ClientOptions { post_logout_redirect_uris: vec!["https://b.example.test/bye"], ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        app.user("bob@example.test").await;

        // The exact registered URI, with a valid hint: signed out and redirected with state.
        let (mut browser, hint) = signed_in(&app, &a, "ann@example.test").await;
        let out =
            browser.get(&app, &logout_url(&app, &[("id_token_hint", &hint), ("post_logout_redirect_uri", bye), ("state", "s t&u")])).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER, "{db:?}: {}", out.body);
        assert!(out.location().starts_with(bye), "{db:?}: {}", out.location());
        assert_eq!(query_param(&out.location(), "state").as_deref(), Some("s t&u"));
        assert!(!session_alive(&app, &mut browser, &a).await, "{db:?}: signed out");

        // Near misses and other clients' URIs: signed out (the hint is valid) but no redirect.
        for wrong in [
            "https://app.example.test/bye/",
            "https://app.example.test/bye?x=1",
            "https://app.example.test/BYE",
            "https://app.example.test/bye#f",
            "https://evil.test/bye",
            "https://app.example.test.evil.test/bye",
            "https://b.example.test/bye",
            REDIRECT,
        ] {
            let (mut browser, hint) = signed_in(&app, &a, "ann@example.test").await;
            let out = browser.get(&app, &logout_url(&app, &[("id_token_hint", &hint), ("post_logout_redirect_uri", wrong)])).await;
            assert_eq!(out.status, StatusCode::OK, "{db:?} {wrong}: a page, not a redirect");
            assert!(out.headers.get("location").is_none(), "{db:?} {wrong}");
            assert!(!out.body.contains("evil.test"), "{db:?} {wrong}: not reflected");
            // client_id naming another client than the hint is refused outright.
            let mismatch = browser
                .get(
                    &app,
                    &logout_url(
                        &app,
                        &[("id_token_hint", &hint), ("client_id", &b.id), ("post_logout_redirect_uri", "https://b.example.test/bye")],
                    ),
                )
                .await;
            assert!(mismatch.headers.get("location").is_none(), "{db:?}: client_id/hint mismatch");
        }

        // Without a hint: a confirmation page, nothing ended until the customer confirms.
        let (mut browser, _) = signed_in(&app, &a, "ann@example.test").await;
        for params in [vec![], vec![("client_id", a.id.as_str()), ("post_logout_redirect_uri", bye), ("state", "xyz")]] {
            let page = browser.get(&app, &logout_url(&app, &params)).await;
            assert_eq!(page.status, StatusCode::OK, "{db:?}");
            assert!(page.headers.get("location").is_none());
            assert!(page.input("csrf_token").is_some(), "{db:?}: a confirmation form");
            assert!(session_alive(&app, &mut browser, &a).await, "{db:?}: not signed out without confirmation");
        }
        // A cross-site POST without our CSRF token is a confirmation request, not a sign-out.
        let forged = browser.post(&app, &app.path("/oauth2/logout"), &[("client_id", &a.id), ("post_logout_redirect_uri", bye)]).await;
        assert_eq!(forged.status, StatusCode::OK, "{db:?}");
        assert!(session_alive(&app, &mut browser, &a).await, "{db:?}: a forged POST signs nobody out");
        let page = browser.get(&app, &logout_url(&app, &[("client_id", &a.id), ("post_logout_redirect_uri", bye), ("state", "xyz")])).await;
        let csrf = page.input("csrf_token").unwrap();
        let carried: Vec<(String, String)> = ["client_id", "post_logout_redirect_uri", "state"]
            .iter()
            .map(|k| (k.to_string(), page.input(k).unwrap_or_else(|| panic!("{db:?}: {k} carried"))))
            .collect();
        let mut form: Vec<(&str, &str)> = vec![("csrf_token", &csrf)];
        form.extend(carried.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let confirmed = browser.post(&app, &page.form_action().unwrap(), &form).await;
        assert_eq!(confirmed.status, StatusCode::SEE_OTHER, "{db:?}: {}", confirmed.body);
        assert!(confirmed.location().starts_with(bye));
        assert_eq!(query_param(&confirmed.location(), "state").as_deref(), Some("xyz"));
        assert!(!session_alive(&app, &mut browser, &a).await, "{db:?}: signed out after confirming");

        // Someone else's valid ID token (an attacker's own) does not sign Ann out silently.
        let (_, bob_hint) = signed_in(&app, &a, "bob@example.test").await;
        let (mut ann, _) = signed_in(&app, &a, "ann@example.test").await;
        let out = ann.get(&app, &logout_url(&app, &[("id_token_hint", &bob_hint), ("post_logout_redirect_uri", bye)])).await;
        assert!(out.headers.get("location").is_none(), "{db:?}: no silent redirect for a foreign hint");
        assert!(session_alive(&app, &mut ann, &a).await, "{db:?}: a foreign hint must not sign Ann out without confirmation");
    }
}
