//! Checklist E (32-34): account enumeration at sign-in and sign-up, and the password rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use axum::http::StatusCode;
use std::time::Instant;

/// A browser on a fresh sign-in (or sign-up) page.
async fn page(app: &TestApp, path: &str) -> (Browser, TestResponse) {
    let mut browser = Browser::new();
    let start = browser.get(app, &app.path(path)).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{path}: {}", start.body);
    let page = browser.get(app, &start.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    (browser, page)
}

pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> TestResponse {
    let (mut browser, page) = page(app, "/login").await;
    browser.submit(app, &page, &[("email", email), ("password", password)]).await
}

pub async fn sign_up(app: &TestApp, email: &str, password: &str) -> TestResponse {
    let (mut browser, page) = page(app, "/registration").await;
    browser.submit(app, &page, &[("email", email), ("password", password), ("given_name", "Eve"), ("family_name", "Mallory")]).await
}

/// Everything an observer sees of a response, with the per-request values masked: the
/// typed email, the browser's CSRF token, flow and request ids, the request id header.
fn observable(response: &TestResponse, email: &str, csrf: &str) -> (u16, Vec<(String, String)>, String) {
    let mask = |s: &str| mask_uuids(&s.replace(csrf, "<csrf>").replace(&html_escape(email), "<email>").replace(email, "<email>"));
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != "x-request-id")
        .map(|(name, value)| (name.as_str().to_owned(), mask(value.to_str().unwrap())))
        .collect();
    headers.sort();
    (response.status.as_u16(), headers, mask(&response.body))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#x27;").replace('/', "&#x2f;")
}

/// Check 32: an unknown email, a wrong password, a disabled account (right or wrong password)
/// and a malformed email get byte-identical answers (status, headers, cookies, body) apart
/// from per-request values.
#[tokio::test]
async fn sign_in_failures_are_indistinguishable() {
    for db in databases() {
        let app = TestApp::new(db).await;
        app.user("annlee@example.test").await;
        let disabled = app.user("disabl@example.test").await;
        app.disable(&disabled).await;
        // Same-length emails, so that even Content-Length must match.
        let cases = [
            ("unknown email", "nobody@example.test", PASSWORD),
            ("wrong password", "annlee@example.test", "wrong horse battery staple"),
            ("disabled, right password", "disabl@example.test", PASSWORD),
            ("disabled, wrong password", "disabl@example.test", "wrong horse battery staple"),
            ("malformed email", "not-an-email-at-all", PASSWORD),
        ];
        let mut seen = Vec::new();
        for (what, email, password) in cases {
            let (mut browser, page) = page(&app, "/login").await;
            let csrf = browser.csrf().unwrap();
            let response = browser.submit(&app, &page, &[("email", email), ("password", password)]).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{db:?} {what}");
            assert!(response.body.contains("The email or password is incorrect."), "{db:?} {what}");
            assert!(response.set_cookie(SESSION_COOKIE).is_none() && browser.session().is_none(), "{db:?} {what}: no session");
            seen.push((what, observable(&response, email, &csrf)));
        }
        let (reference_name, reference) = &seen[0];
        for (what, observed) in &seen[1..] {
            assert_eq!(observed.0, reference.0, "{db:?}: status of {what} vs {reference_name}");
            assert_eq!(observed.1, reference.1, "{db:?}: headers and cookies of {what} vs {reference_name}");
            assert_eq!(observed.2, reference.2, "{db:?}: body of {what} vs {reference_name}");
        }
    }
}

