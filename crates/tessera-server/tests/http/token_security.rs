//! Checklist C (17-25): refresh tokens, revocation, ID tokens, consumed JWTs, token types and
//! the token endpoint. (private_key_jwt, device/CIBA, admin API and SCIM do not exist.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_oauth::registration::{ClientMetadata, create_client};

async fn setup(db: Db) -> (TestApp, TestClient) {
    let app = TestApp::new(db).await;
    let client = app.default_client().await;
    app.user("ann@example.test").await;
    (app, client)
}

fn tokens(response: &TestResponse) -> (String, String, Value) {
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let json = response.json();
    (json["access_token"].as_str().unwrap().to_owned(), json["refresh_token"].as_str().unwrap().to_owned(), json)
}

/// Check 17: RT1 → RT2 → RT3; replaying RT1 fails and revokes RT2, RT3 and their access tokens.
#[tokio::test]
async fn refresh_token_replay_revokes_the_whole_family() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let mut browser = Browser::new();
        let first = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
        let (at2, rt2, _) = tokens(&app.refresh(&client, &rt1).await);
        assert_ne!(rt1, rt2, "{db:?}: rotation issues a new refresh token");
        let (at3, rt3, _) = tokens(&app.refresh(&client, &rt2).await);
        assert_eq!(app.userinfo(&at3).await.status, StatusCode::OK);
        assert_eq!(app.introspect(&client, &rt2).await["active"], false, "{db:?}: a rotated token is inactive");
        assert_eq!(app.introspect(&client, &rt3).await["active"], true);

        let replay = app.refresh(&client, &rt1).await;
        assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{db:?}: {}", replay.body);
        assert_eq!(replay.oauth_error(), "invalid_grant");
        for (name, rt) in [("RT2", &rt2), ("RT3", &rt3)] {
            assert_eq!(app.refresh(&client, rt).await.oauth_error(), "invalid_grant", "{db:?}: {name} after the replay");
            assert_eq!(app.introspect(&client, rt).await["active"], false, "{db:?}: {name}");
        }
        for (name, at) in [("AT1", first["access_token"].as_str().unwrap()), ("AT2", &at2), ("AT3", &at3)] {
            assert_eq!(app.userinfo(at).await.status, StatusCode::UNAUTHORIZED, "{db:?}: {name} after the replay");
        }
        // Another authorization of the same customer is a separate family and keeps working.
        let mut other_browser = Browser::new();
        let other = app.tokens_for(&mut other_browser, &client, "ann@example.test").await;
        assert_eq!(app.refresh(&client, other["refresh_token"].as_str().unwrap()).await.status, StatusCode::OK, "{db:?}");
    }
}

/// Check 18: two, then ten, concurrent refreshes with one token: one success, the rest clean
/// `invalid_grant` (no grace window, ADR 0002), never 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_have_one_winner_and_no_5xx() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let app = Arc::new(app);
        for n in [2, 10] {
            let mut browser = Browser::new();
            let rt = app.tokens_for(&mut browser, &client, "ann@example.test").await["refresh_token"].as_str().unwrap().to_owned();
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (app, client, rt) = (app.clone(), client.clone(), rt.clone());
                    tokio::spawn(async move { app.refresh(&client, &rt).await })
                })
                .collect();
            let mut ok = 0;
            let mut invalid = 0;
            for task in tasks {
                let response = task.await.unwrap();
                assert!(!response.status.is_server_error(), "{db:?} n={n}: {} {}", response.status, response.body);
                match response.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::BAD_REQUEST if response.oauth_error() == "invalid_grant" => invalid += 1,
                    other => panic!("{db:?} n={n}: unexpected {other} {}", response.body),
                }
            }
            assert_eq!((ok, invalid), (1, n - 1), "{db:?} n={n}");
        }
    }
}

