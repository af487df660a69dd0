//! The admin commands. With `--json` each prints JSON only (for scripts); otherwise short
//! human-readable lines. They work against whichever database the configuration names.

use crate::Runtime;
use crate::bootstrap::ensure_tenant;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tessera_core::event::RequestOrigin;
use tessera_core::model::{Tenant, User};
use tessera_core::{EventKind, NewEvent};
use tessera_oauth::registration::{self, ClientMetadata};
use tessera_selfservice::registration::{SignUpError, SignUpForm, sign_up};
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (a brand with its own customers, clients, keys and issuer).
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Every tenant with its issuer.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// One tenant.
    Show {
        slug: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Change the tenant's display name and branding of the hosted pages.
    Update {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        /// An https URL of the logo shown on the hosted pages ("" removes it).
        #[arg(long)]
        logo_url: Option<String>,
        /// `#rrggbb` ("" removes it).
        #[arg(long)]
        primary_color: Option<String>,
        #[arg(long)]
        background_color: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// The apps a customer has allowed.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Email or id.
        user: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Withdraw a customer's consent for an app; its tokens for that customer are revoked.
    Revoke {
        #[arg(long, default_value = "default")]
        tenant: String,
        user: String,
        #[arg(long)]
        client: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register an application.
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (SPA, native app): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// authorization_code, refresh_token, client_credentials (default: the first two).
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Skip the consent page (the tenant's own apps).
        #[arg(long)]
        first_party: bool,
        /// ID token signing algorithm: RS256 (default), ES256, EdDSA.
        #[arg(long)]
        id_token_alg: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// The tenant's applications.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// One application's settings.
    Show {
        #[arg(long, default_value = "default")]
        tenant: String,
        client_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete an application; its tokens stop working.
    Delete {
        #[arg(long, default_value = "default")]
        tenant: String,
        client_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Initial access tokens for dynamic client registration (RFC 7591).
    #[command(name = "registration-token", subcommand)]
    RegistrationToken(RegistrationTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum RegistrationTokenCommand {
    /// Issue a token (valid one day) for RFC 7591 dynamic registration.
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a customer with a password.
    Create {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Read from TESSERA_USER_PASSWORD when omitted (keeps it out of shell history).
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        given_name: Option<String>,
        #[arg(long)]
        family_name: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Bulk-import customers from JSON lines: {"email", "password_hash" (Argon2 PHC),
    /// "given_name", "family_name", "email_verified"}. Existing emails are skipped.
    Import {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The JSON-lines file ("-" for standard input).
        #[arg(long)]
        file: String,
        /// Customers per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Customers, newest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// One customer.
    Show {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Email or id.
        user: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Block sign-in; ends sessions and revokes tokens.
    Disable {
        #[arg(long, default_value = "default")]
        tenant: String,
        user: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Allow sign-in again.
    Enable {
        #[arg(long, default_value = "default")]
        tenant: String,
        user: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key with its algorithm and status (next, active, retired).
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Promote the next key, retire the active one (published until its tokens expire).
    Rotate {
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Only this algorithm (default: all).
        #[arg(long)]
        alg: Option<String>,
        /// Rotate even if the next key was published moments ago.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Newest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        out: JsonFlag,
    },
}

fn print(json_out: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

async fn tenant(rt: &Runtime, slug: &str) -> anyhow::Result<Tenant> {
    rt.store.find_tenant_by_slug(slug).await?.with_context(|| format!("no tenant {slug:?}"))
}

fn tenant_json(rt: &Runtime, t: &Tenant) -> Value {
    json!({ "id": t.id, "slug": t.slug, "name": t.name, "issuer": rt.oauth.issuer(t), "branding": t.branding, "created_at": t.created_at.unix_timestamp() })
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "email": u.email, "email_verified": u.email_verified, "given_name": u.given_name,
        "family_name": u.family_name, "disabled": u.disabled, "created_at": u.created_at.unix_timestamp(),
    })
}

async fn find_user(rt: &Runtime, tenant: &Tenant, key: &str) -> anyhow::Result<User> {
    let found = match Uuid::parse_str(key) {
        Ok(id) => rt.store.find_user(tenant.id, id).await?,
        Err(_) => {
            let canonical = tessera_core::email::canonicalize_email(key)?;
            rt.store.find_user_by_email(tenant.id, canonical.as_str()).await?
        }
    };
    found.with_context(|| format!("no customer {key:?} in tenant {}", tenant.slug))
}

pub async fn tenant_command(rt: &Runtime, cmd: TenantCommand) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { slug, name, out } => {
            let name = name.unwrap_or_else(|| slug.clone());
            let (t, created) = ensure_tenant(rt, &slug, &name).await?;
            if !created {
                bail!("tenant {slug:?} already exists");
            }
            print(out.json, &tenant_json(rt, &t), || format!("created tenant {} — issuer {}", t.slug, rt.oauth.issuer(&t)));
        }
        TenantCommand::List { out } => {
            let all = rt.store.list_tenants().await?;
            let v: Vec<Value> = all.iter().map(|t| tenant_json(rt, t)).collect();
            print(out.json, &json!(v), || {
                all.iter().map(|t| format!("{}\t{}\t{}", t.slug, t.name, rt.oauth.issuer(t))).collect::<Vec<_>>().join("\n")
            });
        }
        TenantCommand::Show { slug, out } => {
            let t = tenant(rt, &slug).await?;
            print(out.json, &tenant_json(rt, &t), || format!("{}\t{}\t{}", t.slug, t.name, rt.oauth.issuer(&t)));
        }
        TenantCommand::Update { slug, name, logo_url, primary_color, background_color, out } => {
            let mut t = tenant(rt, &slug).await?;
            let set = |current: &mut Option<String>, new: Option<String>| {
                if let Some(v) = new {
                    *current = (!v.is_empty()).then_some(v);
                }
            };
            if let Some(url) = logo_url.as_deref().filter(|u| !u.is_empty() && !u.starts_with("https://")) {
                bail!("--logo-url must be an https URL, got {url:?}");
            }
            for color in [&primary_color, &background_color].into_iter().flatten().filter(|c| !c.is_empty()) {
                if !(color.starts_with('#') && matches!(color.len(), 4 | 7) && color[1..].bytes().all(|b| b.is_ascii_hexdigit())) {
                    bail!("colours are #rgb or #rrggbb, got {color:?}");
                }
            }
            set(&mut t.branding.logo_url, logo_url);
            set(&mut t.branding.primary_color, primary_color);
            set(&mut t.branding.background_color, background_color);
            if let Some(n) = name.filter(|n| !n.trim().is_empty()) {
                t.name = n;
            }
            rt.store.update_tenant_branding(t.id, &t.name, &t.branding).await?;
            print(out.json, &tenant_json(rt, &t), || format!("updated tenant {} (pages pick it up within 15 s)", t.slug));
        }
    }
    Ok(())
}

pub async fn consent_command(rt: &Runtime, cmd: ConsentCommand) -> anyhow::Result<()> {
    match cmd {
        ConsentCommand::List { tenant: slug, user, out } => {
            let t = tenant(rt, &slug).await?;
            let u = find_user(rt, &t, &user).await?;
            let consents = rt.store.list_consents(t.id, u.id).await?;
            print(out.json, &serde_json::to_value(&consents)?, || {
                consents.iter().map(|c| format!("{}\t{}", c.client_id, c.scopes)).collect::<Vec<_>>().join("\n")
            });
        }
        ConsentCommand::Revoke { tenant: slug, user, client, out } => {
            let t = tenant(rt, &slug).await?;
            let u = find_user(rt, &t, &user).await?;
            let event = NewEvent::new(t.id, EventKind::ConsentRevoked, rt.oauth.clock.now())
                .user(u.id)
                .client(&client)
                .data(json!({ "by": "cli" }));
            let removed = rt.store.delete_consent(t.id, u.id, &client, &event).await?;
            if !removed {
                bail!("{} has no consent for client {client:?}", u.email);
            }
            print(out.json, &json!({ "revoked": true, "user_id": u.id, "client_id": client }), || {
                format!("consent of {} for {client} withdrawn", u.email)
            });
        }
    }
    Ok(())
}

fn oauth_err(e: tessera_oauth::OAuthError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code, e.description)
}

pub async fn client_command(rt: &Runtime, cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Create {
            tenant: slug,
            name,
            redirect_uris,
            post_logout_redirect_uris,
            public,
            grant_types,
            scopes,
            first_party,
            id_token_alg,
            out,
        } => {
            let t = tenant(rt, &slug).await?;
            let grant_types =
                if grant_types.is_empty() { vec!["authorization_code".to_owned(), "refresh_token".to_owned()] } else { grant_types };
            let metadata = ClientMetadata {
                redirect_uris,
                post_logout_redirect_uris,
                client_name: Some(name),
                grant_types: Some(grant_types),
                response_types: None,
                token_endpoint_auth_method: Some(if public { "none" } else { "client_secret_basic" }.to_owned()),
                scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
                id_token_signed_response_alg: id_token_alg,
            };
            let created = registration::create_client(&rt.oauth, &t, &metadata, first_party).await.map_err(oauth_err)?;
            let mut body = registration::registration_response(&created);
            body["issuer"] = json!(rt.oauth.issuer(&t));
            body["first_party"] = json!(first_party);
            print(out.json, &body, || {
                let mut s = format!("client_id:     {}\n", created.client.client_id);
                if let Some(secret) = &created.secret {
                    s.push_str(&format!("client_secret: {secret}   (shown once; only a hash is stored)\n"));
                }
                s.push_str(&format!("issuer:        {}", rt.oauth.issuer(&t)));
                s
            });
        }
        ClientCommand::List { tenant: slug, out } => {
            let t = tenant(rt, &slug).await?;
            let clients = rt.store.list_clients(t.id).await?;
            print(out.json, &serde_json::to_value(&clients)?, || {
                clients.iter().map(|c| format!("{}\t{}", c.client_id, c.name)).collect::<Vec<_>>().join("\n")
            });
        }
        ClientCommand::Show { tenant: slug, client_id, out } => {
            let t = tenant(rt, &slug).await?;
            let c = rt.store.find_client(t.id, &client_id).await?.with_context(|| format!("no client {client_id:?}"))?;
            let v = serde_json::to_value(&c)?;
            print(out.json, &v, || serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        ClientCommand::Delete { tenant: slug, client_id, out } => {
            let t = tenant(rt, &slug).await?;
            let event = NewEvent::new(t.id, EventKind::ClientDeleted, rt.oauth.clock.now()).client(&client_id);
            rt.store.delete_client(t.id, &client_id, &event).await.map_err(|e| match e {
                tessera_store::StoreError::NotFound => anyhow::anyhow!("no client {client_id:?}"),
                other => other.into(),
            })?;
            print(out.json, &json!({ "deleted": client_id }), || format!("deleted client {client_id}"));
        }
        ClientCommand::RegistrationToken(RegistrationTokenCommand::Create { tenant: slug, out }) => {
            let t = tenant(rt, &slug).await?;
            let token = registration::create_initial_access_token(&rt.oauth, &t).await.map_err(oauth_err)?;
            let expires_in = rt.oauth.config.initial_access_token_ttl_secs;
            print(
                out.json,
                &json!({ "token": token, "expires_in": expires_in, "registration_endpoint": format!("{}/oauth2/register", rt.oauth.issuer(&t)) }),
                || format!("initial access token (valid {expires_in} s): {token}"),
            );
        }
    }
    Ok(())
}

pub async fn user_command(rt: &Runtime, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create { tenant: slug, email, password, given_name, family_name, out } => {
            let t = tenant(rt, &slug).await?;
            let password = match password.or_else(|| std::env::var("TESSERA_USER_PASSWORD").ok()) {
                Some(p) => p,
                None => bail!("give --password or set TESSERA_USER_PASSWORD"),
            };
            let form =
                SignUpForm { email, password, given_name: given_name.unwrap_or_default(), family_name: family_name.unwrap_or_default() };
            let mut svc = rt.selfservice.clone();
            // Administrators may leave names empty even where sign-up asks for them.
            let mut config = (*svc.config).clone();
            config.require_names = false;
            svc.config = std::sync::Arc::new(config);
            let user = match sign_up(&svc, &t, &form, &RequestOrigin::default(), "admin").await {
                Ok(u) => u,
                Err(SignUpError::Invalid(errors)) => {
                    bail!("{}", errors.iter().map(|e| format!("{}: {}", e.field, e.text)).collect::<Vec<_>>().join("; "))
                }
                Err(SignUpError::EmailTaken) => bail!("a customer with this email already exists"),
                Err(e) => return Err(e.into()),
            };
            print(out.json, &user_json(&user), || format!("created customer {} ({})", user.email, user.id));
        }
        UserCommand::Import { tenant: slug, file, batch, out } => {
            let t = tenant(rt, &slug).await?;
            let report = crate::import::import_users(rt, &t, &file, batch.clamp(1, 100_000)).await?;
            print(out.json, &serde_json::to_value(&report)?, || {
                format!(
                    "imported {} customers ({} already existed, {} invalid lines) in {:.2} s — {:.0}/s",
                    report.imported, report.skipped, report.invalid, report.seconds, report.per_second
                )
            });
        }
        UserCommand::List { tenant: slug, limit, out } => {
            let t = tenant(rt, &slug).await?;
            let users = rt.store.list_users(t.id, limit.min(1000), None).await?;
            let v: Vec<Value> = users.iter().map(user_json).collect();
            print(out.json, &json!(v), || {
                users
                    .iter()
                    .map(|u| format!("{}\t{}\t{}", u.id, u.email, if u.disabled { "disabled" } else { "active" }))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        UserCommand::Show { tenant: slug, user, out } => {
            let t = tenant(rt, &slug).await?;
            let u = find_user(rt, &t, &user).await?;
            let v = user_json(&u);
            print(out.json, &v, || serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        UserCommand::Disable { tenant: slug, user, out } => set_disabled(rt, &slug, &user, true, out.json).await?,
        UserCommand::Enable { tenant: slug, user, out } => set_disabled(rt, &slug, &user, false, out.json).await?,
    }
    Ok(())
}

async fn set_disabled(rt: &Runtime, slug: &str, key: &str, disabled: bool, json_out: bool) -> anyhow::Result<()> {
    let t = tenant(rt, slug).await?;
    let u = find_user(rt, &t, key).await?;
    let kind = if disabled { EventKind::UserDisabled } else { EventKind::UserEnabled };
    let event = NewEvent::new(t.id, kind, rt.oauth.clock.now()).user(u.id).data(json!({ "by": "cli" }));
    rt.store.set_user_disabled(t.id, u.id, disabled, &event).await?;
    let u = find_user(rt, &t, key).await?;
    print(json_out, &user_json(&u), || format!("{} {}", u.email, if disabled { "disabled" } else { "enabled" }));
    Ok(())
}

pub async fn keys_command(rt: &Runtime, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::List { tenant: slug, out } => {
            let t = tenant(rt, &slug).await?;
            let keys = rt.store.list_signing_keys(t.id).await?;
            let v: Vec<Value> = keys
                .iter()
                .map(|k| json!({ "kid": k.kid, "alg": k.alg, "status": k.status.as_str(), "created_at": k.created_at.unix_timestamp(), "publish_until": k.publish_until.map(|p| p.unix_timestamp()) }))
                .collect();
            print(out.json, &json!(v), || {
                keys.iter().map(|k| format!("{}\t{}\t{}", k.alg, k.status.as_str(), k.kid)).collect::<Vec<_>>().join("\n")
            });
        }
        KeysCommand::Rotate { tenant: slug, alg, force, out } => {
            let t = tenant(rt, &slug).await?;
            // Relying parties cache the JWKS (we say max-age 60 s) and nodes cache keys for 30 s:
            // a next key younger than that may be unknown to a verifier when it starts signing.
            let min_age = time::Duration::minutes(2);
            let now = rt.oauth.clock.now();
            let young = rt.store.list_signing_keys(t.id).await?.into_iter().any(|k| {
                k.status == tessera_core::model::KeyStatus::Next && alg.as_ref().is_none_or(|a| *a == k.alg) && now - k.created_at < min_age
            });
            if young && !force {
                bail!("the next key was published less than 2 minutes ago; verifiers may not know it yet (wait, or pass --force)");
            }
            let algs: Vec<String> = match alg {
                Some(a) => vec![a],
                None => tessera_oauth::keys::SUPPORTED_ALGS.iter().map(|s| (*s).to_owned()).collect(),
            };
            let mut rotated = Vec::new();
            for alg in algs {
                let next = tessera_oauth::keys::rotate(
                    rt.store.as_ref(),
                    rt.oauth.keys.master(),
                    t.id,
                    &alg,
                    rt.oauth.config.max_signed_token_lifetime(),
                    rt.oauth.clock.now(),
                )
                .await?;
                rotated.push(json!({ "alg": alg, "new_next_kid": next.kid }));
            }
            print(out.json, &json!(rotated), || format!("rotated {} algorithm(s); nodes pick the new keys up within 30 s", rotated.len()));
        }
    }
    Ok(())
}

pub async fn events_command(rt: &Runtime, cmd: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::List { tenant: slug, limit, out } = cmd;
    let t = tenant(rt, &slug).await?;
    let events = rt.store.list_events(t.id, limit.min(10_000), None).await?;
    print(out.json, &serde_json::to_value(&events)?, || {
        events
            .iter()
            .map(|e| format!("{}\t{}\t{}\t{}", e.occurred_at, e.kind.as_str(), e.outcome.as_str(), e.reason.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
