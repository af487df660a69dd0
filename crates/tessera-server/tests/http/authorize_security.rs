//! Checklist A (1-9): redirect URIs and the authorization endpoint, from the attacker's and
//! the client's side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tessera_oauth::registration::{ClientMetadata, create_client};

const WEIRD_STATE: &str = "a b+c/d?e=f&g%20h;\u{e9}\u{1F511}\"'<>";

/// Check 1: the registered URI matches byte for byte; every near-miss is an error page, with
/// or without `prompt=none`, and the untrusted URI is not reflected.
#[tokio::test]
async fn redirect_uri_near_misses_get_an_error_page_never_a_redirect() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        // The registered URI itself is accepted (so the refusals below are about the URI).
        let ok = app.get(&app.authorize_url(&client, &[("prompt", "none")])).await;
        assert_eq!(redirect_error(&ok, REDIRECT), "login_required", "{db:?}");
        for bad in [
            "https://app.example.test/cb/extra",
            "https://app.example.test/cb/",
            "https://app.example.test/CB",
            "https://app.example.test/cb?x=1",
            "https://app.example.test/cb#f",
            "https://app.example.test/cb/.",
            "https://app.example.test/cb%2F..",
            "https://APP.example.test/cb",
            "https://app.example.test:443/cb",
            "http://app.example.test/cb",
            "https://app.example.test/cb ",
        ] {
            for extra in [vec![("redirect_uri", bad)], vec![("redirect_uri", bad), ("prompt", "none")]] {
                let response = app.get(&app.authorize_url(&client, &extra)).await;
                assert_error_page(&response, &format!("{db:?} {bad}"));
            }
        }
    }
}

/// Check 2: host and path tricks are compared byte for byte, so none of them matches.
#[tokio::test]
async fn redirect_uri_host_tricks_are_refused() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        for bad in [
            "https://app.example.test.evil.test/cb",
            "https://app.example.test@evil.test/cb",
            "https://a@b@evil.test/cb",
            "https://evil.test\\@app.example.test/cb",
            "https://app.example.test/cb/..;/x",
            "https://evil.test/cb",
            "https://evil.test#@app.example.test/cb",
            "//evil.test/cb",
        ] {
            for extra in [vec![("redirect_uri", bad)], vec![("redirect_uri", bad), ("prompt", "none")]] {
                let response = app.get(&app.authorize_url(&client, &extra)).await;
                assert_error_page(&response, &format!("{db:?} {bad}"));
                assert!(!response.body.contains("evil.test"), "{db:?}: the untrusted URI is not reflected: {bad}");
            }
        }
    }
}

/// Check 3: a registered loopback redirect accepts any port; look-alike hosts and other http
/// hosts are refused, at authorization and at registration.
#[tokio::test]
async fn loopback_redirects_allow_any_port_but_nothing_else() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let native = app
            .client(ClientOptions {
                redirect_uris: vec!["http://127.0.0.1/cb", "http://[::1]/cb"],
                public: true,
                ..ClientOptions::default()
            })
            .await;
        for good in ["http://127.0.0.1:51234/cb", "http://127.0.0.1/cb", "http://127.0.0.1:1/cb", "http://[::1]:8080/cb"] {
            let response = app.get(&app.authorize_url(&native, &[("redirect_uri", good), ("prompt", "none")])).await;
            assert_eq!(redirect_error(&response, good), "login_required", "{db:?} {good}");
            assert_eq!(query_param(&response.location(), "state").as_deref(), Some("st-123"));
        }
        for bad in [
            "http://127.0.0.1.evil.test/cb",
            "http://127.0.0.1@evil.test/cb",
            "http://127.0.0.1:80@evil.test/cb",
            "http://127.0.0.1:51234@evil.test/cb",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:8080/cb/x",
            "http://127.0.0.1:8080/CB",
            "http://localhost:8080/cb",
            "http://10.0.0.1:8080/cb",
            "http://127.0.0.2:8080/cb",
            "https://127.0.0.1:8080/cb",
        ] {
            let response = app.get(&app.authorize_url(&native, &[("redirect_uri", bad), ("prompt", "none")])).await;
            assert_error_page(&response, &format!("{db:?} {bad}"));
        }
        // Other http hosts cannot even be registered (the public URL here is not localhost).
        for bad in ["http://app.example.test/cb", "http://localhost:3000/cb", "http://127.0.0.1.evil.test/cb"] {
            let metadata = ClientMetadata {
                redirect_uris: vec![bad.to_owned()],
                token_endpoint_auth_method: Some("none".into()),
                ..ClientMetadata::default()
            };
            let refused = create_client(&app.rt.oauth, &app.tenant, &metadata, false).await.err();
            assert_eq!(refused.map(|e| e.code), Some("invalid_redirect_uri"), "{db:?}: registering {bad}");
        }
    }
}