/// Check 19: a refresh token is bound to its client; a refreshed ID token keeps `iss`, `sub`,
/// `aud`, `azp` and the original `auth_time`, with a new `iat`.
#[tokio::test]
async fn refresh_tokens_are_bound_to_their_client_and_keep_the_identity() {
    for db in databases() {
        let (app, a) = setup(db).await;
        let b = app.default_client().await;
        let mut browser = Browser::new();
        let first = app.tokens_for(&mut browser, &a, "ann@example.test").await;
        let rt = first["refresh_token"].as_str().unwrap();
        let stolen = app.refresh(&b, rt).await;
        assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{db:?}: {}", stolen.body);
        assert_eq!(stolen.oauth_error(), "invalid_grant");
        assert!(stolen.json().get("access_token").is_none());

        app.clock.advance(time::Duration::seconds(120));
        let (_, _, refreshed) = tokens(&app.refresh(&a, rt).await);
        let (_, original) = app.verify_jwt(first["id_token"].as_str().unwrap(), Some(&a.id)).await.unwrap();
        let (_, renewed) = app.verify_jwt(refreshed["id_token"].as_str().expect("a refreshed ID token"), Some(&a.id)).await.unwrap();
        for claim in ["iss", "sub", "aud", "azp", "auth_time"] {
            assert!(original.get(claim).is_some(), "{db:?}: original has {claim}");
            assert_eq!(renewed[claim], original[claim], "{db:?}: {claim} is kept");
        }
        assert_eq!(renewed["iat"].as_i64().unwrap() - original["iat"].as_i64().unwrap(), 120, "{db:?}: a new iat");
        assert!(renewed["exp"].as_i64().unwrap() > original["exp"].as_i64().unwrap());
    }
}

/// Check 20: the refresh family has an absolute lifetime that regular use does not extend, and
/// revocation (RFC 7009, and the admin's consent withdrawal) kills refresh and access tokens
/// at once; another client cannot revoke them.
#[tokio::test]
async fn refresh_lifetime_is_absolute_and_revocation_is_immediate() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let ttl = app.rt.oauth.config.refresh_token_ttl_secs;
        let mut browser = Browser::new();
        let mut rt = app.tokens_for(&mut browser, &client, "ann@example.test").await["refresh_token"].as_str().unwrap().to_owned();
        // Used every quarter of its lifetime, it still ends at the absolute lifetime.
        let step = ttl / 4 - 60;
        for _ in 0..4 {
            app.clock.advance(time::Duration::seconds(step));
            rt = tokens(&app.refresh(&client, &rt).await).1;
        }
        app.clock.advance(time::Duration::seconds(ttl - 4 * step + 1));
        let late = app.refresh(&client, &rt).await;
        assert_eq!(late.oauth_error(), "invalid_grant", "{db:?}: past the absolute lifetime: {}", late.body);

        // RFC 7009 revocation, by refresh token and by access token.
        let other = app.default_client().await;
        for by_access_token in [false, true] {
            let mut browser = Browser::new();
            let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
            let (at, rt) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
            let target = if by_access_token { at } else { rt };
            // Another client's revocation is ignored (200, but nothing happens).
            let basic = |c: &TestClient| {
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.id, c.secret.clone().unwrap())))
            };
            let ignored = app.post_form(&app.path("/oauth2/revoke"), &[("token", target)], &[("authorization", &basic(&other))]).await;
            assert_eq!(ignored.status, StatusCode::OK);
            assert_eq!(app.userinfo(at).await.status, StatusCode::OK, "{db:?}: another client cannot revoke");
            let revoked = app.post_form(&app.path("/oauth2/revoke"), &[("token", target)], &[("authorization", &basic(&client))]).await;
            assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
            assert_eq!(app.userinfo(at).await.status, StatusCode::UNAUTHORIZED, "{db:?}: access token dead at once");
            assert_eq!(app.refresh(&client, rt).await.oauth_error(), "invalid_grant", "{db:?}: refresh token dead at once");
        }

        // The admin withdraws a third-party app's consent: its tokens die at once.
        let third = app.client(ClientOptions { first_party: false, ..ClientOptions::default() }).await;
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &third, "ann@example.test").await;
        let (at, rt) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
        assert_eq!(app.userinfo(at).await.status, StatusCode::OK);
        tessera_server::cli::consent_command(
            &app.rt,
            tessera_server::cli::ConsentCommand::Revoke {
                tenant: "acme".into(),
                user: "ann@example.test".into(),
                client: third.id.clone(),
                out: tessera_server::cli::JsonFlag { json: true },
            },
        )
        .await
        .unwrap();
        assert_eq!(app.userinfo(at).await.status, StatusCode::UNAUTHORIZED, "{db:?}: consent withdrawn");
        assert_eq!(app.refresh(&third, rt).await.oauth_error(), "invalid_grant", "{db:?}: consent withdrawn");
    }
}

