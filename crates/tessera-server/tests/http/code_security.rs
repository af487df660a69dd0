//! Checklist B (10-16): the authorization code and PKCE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::http::StatusCode;
use std::sync::Arc;

/// Check 10: a replayed code (at once, and 30 s later) is `invalid_grant`, and every token of
/// the first redemption stops working.
#[tokio::test]
async fn code_replay_fails_and_revokes_the_first_redemptions_tokens() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        for wait in [0, 30] {
            let mut browser = Browser::new();
            let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
            let first = app.redeem(&client, &code).await;
            assert_eq!(first.status, StatusCode::OK, "{}", first.body);
            let first = first.json();
            let at = first["access_token"].as_str().unwrap();
            let rt = first["refresh_token"].as_str().unwrap();
            assert_eq!(app.userinfo(at).await.status, StatusCode::OK, "{db:?}: the token works before the replay");
            app.clock.advance(time::Duration::seconds(wait));
            let replay = app.redeem(&client, &code).await;
            assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{db:?} after {wait}s: {}", replay.body);
            assert_eq!(replay.oauth_error(), "invalid_grant");
            assert!(replay.json().get("access_token").is_none());
            let info = app.userinfo(at).await;
            assert_eq!(info.status, StatusCode::UNAUTHORIZED, "{db:?} after {wait}s: the first access token is revoked");
            assert!(info.header("www-authenticate").is_some_and(|h| h.contains("invalid_token")));
            let refreshed = app.refresh(&client, rt).await;
            assert_eq!(refreshed.oauth_error(), "invalid_grant", "{db:?} after {wait}s: the first refresh token is revoked");
            assert_eq!(app.introspect(&client, rt).await["active"], false);
            assert_eq!(app.introspect(&client, at).await["active"], false);
        }
    }
}

/// Check 11: ten simultaneous redemptions of one code: exactly one succeeds, the rest are
/// clean `invalid_grant`, nothing fails with 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_of_one_code_have_exactly_one_winner() {
    for db in databases() {
        let app = Arc::new(TestApp::new(db).await);
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        for _round in 0..3 {
            let mut browser = Browser::new();
            let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let (app, client, code) = (app.clone(), client.clone(), code.clone());
                    tokio::spawn(async move { app.redeem(&client, &code).await })
                })
                .collect();
            let mut ok = 0;
            let mut invalid_grant = 0;
            for task in tasks {
                let response = task.await.unwrap();
                assert!(!response.status.is_server_error(), "{db:?}: 5xx in the race: {} {}", response.status, response.body);
                match response.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::BAD_REQUEST if response.oauth_error() == "invalid_grant" => invalid_grant += 1,
                    other => panic!("{db:?}: unexpected {other}: {}", response.body),
                }
            }
            assert_eq!((ok, invalid_grant), (1, 9), "{db:?}");
        }
    }
}

/// Check 12: a code older than its configured lifetime (60 s) is `invalid_grant`; a code
/// just inside it works.
#[tokio::test]
async fn expired_codes_are_refused() {
    for db in databases() {
        let app = TestApp::new(db).await;
        assert_eq!(app.rt.oauth.config.authorization_code_ttl_secs, 60, "the test assumes the default lifetime");
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
        app.clock.advance(time::Duration::seconds(59));
        assert_eq!(app.redeem(&client, &code).await.status, StatusCode::OK, "{db:?}: 59 s is inside the lifetime");
        let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
        app.clock.advance(time::Duration::seconds(61));
        let late = app.redeem(&client, &code).await;
        assert_eq!(late.status, StatusCode::BAD_REQUEST, "{db:?}: {}", late.body);
        assert_eq!(late.oauth_error(), "invalid_grant");
    }
}

/// Check 13: a code is bound to its client and to the authorization request's redirect URI.
#[tokio::test]
async fn codes_are_bound_to_client_and_redirect_uri() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let other_uri = "https://app.example.test/other";
        let a = app.client(ClientOptions { redirect_uris: vec![REDIRECT, other_uri], ..ClientOptions::default() }).await;
        let b = app.client(ClientOptions { redirect_uris: vec![REDIRECT, other_uri], ..ClientOptions::default() }).await;
        let public_b = app.client(ClientOptions { redirect_uris: vec![REDIRECT], public: true, ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        for thief in [&b, &public_b] {
            let code = app.code_for(&mut browser, &a, "ann@example.test", &[]).await;
            let stolen = app.redeem(thief, &code).await;
            assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{db:?}: {}", stolen.body);
            assert_eq!(stolen.oauth_error(), "invalid_grant");
        }
        for (redirect, what) in
            [(Some(other_uri), "another registered URI"), (Some("https://evil.test/cb"), "a foreign URI"), (None, "no URI")]
        {
            let code = app.code_for(&mut browser, &a, "ann@example.test", &[]).await;
            let mut form = vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("code_verifier", VERIFIER)];
            if let Some(r) = redirect {
                form.push(("redirect_uri", r));
            }
            let response = app.token(&a, &form).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{db:?} {what}: {}", response.body);
            assert_eq!(response.oauth_error(), "invalid_grant", "{db:?} {what}");
        }
        // The binding is what failed: the same request with the right values works.
        let code = app.code_for(&mut browser, &a, "ann@example.test", &[("redirect_uri", other_uri)]).await;
        let response = app
            .token(&a, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", other_uri), ("code_verifier", VERIFIER)])
            .await;
        assert_eq!(response.status, StatusCode::OK, "{db:?}: {}", response.body);
    }
}