/// Check 4: an unknown client, a mismatched or a missing (ambiguous) redirect URI is an error
/// page — also with `prompt=none` and when another error would otherwise be redirected.
#[tokio::test]
async fn untrusted_client_or_redirect_is_an_error_page_even_for_other_errors() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let two =
            app.client(ClientOptions { redirect_uris: vec![REDIRECT, "https://app.example.test/other"], ..ClientOptions::default() }).await;
        let unknown = TestClient { id: "no-such-client".into(), secret: None };
        let cases: Vec<(&str, &TestClient, Pairs)> = vec![
            ("unknown client", &unknown, vec![]),
            ("missing client_id", &unknown, vec![("client_id", "")]),
            ("mismatched redirect", &two, vec![("redirect_uri", "https://evil.test/cb")]),
            ("ambiguous redirect", &two, vec![("redirect_uri", "")]),
        ];
        for (name, client, extra) in &cases {
            for more in [
                vec![],
                vec![("prompt", "none")],
                vec![("response_type", "token")],
                vec![("scope", "bogus\"scope")],
                vec![("code_challenge_method", "plain")],
                vec![("request", "x.y.z")],
            ] {
                let mut all = extra.clone();
                all.extend(more.iter().copied());
                let response = app.get(&app.authorize_url(client, &all)).await;
                assert_error_page(&response, &format!("{db:?} {name} {more:?}"));
            }
        }
        // With one registered URI, omitting it is fine (RFC 6749 §3.1.2.3): not an error page.
        let one = app.default_client().await;
        let response = app.get(&app.authorize_url(&one, &[("redirect_uri", ""), ("prompt", "none")])).await;
        assert_eq!(redirect_error(&response, REDIRECT), "login_required", "{db:?}");
    }
}

/// Check 5: only the code flow exists, only the grants a client was given work.
#[tokio::test]
async fn unsupported_response_types_and_grants_are_refused() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        for rt in ["token", "id_token token", "code token", "id_token", "code id_token", "code id_token token", "none", "CODE"] {
            let response = app.get(&app.authorize_url(&client, &[("response_type", rt)])).await;
            assert_eq!(redirect_error(&response, REDIRECT), "unsupported_response_type", "{db:?} {rt}");
            let location = response.location();
            assert!(!location.contains("access_token") && !location.contains('#'), "{db:?}: nothing in a fragment: {location}");
            assert_eq!(query_param(&location, "state").as_deref(), Some("st-123"));
            assert_eq!(query_param(&location, "iss"), Some(app.issuer()));
        }
        for grant in ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code", "urn:openid:params:grant-type:ciba", "foo"] {
            let response = app.token(&client, &[("grant_type", grant), ("username", "ann@example.test"), ("password", PASSWORD)]).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{db:?} {grant}");
            assert_eq!(response.oauth_error(), "unsupported_grant_type", "{db:?} {grant}");
        }
        // A code-only client gets no refresh token and may not use other grants.
        let code_only = app.client(ClientOptions { grant_types: vec!["authorization_code"], ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let tokens = app.tokens_for(&mut browser, &code_only, "ann@example.test").await;
        assert!(tokens["access_token"].is_string());
        assert!(tokens.get("refresh_token").is_none(), "{db:?}: no refresh token without the refresh_token grant");
        for grant in ["refresh_token", "client_credentials"] {
            let response = app.token(&code_only, &[("grant_type", grant), ("refresh_token", "x")]).await;
            assert_eq!(response.oauth_error(), "unauthorized_client", "{db:?} {grant}");
        }
        // A machine client may not start the code flow.
        let machine = app.client(ClientOptions { grant_types: vec!["client_credentials"], ..ClientOptions::default() }).await;
        let response = app.get(&app.authorize_url(&machine, &[])).await;
        assert_eq!(redirect_error(&response, REDIRECT), "unauthorized_client", "{db:?}");
        let response = app.token(&machine, &[("grant_type", "client_credentials")]).await;
        assert_eq!(response.status, StatusCode::OK, "{db:?}: its own grant works: {}", response.body);
        // Registration refuses implicit/hybrid metadata and unknown grants.
        for (grant_types, response_types) in
            [(vec!["implicit"], None), (vec!["password"], None), (vec!["authorization_code"], Some(vec!["token"]))]
        {
            let metadata = ClientMetadata {
                redirect_uris: vec![REDIRECT.into()],
                grant_types: Some(grant_types.iter().map(|s| s.to_string()).collect()),
                response_types: response_types.map(|r| r.iter().map(|s| s.to_string()).collect()),
                ..ClientMetadata::default()
            };
            assert!(create_client(&app.rt.oauth, &app.tenant, &metadata, false).await.is_err(), "{db:?}: {grant_types:?}");
        }
    }
}