/// Check 21: a disabled customer's codes, refresh and access tokens and sessions stop
/// working; a deleted client's machine tokens and credentials stop working.
#[tokio::test]
async fn disabled_customers_and_deleted_clients_get_nothing() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let ann = app.rt.store.find_user_by_email(app.tenant.id, "ann@example.test").await.unwrap().unwrap();
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let (at, rt) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
        let pending_code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
        app.disable(&ann).await;
        assert_eq!(app.refresh(&client, rt).await.oauth_error(), "invalid_grant", "{db:?}: refresh");
        assert_eq!(app.redeem(&client, &pending_code).await.oauth_error(), "invalid_grant", "{db:?}: code issued before");
        assert_eq!(app.userinfo(at).await.status, StatusCode::UNAUTHORIZED, "{db:?}: access token");
        let silent = app.silent_authorize(&mut browser, &client, &[]).await;
        assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"), "{db:?}: the session is gone");
        let mut fresh = Browser::new();
        let start = fresh.get(&app, &app.authorize_url(&client, &[])).await;
        let page = fresh.get(&app, &start.location()).await;
        let login = fresh.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        assert_eq!(login.status, StatusCode::BAD_REQUEST, "{db:?}: a disabled customer cannot sign in");
        assert!(fresh.session().is_none());

        // A deleted machine client.
        let machine = app.client(ClientOptions { grant_types: vec!["client_credentials"], ..ClientOptions::default() }).await;
        let issued = app.token(&machine, &[("grant_type", "client_credentials")]).await;
        assert_eq!(issued.status, StatusCode::OK, "{}", issued.body);
        let machine_at = issued.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.introspect(&client, &machine_at).await["active"], true);
        let event =
            tessera_core::NewEvent::new(app.tenant.id, tessera_core::EventKind::ClientDeleted, tessera_core::Clock::now(&*app.clock))
                .client(&machine.id);
        app.rt.store.delete_client(app.tenant.id, &machine.id, &event).await.unwrap();
        assert_eq!(app.introspect(&client, &machine_at).await["active"], false, "{db:?}: machine token of a deleted client");
        // Token-endpoint authentication reads clients through a per-node cache that other nodes
        // refresh within CLIENT_CACHE_TTL; the node that deletes forgets the client at once.
        app.rt.oauth.clients.invalidate(app.tenant.id, &machine.id);
        let r = app.token(&machine, &[("grant_type", "client_credentials")]).await;
        assert_eq!((r.status, r.oauth_error().as_str()), (StatusCode::UNAUTHORIZED, "invalid_client"), "{db:?}");
    }
}

