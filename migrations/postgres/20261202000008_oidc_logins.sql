-- Single sign-on logins under way: what the callback needs to finish one
-- (the nonce, the PKCE verifier, the redirect URI sent, where to go after),
-- found by the SHA-256 of its `state`, which the browser also holds in a
-- cookie. A row is taken (deleted) by its callback, or swept when stale; in
-- the database so that the callback may reach another instance.
CREATE TABLE oidc_logins (
    state_sha256  TEXT NOT NULL PRIMARY KEY,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX ix_oidc_logins_created_at ON oidc_logins (created_at);
