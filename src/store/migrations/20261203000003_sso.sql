-- Corporate SSO: one upstream OpenID Connect provider per agency, the email domains it
-- owns, and the upstream identities linked to staff accounts.

CREATE TABLE sso_connections (
    agency_id             TEXT PRIMARY KEY REFERENCES agencies (id),
    issuer                TEXT NOT NULL,
    client_id             TEXT NOT NULL,
    -- Sealed (AES-256-GCM) under the key-encryption key; never shown again.
    client_secret_sealed  TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    enforce               BIGINT NOT NULL DEFAULT 0,
    create_accounts       BIGINT NOT NULL DEFAULT 0,
    updated_at            BIGINT NOT NULL
);

-- A domain belongs to at most one agency.
CREATE TABLE sso_domains (
    domain    TEXT PRIMARY KEY,
    agency_id TEXT NOT NULL REFERENCES agencies (id)
);
CREATE INDEX sso_domains_by_agency ON sso_domains (agency_id);

-- Keyed by (issuer, subject), never by email.
CREATE TABLE federated_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES staff (id),
    linked_at  BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX federated_identities_by_account ON federated_identities (account_id);
