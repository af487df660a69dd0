-- Tessera's initial schema, SQLite dialect. migrations/postgres/0001_initial.sql holds the same
-- tables, columns, constraints and indexes; only the column types differ:
--   uuid  -> BLOB (16 bytes; UUIDv7 byte order is creation order, so `id < $n` pages by time)
--   time  -> TEXT, fixed width `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always UTC, always six fraction
--            digits) so that text order is time order; see sqlite.rs
--   bool  -> INTEGER 0/1, bytes -> BLOB, JSON -> TEXT (as in PostgreSQL).
-- Every row carries its tenant. Rows that point at a customer or a grant do so through
-- (tenant_id, ...) foreign keys, so they cannot point into another tenant.

CREATE TABLE tenants (
    id          BLOB NOT NULL PRIMARY KEY,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    branding    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX tenants_slug_key ON tenants (slug);

CREATE TABLE users (
    id               BLOB NOT NULL PRIMARY KEY,
    tenant_id        BLOB NOT NULL REFERENCES tenants (id),
    email            TEXT NOT NULL,
    email_canonical  TEXT NOT NULL,
    email_verified   INTEGER NOT NULL,
    password_hash    TEXT,
    given_name       TEXT,
    family_name      TEXT,
    disabled         INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email_canonical_key ON users (tenant_id, email_canonical);
-- Paging newest first, and the target of the (tenant_id, user_id) foreign keys.
CREATE UNIQUE INDEX users_tenant_id_id_key ON users (tenant_id, id);

CREATE TABLE clients (
    id                            BLOB NOT NULL PRIMARY KEY,
    tenant_id                     BLOB NOT NULL REFERENCES tenants (id),
    client_id                     TEXT NOT NULL,
    secret_hash                   TEXT,
    name                          TEXT NOT NULL,
    redirect_uris                 TEXT NOT NULL,
    post_logout_redirect_uris     TEXT NOT NULL,
    grant_types                   TEXT NOT NULL,
    scopes                        TEXT NOT NULL,
    first_party                   INTEGER NOT NULL,
    is_public                     INTEGER NOT NULL,
    id_token_signed_response_alg  TEXT NOT NULL,
    created_at                    TEXT NOT NULL
);
CREATE UNIQUE INDEX clients_client_id_key ON clients (tenant_id, client_id);

CREATE TABLE sessions (
    id            BLOB NOT NULL PRIMARY KEY,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    token_hash    TEXT NOT NULL,
    user_id       BLOB NOT NULL,
    auth_time     TEXT NOT NULL,
    amr           TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    ended_at      TEXT,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE UNIQUE INDEX sessions_token_hash_key ON sessions (token_hash);
CREATE INDEX sessions_user_idx ON sessions (tenant_id, user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_ended_at_idx ON sessions (ended_at);

CREATE TABLE flows (
    id                        BLOB NOT NULL PRIMARY KEY,
    tenant_id                 BLOB NOT NULL REFERENCES tenants (id),
    kind                      TEXT NOT NULL,
    csrf_token_hash           TEXT NOT NULL,
    authorization_request_id  BLOB,
    login_hint                TEXT,
    created_at                TEXT NOT NULL,
    expires_at                TEXT NOT NULL
);
CREATE INDEX flows_expires_at_idx ON flows (expires_at);

-- The request is stored whole as JSON; only what queries need is a column.
CREATE TABLE authorization_requests (
    id          BLOB NOT NULL PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    request     TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX authorization_requests_expires_at_idx ON authorization_requests (expires_at);

CREATE TABLE authorization_codes (
    code_hash       TEXT NOT NULL PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants (id),
    client_id       TEXT NOT NULL,
    user_id         BLOB NOT NULL,
    session_id      BLOB,
    redirect_uri    TEXT NOT NULL,
    scope           TEXT NOT NULL,
    nonce           TEXT,
    code_challenge  TEXT,
    auth_time       TEXT NOT NULL,
    amr             TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT,
    grant_id        BLOB,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX authorization_codes_expires_at_idx ON authorization_codes (expires_at);

-- No foreign key to clients: a deleted client's grants stay, revoked, for the audit trail.
CREATE TABLE grants (
    id          BLOB NOT NULL PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    client_id   TEXT NOT NULL,
    user_id     BLOB,
    session_id  BLOB,
    scope       TEXT NOT NULL,
    auth_time   TEXT,
    amr         TEXT NOT NULL,
    nonce       TEXT,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE UNIQUE INDEX grants_tenant_id_id_key ON grants (tenant_id, id);
CREATE INDEX grants_user_client_idx ON grants (tenant_id, user_id, client_id);
CREATE INDEX grants_client_idx ON grants (tenant_id, client_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT NOT NULL PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    grant_id    BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    rotated_at  TEXT,
    FOREIGN KEY (tenant_id, grant_id) REFERENCES grants (tenant_id, id)
);
CREATE INDEX refresh_tokens_grant_idx ON refresh_tokens (tenant_id, grant_id);

CREATE TABLE consents (
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    user_id     BLOB NOT NULL,
    client_id   TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    granted_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, client_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX consents_client_idx ON consents (tenant_id, client_id);

CREATE TABLE signing_keys (
    id                     BLOB NOT NULL PRIMARY KEY,
    tenant_id              BLOB NOT NULL REFERENCES tenants (id),
    kid                    TEXT NOT NULL,
    alg                    TEXT NOT NULL,
    status                 TEXT NOT NULL,
    private_key_encrypted  BLOB NOT NULL,
    public_jwk             TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    publish_until          TEXT
);
CREATE UNIQUE INDEX signing_keys_kid_key ON signing_keys (tenant_id, kid);
CREATE INDEX signing_keys_alg_status_idx ON signing_keys (tenant_id, alg, status);

CREATE TABLE initial_access_tokens (
    token_hash  TEXT NOT NULL PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

CREATE TABLE events (
    id           BLOB NOT NULL PRIMARY KEY,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id),
    kind         TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    reason       TEXT,
    occurred_at  TEXT NOT NULL,
    user_id      BLOB,
    client_id    TEXT,
    ip           TEXT,
    user_agent   TEXT,
    data         TEXT NOT NULL
);
CREATE INDEX events_tenant_id_idx ON events (tenant_id, id);
