/*
 * bv_core 0.3.0 -> 0.4.0: red-team review of the released hardening.
 *
 * A fresh install of 0.4.0 runs bv_core--0.1.0.sql and the upgrade scripts
 * in order.  The C library fixes of this release need no SQL (jwt_keys.c):
 * a revocation or key change committed while a backend rebuilt its JWT key
 * cache is no longer lost by that backend (tests/tap/bv_redteam_jwt_cache.pl),
 * and a revocation until 'infinity' lasts for ever instead of not at all
 * (tests/pgtap/bv_redteam_core_args.sql).
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_core UPDATE TO '0.4.0'" to load this file. \quit

------------------------------------------------------------------------
-- bv.api_key_create(): a multi-dimensional scopes array gave a raw 0A000
-- ("searching for elements in multidimensional arrays is not supported")
-- without a hint; now 22023 with one (tests/pgtap/bv_redteam_core_args.sql).
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION bv.api_key_create(owner text, scopes text[], expires_at timestamptz DEFAULT NULL)
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
    IF pg_catalog.array_ndims(scopes) > 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'API key scopes must be a one-dimensional array',
            DETAIL = pg_catalog.format('The array has %s dimensions.', pg_catalog.array_ndims(scopes)),
            HINT = 'Call bv.api_key_create(''user-42'', ARRAY[''read'', ''write'']).';
    END IF;
    IF owner IS NULL OR scopes IS NULL OR pg_catalog.array_position(scopes, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'an API key needs an owner and scopes that are not null',
            DETAIL = 'The owner becomes the actor of requests made with the key; scopes decide its role.',
            HINT = 'Call bv.api_key_create(''user-42'', ARRAY[''read'']).';
    END IF;
    IF owner = '' OR pg_catalog.length(owner) > 256 OR owner ~ '[[:cntrl:]]'
       OR pg_catalog.cardinality(scopes) = 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'an API key needs an owner and at least one scope',
            DETAIL = 'The owner (1 to 256 characters, no control characters) becomes the actor of requests made with the key; scopes decide its role.',
            HINT = 'Call bv.api_key_create(''user-42'', ARRAY[''read'']).';
    END IF;
    SELECT s INTO unknown FROM pg_catalog.unnest(scopes) AS s
    WHERE NOT EXISTS (SELECT 1 FROM bv.api_key_scopes k WHERE k.scope = s) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('unknown API key scope %s', pg_catalog.quote_literal(pg_catalog.left(unknown, 64))),
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
'Creates an API key for owner (1 to 256 characters) with the given scopes and optional expiry, and returns it: "bvk_" followed by 32 random bytes in base64url. The key is shown only this once; only its SHA-256 is stored. NULL arguments raise 22004, bad ones (a multi-dimensional scopes array included) 22023. bv_admin only.';

------------------------------------------------------------------------
-- bv.jwt_keys.roles: the roles a key's tokens may name.  Any key could
-- sign tokens for any API role, so the key of an identity provider
-- (imported with bv.jwt_import_jwks()) could mint bv_admin tokens.  A key
-- with roles signs only for those (the "role" claim; bv_anon when absent),
-- checked by bv.jwt_verify() and so on every entry point.  Keys imported
-- from a JWKS get {bv_anon,bv_user} unless the insert names other roles;
-- existing keys keep NULL (any role): review them after the update.
------------------------------------------------------------------------

ALTER TABLE bv.jwt_keys ADD COLUMN roles name[];
COMMENT ON COLUMN bv.jwt_keys.roles IS
'The roles the key''s tokens may name in their "role" claim (an absent role counts as bv_anon); NULL: any API role. Keys imported by bv.jwt_import_jwks() get {bv_anon,bv_user}.';

CREATE FUNCTION bv._jwt_key_default_roles()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.source = 'jwks' AND NEW.roles IS NULL THEN
        NEW.roles := ARRAY['bv_anon', 'bv_user']::name[];
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION bv._jwt_key_default_roles() IS
'Internal: BEFORE INSERT trigger of bv.jwt_keys: a key imported from a JWKS may sign for bv_anon and bv_user only, unless the insert names its roles.';
REVOKE ALL ON FUNCTION bv._jwt_key_default_roles() FROM PUBLIC;

CREATE TRIGGER jwt_keys_default_roles BEFORE INSERT ON bv.jwt_keys
    FOR EACH ROW EXECUTE FUNCTION bv._jwt_key_default_roles();
