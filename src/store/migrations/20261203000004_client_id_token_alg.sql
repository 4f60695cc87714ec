-- Which advertised algorithm signs a client's ID tokens (OIDC Registration's
-- id_token_signed_response_alg): RS256 unless the client asks for ES256.
ALTER TABLE oauth_clients ADD COLUMN id_token_signed_response_alg TEXT NOT NULL DEFAULT 'RS256';