/// Check 6: OIDC tolerance — missing `response_type` is a proper error; unknown parameters,
/// scope order, POST and the optional display/locale/hint parameters cause no error.
#[tokio::test]
async fn authorization_endpoint_is_tolerant_where_the_spec_asks() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let missing = app.get(&app.authorize_url(&client, &[("response_type", "")])).await;
        assert_eq!(redirect_error(&missing, REDIRECT), "invalid_request", "{db:?}");
        assert_eq!(query_param(&missing.location(), "state").as_deref(), Some("st-123"));

        // Optional parameters and an unknown one, through the whole flow.
        let extras = [
            ("display", "popup"),
            ("ui_locales", "de-CH fr"),
            ("claims_locales", "de"),
            ("login_hint", "ann@example.test"),
            ("acr_values", "urn:mace:incommon:iap:silver"),
            ("x-unknown-extension", "42"),
            ("scope", "email offline_access profile openid"),
        ];
        let mut browser = Browser::new();
        let first = browser.get(&app, &app.authorize_url(&client, &extras)).await;
        assert_eq!(first.status, StatusCode::SEE_OTHER, "{db:?}: {}", first.body);
        let page = browser.get(&app, &first.location()).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.input("email").as_deref(), Some("ann@example.test"), "{db:?}: login_hint prefills the form");
        let done = browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        let code = query_param(&done.location(), "code").unwrap_or_else(|| panic!("{db:?}: code expected: {}", done.location()));
        let tokens = app.redeem(&client, &code).await;
        assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
        // Scope order is irrelevant: the reordered request got the same scopes.
        let granted = tokens.json()["scope"].as_str().unwrap().to_owned();
        let mut sorted: Vec<&str> = granted.split(' ').collect();
        sorted.sort_unstable();
        assert_eq!(sorted, ["email", "offline_access", "openid", "profile"], "{db:?}");

        // POST to the authorization endpoint works like GET.
        let mut browser = Browser::new();
        let url = app.authorize_url(&client, &[]);
        let query = url.split_once('?').unwrap().1.to_owned();
        let req = Request::post(app.path("/oauth2/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(query.clone()))
            .unwrap();
        let posted = app.send(req).await;
        assert_eq!(posted.status, StatusCode::SEE_OTHER, "{db:?}: {}", posted.body);
        assert!(posted.location().starts_with(&app.path("/login?flow=")), "{db:?}: {}", posted.location());
        // And completes: the same request posted by a browser.
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let form: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let posted = browser.post(&app, &app.path("/oauth2/authorize"), &form).await;
        let page = browser.get(&app, &posted.location()).await;
        let done = browser.submit(&app, &page, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        let code = query_param(&done.location(), "code").expect("code after a POSTed authorization request");
        assert_eq!(app.redeem(&client, &code).await.status, StatusCode::OK, "{db:?}");
    }
}

/// Check 7: every authorization response, success or error, carries `state` byte for byte
/// and `iss` equal to the discovery issuer (RFC 9207).
#[tokio::test]
async fn every_authorization_response_echoes_state_and_carries_iss() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let discovery = app.discovery().await;
        assert_eq!(discovery["authorization_response_iss_parameter_supported"], json!(true));
        let issuer = discovery["issuer"].as_str().unwrap().to_owned();
        let first_party = app.default_client().await;
        let third_party = app.client(ClientOptions { first_party: false, ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        let check = |location: &str, what: &str, state: Option<&str>| {
            assert!(location.starts_with(REDIRECT), "{db:?} {what}: {location}");
            assert_eq!(query_param(location, "state").as_deref(), state, "{db:?} {what}: state echoed byte for byte");
            assert_eq!(query_param(location, "iss").as_deref(), Some(issuer.as_str()), "{db:?} {what}: iss");
            let url = url::Url::parse(location).unwrap();
            assert_eq!(url.query_pairs().filter(|(k, _)| k == "iss").count(), 1, "{db:?} {what}: one iss");
        };
        for state in [Some(WEIRD_STATE), None] {
            let s = state.unwrap_or("");
            // Errors found while validating.
            for (what, extra) in [
                ("unsupported_response_type", vec![("response_type", "token")]),
                ("invalid_scope", vec![("scope", "no-such-scope")]),
                ("invalid_request", vec![("code_challenge_method", "plain")]),
                ("request_not_supported", vec![("request", "a.b.c")]),
                ("login_required", vec![("prompt", "none")]),
            ] {
                let mut all = extra;
                all.push(("state", s));
                let response = app.get(&app.authorize_url(&first_party, &all)).await;
                assert_eq!(redirect_error(&response, REDIRECT), what, "{db:?}");
                check(&response.location(), what, state);
            }
            // Success after sign-in.
            let mut browser = Browser::new();
            let location = app.login_for_code(&mut browser, &first_party, "ann@example.test", &[("state", s)]).await;
            assert!(query_param(&location, "code").is_some());
            check(&location, "code", state);
            // Silent success with the session.
            let location = app.silent_authorize(&mut browser, &first_party, &[("state", s)]).await;
            assert!(query_param(&location, "code").is_some(), "{db:?}: {location}");
            check(&location, "silent code", state);
            // consent_required with prompt=none, then access_denied on the consent page.
            let location = app.silent_authorize(&mut browser, &third_party, &[("state", s)]).await;
            assert_eq!(query_param(&location, "error").as_deref(), Some("consent_required"));
            check(&location, "consent_required", state);
            let start = browser.get(&app, &app.authorize_url(&third_party, &[("state", s)])).await;
            assert!(start.location().contains("/consent?request="), "{db:?}: {}", start.location());
            let consent = browser.get(&app, &start.location()).await;
            let denied = browser.submit(&app, &consent, &[("decision", "deny")]).await;
            assert_eq!(query_param(&denied.location(), "error").as_deref(), Some("access_denied"));
            check(&denied.location(), "access_denied", state);
        }
    }
}

/// Check 8: anti-framing on every hosted page, no CORS on the authorization endpoint, and
/// 303 (never 307/308) after every POST.
#[tokio::test]
async fn pages_refuse_framing_and_posts_are_answered_with_303() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let first_party = app.default_client().await;
        let third_party = app.client(ClientOptions { first_party: false, ..ClientOptions::default() }).await;
        app.user("ann@example.test").await;
        let framing = |r: &TestResponse, what: &str| {
            let csp = r.header("content-security-policy").unwrap_or_else(|| panic!("{db:?} {what}: no CSP"));
            assert!(csp.contains("frame-ancestors 'none'"), "{db:?} {what}: {csp}");
            assert_eq!(r.header("x-frame-options"), Some("DENY"), "{db:?} {what}");
        };
        let no_cors = |r: &TestResponse, what: &str| {
            for h in ["access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods"] {
                assert!(r.header(h).is_none(), "{db:?} {what}: {h} on the authorization endpoint");
            }
        };
        let see_other = |r: &TestResponse, what: &str| {
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{db:?} {what}: POST answered with {} ({})", r.status, r.body);
        };
        // Authorization endpoint: GET, POST, error page, preflight — with an Origin header.
        let url = app.authorize_url(&first_party, &[]);
        for (method, uri, body) in [
            ("GET", url.clone(), String::new()),
            ("POST", app.path("/oauth2/authorize"), url.split_once('?').unwrap().1.to_owned()),
            ("GET", app.authorize_url(&TestClient { id: "nope".into(), secret: None }, &[]), String::new()),
            ("OPTIONS", url.clone(), String::new()),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(&uri)
                .header("origin", "https://evil.test")
                .header("access-control-request-method", "GET")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            let response = app.send(req).await;
            no_cors(&response, method);
            if response.status.is_client_error() && method == "GET" {
                framing(&response, "authorize error page");
            }
        }
        // Sign-in page, its error re-render, and the POST that signs in.
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&third_party, &[])).await;
        let login = browser.get(&app, &start.location()).await;
        framing(&login, "login page");
        let wrong = browser.submit(&app, &login, &[("email", "ann@example.test"), ("password", "wrong password!")]).await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
        framing(&wrong, "login error page");
        let signed_in = browser.submit(&app, &wrong, &[("email", "ann@example.test"), ("password", PASSWORD)]).await;
        see_other(&signed_in, "login submit");
        // Consent page and both decisions.
        let consent_url = signed_in.location();
        assert!(consent_url.contains("/consent?request="), "{db:?}: {consent_url}");
        let consent = browser.get(&app, &consent_url).await;
        framing(&consent, "consent page");
        let allowed = browser.submit(&app, &consent, &[("decision", "allow")]).await;
        see_other(&allowed, "consent allow");
        app.clock.advance(time::Duration::seconds(1));
        let start = browser.get(&app, &app.authorize_url(&third_party, &[("prompt", "consent")])).await;
        let consent = browser.get(&app, &start.location()).await;
        let denied = browser.submit(&app, &consent, &[("decision", "deny")]).await;
        see_other(&denied, "consent deny");
        // Account page and the sign-out confirmation.
        let account = browser.get(&app, &app.path("/account")).await;
        assert_eq!(account.status, StatusCode::OK);
        framing(&account, "account page");
        let confirm = browser.get(&app, &app.path("/oauth2/logout")).await;
        assert_eq!(confirm.status, StatusCode::OK);
        framing(&confirm, "logout confirmation");
        let out = browser
            .submit(&app, &confirm, &[("client_id", &first_party.id), ("post_logout_redirect_uri", "https://app.example.test/bye")])
            .await;
        see_other(&out, "logout POST");
        // Sign-up page and the POST that creates the account.
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&first_party, &[("prompt", "create")])).await;
        let registration = browser.get(&app, &start.location()).await;
        framing(&registration, "registration page");
        let created = browser
            .submit(
                &app,
                &registration,
                &[("email", "new@example.test"), ("password", PASSWORD), ("given_name", "N"), ("family_name", "O")],
            )
            .await;
        see_other(&created, "registration submit");
    }
}