/// Check 14: a code issued with a PKCE challenge needs the right verifier.
#[tokio::test]
async fn pkce_verifier_is_required_when_a_challenge_was_sent() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let other_verifier = "x".repeat(43);
        for verifier in [None, Some(other_verifier.as_str()), Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK")] {
            let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
            let mut form = vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)];
            if let Some(v) = verifier {
                form.push(("code_verifier", v));
            }
            let response = app.token(&client, &form).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{db:?} {verifier:?}: {}", response.body);
            assert_eq!(response.oauth_error(), "invalid_grant", "{db:?} {verifier:?}");
        }
    }
}

/// Check 15: a code issued without a challenge is refused when a verifier is sent (downgrade).
#[tokio::test]
async fn verifier_without_challenge_is_a_downgrade_and_refused() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let no_pkce = [("code_challenge", ""), ("code_challenge_method", "")];
        let code = app.code_for(&mut browser, &client, "ann@example.test", &no_pkce).await;
        let response = app.redeem(&client, &code).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{db:?}: {}", response.body);
        assert_eq!(response.oauth_error(), "invalid_grant");
        // A confidential client without PKCE and without a verifier is fine.
        let code = app.code_for(&mut browser, &client, "ann@example.test", &no_pkce).await;
        let response = app.token(&client, &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await;
        assert_eq!(response.status, StatusCode::OK, "{db:?}: {}", response.body);
    }
}

/// Check 16: `plain`, a challenge without method, a malformed challenge and a public client
/// without PKCE are refused at the authorization endpoint; verifiers must be 43-128
/// unreserved characters even when their hash matches.
#[tokio::test]
async fn pkce_rules_at_the_authorization_and_token_endpoints() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let confidential = app.default_client().await;
        let public = app.client(ClientOptions { public: true, ..ClientOptions::default() }).await;
        for client in [&confidential, &public] {
            for (what, extra) in [
                ("plain", vec![("code_challenge", VERIFIER), ("code_challenge_method", "plain")]),
                ("method omitted", vec![("code_challenge_method", "")]),
                ("method without challenge", vec![("code_challenge", ""), ("code_challenge_method", "plain")]),
                ("unknown method", vec![("code_challenge_method", "S512")]),
                ("lowercase method", vec![("code_challenge_method", "s256")]),
                ("short challenge", vec![("code_challenge", "abc")]),
                ("challenge with padding", vec![("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=")]),
            ] {
                let response = app.get(&app.authorize_url(client, &extra)).await;
                assert_eq!(redirect_error(&response, REDIRECT), "invalid_request", "{db:?} {what}");
            }
        }
        let response = app.get(&app.authorize_url(&public, &[("code_challenge", ""), ("code_challenge_method", "")])).await;
        assert_eq!(redirect_error(&response, REDIRECT), "invalid_request", "{db:?}: public client without PKCE");

        // Verifiers outside the RFC 7636 alphabet or length fail even though the S256 hash of
        // exactly that string was sent as the challenge.
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let good_43 = "a".repeat(43);
        let good_128 = "b".repeat(128);
        let cases = [
            ("a".repeat(42), false),
            ("a".repeat(129), false),
            (format!("{}+", "a".repeat(42)), false),
            (format!("{} ", "a".repeat(42)), false),
            (format!("{}/", "a".repeat(42)), false),
            (format!("{}\u{e9}", "a".repeat(42)), false),
            (good_43, true),
            (good_128, true),
            (format!("{}-._~", "A1".repeat(20)), true),
        ];
        for (verifier, valid) in cases {
            let challenge = s256(&verifier);
            let code = app.code_for(&mut browser, &public, "ann@example.test", &[("code_challenge", &challenge)]).await;
            let response = app
                .token(
                    &public,
                    &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", &verifier)],
                )
                .await;
            if valid {
                assert_eq!(response.status, StatusCode::OK, "{db:?} {verifier:?}: {}", response.body);
            } else {
                assert_eq!(response.oauth_error(), "invalid_grant", "{db:?} {verifier:?} ({} chars)", verifier.len());
            }
        }
    }
}
