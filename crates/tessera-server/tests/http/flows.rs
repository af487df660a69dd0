//! The main journeys, end to end through the router.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::http::StatusCode;

#[tokio::test]
async fn sign_up_then_code_flow_then_userinfo_and_refresh() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        let mut browser = Browser::new();
        let start = browser.get(&app, &app.authorize_url(&client, &[("prompt", "create")])).await;
        assert_eq!(start.status, StatusCode::SEE_OTHER);
        assert!(start.location().starts_with(&app.path("/registration?flow=")), "{db:?}: prompt=create opens sign-up");
        let page = browser.get(&app, &start.location()).await;
        assert!(page.body.contains("Create account"));
        let done = browser
            .submit(
                &app,
                &page,
                &[("email", " New@Example.TEST "), ("password", PASSWORD), ("given_name", "Nia"), ("family_name", "Okafor")],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let redirect = done.location();
        assert!(redirect.starts_with(REDIRECT), "{redirect}");
        assert_eq!(query_param(&redirect, "state").as_deref(), Some("st-123"));
        assert_eq!(query_param(&redirect, "iss").as_deref(), Some(app.issuer().as_str()));
        let code = query_param(&redirect, "code").unwrap();
        let tokens = app
            .token(
                &client,
                &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)],
            )
            .await;
        assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
        assert_eq!(tokens.header("cache-control"), Some("no-store"));
        let tokens = tokens.json();
        let at = tokens["access_token"].as_str().unwrap();
        let req = axum::http::Request::get(app.path("/oauth2/userinfo"))
            .header("authorization", format!("Bearer {at}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let info = app.send(req).await;
        assert_eq!(info.status, StatusCode::OK, "{}", info.body);
        let info = info.json();
        assert_eq!(info["email"], "New@Example.TEST", "mail goes to the address as typed (trimmed)");
        assert_eq!(info["email_verified"], false);
        assert_eq!(info["given_name"], "Nia");
        let rt = tokens["refresh_token"].as_str().unwrap();
        let refreshed = app.token(&client, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        assert_ne!(refreshed.json()["refresh_token"], tokens["refresh_token"]);
    }
}

#[tokio::test]
async fn existing_customer_signs_in_and_gets_single_sign_on() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let mut browser = Browser::new();
        let first = app.tokens_for(&mut browser, &client, "ANN@example.test").await;
        assert!(first["id_token"].is_string());
        // A second authorization in the same browser needs no sign-in.
        let again = browser.get(&app, &app.authorize_url(&client, &[])).await;
        assert_eq!(again.status, StatusCode::SEE_OTHER);
        assert!(again.location().starts_with(REDIRECT), "SSO: {}", again.location());
    }
}