/// Check 22: the ID token — RS256 by default, resolvable `kid`, exact `iss`, `aud`, `exp`/`iat`,
/// `nonce` echoed (and optional), `auth_time` with `max_age`, `at_hash`; no `alg: none`.
#[tokio::test]
async fn id_tokens_are_well_formed_and_verifiable() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let id_token = t["id_token"].as_str().unwrap();
        let (header, claims) = app.verify_jwt(id_token, Some(&client.id)).await.unwrap_or_else(|e| panic!("{db:?}: {e}"));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "{db:?}: RS256 by default");
        assert!(header.kid.is_some());
        assert_eq!(claims["iss"], json!(app.issuer()));
        assert_eq!(claims["aud"], json!(client.id));
        assert_eq!(claims["azp"], json!(client.id));
        assert_eq!(claims["nonce"], json!("n-456"), "{db:?}: nonce echoed");
        let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
        assert_eq!(iat, tessera_core::Clock::now(&*app.clock).unix_timestamp());
        assert_eq!(exp - iat, app.rt.oauth.config.id_token_ttl_secs);
        let at = t["access_token"].as_str().unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, at.as_bytes());
        assert_eq!(claims["at_hash"], json!(b64url(&digest.as_ref()[..16])), "{db:?}: at_hash");
        let sub = claims["sub"].clone();

        // nonce is optional in the code flow, and absent when not sent.
        let code = app.code_for(&mut browser, &client, "ann@example.test", &[("nonce", "")]).await;
        let (_, _, t) = tokens(&app.redeem(&client, &code).await);
        let (_, claims) = app.verify_jwt(t["id_token"].as_str().unwrap(), Some(&client.id)).await.unwrap();
        assert!(claims.get("nonce").is_none(), "{db:?}: no nonce claim without a nonce");
        assert_eq!(claims["sub"], sub);

        // max_age: auth_time present and equal to the sign-in time.
        let signed_in_at = tessera_core::Clock::now(&*app.clock).unix_timestamp();
        app.clock.advance(time::Duration::seconds(30));
        let code = app.code_for(&mut browser, &client, "ann@example.test", &[("max_age", "3600")]).await;
        let (_, _, t) = tokens(&app.redeem(&client, &code).await);
        let (_, claims) = app.verify_jwt(t["id_token"].as_str().unwrap(), Some(&client.id)).await.unwrap();
        assert_eq!(claims["auth_time"], json!(signed_in_at), "{db:?}: auth_time is the sign-in time");

        // alg none is neither advertised nor accepted for a client.
        let discovery = app.discovery().await;
        let algs: Vec<&str> =
            discovery["id_token_signing_alg_values_supported"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(!algs.contains(&"none"), "{db:?}: {algs:?}");
        assert!(algs.contains(&"RS256"));
        let metadata = ClientMetadata {
            redirect_uris: vec![REDIRECT.into()],
            id_token_signed_response_alg: Some("none".into()),
            ..ClientMetadata::default()
        };
        assert!(create_client(&app.rt.oauth, &app.tenant, &metadata, false).await.is_err(), "{db:?}: alg none refused");
    }
}

/// Forgeries of a JWT we issued: `alg: none`, HMAC keyed with our public key, unknown `kid`,
/// a foreign key under our `kid`, `jku`/`jwk`/`x5u`, and a tampered payload.
async fn forgeries(app: &TestApp, genuine: &str) -> Vec<(&'static str, String)> {
    let (header, claims) = jwt_parts(genuine);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let jwks = app.jwks().await;
    let our_jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == json!(kid)).unwrap().clone();
    let signing_input = |h: &Value, c: &Value| format!("{}.{}", b64url(h.to_string().as_bytes()), b64url(c.to_string().as_bytes()));
    let hmac = |secret: &[u8], h: &Value, c: &Value| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let input = signing_input(h, c);
        format!("{input}.{}", b64url(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
    };
    // An attacker's own ES256 key.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let attacker_key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut attacker_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker_key, jsonwebtoken::Algorithm::ES256).unwrap();
    attacker_jwk.common.key_id = Some("attacker".into());
    let attacker_signed = |mutate: &dyn Fn(&mut jsonwebtoken::Header)| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.typ = header["typ"].as_str().map(str::to_owned);
        h.kid = Some("attacker".into());
        mutate(&mut h);
        jsonwebtoken::encode(&h, &claims, &attacker_key).unwrap()
    };
    let our_es256_kid = jwks["keys"].as_array().unwrap().iter().find(|k| k["kty"] == "EC").unwrap()["kid"].as_str().unwrap().to_owned();
    let with = |k: &str, v: Value| {
        let mut h = header.clone();
        h[k] = v;
        h
    };
    let none_header = with("alg", json!("none"));
    let hs_header = with("alg", json!("HS256"));
    let mut tampered = claims.clone();
    tampered["sub"] = json!(uuid::Uuid::new_v4().to_string());
    tampered["scope"] = json!("openid profile email offline_access admin");
    let genuine_signature = genuine.rsplit('.').next().unwrap();
    let mut out = vec![
        ("alg none", format!("{}.", signing_input(&none_header, &claims))),
        ("alg none with the genuine signature", format!("{}.{genuine_signature}", signing_input(&none_header, &claims))),
        ("HS256 keyed with our JWK", hmac(our_jwk.to_string().as_bytes(), &hs_header, &claims)),
        ("tampered payload", format!("{}.{genuine_signature}", signing_input(&header, &tampered))),
        ("unknown kid", attacker_signed(&|_| {})),
        ("jku to the attacker", attacker_signed(&|h| h.jku = Some("https://evil.test/jwks.json".into()))),
        ("inline jwk", attacker_signed(&|h| h.jwk = Some(attacker_jwk.clone()))),
        ("x5u to the attacker", attacker_signed(&|h| h.x5u = Some("https://evil.test/cert.pem".into()))),
        ("foreign key under our ES256 kid", attacker_signed(&|h| h.kid = Some(our_es256_kid.clone()))),
        ("genuine token plus jku", {
            let h = with("jku", json!("https://evil.test/jwks.json"));
            format!("{}.{genuine_signature}", signing_input(&h, &claims))
        }),
    ];
    if let Some(n) = our_jwk["n"].as_str() {
        out.push(("HS256 keyed with our RSA modulus", hmac(&b64url_decode(n).unwrap(), &hs_header, &claims)));
        out.push(("HS256 keyed with our modulus text", hmac(n.as_bytes(), &hs_header, &claims)));
    }
    out
}