/// Check 32: the three failures cost the same time (a dummy hash for unknown emails), so the
/// median latency does not tell them apart. Argon2 is made heavier than the harness default
/// so that a skipped hash would stand out against database noise.
#[tokio::test]
async fn sign_in_failures_take_the_same_time() {
    const TRIES: usize = 60;
    for db in databases() {
        let app = TestApp::with_config(db, |c| {
            c.hashing.memory_kib = 8 * 1024;
            c.hashing.iterations = 2;
        })
        .await;
        app.user("annlee@example.test").await;
        let disabled = app.user("disabl@example.test").await;
        app.disable(&disabled).await;
        let cases = [
            ("unknown email", "nobody@example.test", PASSWORD),
            ("wrong password", "annlee@example.test", "wrong horse battery staple"),
            ("disabled account", "disabl@example.test", PASSWORD),
        ];
        let mut pages = Vec::new();
        for _ in cases {
            pages.push(page(&app, "/login").await);
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(TRIES); cases.len()];
        for round in 0..TRIES + 3 {
            // Interleaved, rotating the order, so drift on a shared machine hits all alike.
            for k in 0..cases.len() {
                let i = (round + k) % cases.len();
                let (_, email, password) = cases[i];
                let (browser, page) = &mut pages[i];
                let started = Instant::now();
                let response = browser.submit(&app, page, &[("email", email), ("password", password)]).await;
                let elapsed = started.elapsed().as_secs_f64();
                assert_eq!(response.status, StatusCode::BAD_REQUEST);
                if round >= 3 {
                    samples[i].push(elapsed);
                }
            }
        }
        let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
        let reference = medians[1];
        for (i, (what, _, _)) in cases.iter().enumerate() {
            let ratio = medians[i] / reference;
            eprintln!("{db:?} {what}: median {:.2} ms ({ratio:.2}x wrong password)", medians[i] * 1e3);
            assert!(
                (0.5..=2.0).contains(&ratio),
                "{db:?} {what}: median {:.2} ms is {ratio:.2}x the wrong-password median",
                medians[i] * 1e3
            );
        }
    }
}

/// Check 33 (what the implementation scope allows): a sign-up with a taken email creates no
/// session, changes nothing of the owner's account, and says the same for every spelling and
/// for disabled accounts.
#[tokio::test]
async fn sign_up_with_a_taken_email_changes_nothing_and_reveals_no_more() {
    for db in databases() {
        let app = TestApp::new(db).await;
        let client = app.default_client().await;
        app.user("ann@example.test").await;
        let disabled = app.user("dis@example.test").await;
        app.disable(&disabled).await;
        let attacker_password = "attacker picked this one";
        let mut seen = Vec::new();
        for (what, email) in
            [("existing", "ann@example.test"), ("existing, disabled", "dis@example.test"), ("other spelling", "ANN@example.test")]
        {
            let (mut browser, page) = page(&app, "/registration").await;
            let csrf = browser.csrf().unwrap();
            let response = browser
                .submit(
                    &app,
                    &page,
                    &[("email", email), ("password", attacker_password), ("given_name", "Eve"), ("family_name", "Mallory")],
                )
                .await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{db:?} {what}: {}", response.body);
            assert!(response.set_cookie(SESSION_COOKIE).is_none() && browser.session().is_none(), "{db:?} {what}: no session");
            seen.push((what, observable(&response, email, &csrf)));
        }
        for (what, observed) in &seen[1..] {
            assert_eq!(observed, &seen[0].1, "{db:?}: {what} vs existing");
        }
        // The owner's account is untouched: old password works, the attacker's does not.
        assert_eq!(sign_in(&app, "ann@example.test", attacker_password).await.status, StatusCode::BAD_REQUEST, "{db:?}");
        let mut browser = Browser::new();
        let t = app.tokens_for(&mut browser, &client, "ann@example.test").await;
        let info = app.userinfo(t["access_token"].as_str().unwrap()).await.json();
        assert_eq!((info["given_name"].as_str(), info["family_name"].as_str()), (Some("Ann"), Some("Lee")), "{db:?}");
        assert_eq!(app.rt.store.list_users(app.tenant.id, 100, None).await.unwrap().len(), 2, "{db:?}: no account was added");
    }
}

/// Check 33 proper: the answer to a sign-up with a taken email looks like a successful sign-up
/// and the owner is told by email.
#[tokio::test]
#[ignore = "known gap (docs/adr/0003): sign-up reports a taken email until email verification and mail exist"]
async fn sign_up_with_a_taken_email_looks_like_success() {
    for db in databases() {
        let app = TestApp::new(db).await;
        app.user("ann@example.test").await;
        let fresh = sign_up(&app, "new@example.test", "a fine long passphrase").await;
        let taken = sign_up(&app, "ann@example.test", "a fine long passphrase").await;
        assert_eq!(taken.status, fresh.status, "{db:?}: same status as success");
        assert_eq!(mask_uuids(&taken.location()), mask_uuids(&fresh.location()), "{db:?}: same next page");
    }
}

