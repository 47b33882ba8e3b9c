/*
 * bv_core 0.2.0 -> 0.3.0: hardening (issues #17, #18, #27).
 *
 * A fresh install of 0.3.0 runs bv_core--0.1.0.sql and the upgrade scripts in
 * order.  Each section below names the issue item it fixes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_core UPDATE TO '0.3.0'" to load this file. \quit


------------------------------------------------------------------------
-- #17 items 7-10, 12 (and 15 for pre_request): the PostgREST entry point
-- enforces bv_core's claim policy, API-key scopes and per-client limits.
--
-- bv.pre_request() stays invoker's rights (its role switch must outlive
-- it).  Everything it decides is done by bv._request_admit(), which takes
-- no argument that chooses a bucket or an identity: it reads the request
-- (request.headers, request.jwt.claims, request.method, request.path),
-- verifies the credential itself and derives the rate-limit bucket from
-- what it verified.  Only bv_authenticator, the login PostgREST uses, may
-- execute it: pre_request returns to that login (SET ROLE NONE) for the
-- call and then switches to the verified role.  API roles can call no
-- internal function of bv_core.
------------------------------------------------------------------------

-- Item 7: the old step took the bucket as an argument and was granted to
-- bv_anon (so to every API role): any user could drain anybody's bucket.
DROP FUNCTION bv._request_rate_limit(text);

-- Item 10: which scopes allow writes.  A request made with an API key may
-- use a write method (POST, PUT, PATCH, DELETE) only if one of the key's
-- scopes allows writes; GET, HEAD and OPTIONS need any scope.  PostgREST
-- runs GET and HEAD in READ ONLY transactions, so they cannot write.
ALTER TABLE bv.api_key_scopes ADD COLUMN allows_write boolean NOT NULL DEFAULT false;
UPDATE bv.api_key_scopes SET allows_write = true WHERE scope IN ('write', 'service', 'admin');
COMMENT ON COLUMN bv.api_key_scopes.allows_write IS
'Whether a key with this scope may send write requests (POST, PUT, PATCH, DELETE); every scope allows GET, HEAD and OPTIONS.';

-- Item 12: forwarded client addresses are trusted only from these proxies.
CREATE TABLE bv.trusted_proxies (
    proxy       cidr PRIMARY KEY,
    description text
);

COMMENT ON TABLE bv.trusted_proxies IS
'Reverse proxies in front of PostgREST whose X-Forwarded-For entries bv.pre_request() trusts. With rows here, the client address is the right-most X-Forwarded-For entry that is not a trusted proxy, and anonymous requests are rate-limited per client address; with none, X-Forwarded-For is ignored and anonymous requests share one bucket. bv_admin only.';
COMMENT ON COLUMN bv.trusted_proxies.proxy IS 'Address or network of a trusted proxy.';
COMMENT ON COLUMN bv.trusted_proxies.description IS 'What the proxy is, for the operators.';

REVOKE ALL ON bv.trusted_proxies FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON bv.trusted_proxies TO bv_admin;
SELECT pg_catalog.pg_extension_config_dump('bv.trusted_proxies', '');

-- Item 12: routes with a bucket of their own (a payment webhook must not be
-- throttled by a flood of other anonymous requests).
CREATE TABLE bv.request_routes (
    path        text PRIMARY KEY,
    rate        double precision,
    burst       double precision,
    description text,
    extension   name,
    CONSTRAINT request_routes_path_check CHECK (path ~ '^/[A-Za-z0-9_./-]{0,199}$'),
    CONSTRAINT request_routes_rate_check CHECK (rate IS NULL OR (rate > 0 AND rate < 'infinity')),
    CONSTRAINT request_routes_burst_check CHECK (burst IS NULL OR (burst >= 1 AND burst < 'infinity'))
);

COMMENT ON TABLE bv.request_routes IS
'Request paths (request.path, e.g. /rpc/payment_webhook) rate-limited in buckets of their own, per client, so that other traffic cannot exhaust them. bv_admin only.';
COMMENT ON COLUMN bv.request_routes.path IS 'The exact request path.';
COMMENT ON COLUMN bv.request_routes.rate IS 'Requests per second per client on this path; NULL: bv.request_rate.';
COMMENT ON COLUMN bv.request_routes.burst IS 'Burst per client on this path; NULL: bv.request_burst.';
COMMENT ON COLUMN bv.request_routes.description IS 'Why the path has its own bucket.';
COMMENT ON COLUMN bv.request_routes.extension IS 'The extension that added the route (its install script adds it again on restore); NULL for routes added by an operator.';

REVOKE ALL ON bv.request_routes FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON bv.request_routes TO bv_admin;
SELECT pg_catalog.pg_extension_config_dump('bv.request_routes', 'WHERE extension IS NULL');

/*
 * The client address of an anonymous request: the right-most entry of
 * X-Forwarded-For that is not a trusted proxy (entries left of it were
 * written by the client and prove nothing).  NULL without trusted proxies
 * or without the header; 'invalid' when that entry is no address.
 */