/// Check 23: JWTs we consume — `id_token_hint` at authorization and logout, and access tokens
/// at userinfo — refuse every forgery; an access token past its lifetime is refused.
#[tokio::test]
async fn consumed_jwts_refuse_forgeries() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let (id_token, at) = (t["id_token"].as_str().unwrap(), t["access_token"].as_str().unwrap());
        // Positive controls.
        let ok = app.silent_authorize(&mut browser, &client, &[("id_token_hint", id_token)]).await;
        assert!(query_param(&ok, "code").is_some(), "{db:?}: the genuine hint works: {ok}");
        assert_eq!(app.userinfo(at).await.status, StatusCode::OK);

        let mut hints = forgeries(&app, id_token).await;
        hints.push(("access token as id_token_hint", at.to_owned()));
        for (what, hint) in &hints {
            let location = app.silent_authorize(&mut browser, &client, &[("id_token_hint", hint)]).await;
            assert!(query_param(&location, "code").is_none(), "{db:?} {what}: no code for a forged hint");
            assert_eq!(query_param(&location, "error").as_deref(), Some("invalid_request"), "{db:?} {what}");
            // Logout: a forged hint neither skips the confirmation nor unlocks a redirect.
            let url = format!(
                "{}?{}",
                app.path("/oauth2/logout"),
                encode_form(&[("id_token_hint", hint), ("post_logout_redirect_uri", "https://app.example.test/bye")])
            );
            let response = browser.get(&app, &url).await;
            assert_ne!(response.status, StatusCode::SEE_OTHER, "{db:?} {what}: no redirect after logout");
            assert!(response.headers.get("location").is_none());
            assert!(browser.session().is_some(), "{db:?} {what}: the session cookie is not cleared");
        }
        let still = app.silent_authorize(&mut browser, &client, &[]).await;
        assert!(query_param(&still, "code").is_some(), "{db:?}: forged logout hints ended nothing");

        let mut bearers = forgeries(&app, at).await;
        bearers.push(("ID token", id_token.to_owned()));
        for (what, token) in &bearers {
            let response = app.userinfo(token).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{db:?} {what}: {}", response.body);
            assert_eq!(app.introspect(&client, token).await["active"], false, "{db:?} {what}");
        }

        // Past its lifetime (on the server's clock) an access token is refused.
        app.clock.advance(time::Duration::seconds(app.rt.oauth.config.access_token_ttl_secs + 1));
        assert_eq!(app.userinfo(at).await.status, StatusCode::UNAUTHORIZED, "{db:?}: expired access token");
        assert_eq!(app.introspect(&client, at).await["active"], false, "{db:?}: expired access token");
    }
}

