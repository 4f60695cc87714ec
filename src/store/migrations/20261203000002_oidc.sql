-- OpenID Connect provider: clients, signing keys and remembered consent.

CREATE TABLE oauth_clients (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    -- SHA-256 of the high-entropy secret; NULL for public clients.
    secret_digest             TEXT,
    -- Space-separated lists.
    redirect_uris             TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    grant_types               TEXT NOT NULL,
    scopes                    TEXT NOT NULL,
    first_party               BIGINT NOT NULL DEFAULT 1,
    created_at                BIGINT NOT NULL
);

-- The private key is sealed (AES-256-GCM) under the key-encryption key from the
-- environment; the public parts are the JWK's n/e (RSA) or x/y (EC).
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    sealed_private TEXT NOT NULL,
    public_a       TEXT NOT NULL,
    public_b       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    active_from    BIGINT NOT NULL
);

CREATE TABLE oauth_consents (
    account_id TEXT NOT NULL REFERENCES staff (id),
    client_id  TEXT NOT NULL REFERENCES oauth_clients (id),
    scope      TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, client_id, scope)
);