/// Check 9: request objects are refused with the dedicated errors, and a `redirect_uri`
/// inside one is never used.
#[tokio::test]
async fn request_objects_are_refused_and_their_redirect_uri_ignored() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        let discovery = app.discovery().await;
        assert_eq!(discovery["request_parameter_supported"], json!(false));
        assert_eq!(discovery["request_uri_parameter_supported"], json!(false));
        let object = forge_jwt(
            &json!({ "alg": "none", "typ": "oauth-authz-req+jwt" }),
            &json!({
                "iss": client.id, "aud": app.issuer(), "client_id": client.id, "response_type": "code",
                "redirect_uri": "https://evil.test/cb", "scope": "openid", "state": "from-object",
            }),
            b"",
        );
        let response = app.get(&app.authorize_url(&client, &[("request", &object)])).await;
        assert_eq!(redirect_error(&response, REDIRECT), "request_not_supported", "{db:?}");
        assert_eq!(query_param(&response.location(), "state").as_deref(), Some("st-123"), "{db:?}: the object's state is not used");
        let response = app.get(&app.authorize_url(&client, &[("request_uri", "https://evil.test/request.jwt")])).await;
        assert_eq!(redirect_error(&response, REDIRECT), "request_uri_not_supported", "{db:?}");
        // Without a redirect_uri outside the object the registered one is used, never the object's.
        let response = app.get(&app.authorize_url(&client, &[("request", &object), ("redirect_uri", "")])).await;
        assert_eq!(redirect_error(&response, REDIRECT), "request_not_supported", "{db:?}");
    }
}