/// Check 24: ID and refresh tokens are not access tokens; access tokens say what they are.
#[tokio::test]
async fn token_types_cannot_be_confused() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let at = t["access_token"].as_str().unwrap();
        assert_eq!(app.userinfo(at).await.status, StatusCode::OK);
        for (what, token) in [("ID token", t["id_token"].as_str().unwrap()), ("refresh token", t["refresh_token"].as_str().unwrap())] {
            let response = app.userinfo(token).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{db:?} {what}: {}", response.body);
            assert!(response.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{db:?} {what}");
            let posted = app.post_form(&app.path("/oauth2/userinfo"), &[("access_token", token)], &[]).await;
            assert_eq!(posted.status, StatusCode::UNAUTHORIZED, "{db:?} {what} in a form body");
        }
        // An access token is not a refresh token either.
        assert_eq!(app.refresh(&client, at).await.oauth_error(), "invalid_grant", "{db:?}");
        let (header, claims) = app.verify_jwt(at, Some(&app.issuer())).await.unwrap_or_else(|e| panic!("{db:?}: {e}"));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"), "{db:?}: RFC 9068 typ");
        assert!(claims["aud"].is_string() && claims["client_id"] == json!(client.id));
        let (id_header, _) = jwt_parts(t["id_token"].as_str().unwrap());
        assert_ne!(id_header["typ"], json!("at+jwt"), "{db:?}: an ID token is not typed as an access token");
    }
}

/// Check 25: no caching, long random tokens, both secret methods, `invalid_client` (401, with
/// a Basic challenge when Basic was tried) for missing or wrong credentials.
#[tokio::test]
async fn token_endpoint_authentication_and_hygiene() {
    for db in databases() {
        let (app, client) = setup(db).await;
        let secret = client.secret.clone().unwrap();
        let entropy = |what: &str, token: &str| {
            let bytes = b64url_decode(token).unwrap_or_else(|| panic!("{db:?} {what}: base64url"));
            assert!(bytes.len() >= 16, "{db:?} {what}: {} bytes", bytes.len());
        };
        entropy("client secret", &secret);
        let mut seen = std::collections::HashSet::new();
        let mut browser = Browser::new();
        for post in [false, true] {
            let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
            entropy("code", &code);
            let form = [("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)];
            let response = if post {
                let mut with_secret = form.to_vec();
                with_secret.extend([("client_id", client.id.as_str()), ("client_secret", secret.as_str())]);
                app.post_form(&app.path("/oauth2/token"), &with_secret, &[]).await
            } else {
                app.token(&client, &form).await
            };
            assert_eq!(response.status, StatusCode::OK, "{db:?} post={post}: {}", response.body);
            assert_eq!(response.header("cache-control"), Some("no-store"));
            let rt = response.json()["refresh_token"].as_str().unwrap().to_owned();
            entropy("refresh token", &rt);
            assert!(seen.insert(rt), "{db:?}: refresh tokens are unique");
        }
        let basic =
            |id: &str, secret: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")));
        let code = app.code_for(&mut browser, &client, "ann@example.test", &[]).await;
        let form =
            vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)];
        let token_path = app.path("/oauth2/token");
        let wrong_basic = basic(&client.id, "wrong");
        let unknown_basic = basic("nobody", &secret);
        let cases: Vec<(&str, Pairs, Pairs, bool)> = vec![
            ("no credentials", vec![], vec![], false),
            ("client_id only", vec![("client_id", client.id.as_str())], vec![], false),
            ("wrong secret, post", vec![("client_id", client.id.as_str()), ("client_secret", "wrong")], vec![], false),
            ("wrong secret, basic", vec![], vec![("authorization", &wrong_basic)], true),
            ("unknown client, basic", vec![], vec![("authorization", &unknown_basic)], true),
            ("empty secret, post", vec![("client_id", client.id.as_str()), ("client_secret", "")], vec![], false),
        ];
        for (what, extra_form, headers, basic_tried) in cases {
            let mut all = form.clone();
            all.extend(extra_form);
            let response = app.post_form(&token_path, &all, &headers).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{db:?} {what}: {}", response.body);
            assert_eq!(response.oauth_error(), "invalid_client", "{db:?} {what}");
            assert_eq!(response.header("cache-control"), Some("no-store"), "{db:?} {what}");
            if basic_tried {
                assert!(response.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")), "{db:?} {what}: Basic challenge");
            }
        }
        // The code survived the failed client authentications: they never reached it.
        let response = app.token(&client, &form).await;
        assert_eq!(response.status, StatusCode::OK, "{db:?}: {}", response.body);
        // Error responses are not cacheable either.
        let response = app.token(&client, &form).await;
        assert_eq!(response.oauth_error(), "invalid_grant");
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }
}

/// Sets the status of the tenant's `alg` key from `from` to `to` behind the server's back, and
/// makes this node forget its cached keys.
async fn set_key_status(app: &TestApp, alg: &str, from: &str, to: &str) {
    use sqlx::Connection;
    // The test database holds this one tenant.
    let sql = format!("UPDATE signing_keys SET status = '{to}' WHERE alg = '{alg}' AND status = '{from}'");
    let url = app.rt.config.database_url.clone();
    let changed = match app.db {
        Db::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap().rows_affected()
        }
        Db::Postgres => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap().rows_affected()
        }
    };
    assert_eq!(changed, 1, "one {alg} key went from {from} to {to}");
    app.rt.oauth.keys.invalidate(app.tenant.id);
}

