-- Who may sign in: local accounts (a password hash) and single sign-on users
-- (an external subject), with their role; and the API tokens of scripts and
-- integrations, kept only as the SHA-256 of the token (its user checked at
-- commit, so that migrate-data may copy the tables in any order). Recordings keep their
-- clinician_id: a recording belongs to the user with that id. Timestamps are
-- the same fixed-width RFC 3339 text as SQLite's, so one SQL text serves both.
CREATE TABLE users (
    id            text NOT NULL PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role          text NOT NULL CHECK (role IN ('clinician', 'admin')),
    created_at    text NOT NULL,
    disabled_at   text,
    password_hash text,
    oidc_subject  text UNIQUE
);

CREATE TABLE api_tokens (
    id           text NOT NULL PRIMARY KEY,
    user_id      text NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_at   text NOT NULL,
    expires_at   text,
    last_used_at text,
    revoked_at   text
);
CREATE INDEX ix_api_tokens_user_id ON api_tokens (user_id);

-- Browser sessions: the cookie's secret kept as its SHA-256, the token a
-- page sends back in X-CSRF-Token, the idle and absolute limits' inputs.
CREATE TABLE sessions (
    id            text NOT NULL PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    secret_sha256 text NOT NULL UNIQUE,
    csrf_token    text NOT NULL,
    created_at    text NOT NULL,
    last_seen_at  text NOT NULL,
    expires_at    text NOT NULL,
    ended_at      text
);
CREATE INDEX ix_sessions_user_id ON sessions (user_id);
