-- Console sessions of token mode: one row per signed-in browser, keyed by the SHA-256 of the
-- cookie's secret (the secret itself is never stored), with the token it signed in with (its
-- SHA-256: a revoked or expired token ends the session), the sandbox it shows, the token every
-- form must carry, and when it was last used (12 h idle ends it).
CREATE TABLE ui_sessions (
    id_sha256    TEXT   NOT NULL PRIMARY KEY,
    token_sha256 TEXT   NOT NULL,
    org          TEXT   NOT NULL,
    sandbox      TEXT   NOT NULL,
    csrf         TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    seen_ms      BIGINT NOT NULL
);
