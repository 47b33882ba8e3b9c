/*
 * bv_core 0.1.0 -> 0.2.0: the security core.
 *
 *   JWT        bv.jwt_keys, bv.jwt_revocations, bv.jwt_verify(), bv.jwt_sign(),
 *              bv.jwt_import_jwks(), bv.jwt_revoke(), bv.jwt_is_revoked()
 *   API keys   bv.api_key_scopes, bv.api_keys, bv.api_key_create(),
 *              bv.api_key_verify(), bv.api_key_list(), bv.api_key_revoke()
 *   rate limit bv.rate_limit(), bv.rate_limit_enforce(),
 *              bv.rate_limit_retry_after(), bv.rate_limit_stats()
 *   secrets    bv.secrets, bv.secret_set(), bv.secret_get(), bv.secret_delete(),
 *              bv.secrets_rotate_master_key()
 *   RLS        bv.current_user_id(), bv.has_scope(), bv.enable_owner_rls()
 *   PostgREST  bv.pre_request()
 *
 * A fresh install of 0.2.0 runs bv_core--0.1.0.sql and then this script.
 * Every SECURITY DEFINER function sets search_path = pg_catalog, pg_temp and
 * names every object with its schema.  docs/security.md explains the model.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_core UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------
-- JWT keys and revocations
------------------------------------------------------------------------

CREATE TABLE bv.jwt_keys (
    kid         text PRIMARY KEY CHECK (length(kid) BETWEEN 1 AND 256),
    alg         text NOT NULL CHECK (alg IN ('HS256', 'HS384', 'HS512', 'RS256', 'RS384',
                                             'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA')),
    key         text NOT NULL,
    issuer      text,
    not_before  timestamptz,
    expires_at  timestamptz,
    active      boolean NOT NULL DEFAULT true,
    source      text NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'jwks')),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (expires_at IS NULL OR not_before IS NULL OR expires_at > not_before)
);

COMMENT ON TABLE bv.jwt_keys IS
'Keys that bv.jwt_verify() accepts. The key decides the algorithm: a token''s alg must equal its key''s. Weak or malformed keys are refused on write. Changes reach every session at commit, without restart. bv_admin only.';
COMMENT ON COLUMN bv.jwt_keys.kid IS 'Key id; a token''s kid header selects among these keys only.';
COMMENT ON COLUMN bv.jwt_keys.alg IS 'The one algorithm this key verifies: HS256/384/512, RS256/384/512, PS256, ES256/384 or EdDSA (Ed25519).';
COMMENT ON COLUMN bv.jwt_keys.key IS 'HS: the shared secret (text, or a JWK {"kty":"oct","k":...}); others: a PEM public key, an unencrypted PEM private key (then bv.jwt_sign can use it), or a public JWK.';
COMMENT ON COLUMN bv.jwt_keys.issuer IS 'When set, tokens verified with this key must carry this iss claim (it overrides bv.jwt_issuer).';
COMMENT ON COLUMN bv.jwt_keys.not_before IS 'The key is not used before this time (rotation: publish early, start later).';
COMMENT ON COLUMN bv.jwt_keys.expires_at IS 'The key is not used from this time on.';
COMMENT ON COLUMN bv.jwt_keys.active IS 'Inactive keys are ignored (revocation of a key).';
COMMENT ON COLUMN bv.jwt_keys.source IS 'manual, or jwks for keys managed by bv.jwt_import_jwks().';
COMMENT ON COLUMN bv.jwt_keys.created_at IS 'When the key was added.';

CREATE TABLE bv.jwt_revocations (
    jti         text PRIMARY KEY CHECK (length(jti) BETWEEN 1 AND 256),
    expires_at  timestamptz,
    revoked_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    reason      text
);

COMMENT ON TABLE bv.jwt_revocations IS
'Revoked token ids (jti claim). bv.jwt_verify() and bv.pre_request() refuse these tokens; entries past expires_at are ignored and may be deleted.';
COMMENT ON COLUMN bv.jwt_revocations.jti IS 'The revoked token''s jti claim.';
COMMENT ON COLUMN bv.jwt_revocations.expires_at IS 'The token''s own expiry: after it the entry is no longer needed.';
COMMENT ON COLUMN bv.jwt_revocations.revoked_at IS 'When the token was revoked.';
COMMENT ON COLUMN bv.jwt_revocations.reason IS 'Why, for the operators.';

CREATE FUNCTION bv._jwt_key_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_jwt_key_check'
LANGUAGE C;

COMMENT ON FUNCTION bv._jwt_key_check() IS
'Internal: BEFORE ROW trigger of bv.jwt_keys that refuses malformed and weak keys.';

CREATE FUNCTION bv._jwt_tables_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bv_jwt_tables_changed'
LANGUAGE C;

COMMENT ON FUNCTION bv._jwt_tables_changed() IS
'Internal: AFTER STATEMENT trigger that makes every session reload its JWT key cache at commit.';

REVOKE ALL ON FUNCTION bv._jwt_key_check() FROM PUBLIC;
REVOKE ALL ON FUNCTION bv._jwt_tables_changed() FROM PUBLIC;

CREATE TRIGGER jwt_keys_check BEFORE INSERT OR UPDATE ON bv.jwt_keys
    FOR EACH ROW EXECUTE FUNCTION bv._jwt_key_check();
CREATE TRIGGER jwt_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bv.jwt_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bv._jwt_tables_changed();
CREATE TRIGGER jwt_revocations_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bv.jwt_revocations
    FOR EACH STATEMENT EXECUTE FUNCTION bv._jwt_tables_changed();

REVOKE ALL ON bv.jwt_keys, bv.jwt_revocations FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON bv.jwt_keys, bv.jwt_revocations TO bv_admin;

SELECT pg_catalog.pg_extension_config_dump('bv.jwt_keys', '');
SELECT pg_catalog.pg_extension_config_dump('bv.jwt_revocations', '');

CREATE FUNCTION bv.jwt_verify(token text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'bv_jwt_verify'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.jwt_verify(text) IS
'Verifies a compact JWS with the keys of bv.jwt_keys and returns its claims. Refuses, with SQLSTATE 28000 and a message that never contains the token: alg none or not matching the key, unknown kid, bad signature, malformed or oversize tokens, crit headers, expired (exp required unless bv.jwt_require_exp is off), future nbf/iat (leeway bv.jwt_leeway), wrong iss/aud (bv.jwt_issuer, bv.jwt_audience, jwt_keys.issuer), revoked jti, and replayed jti when bv.jwt_replay_check is on.';

CREATE FUNCTION bv.jwt_sign(claims jsonb, kid text)
RETURNS text
AS 'MODULE_PATHNAME', 'bv_jwt_sign'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.jwt_sign(jsonb, text) IS
'Signs a claims object with key kid of bv.jwt_keys (an HS secret or a PEM private key) and returns the compact JWS, for service tokens and tests. bv_admin only.';

REVOKE ALL ON FUNCTION bv.jwt_sign(jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.jwt_sign(jsonb, text) TO bv_admin;

CREATE FUNCTION bv.jwt_is_revoked(jti text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'bv_jwt_is_revoked'
LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION bv.jwt_is_revoked(text) IS
'Whether a token id (jti) is on the revocation list bv.jwt_revocations and not past its expiry.';

CREATE FUNCTION bv.jwt_revoke(jti text, expires_at timestamptz DEFAULT NULL, reason text DEFAULT NULL)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO bv.jwt_revocations (jti, expires_at, reason)
    VALUES ($1, $2, $3)
    ON CONFLICT ON CONSTRAINT jwt_revocations_pkey DO UPDATE
        SET expires_at = EXCLUDED.expires_at, reason = EXCLUDED.reason;
$$;

COMMENT ON FUNCTION bv.jwt_revoke(text, timestamptz, text) IS
'Revokes a token by its jti until expires_at (its own exp; NULL: for ever). Effective in every session at commit. bv_admin only.';

REVOKE ALL ON FUNCTION bv.jwt_revoke(text, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.jwt_revoke(text, timestamptz, text) TO bv_admin;

CREATE FUNCTION bv.jwt_import_jwks(jwks jsonb, issuer text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    jwk jsonb;
    jwk_kid text;
    jwk_alg text;
    kids text[] := '{}';
BEGIN
    IF pg_catalog.jsonb_typeof(jwks -> 'keys') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'a JWKS must be an object with a "keys" array',
            DETAIL = 'RFC 7517 section 5: {"keys": [<JWK>, ...]}.',
            HINT = 'Pass the document served at the identity provider''s jwks_uri.';
    END IF;
    FOR jwk IN SELECT e FROM pg_catalog.jsonb_array_elements(jwks -> 'keys') AS e LOOP
        CONTINUE WHEN jwk ->> 'use' = 'enc';
        jwk_kid := jwk ->> 'kid';
        IF jwk_kid IS NULL OR jwk_kid = '' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'a JWK in the set has no "kid"',
                DETAIL = 'Tokens select their key by kid, so every imported key needs one.',
                HINT = 'Add the key by hand with INSERT INTO bv.jwt_keys and a kid of your choice.';
        END IF;
        IF jwk ? 'd' OR jwk ->> 'kty' = 'oct' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('JWK %s is a private or symmetric key', pg_catalog.quote_literal(jwk_kid)),
                DETAIL = 'A JWKS of an identity provider publishes public keys only.',
                HINT = 'Import public keys only; add HS secrets with INSERT INTO bv.jwt_keys.';
        END IF;
        jwk_alg := COALESCE(jwk ->> 'alg',
                        CASE jwk ->> 'kty'
                            WHEN 'RSA' THEN 'RS256'
                            WHEN 'OKP' THEN 'EdDSA'
                            WHEN 'EC' THEN CASE jwk ->> 'crv' WHEN 'P-256' THEN 'ES256' WHEN 'P-384' THEN 'ES384' END
                        END);
        IF EXISTS (SELECT 1 FROM bv.jwt_keys k WHERE k.kid = jwk_kid AND k.source <> 'jwks') THEN
            RAISE EXCEPTION USING
                ERRCODE = 'unique_violation',
                MESSAGE = pg_catalog.format('key %s already exists and was not imported from a JWKS', pg_catalog.quote_literal(jwk_kid)),
                DETAIL = 'bv.jwt_import_jwks() only replaces keys it imported itself.',
                HINT = 'Delete or rename the manual key first.';
        END IF;
        INSERT INTO bv.jwt_keys AS k (kid, alg, key, issuer, source, active)
        VALUES (jwk_kid, jwk_alg, jwk::text, jwt_import_jwks.issuer, 'jwks', true)
        ON CONFLICT ON CONSTRAINT jwt_keys_pkey DO UPDATE
            SET alg = EXCLUDED.alg, key = EXCLUDED.key, issuer = EXCLUDED.issuer, active = true
            WHERE k.key IS DISTINCT FROM EXCLUDED.key OR k.alg IS DISTINCT FROM EXCLUDED.alg
               OR k.issuer IS DISTINCT FROM EXCLUDED.issuer OR NOT k.active;
        kids := kids || jwk_kid;
    END LOOP;
    -- rotation: keys of this issuer that the provider no longer publishes
    UPDATE bv.jwt_keys k SET active = false
    WHERE k.source = 'jwks' AND k.issuer IS NOT DISTINCT FROM jwt_import_jwks.issuer
      AND k.active AND k.kid <> ALL (kids);
    RETURN pg_catalog.cardinality(kids);
END
$$;

COMMENT ON FUNCTION bv.jwt_import_jwks(jsonb, text) IS
'Loads an identity provider''s JWKS (OAuth2/OIDC resource-server mode) into bv.jwt_keys: adds and updates its public keys, deactivates the keys of the same issuer it no longer lists, returns the number of keys imported. alg defaults from kty/crv (RSA: RS256). bv_admin only.';

REVOKE ALL ON FUNCTION bv.jwt_import_jwks(jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.jwt_import_jwks(jsonb, text) TO bv_admin;

------------------------------------------------------------------------
-- Rate limiting (shared memory; needs bv_core in shared_preload_libraries)
------------------------------------------------------------------------

CREATE FUNCTION bv.rate_limit(key text, rate double precision, burst double precision)
RETURNS boolean
AS 'MODULE_PATHNAME', 'bv_rate_limit'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.rate_limit(text, double precision, double precision) IS
'Token bucket in shared memory: takes one token from bucket key (refilled at rate per second, holding at most burst) and returns whether one was available. Not transactional: works in READ ONLY transactions and is not undone by ROLLBACK.';

CREATE FUNCTION bv.rate_limit_enforce(key text, rate double precision, burst double precision)
RETURNS void
AS 'MODULE_PATHNAME', 'bv_rate_limit_enforce'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.rate_limit_enforce(text, double precision, double precision) IS
'Like bv.rate_limit() but raises SQLSTATE PT429 (HTTP 429 through PostgREST) when no token is available.';

CREATE FUNCTION bv.rate_limit_retry_after(key text, rate double precision, burst double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bv_rate_limit_retry_after'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.rate_limit_retry_after(text, double precision, double precision) IS
'Like bv.rate_limit() but returns 0 when a token was taken, else the seconds until one is available (for a Retry-After header).';

CREATE FUNCTION bv.rate_limit_stats(
    OUT slots bigint, OUT used bigint, OUT allowed bigint, OUT denied bigint,
    OUT evicted_idle bigint, OUT evicted_active bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_rate_limit_stats'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.rate_limit_stats() IS
'Rate limiter counters since server start. evicted_active counts buckets dropped while still limiting: if it grows, raise bv.rate_limit_buckets.';

-- Anybody who can call these can drain any bucket: services only.
REVOKE ALL ON FUNCTION bv.rate_limit(text, double precision, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.rate_limit_enforce(text, double precision, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.rate_limit_retry_after(text, double precision, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.rate_limit_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.rate_limit(text, double precision, double precision) TO bv_service;
GRANT EXECUTE ON FUNCTION bv.rate_limit_enforce(text, double precision, double precision) TO bv_service;
GRANT EXECUTE ON FUNCTION bv.rate_limit_retry_after(text, double precision, double precision) TO bv_service;
GRANT EXECUTE ON FUNCTION bv.rate_limit_stats() TO bv_admin;

------------------------------------------------------------------------
-- API keys
------------------------------------------------------------------------

CREATE TABLE bv.api_key_scopes (
    scope       text PRIMARY KEY CHECK (scope ~ '^[a-z][a-z0-9_:.-]{0,63}$'),
    role        name NOT NULL CHECK (role IN ('bv_anon', 'bv_user', 'bv_service', 'bv_admin')),
    description text
);

COMMENT ON TABLE bv.api_key_scopes IS
'Scopes an API key may carry and the API role each maps to; a key acts as the most privileged role among its scopes.';
COMMENT ON COLUMN bv.api_key_scopes.scope IS 'Scope name, as in the OAuth2 scope claim.';
COMMENT ON COLUMN bv.api_key_scopes.role IS 'API role a key with this scope acts as.';
COMMENT ON COLUMN bv.api_key_scopes.description IS 'What the scope allows.';

INSERT INTO bv.api_key_scopes (scope, role, description) VALUES
    ('read', 'bv_user', 'Read the owner''s data.'),
    ('write', 'bv_user', 'Change the owner''s data.'),
    ('service', 'bv_service', 'Back-end service access.'),
    ('admin', 'bv_admin', 'Operator access.');

CREATE TABLE bv.api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    owner       text NOT NULL CHECK (length(owner) BETWEEN 1 AND 256),
    scopes      text[] NOT NULL,
    role        name NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

COMMENT ON TABLE bv.api_keys IS
'API keys: only the SHA-256 of each key is stored; the key itself is shown once, by bv.api_key_create(). bv_admin reads it through bv.api_key_list().';
COMMENT ON COLUMN bv.api_keys.id IS 'Key id (also the rate-limit bucket of the key).';
COMMENT ON COLUMN bv.api_keys.prefix IS 'First 12 characters of the key, to recognise it in lists.';
COMMENT ON COLUMN bv.api_keys.key_hash IS 'SHA-256 of the whole key.';
COMMENT ON COLUMN bv.api_keys.owner IS 'User or service the key acts for (becomes the sub claim and the actor).';
COMMENT ON COLUMN bv.api_keys.scopes IS 'Scopes of bv.api_key_scopes (the scope claim, space-separated).';
COMMENT ON COLUMN bv.api_keys.role IS 'API role the key acts as: the most privileged role among its scopes.';
COMMENT ON COLUMN bv.api_keys.created_at IS 'When the key was created.';
COMMENT ON COLUMN bv.api_keys.expires_at IS 'The key stops working at this time (NULL: never).';
COMMENT ON COLUMN bv.api_keys.revoked_at IS 'When the key was revoked (NULL: not revoked).';

REVOKE ALL ON bv.api_keys, bv.api_key_scopes FROM PUBLIC;
GRANT SELECT ON bv.api_key_scopes TO bv_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON bv.api_key_scopes TO bv_admin;

SELECT pg_catalog.pg_extension_config_dump('bv.api_keys', '');
SELECT pg_catalog.pg_extension_config_dump('bv.api_key_scopes',
    'WHERE scope NOT IN (''read'', ''write'', ''service'', ''admin'')');

CREATE FUNCTION bv._random_token(prefix text)
RETURNS text
AS 'MODULE_PATHNAME', 'bv_random_token'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv._random_token(text) IS
'Internal: prefix followed by the base64url of 32 bytes from OpenSSL''s random generator.';

REVOKE ALL ON FUNCTION bv._random_token(text) FROM PUBLIC;

CREATE FUNCTION bv.api_key_create(owner text, scopes text[], expires_at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text;
    key_role name;
    unknown text;
BEGIN
    IF owner IS NULL OR owner = '' OR scopes IS NULL OR pg_catalog.cardinality(scopes) = 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'an API key needs an owner and at least one scope',
            DETAIL = 'The owner becomes the actor of requests made with the key; scopes decide its role.',
            HINT = 'Call bv.api_key_create(''user-42'', ARRAY[''read'']).';
    END IF;
    SELECT s INTO unknown FROM pg_catalog.unnest(scopes) AS s
    WHERE NOT EXISTS (SELECT 1 FROM bv.api_key_scopes k WHERE k.scope = s) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('unknown API key scope %s', pg_catalog.quote_literal(unknown)),
            DETAIL = 'Scopes must be listed in bv.api_key_scopes.',
            HINT = 'SELECT scope, role FROM bv.api_key_scopes lists them.';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= pg_catalog.now() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'an API key cannot expire in the past',
            DETAIL = 'expires_at is not after the current time.',
            HINT = 'Pass a future time, or NULL for a key that does not expire.';
    END IF;
    SELECT k.role INTO key_role FROM bv.api_key_scopes k
    WHERE k.scope = ANY (scopes)
    ORDER BY pg_catalog.array_position(ARRAY['bv_anon', 'bv_user', 'bv_service', 'bv_admin']::name[], k.role) DESC
    LIMIT 1;
    key := bv._random_token('bvk_');
    INSERT INTO bv.api_keys (prefix, key_hash, owner, scopes, role, expires_at)
    VALUES (pg_catalog.left(key, 12), pg_catalog.sha256(pg_catalog.convert_to(key, 'UTF8')),
            api_key_create.owner, ARRAY(SELECT DISTINCT s FROM pg_catalog.unnest(scopes) AS s ORDER BY 1),
            key_role, api_key_create.expires_at);
    RETURN key;
END
$$;

COMMENT ON FUNCTION bv.api_key_create(text, text[], timestamptz) IS
'Creates an API key for owner with the given scopes and optional expiry, and returns it: "bvk_" followed by 32 random bytes in base64url. The key is shown only this once; only its SHA-256 is stored. bv_admin only.';

CREATE FUNCTION bv.api_key_verify(key text,
    OUT id bigint, OUT owner text, OUT role name, OUT scopes text[])
RETURNS record
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.id, k.owner, k.role, k.scopes
    FROM bv.api_keys k
    WHERE $1 ~ '^bvk_[A-Za-z0-9_-]{43}$'
      AND k.key_hash = pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8'))
      AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.clock_timestamp());
$$;

COMMENT ON FUNCTION bv.api_key_verify(text) IS
'The id, owner, role and scopes of a valid (known, unrevoked, unexpired) API key; all NULL otherwise. Looks the key up by its SHA-256, never by the key itself.';

CREATE FUNCTION bv.api_key_list(owner text DEFAULT NULL)
RETURNS TABLE (id bigint, prefix text, owner text, scopes text[], role name,
               created_at timestamptz, expires_at timestamptz, revoked_at timestamptz)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.id, k.prefix, k.owner, k.scopes, k.role, k.created_at, k.expires_at, k.revoked_at
    FROM bv.api_keys k
    WHERE $1 IS NULL OR k.owner = $1
    ORDER BY k.id;
$$;

COMMENT ON FUNCTION bv.api_key_list(text) IS
'API keys (of one owner, or all) without their hashes. bv_admin only.';

CREATE FUNCTION bv.api_key_revoke(id bigint)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH r AS (
        UPDATE bv.api_keys k SET revoked_at = pg_catalog.now()
        WHERE k.id = $1 AND k.revoked_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM r);
$$;

COMMENT ON FUNCTION bv.api_key_revoke(bigint) IS
'Revokes an API key at once; returns false if it did not exist or was already revoked. bv_admin only.';

REVOKE ALL ON FUNCTION bv.api_key_create(text, text[], timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.api_key_list(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.api_key_revoke(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.api_key_create(text, text[], timestamptz) TO bv_admin;
GRANT EXECUTE ON FUNCTION bv.api_key_list(text) TO bv_admin;
GRANT EXECUTE ON FUNCTION bv.api_key_revoke(bigint) TO bv_admin;
-- bv.api_key_verify stays executable by everyone: bv.pre_request() runs as
-- bv_anon, and knowing a 256-bit key is the only way to learn anything.

------------------------------------------------------------------------
-- Secrets
------------------------------------------------------------------------

CREATE TABLE bv.secrets (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:/-]{1,200}$'),
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE bv.secrets IS
'Secrets (webhook signing keys, broker passwords) sealed with AES-256-GCM under the master key in bv.master_key_file. Read them with bv.secret_get(); bv_admin only.';
COMMENT ON COLUMN bv.secrets.name IS 'Secret name, e.g. webhook:orders or kafka:password.';
COMMENT ON COLUMN bv.secrets.sealed IS 'Version, key id, nonce, ciphertext and tag; the name is authenticated too.';
COMMENT ON COLUMN bv.secrets.created_at IS 'When the secret was first set.';
COMMENT ON COLUMN bv.secrets.updated_at IS 'When the secret was last set.';

REVOKE ALL ON bv.secrets FROM PUBLIC;
GRANT SELECT (name, created_at, updated_at) ON bv.secrets TO bv_admin;

SELECT pg_catalog.pg_extension_config_dump('bv.secrets', '');

CREATE FUNCTION bv._secret_seal(name text, value text)
RETURNS bytea
AS 'MODULE_PATHNAME', 'bv_secret_seal'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv._secret_seal(text, text) IS
'Internal: AES-256-GCM encryption of value under the master key, bound to name.';

CREATE FUNCTION bv._secret_open(name text, sealed bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'bv_secret_open'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv._secret_open(text, bytea) IS
'Internal: decrypts a value sealed by bv._secret_seal() for the same name.';

REVOKE ALL ON FUNCTION bv._secret_seal(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv._secret_open(text, bytea) FROM PUBLIC;

CREATE FUNCTION bv.secret_set(name text, value text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO bv.secrets AS s (name, sealed)
    VALUES ($1, bv._secret_seal($1, $2))
    ON CONFLICT ON CONSTRAINT secrets_pkey DO UPDATE
        SET sealed = EXCLUDED.sealed, updated_at = pg_catalog.now();
$$;

COMMENT ON FUNCTION bv.secret_set(text, text) IS
'Stores a secret, encrypted with AES-256-GCM under the master key (bv.master_key_file). The value never appears in messages; keep it out of statement logs by passing it as a bind parameter with log_statement off. bv_admin only.';

CREATE FUNCTION bv.secret_get(name text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s bytea;
BEGIN
    SELECT x.sealed INTO s FROM bv.secrets x WHERE x.name = secret_get.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('secret %s does not exist', pg_catalog.quote_literal(secret_get.name)),
            DETAIL = 'There is no row with this name in bv.secrets.',
            HINT = 'Set it with bv.secret_set(name, value).';
    END IF;
    RETURN bv._secret_open(secret_get.name, s);
END
$$;

COMMENT ON FUNCTION bv.secret_get(text) IS
'Decrypts and returns a secret. bv_admin only; other extensions read secrets from their own SECURITY DEFINER functions.';

CREATE FUNCTION bv.secret_delete(name text)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM bv.secrets s WHERE s.name = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM d);
$$;

COMMENT ON FUNCTION bv.secret_delete(text) IS
'Deletes a secret; returns whether it existed. bv_admin only.';

CREATE FUNCTION bv._secret_reseal(name text, sealed bytea, old_key_file text)
RETURNS bytea
AS 'MODULE_PATHNAME', 'bv_secret_reseal'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv._secret_reseal(text, bytea, text) IS
'Internal: re-seals a value sealed under the key in old_key_file with the current master key; values already under the current key are returned unchanged.';

REVOKE ALL ON FUNCTION bv._secret_reseal(text, bytea, text) FROM PUBLIC;

-- Superuser only (no grant): it reads a key file named by the caller.
CREATE FUNCTION bv.secrets_rotate_master_key(old_key_file text)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH r AS (
        UPDATE bv.secrets s
        SET sealed = bv._secret_reseal(s.name, s.sealed, $1), updated_at = pg_catalog.now()
        RETURNING 1)
    SELECT pg_catalog.count(*)::integer FROM r;
$$;

COMMENT ON FUNCTION bv.secrets_rotate_master_key(text) IS
'Master key rotation: after bv.master_key_file points at the new key (and a reload), re-seals every secret that is still sealed under the key in old_key_file. All or nothing (one UPDATE); safe to run again. Returns the number of secrets, all now under the current key. Superuser only.';

REVOKE ALL ON FUNCTION bv.secrets_rotate_master_key(text) FROM PUBLIC;

REVOKE ALL ON FUNCTION bv.secret_set(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.secret_get(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION bv.secret_delete(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.secret_set(text, text) TO bv_admin;
GRANT EXECUTE ON FUNCTION bv.secret_get(text) TO bv_admin;
GRANT EXECUTE ON FUNCTION bv.secret_delete(text) TO bv_admin;

------------------------------------------------------------------------
-- Row-level security conventions
------------------------------------------------------------------------

-- Not SECURITY DEFINER and without a SET clause, so that it can be inlined
-- into policies; use it as (SELECT bv.current_user_id()) so that it is
-- evaluated once per statement, not once per row.
CREATE FUNCTION bv.current_user_id()
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
    SELECT COALESCE(
        NULLIF(pg_catalog.current_setting('bv.actor', true), ''),
        NULLIF(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub');
$$;

COMMENT ON FUNCTION bv.current_user_id() IS
'Id of the user the request acts for: bv.actor (set by bv.set_actor) or else the sub claim of request.jwt.claims; NULL for anonymous requests. Owner-based policies compare the owner column with (SELECT bv.current_user_id()).';

CREATE FUNCTION bv.has_scope(scope text)
RETURNS boolean
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
    SELECT $1 = ANY (pg_catalog.regexp_split_to_array(
        COALESCE(NULLIF(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'scope', ''), ' '));
$$;

COMMENT ON FUNCTION bv.has_scope(text) IS
'Whether the request''s scope claim (space-separated, OAuth2 style; API keys set it too) contains scope.';

CREATE FUNCTION bv.enable_owner_rls(target regclass, owner_column name DEFAULT 'owner_id')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col_type regtype;
BEGIN
    SELECT a.atttypid::regtype INTO col_type
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = target AND a.attname = owner_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'undefined_column',
            MESSAGE = pg_catalog.format('table %s has no column %I', target, owner_column),
            DETAIL = 'Owner-based row-level security compares this column with bv.current_user_id().',
            HINT = 'Add a text column for the owner, e.g. owner_id text NOT NULL DEFAULT bv.current_user_id().';
    END IF;
    IF col_type <> 'text'::regtype THEN
        RAISE EXCEPTION USING
            ERRCODE = 'datatype_mismatch',
            MESSAGE = pg_catalog.format('owner column %I of table %s must be of type text', owner_column, target),
            DETAIL = pg_catalog.format('It has type %s; user ids are text (the sub claim).', col_type),
            HINT = 'Change the column''s type to text.';
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT bv.current_user_id()', target, owner_column);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = target AND p.polname = 'bv_owner') THEN
        EXECUTE pg_catalog.format('DROP POLICY bv_owner ON %s', target);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = target AND p.polname = 'bv_service') THEN
        EXECUTE pg_catalog.format('DROP POLICY bv_service ON %s', target);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE POLICY bv_owner ON %s FOR ALL TO bv_user USING (%I = (SELECT bv.current_user_id())) WITH CHECK (%I = (SELECT bv.current_user_id()))',
        target, owner_column, owner_column);
    EXECUTE pg_catalog.format(
        'CREATE POLICY bv_service ON %s FOR ALL TO bv_service USING (true) WITH CHECK (true)',
        target);
END
$$;

COMMENT ON FUNCTION bv.enable_owner_rls(regclass, name) IS
'Applies the suite''s owner policy to a table: enables and forces row-level security, defaults the owner column to bv.current_user_id(), lets bv_user (and the roles above it) see and write only rows they own, and bv_service (and bv_admin) all rows. Idempotent. Run it as the table''s owner.';

------------------------------------------------------------------------
-- PostgREST: db-pre-request
------------------------------------------------------------------------

CREATE FUNCTION bv._request_rate_limit(bucket text)
RETURNS double precision
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT bv.rate_limit_retry_after($1,
        pg_catalog.current_setting('bv.request_rate')::double precision,
        pg_catalog.current_setting('bv.request_burst')::double precision);
$$;

COMMENT ON FUNCTION bv._request_rate_limit(text) IS
'Internal: the rate limit step of bv.pre_request() (bv.request_rate, bv.request_burst); returns 0 or the seconds to wait.';

REVOKE ALL ON FUNCTION bv._request_rate_limit(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv._request_rate_limit(text) TO bv_anon;

-- Invoker's rights and no SET clause on purpose: the role switch and the
-- claims it sets must outlive the function (a SET clause would undo them).
-- Every name is schema-qualified instead.
CREATE FUNCTION bv.pre_request()
RETURNS void
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    headers jsonb := COALESCE(NULLIF(pg_catalog.current_setting('request.headers', true), ''), '{}')::jsonb;
    claims jsonb := COALESCE(NULLIF(pg_catalog.current_setting('request.jwt.claims', true), ''), '{}')::jsonb;
    api_key text := headers ->> 'x-api-key';
    k record;
    bucket text;
    wait double precision;
BEGIN
    IF api_key IS NOT NULL THEN
        IF claims ? 'sub' THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'both a bearer token and an API key were sent',
                DETAIL = 'A request authenticates with one credential only.',
                HINT = 'Send either the Authorization header or the x-api-key header.';
        END IF;
        SELECT * INTO k FROM bv.api_key_verify(api_key);
        IF k.id IS NULL THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'invalid API key',
                DETAIL = 'The key is unknown, revoked or expired.',
                HINT = 'Create a new key with bv.api_key_create().';
        END IF;
        PERFORM pg_catalog.set_config('role', k.role, true);
        PERFORM pg_catalog.set_config('request.jwt.claims',
            pg_catalog.jsonb_build_object('sub', k.owner, 'role', k.role,
                'scope', pg_catalog.array_to_string(k.scopes, ' '), 'api_key_id', k.id)::text, true);
        bucket := 'apikey:' || k.id;
    ELSE
        IF claims ? 'jti' AND bv.jwt_is_revoked(claims ->> 'jti') THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'token revoked',
                DETAIL = 'The token''s jti is on the revocation list.',
                HINT = 'Sign in again to obtain a new token.';
        END IF;
        bucket := CASE
            WHEN claims ? 'sub' THEN 'sub:' || (claims ->> 'sub')
            -- anonymous: per client address when a trusted proxy sets it
            ELSE 'anon:' || COALESCE(pg_catalog.btrim(pg_catalog.split_part(headers ->> 'x-forwarded-for', ',', 1)), '')
        END;
    END IF;
    wait := bv._request_rate_limit(bucket);
    IF wait > 0 THEN
        -- PostgREST 11.2+: SQLSTATE PGRST carries status and headers (the
        -- Retry-After header cannot travel in response.headers, which a
        -- failed request rolls back).
        RAISE SQLSTATE 'PGRST' USING
            MESSAGE = pg_catalog.json_build_object('code', 'PT429', 'message', 'rate limit exceeded',
                'details', pg_catalog.format('Retry after %s seconds.', pg_catalog.ceil(wait)::integer),
                'hint', 'Slow down: wait before sending more requests.')::text,
            DETAIL = pg_catalog.json_build_object('status', 429,
                'headers', pg_catalog.json_build_object('Retry-After', pg_catalog.ceil(wait)::integer::text))::text;
    END IF;
END
$$;

COMMENT ON FUNCTION bv.pre_request() IS
'PostgREST db-pre-request hook: authenticates an x-api-key header (switching to the key''s role and setting its claims, so bv.actor() and bv.current_user_id() name its owner) or accepts the JWT claims PostgREST verified, refuses revoked tokens (PT401), and applies the per-subject rate limit (bv.request_rate, bv.request_burst; HTTP 429 with Retry-After).';
