-- Per-system tokens by reference: a system may name the environment variable that holds its Meta
-- access token (token_ref, e.g. 'FACEBOOK_ACCESS_TOKEN_AGENCY2'); NULL means the worker's
-- FACEBOOK_ACCESS_TOKEN. Only the name is stored, never the token. Names must start with
-- FACEBOOK_ACCESS_TOKEN, so that a row can never make the worker send another secret of its
-- environment (DATABASE_URL, FACEBOOK_APP_SECRET…) to Meta as a token.
ALTER TABLE cdp.facebook_configurations
    ADD COLUMN IF NOT EXISTS token_ref VARCHAR(100)
        CHECK (token_ref ~ '^FACEBOOK_ACCESS_TOKEN(_[A-Z0-9_]+)?$');

-- The last check of each token (Meta's debug_token), by variable name. Never the token: only a
-- fingerprint (the first 8 hex digits of its SHA-256), to tell whether the check was of the
-- value a worker holds now.
CREATE TABLE IF NOT EXISTS cdp.facebook_token_checks (
    token_ref   VARCHAR(100) PRIMARY KEY,
    fingerprint TEXT        NOT NULL,
    checked_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    is_valid    BOOLEAN     NOT NULL,
    -- NULL: never expires.
    expires_at  TIMESTAMPTZ,
    scopes      TEXT[]      NOT NULL DEFAULT '{}',
    -- What an operator must act on (expires within 7 days, ads_management missing, expired or
    -- invalid); NULL when nothing.
    warning     TEXT
);

-- The "token warning: …" line of a system's error_log, from the last check of its token.
CREATE OR REPLACE FUNCTION cdp.token_warning(ref TEXT) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT 'token warning: ' || warning FROM cdp.facebook_token_checks
     WHERE token_ref = coalesce(ref, 'FACEBOOK_ACCESS_TOKEN') AND warning IS NOT NULL
$$;

-- error_log with its token warning line replaced by the current one (or removed); a log that
-- already says what the warning says (a run failed on an expired token) does not repeat it.
CREATE OR REPLACE FUNCTION cdp.with_token_warning(log TEXT, ref TEXT) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    WITH base AS (
        SELECT nullif(btrim(regexp_replace(coalesce(log, ''), 'token warning: [^\n]*', '', 'g'),
                            E'\n'), '') AS log),
    line AS (SELECT cdp.token_warning(ref) AS line)
    SELECT nullif(concat_ws(E'\n', base.log,
               CASE WHEN strpos(coalesce(base.log, ''), substr(line.line, 16)) > 0 THEN NULL
                    ELSE line.line END), '')
      FROM base, line
$$;
