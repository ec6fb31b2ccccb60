-- Who may sign in: local accounts (a password hash) and single sign-on users
-- (an external subject), with their role; and the API tokens of scripts and
-- integrations, kept only as the SHA-256 of the token (its user checked at
-- commit, so that migrate-data may copy the tables in any order). Recordings keep their
-- clinician_id: a recording belongs to the user with that id.
CREATE TABLE users (
    id            TEXT NOT NULL PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    display_name  TEXT NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role          TEXT NOT NULL CHECK (role IN ('clinician', 'admin')),
    created_at    TEXT NOT NULL,
    disabled_at   TEXT,
    password_hash TEXT,
    oidc_subject  TEXT UNIQUE
) STRICT;

CREATE TABLE api_tokens (
    id           TEXT NOT NULL PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    token_sha256 TEXT NOT NULL UNIQUE
        CHECK (length(token_sha256) = 64 AND token_sha256 NOT GLOB '*[^0-9a-f]*'),
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;
CREATE INDEX ix_api_tokens_user_id ON api_tokens (user_id);

-- Browser sessions: the cookie's secret kept as its SHA-256, the token a
-- page sends back in X-CSRF-Token, the idle and absolute limits' inputs.
CREATE TABLE sessions (
    id            TEXT NOT NULL PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    secret_sha256 TEXT NOT NULL UNIQUE,
    csrf_token    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    ended_at      TEXT
) STRICT;
CREATE INDEX ix_sessions_user_id ON sessions (user_id);