/// A token endpoint that cannot sign (no active key for an algorithm: an interrupted key
/// creation, a client registered for an algorithm whose key is gone) fails before it writes:
/// the refresh token is not spent — the client's retry is not taken for a replay — and no
/// event records a token that was never issued. (Found by review: the rotation is queued
/// before the signature, for speed.)
#[tokio::test]
async fn a_token_that_cannot_be_signed_spends_and_records_nothing() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.client(ClientOptions { id_token_alg: Some("EdDSA"), ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let issued = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let rt = issued["refresh_token"].as_str().unwrap().to_owned();
        let count = |kind: tessera_core::EventKind, grant_type: &'static str| {
            let app = &app;
            async move {
                let events = app.rt.store.list_events(app.tenant.id, 100, None).await.unwrap();
                events.iter().filter(|e| e.kind == kind && (grant_type.is_empty() || e.data["grant_type"] == grant_type)).count()
            }
        };

        set_key_status(&app, "EdDSA", "active", "retired").await;
        let failed = app.refresh(&client, &rt).await;
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR, "{db:?}: {}", failed.body);
        assert_eq!(failed.json()["error"], "server_error", "{db:?}");
        assert_eq!(count(tessera_core::EventKind::TokenIssued, "refresh_token").await, 0, "{db:?}: no refresh recorded");

        set_key_status(&app, "EdDSA", "retired", "active").await;
        let retried = app.refresh(&client, &rt).await;
        assert_eq!(retried.status, StatusCode::OK, "{db:?}: the retry with the same token works: {}", retried.body);
        assert_eq!(count(tessera_core::EventKind::RefreshTokenReused, "").await, 0, "{db:?}: no replay");

        let machine = app.client(ClientOptions { grant_types: vec!["client_credentials"], ..ClientOptions::default() }).await;
        set_key_status(&app, "ES256", "active", "retired").await;
        let machine_token = app.token(&machine, &[("grant_type", "client_credentials")]).await;
        assert_eq!(machine_token.status, StatusCode::INTERNAL_SERVER_ERROR, "{db:?}: {}", machine_token.body);
        assert_eq!(count(tessera_core::EventKind::TokenIssued, "client_credentials").await, 0, "{db:?}: no machine token recorded");
    }
}
