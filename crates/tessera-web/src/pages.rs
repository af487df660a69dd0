//! Hosted pages: minijinja templates compiled into the binary, one view model per page, a
//! strict Content-Security-Policy and anti-framing on every page.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Serialize;
use tessera_core::model::Tenant;

const TEMPLATES: [(&str, &str); 7] = [
    ("layout.html", include_str!("templates/layout.html")),
    ("_field.html", include_str!("templates/_field.html")),
    ("login.html", include_str!("templates/login.html")),
    ("registration.html", include_str!("templates/registration.html")),
    ("consent.html", include_str!("templates/consent.html")),
    ("logout.html", include_str!("templates/logout.html")),
    ("message.html", include_str!("templates/message.html")),
];

pub const STYLESHEET: &str = include_str!("assets/tessera.css");

/// No inline script or style, no framing, forms only to ourselves or the redirect chain.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https: data:; base-uri 'none'; frame-ancestors 'none'";

pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

/// What the layout needs of a tenant's brand.
#[derive(Debug, Serialize)]
pub struct Brand {
    pub name: String,
    pub logo_url: Option<String>,
    pub css_url: String,
}

impl Brand {
    pub fn of(tenant: &Tenant) -> Self {
        Self {
            name: tenant.name.clone(),
            // Only https logos: a data: or javascript: URL never reaches an attribute.
            logo_url: tenant.branding.logo_url.clone().filter(|u| u.starts_with("https://") && u.len() < 2048),
            css_url: format!("/t/{}/brand.css", tenant.slug),
        }
    }

    /// For pages without a tenant (unknown tenant, server errors).
    pub fn neutral() -> Self {
        Self { name: "Tessera".into(), logo_url: None, css_url: "/assets/tessera.css".into() }
    }
}

impl Pages {
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the binary and covered by tests; a broken one is a
            // build defect, so failing loudly at startup is right.
            #[allow(clippy::expect_used)]
            env.add_template(name, source).expect("embedded template must parse");
        }
        Self { env }
    }

    /// Renders a page with the security headers every hosted page carries.
    pub fn render(&self, status: StatusCode, template: &str, brand: &Brand, ctx: Value) -> Response {
        let full = context! { brand => Serde(brand), ..ctx };
        match self.env.get_template(template).and_then(|t| t.render(full)) {
            Ok(html) => html_response(status, html),
            Err(e) => {
                tracing::error!(error = %e, template, "template rendering failed");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Something went wrong. Please try again.".into(),
                )
            }
        }
    }

    /// A friendly error page.
    pub fn message(&self, status: StatusCode, brand: &Brand, heading: &str, message: &str) -> Response {
        self.render(status, "message.html", brand, context! { heading, message })
    }
}

pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    secure_page_headers(response.headers_mut());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

pub fn secure_page_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The tenant's colours as CSS custom properties; only `#rgb`/`#rrggbb` values pass.
pub fn brand_css(tenant: &Tenant) -> String {
    let valid = |c: &Option<String>| {
        c.as_deref()
            .filter(|c| c.starts_with('#') && matches!(c.len(), 4 | 7) && c[1..].bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
    };
    let mut css = String::from(":root{");
    if let Some(p) = valid(&tenant.branding.primary_color) {
        css.push_str(&format!("--primary:{p};"));
    }
    if let Some(b) = valid(&tenant.branding.background_color) {
        css.push_str(&format!("--bg:{b};"));
    }
    css.push('}');
    css
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let pages = Pages::new();
        let brand = Brand { name: "<script>x</script>".into(), logo_url: None, css_url: "/x.css".into() };
        let errors = std::collections::HashMap::from([("email", "bad <b>")]);
        for (template, ctx) in [
            (
                "login.html",
                context! { action => "/a", csrf_token => "t", email => "\"><img>", errors => Serde(errors.clone()), registration_url => "/r" },
            ),
            (
                "registration.html",
                context! { action => "/a", csrf_token => "t", errors => Serde(errors.clone()), ask_names => true, login_url => "/l" },
            ),
            (
                "consent.html",
                context! { action => "/a", csrf_token => "t", client_name => "App", user_email => "a@b.c", scopes => Serde(vec!["x"]) },
            ),
            ("logout.html", context! { action => "/a", csrf_token => "t", carry => Serde(vec![("state", "s")]) }),
            ("message.html", context! { heading => "H", message => "M" }),
        ] {
            let response = pages.render(StatusCode::OK, template, &brand, ctx);
            assert_eq!(response.status(), StatusCode::OK, "{template}");
            assert!(response.headers().get(header::CONTENT_SECURITY_POLICY).is_some());
        }
        let html = pages.env.get_template("login.html").and_then(|t| {
            t.render(context! { brand => Serde(&brand), action => "/a", csrf_token => "t", email => "\"><img>", errors => Serde(errors), registration_url => "/r" })
        });
        let html = html.expect("render");
        assert!(!html.contains("<script>x"));
        assert!(!html.contains("\"><img>"));
        assert!(html.contains("aria-invalid=\"true\""));
    }

    #[test]
    fn brand_css_only_takes_hex_colours() {
        let mut t = Tenant {
            id: uuid::Uuid::nil(),
            slug: "a".into(),
            name: "A".into(),
            branding: Default::default(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        t.branding.primary_color = Some("#ff0000".into());
        t.branding.background_color = Some("red;}body{display:none".into());
        assert_eq!(brand_css(&t), ":root{--primary:#ff0000;}");
    }
}
