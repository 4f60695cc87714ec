-- Portable between SQLite and PostgreSQL (used through sqlx's Any driver): only TEXT and
-- BIGINT columns; flags are 0/1, instants are unix seconds.

CREATE TABLE agencies (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    sso_enabled BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE staff (
    id                   TEXT PRIMARY KEY,
    agency_id            TEXT NOT NULL REFERENCES agencies (id),
    -- NFC + lower case, so UNIQUE is the case-insensitive rule of SPEC §1.
    email                TEXT NOT NULL UNIQUE,
    name                 TEXT NOT NULL,
    role                 TEXT NOT NULL,
    status               TEXT NOT NULL,
    password_hash        TEXT,
    -- none | chosen | temporary
    password_state       TEXT NOT NULL,
    temporary_expires_at BIGINT,
    password_version     BIGINT NOT NULL DEFAULT 0,
    password_changed_at  BIGINT,
    created_at           BIGINT NOT NULL
);
CREATE INDEX staff_by_agency ON staff (agency_id);

-- Only the SHA-256 digest of a reset token is stored.
CREATE TABLE reset_tokens (
    digest     TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES staff (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX reset_tokens_by_account ON reset_tokens (account_id);

CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    agency_id  TEXT,
    at         BIGINT NOT NULL,
    event      TEXT NOT NULL,
    actor_id   TEXT,
    subject_id TEXT,
    ip         TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX audit_events_by_agency ON audit_events (agency_id, at);

-- The durable outbox: a mail is written here in the same transaction as the change it
-- reports, and the worker delivers it with retries. Bodies are blanked once sent.
CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY,
    to_address      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT NOT NULL,
    html_body       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    sent_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (sent_at, next_attempt_at);

-- Values every replica shares, such as the key that signs pre-session CSRF tokens.
CREATE TABLE instance_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
