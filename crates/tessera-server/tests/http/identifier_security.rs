//! Checklist G (49-50): one canonical form of the email for uniqueness, sign-in and import,
//! the stored address in every claim, and the sign-up race.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::login_security::{sign_in, sign_up};
use crate::support::*;
use axum::http::StatusCode;
use std::sync::Arc;

const TAKEN: &str = "An account with this email already exists";

/// Signs in through an authorization request with `typed` and returns the userinfo claims.
async fn claims_after_sign_in(app: &TestApp, client: &TestClient, typed: &str, password: &str) -> serde_json::Value {
    let mut browser = Browser::new();
    let start = browser.get(app, &app.authorize_url(client, &[])).await;
    let page = browser.get(app, &start.location()).await;
    let done = browser.submit(app, &page, &[("email", typed), ("password", password)]).await;
    let code =
        query_param(&done.location(), "code").unwrap_or_else(|| panic!("{typed:?}: sign-in failed: {} {}", done.status, done.location()));
    let t = app.redeem(client, &code).await.json();
    app.userinfo(t["access_token"].as_str().unwrap()).await.json()
}

/// Check 49: case, compatibility characters (Kelvin sign, full-width letters), surrounding
/// spaces and punycode spellings are one identity for sign-up, sign-in and import; the
/// dotted/dotless Turkish i are not folded into `i`; claims carry the stored address.
#[tokio::test]
async fn email_variants_are_one_identity_everywhere() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        let password = "a fine long passphrase";
        assert_eq!(sign_up(&app, "Quack@Example.test", password).await.status, StatusCode::SEE_OTHER, "{db:?}");
        let owner = claims_after_sign_in(&app, &client, "Quack@Example.test", password).await;
        for variant in [
            "quack@example.test",
            "QUACK@EXAMPLE.TEST",
            "quac\u{212A}@example.test",
            "\u{FF51}uack@example.test",
            "  quack@example.test\t",
            "quack@EXAMPLE.test",
        ] {
            let claims = claims_after_sign_in(&app, &client, variant, password).await;
            assert_eq!(claims["sub"], owner["sub"], "{db:?} {variant:?}: the same identity");
            assert_eq!(claims["email"], "Quack@Example.test", "{db:?} {variant:?}: the stored address, not the typed one");
            let taken = sign_up(&app, variant, password).await;
            assert_eq!(taken.status, StatusCode::BAD_REQUEST, "{db:?} {variant:?}: no second account");
            assert!(taken.body.contains(TAKEN), "{db:?} {variant:?}");
        }

        // Unicode and punycode spellings of one domain.
        assert_eq!(sign_up(&app, "a@b\u{fc}cher.example", password).await.status, StatusCode::SEE_OTHER, "{db:?}");
        let unicode = claims_after_sign_in(&app, &client, "a@b\u{fc}cher.example", password).await;
        let puny = claims_after_sign_in(&app, &client, "a@xn--bcher-kva.example", password).await;
        assert_eq!(unicode["sub"], puny["sub"], "{db:?}: punycode is the same domain");
        assert_eq!(puny["email"], "a@b\u{fc}cher.example");
        assert!(sign_up(&app, "A@XN--BCHER-KVA.example", password).await.body.contains(TAKEN), "{db:?}");

        // İ and ı are not i: no sign-in into ivan's account, and no collision at sign-up.
        assert_eq!(sign_up(&app, "ivan@example.test", password).await.status, StatusCode::SEE_OTHER);
        for lookalike in ["\u{130}van@example.test", "\u{131}van@example.test"] {
            assert_eq!(sign_in(&app, lookalike, password).await.status, StatusCode::BAD_REQUEST, "{db:?} {lookalike}");
        }
        assert_eq!(sign_up(&app, "\u{131}van@example.test", password).await.status, StatusCode::SEE_OTHER, "{db:?}: a distinct account");
        let ivan = claims_after_sign_in(&app, &client, "IVAN@example.test", password).await;
        let dotless = claims_after_sign_in(&app, &client, "\u{131}van@example.test", password).await;
        assert_ne!(ivan["sub"], dotless["sub"], "{db:?}");
        assert_eq!(ivan["email"], "ivan@example.test");

        // The bulk import uses the same canonical form: variants of existing addresses are
        // skipped, a new customer signs in with any spelling.
        let hash = app.rt.selfservice.hasher.hash(tessera_core::password_policy::normalize_password(password)).await.unwrap();
        let lines = [
            serde_json::json!({ "email": "QUAC\u{212A}@example.test", "password_hash": hash }),
            serde_json::json!({ "email": " quack@EXAMPLE.TEST ", "password_hash": hash }),
            serde_json::json!({ "email": "Imported@Example.test", "password_hash": hash }),
            serde_json::json!({ "email": "imported@example.test", "password_hash": hash }),
        ];
        let file = std::env::temp_dir().join(format!("tessera-import-{}.jsonl", uuid::Uuid::new_v4()));
        std::fs::write(&file, lines.iter().map(|l| l.to_string() + "\n").collect::<String>()).unwrap();
        let report = tessera_server::import::import_users(&app.rt, &app.tenant, file.to_str().unwrap(), 100).await;
        let _ = std::fs::remove_file(&file);
        let report = report.unwrap();
        assert_eq!((report.imported, report.skipped), (1, 3), "{db:?}: {report:?}");
        let imported = claims_after_sign_in(&app, &client, "IMPORTED@example.test", password).await;
        assert_eq!(imported["email"], "Imported@Example.test", "{db:?}");
        let again = claims_after_sign_in(&app, &client, "quack@example.test", password).await;
        assert_eq!(again["sub"], owner["sub"], "{db:?}: the import did not replace the owner");
    }
}

/// Check 50: twenty simultaneous sign-ups with one address in several spellings create exactly
/// one account; the others get the ordinary "email taken" answer, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sign_ups_create_one_account() {
    for db in databases() {
        let app = Arc::new(TestApp::new(db).await);
        let variants =
            ["quack@example.test", "Quack@example.test", "quac\u{212A}@example.test", "QUACK@EXAMPLE.TEST", " quack@example.test"];
        let mut forms = Vec::new();
        for i in 0..20 {
            let mut browser = Browser::new();
            let start = browser.get(&app, &app.path("/registration")).await;
            let page = browser.get(&app, &start.location()).await;
            forms.push((browser, page, variants[i % variants.len()]));
        }
        let tasks: Vec<_> = forms
            .into_iter()
            .map(|(mut browser, page, email)| {
                let app = app.clone();
                tokio::spawn(async move {
                    browser
                        .submit(
                            &app,
                            &page,
                            &[("email", email), ("password", "a fine long passphrase"), ("given_name", "Q"), ("family_name", "D")],
                        )
                        .await
                })
            })
            .collect();
        let mut created = 0;
        let mut taken = 0;
        for task in tasks {
            let response = task.await.unwrap();
            assert!(!response.status.is_server_error(), "{db:?}: {} {}", response.status, response.body);
            match response.status {
                StatusCode::SEE_OTHER => created += 1,
                StatusCode::BAD_REQUEST if response.body.contains(TAKEN) => taken += 1,
                other => panic!("{db:?}: unexpected {other}: {}", response.body),
            }
        }
        assert_eq!((created, taken), (1, 19), "{db:?}");
        let users = app.rt.store.list_users(app.tenant.id, 100, None).await.unwrap();
        assert_eq!(users.len(), 1, "{db:?}: exactly one identity");
        assert_eq!(users[0].email_canonical, "quack@example.test");
    }
}