CREATE FUNCTION bv._request_client_address(forwarded_for text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hops text[];
    hop text;
    addr inet;
BEGIN
    IF forwarded_for IS NULL OR NOT EXISTS (SELECT 1 FROM bv.trusted_proxies) THEN
        RETURN NULL;
    END IF;
    -- at most the last 32 hops are read
    hops := pg_catalog.regexp_split_to_array(pg_catalog.right(forwarded_for, 2048), ',');
    FOR i IN REVERSE pg_catalog.cardinality(hops) .. GREATEST(1, pg_catalog.cardinality(hops) - 31) LOOP
        hop := pg_catalog.btrim(hops[i], ' 	');
        IF hop !~ '^[0-9A-Fa-f:.]{2,45}$' THEN
            RETURN 'invalid';
        END IF;
        BEGIN
            addr := hop::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN 'invalid';
        END;
        IF NOT EXISTS (SELECT 1 FROM bv.trusted_proxies p WHERE addr OPERATOR(pg_catalog.<<=) p.proxy) THEN
            RETURN pg_catalog.host(addr);
        END IF;
    END LOOP;
    RETURN pg_catalog.host(addr);   -- every hop read is a trusted proxy
END
$$;

COMMENT ON FUNCTION bv._request_client_address(text) IS
'Internal: the client address in an X-Forwarded-For value, trusting only the proxies of bv.trusted_proxies (right-most untrusted hop); NULL without trusted proxies.';

REVOKE ALL ON FUNCTION bv._request_client_address(text) FROM PUBLIC;

/*
 * The decision of bv.pre_request(): verifies the request's one credential
 * and returns the role and claims it acts with, after taking a token from
 * its rate-limit bucket.  requested_role is the role PostgREST switched to
 * (from the token it verified itself); it must agree with the token.
 */
CREATE FUNCTION bv._request_admit(requested_role text, OUT role name, OUT claims text)
RETURNS record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw_headers text := pg_catalog.current_setting('request.headers', true);
    raw_claims text := pg_catalog.current_setting('request.jwt.claims', true);
    method text := pg_catalog.upper(COALESCE(pg_catalog.current_setting('request.method', true), ''));
    req_path text := COALESCE(pg_catalog.current_setting('request.path', true), '');
    headers jsonb;
    given jsonb;
    verified jsonb;
    auth text;
    token text;
    api_key text;
    problem text;
    k record;
    bucket text;
    client text;
    route record;
    rate double precision := pg_catalog.current_setting('bv.request_rate')::double precision;
    burst double precision := pg_catalog.current_setting('bv.request_burst')::double precision;
    wait double precision;
BEGIN
    -- The request context, as PostgREST sets it: two JSON objects.
    BEGIN
        headers := COALESCE(NULLIF(raw_headers, ''), '{}')::jsonb;
        given := COALESCE(NULLIF(raw_claims, ''), '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation OR program_limit_exceeded OR statement_too_complex THEN
        headers := NULL;
    END;
    IF headers IS NULL OR pg_catalog.jsonb_typeof(headers) <> 'object'
       OR pg_catalog.jsonb_typeof(given) <> 'object' THEN
        RAISE SQLSTATE 'PT400' USING
            MESSAGE = 'malformed request context',
            DETAIL = 'request.headers and request.jwt.claims must be JSON objects.',
            HINT = 'These settings are set by PostgREST; set them the same way when replaying a request.';
    END IF;
    IF pg_catalog.jsonb_typeof(headers -> 'authorization') NOT IN ('string')
       OR pg_catalog.jsonb_typeof(headers -> 'x-api-key') NOT IN ('string') THEN
        RAISE SQLSTATE 'PT400' USING
            MESSAGE = 'malformed request context',
            DETAIL = 'Header values in request.headers must be strings.',
            HINT = 'These settings are set by PostgREST; set them the same way when replaying a request.';
    END IF;
    auth := headers ->> 'authorization';
    api_key := headers ->> 'x-api-key';

    IF auth IS NOT NULL AND api_key IS NOT NULL THEN
        RAISE SQLSTATE 'PT401' USING
            MESSAGE = 'both a bearer token and an API key were sent',
            DETAIL = 'A request authenticates with one credential only.',
            HINT = 'Send either the Authorization header or the x-api-key header.';
    END IF;

    IF auth IS NOT NULL THEN
        -- Item 8: the token PostgREST accepted must also pass bv_core's
        -- policy (bv.jwt_verify: exp required, no duplicate claims, bounded
        -- nesting, numbers that are numbers, revocation by the exact jti,
        -- replay when configured).  Its keys must be in bv.jwt_keys.
        token := (pg_catalog.regexp_match(auth, '^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9_.=+/-]+) *$'))[1];
        IF token IS NULL THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'invalid authorization header',
                DETAIL = 'Expected "Bearer <token>".',
                HINT = 'Send Authorization: Bearer <JWT>, or no Authorization header.';
        END IF;
        BEGIN
            verified := bv.jwt_verify(token);
        EXCEPTION WHEN invalid_authorization_specification THEN
            GET STACKED DIAGNOSTICS problem = PG_EXCEPTION_DETAIL;
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'invalid token',
                DETAIL = problem,   -- a sentence from bv_core's fixed list, never the token
                HINT = 'Tokens must pass bv.jwt_verify(): signed with a key of bv.jwt_keys, with an exp claim, unique claim names and a jti that is not revoked.';
        END;
        -- Two Authorization headers: PostgREST verified one of them and
        -- request.headers holds the other.  They must be the same token.
        IF pg_catalog.jsonb_typeof(verified -> 'role') IS DISTINCT FROM 'string' AND verified ? 'role' THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'invalid token',
                DETAIL = 'The role claim is not a string.',
                HINT = 'Issue tokens whose "role" claim names an API role.';
        END IF;
        IF COALESCE(verified ->> 'role', 'bv_anon') IS DISTINCT FROM requested_role
           OR (verified -> 'sub') IS DISTINCT FROM (given -> 'sub')
           OR (verified -> 'jti') IS DISTINCT FROM (given -> 'jti') THEN
            RAISE SQLSTATE 'PT400' USING
                MESSAGE = 'ambiguous credentials',
                DETAIL = 'The request carries more than one bearer token, or its claims do not match its token.',
                HINT = 'Send exactly one Authorization header.';
        END IF;
        role := requested_role;
        -- Item 9: an authenticated role acts for a subject.
        IF role <> 'bv_anon' AND (pg_catalog.jsonb_typeof(verified -> 'sub') IS DISTINCT FROM 'string'
                                  OR verified ->> 'sub' = '') THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'token without a subject',
                DETAIL = pg_catalog.format('A token for role %s must carry a non-empty "sub" claim.', role),
                HINT = 'Issue tokens with the user''s or service''s id in "sub"; anonymous tokens use role bv_anon.';
        END IF;
        claims := verified::text;
        bucket := CASE WHEN verified ? 'sub' THEN 'sub:' || (verified ->> 'sub') END;
    ELSIF api_key IS NOT NULL THEN
        IF requested_role IS DISTINCT FROM 'bv_anon' OR given ? 'sub' THEN
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
        -- Item 10: scopes decide the methods.
        IF method NOT IN ('GET', 'HEAD', 'OPTIONS') AND NOT EXISTS (
               SELECT 1 FROM bv.api_key_scopes s WHERE s.scope = ANY (k.scopes) AND s.allows_write) THEN
            RAISE SQLSTATE 'PT403' USING
                MESSAGE = 'the API key''s scopes do not allow writes',
                DETAIL = pg_catalog.format('A %s request needs a scope that allows writes; the key has: %s.',
                                           pg_catalog.left(method, 16), pg_catalog.array_to_string(k.scopes, ', ')),
                HINT = 'Use a key with the write scope, or read with GET.';
        END IF;
        role := k.role;
        claims := pg_catalog.jsonb_build_object('sub', k.owner, 'role', k.role,
            'scope', pg_catalog.array_to_string(k.scopes, ' '), 'api_key_id', k.id)::text;
        bucket := 'apikey:' || k.id;
    ELSE
        -- No credential: anonymous, and nothing may claim otherwise.
        IF requested_role IS DISTINCT FROM 'bv_anon' OR given - 'role' <> '{}'::jsonb THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'claims without a bearer token',
                DETAIL = 'request.jwt.claims names a role or subject, but the request carries no token.',
                HINT = 'Send Authorization: Bearer <JWT>.';
        END IF;
        role := 'bv_anon';
    END IF;

    -- Item 12: anonymous requests are limited per client address when
    -- trusted proxies say which it is (else together, in one bucket).
    IF bucket IS NULL THEN
        client := bv._request_client_address(headers ->> 'x-forwarded-for');
        bucket := 'anon:' || COALESCE(client, '');
    END IF;
    SELECT r.rate, r.burst INTO route FROM bv.request_routes r WHERE r.path = req_path;
    IF FOUND THEN
        bucket := 'route:' || req_path || '|' || bucket;
        rate := COALESCE(route.rate, rate);
        burst := COALESCE(route.burst, burst);
    END IF;
    wait := bv.rate_limit_retry_after(bucket, rate, burst);
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

COMMENT ON FUNCTION bv._request_admit(text) IS
'Internal: the checks of bv.pre_request(). Reads the request settings, verifies its one credential (bearer token with bv.jwt_verify, or x-api-key), enforces the claim policy and API-key scopes, and takes a token from the bucket it derives from what it verified. bv_authenticator only.';

REVOKE ALL ON FUNCTION bv._request_admit(text) FROM PUBLIC;
-- bv_authenticator is NOINHERIT: it needs its own grants.
GRANT USAGE ON SCHEMA bv TO bv_authenticator;
GRANT EXECUTE ON FUNCTION bv._request_admit(text) TO bv_authenticator;

-- Invoker's rights and no SET clause on purpose: the role switch and the
-- claims it sets must outlive the function (a SET clause would undo them).
-- Every name is schema-qualified instead.
CREATE OR REPLACE FUNCTION bv.pre_request()
RETURNS void
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    requested text := pg_catalog.current_setting('role');
    decision record;
BEGIN
    IF session_user IS DISTINCT FROM 'bv_authenticator'::name THEN
        RAISE SQLSTATE '42501' USING
            MESSAGE = 'bv.pre_request() runs only in sessions of bv_authenticator',
            DETAIL = 'It is PostgREST''s db-pre-request hook, and PostgREST logs in as bv_authenticator.',
            HINT = 'Connect as bv_authenticator, as PostgREST does.';
    END IF;
    -- Back to the login for the checks (only it may run them), then to the
    -- role of the verified credential.
    PERFORM pg_catalog.set_config('role', 'none', true);
    SELECT * INTO decision FROM bv._request_admit(requested);
    PERFORM pg_catalog.set_config('role', decision.role, true);
    IF decision.claims IS NOT NULL THEN
        PERFORM pg_catalog.set_config('request.jwt.claims', decision.claims, true);
    END IF;
END
$$;

COMMENT ON FUNCTION bv.pre_request() IS
'PostgREST db-pre-request hook. Applies bv_core''s policy to every request: a bearer token must also pass bv.jwt_verify() (its keys in bv.jwt_keys) and agree with what PostgREST verified, a token for an authenticated role must name its subject, an x-api-key header switches to the key''s role and claims and its scopes decide whether write methods are allowed, one credential only; then the rate limit (bv.request_rate, bv.request_burst per subject, API key, or anonymous client address behind bv.trusted_proxies; paths of bv.request_routes in buckets of their own; HTTP 429 with Retry-After). Refusals are HTTP 400, 401 or 403 with a hint.';