/// Check 34: length not composition, 64+ and any Unicode accepted, a large blocklist plus
/// context words, no truncation, one normalisation at set and verify.
#[tokio::test]
async fn password_rules_follow_nist() {
    assert!(tessera_core::password_policy::blocklist_len() >= 3000);
    for db in databases() {
        let app = TestApp::new(db).await;
        let ok = |r: &TestResponse, what: &str| assert_eq!(r.status, StatusCode::SEE_OTHER, "{db:?} {what}: {}", r.body);
        let refused = |r: &TestResponse, what: &str, text: &str| {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{db:?} {what}");
            assert!(r.body.contains(text), "{db:?} {what}: expected {text:?}");
        };
        let min = app.rt.selfservice.config.password.min_length;
        assert!(min >= 8);
        refused(
            &sign_up(&app, "short@example.test", &"zq7!x yk9m".chars().take(min - 1).collect::<String>()).await,
            "too short",
            "at least",
        );
        ok(&sign_up(&app, "exact@example.test", &"zq7!x yk9m3pQ".chars().take(min).collect::<String>()).await, "minimum length");
        ok(&sign_up(&app, "plain@example.test", "zebramango").await, "lowercase letters only (no composition rules)");
        for common in ["password1", "qwertyuiop", "iloveyou", "12345678", "Password1", "QWERTYUIOP"] {
            refused(&sign_up(&app, "common@example.test", common).await, common, "too common");
        }
        refused(&sign_up(&app, "ctx1@example.test", "acme1234").await, "tenant slug", "name of this site");
        refused(&sign_up(&app, "rosalind@example.test", "rosalind99").await, "email local part", "email address");
        refused(&sign_up(&app, "toolong@example.test", &"x1".repeat(513)).await, "1026 characters", "at most");

        // 64+ characters with spaces and emoji, used to sign in.
        let long_unicode = "\u{fc}\u{1F511} \u{99AC}".repeat(30);
        ok(&sign_up(&app, "unicode@example.test", &long_unicode).await, "long Unicode");
        ok(&sign_in(&app, "unicode@example.test", &long_unicode).await, "sign in with the long Unicode password");

        // No silent truncation (bcrypt's 72 bytes, or any other limit).
        let long: String = (0..100).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        ok(&sign_up(&app, "long@example.test", &long).await, "100 characters");
        for prefix in [72, 99] {
            let r = sign_in(&app, "long@example.test", &long[..prefix]).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{db:?}: the first {prefix} characters are not the password");
        }
        let mut changed_last = long.clone();
        changed_last.pop();
        changed_last.push('!');
        assert_eq!(sign_in(&app, "long@example.test", &changed_last).await.status, StatusCode::BAD_REQUEST, "{db:?}: last char matters");
        ok(&sign_in(&app, "long@example.test", &long).await, "the whole password");

        // One normalisation form at set and verify: NFC set, NFD typed (and vice versa).
        let nfc = "\u{c5}ngstr\u{f6}m caf\u{e9} na\u{ef}ve";
        let nfd = "A\u{30a}ngstro\u{308}m cafe\u{301} nai\u{308}ve";
        ok(&sign_up(&app, "nfc@example.test", nfc).await, "NFC password");
        ok(&sign_in(&app, "nfc@example.test", nfd).await, "NFD spelling of the NFC password");
        ok(&sign_up(&app, "nfd@example.test", nfd).await, "NFD password");
        ok(&sign_in(&app, "nfd@example.test", nfc).await, "NFC spelling of the NFD password");
        assert_eq!(sign_in(&app, "nfc@example.test", "Angstrom cafe naive").await.status, StatusCode::BAD_REQUEST, "{db:?}");
    }
    // Operators can require 15 characters where the password is the only factor.
    for db in databases() {
        let app = TestApp::with_config(db, |c| c.selfservice.password.min_length = 15).await;
        assert_eq!(sign_up(&app, "a@example.test", "fourteen chars").await.status, StatusCode::BAD_REQUEST, "{db:?}");
        assert_eq!(sign_up(&app, "b@example.test", "fifteen chars!!").await.status, StatusCode::SEE_OTHER, "{db:?}");
    }
}
