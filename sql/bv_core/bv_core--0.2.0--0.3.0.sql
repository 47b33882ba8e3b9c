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
    self_limited boolean NOT NULL DEFAULT false,
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
COMMENT ON COLUMN bv.request_routes.self_limited IS 'The route''s function authenticates its caller and rate-limits itself with bv._route_limit() (separate buckets for authenticated and refused calls, so that unauthenticated floods cannot throttle legitimate callers); bv.pre_request() takes no token for it.';
COMMENT ON COLUMN bv.request_routes.extension IS 'The extension that added the route (its install script adds it again on restore); NULL for routes added by an operator.';

REVOKE ALL ON bv.request_routes FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON bv.request_routes TO bv_admin;
SELECT pg_catalog.pg_extension_config_dump('bv.request_routes', 'WHERE extension IS NULL');

/*
 * #17 hardening (attack review): the request admission buckets live in a
 * key space of their own.  They were taken with bv.rate_limit_retry_after(),
 * which bv_service may call with any key: a service could drain
 * 'sub:alice' or the payment provider's bucket.  The public functions
 * cannot reach keys taken here (ratelimit.c prefixes each space).
 */
CREATE FUNCTION bv._request_bucket(bucket text, rate double precision, burst double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'bv_request_bucket'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION bv._request_bucket(text, double precision, double precision) IS
'Internal: takes a token from a request admission bucket (bv.pre_request(), bv._route_limit()) and returns 0 or the seconds to wait; a key space that bv.rate_limit() and its siblings cannot reach. Not callable by API roles.';

REVOKE ALL ON FUNCTION bv._request_bucket(text, double precision, double precision) FROM PUBLIC;

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
    raw inet;
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
        -- #17 hardening (attack review): one client, one spelling.  An
        -- IPv4-mapped IPv6 address is its IPv4 address, and an IPv6
        -- client is its /64 (a host usually gets a whole /64, so single
        -- addresses would give it 2^64 buckets).
        raw := addr;
        IF pg_catalog.family(addr) = 6 AND addr OPERATOR(pg_catalog.<<=) '::ffff:0.0.0.0/96'::inet THEN
            addr := '0.0.0.0'::inet OPERATOR(pg_catalog.+) (addr OPERATOR(pg_catalog.-) '::ffff:0.0.0.0'::inet);
        END IF;
        -- a proxy listed in either form is recognised in either form
        IF NOT EXISTS (SELECT 1 FROM bv.trusted_proxies p
                       WHERE addr OPERATOR(pg_catalog.<<=) p.proxy OR raw OPERATOR(pg_catalog.<<=) p.proxy
                          OR (pg_catalog.family(addr) = 4 AND pg_catalog.family(p.proxy) = 6
                              AND p.proxy OPERATOR(pg_catalog.<<=) '::ffff:0.0.0.0/96'::cidr
                              AND ('::ffff:0.0.0.0'::inet OPERATOR(pg_catalog.+) (addr OPERATOR(pg_catalog.-) '0.0.0.0'::inet))
                                  OPERATOR(pg_catalog.<<=) p.proxy)) THEN
            EXIT;
        END IF;
    END LOOP;
    -- the client, or the left-most hop read when every hop is a trusted proxy
    IF pg_catalog.family(addr) = 6 THEN
        RETURN pg_catalog.text(pg_catalog.network(pg_catalog.set_masklen(addr, 64)));
    END IF;
    RETURN pg_catalog.host(addr);
END
$$;

COMMENT ON FUNCTION bv._request_client_address(text) IS
'Internal: the client address in an X-Forwarded-For value, trusting only the proxies of bv.trusted_proxies (right-most untrusted hop); NULL without trusted proxies. IPv4-mapped IPv6 addresses count as IPv4, IPv6 clients by their /64.';

REVOKE ALL ON FUNCTION bv._request_client_address(text) FROM PUBLIC;

/*
 * #17 hardening (attack review): request.path as PostgREST routes it.
 * PostgREST sets request.path to the raw path, percent-encoding included,
 * but routes the decoded one: /rpc/payment%5Fwebhook reaches the webhook.
 * Routes are looked up by the decoded path, so that an encoding cannot
 * move a request out of its route's bucket.  A path that does not decode
 * to UTF-8 is kept as it is (PostgREST answers 404 for it).
 */
CREATE FUNCTION bv._request_path_decode(path text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF path IS NULL OR pg_catalog.strpos(path, '%') = 0 THEN
        RETURN path;
    END IF;
    RETURN pg_catalog.convert_from(pg_catalog.string_agg(
               CASE WHEN m[1] IS NOT NULL THEN pg_catalog.decode(pg_catalog.substr(m[1], 2), 'hex')
                    ELSE pg_catalog.convert_to(m[2], 'UTF8') END, ''::bytea ORDER BY n), 'UTF8')
    FROM pg_catalog.regexp_matches(path, '(%[0-9A-Fa-f]{2})|([^%]+|%)', 'g') WITH ORDINALITY AS t(m, n);
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    RETURN path;
END
$$;

COMMENT ON FUNCTION bv._request_path_decode(text) IS
'Internal: a request path with its percent-encoding decoded (as PostgREST routes it), or unchanged when it does not decode to UTF-8.';

REVOKE ALL ON FUNCTION bv._request_path_decode(text) FROM PUBLIC;

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
    req_path text := bv._request_path_decode(COALESCE(pg_catalog.current_setting('request.path', true), ''));
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
        -- Only the API roles (members of bv_anon), never the login itself.
        IF role = 'bv_authenticator' OR NOT pg_catalog.pg_has_role(role, 'bv_anon', 'MEMBER') THEN
            RAISE SQLSTATE 'PT401' USING
                MESSAGE = 'token for a role that is not an API role',
                DETAIL = 'Tokens may name bv_anon, bv_user, bv_service, bv_admin or another member of bv_anon.',
                HINT = 'Issue the token for an API role.';
        END IF;
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
    SELECT r.rate, r.burst, r.self_limited INTO route FROM bv.request_routes r WHERE r.path = req_path;
    IF FOUND AND route.self_limited THEN
        RETURN;   -- the route's function calls bv._route_limit() itself
    ELSIF FOUND THEN
        bucket := 'route:' || req_path || '|' || bucket;
        rate := COALESCE(route.rate, rate);
        burst := COALESCE(route.burst, burst);
    END IF;
    wait := bv._request_bucket(bucket, rate, burst);
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

/*
 * #17 hardening (attack review): the rate limit of a self-limited route
 * (bv.request_routes.self_limited), called by the route's own function
 * once it knows whether the caller authenticated.  An unauthenticated
 * flood of a webhook drained the one bucket that the provider's signed
 * calls needed; now refused calls ('refused') and authenticated ones
 * ('authenticated') have separate buckets, refused ones per client address
 * when bv.trusted_proxies says which it is.  Raises HTTP 429 with
 * Retry-After (SQLSTATE PGRST) when the bucket is empty.  Not callable by
 * API roles: the route's SECURITY DEFINER function calls it.
 */
CREATE FUNCTION bv._route_limit(path text, outcome text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    route record;
    bucket text;
    headers jsonb;
    wait double precision;
BEGIN
    IF path IS NULL OR outcome IS NULL OR outcome NOT IN ('authenticated', 'refused') THEN
        RAISE EXCEPTION USING
            ERRCODE = CASE WHEN path IS NULL OR outcome IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
            MESSAGE = 'bv._route_limit() needs a path and the outcome authenticated or refused',
            HINT = 'Call bv._route_limit(''/rpc/my_webhook'', ''refused'') before refusing a caller.';
    END IF;
    -- A route row removed by an operator: the default limits, never an
    -- error that every call of the route would then raise.
    SELECT r.rate, r.burst INTO route FROM bv.request_routes r WHERE r.path = _route_limit.path;
    bucket := 'route:' || path || '|' || outcome;
    IF outcome = 'refused' THEN
        BEGIN
            headers := NULLIF(pg_catalog.current_setting('request.headers', true), '')::jsonb;
        EXCEPTION WHEN invalid_text_representation OR program_limit_exceeded OR statement_too_complex THEN
            headers := NULL;
        END;
        IF pg_catalog.jsonb_typeof(headers) = 'object' AND pg_catalog.jsonb_typeof(headers -> 'x-forwarded-for') = 'string' THEN
            bucket := bucket || '|' || COALESCE(bv._request_client_address(headers ->> 'x-forwarded-for'), '');
        END IF;
    END IF;
    wait := bv._request_bucket(bucket,
                COALESCE(route.rate, pg_catalog.current_setting('bv.request_rate')::double precision),
                COALESCE(route.burst, pg_catalog.current_setting('bv.request_burst')::double precision));
    IF wait > 0 THEN
        RAISE SQLSTATE 'PGRST' USING
            MESSAGE = pg_catalog.json_build_object('code', 'PT429', 'message', 'rate limit exceeded',
                'details', pg_catalog.format('Retry after %s seconds.', pg_catalog.ceil(wait)::integer),
                'hint', 'Slow down: wait before sending more requests.')::text,
            DETAIL = pg_catalog.json_build_object('status', 429,
                'headers', pg_catalog.json_build_object('Retry-After', pg_catalog.ceil(wait)::integer::text))::text;
    END IF;
END
$$;

COMMENT ON FUNCTION bv._route_limit(text, text) IS
'Internal: the rate limit of a self-limited route of bv.request_routes, in separate buckets for authenticated and refused calls (refused ones per trusted client address); HTTP 429 with Retry-After when empty. For the SECURITY DEFINER function behind the route.';

REVOKE ALL ON FUNCTION bv._route_limit(text, text) FROM PUBLIC;

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

------------------------------------------------------------------------
-- #17 items 1-4: bv.jwt_keys refuses weak keys and checks its rows itself
--
-- The checks are in C (bv._jwt_key_check(), jwt_crypto.c, jwt_keys.c):
-- RSA exponents (odd, >= 65537), EC points (on the curve, not infinity),
-- Ed25519 points (canonical, on the curve, not of small order), HMAC
-- secrets that are or contain keys (PEM anywhere, DER, base64 DER, JWK),
-- and every column a constraint checks, before the constraint, so that no
-- "Failing row contains" detail ever quotes a secret.  A key accepted by
-- 0.2.0 and refused now is skipped by the key cache with a WARNING; it can
-- still be deactivated (UPDATE ... SET active = false) or deleted.
------------------------------------------------------------------------

COMMENT ON TABLE bv.jwt_keys IS
'Keys that bv.jwt_verify() accepts. The key decides the algorithm: a token''s alg must equal its key''s. Weak or malformed keys are refused on write (SQLSTATE 22023, or 22004 for a NULL): HMAC secrets shorter than the hash or that contain a key (PEM, DER, JWK), RSA under 2048 bits or with an exponent that is even or below 65537, EC points off the curve or at infinity, Ed25519 points that are non-canonical, off the curve or of small order. Errors never quote the key. Changes reach every session at commit, without restart. bv_admin only.';

------------------------------------------------------------------------
-- #17 item 5: one jti rule, in bytes: 1 to 256 bytes
--
-- bv.jwt_verify() and the revocation cache measure a jti in bytes;
-- bv.jwt_revoke() counted characters, so a multibyte jti could be "revoked"
-- and keep working.  Now bv.jwt_revoke() refuses what cannot be revoked,
-- bv.jwt_verify() refuses such a jti as malformed, and bv.jwt_is_revoked()
-- answers true for it (no token is unrevocable on any entry point).  Rows
-- written by 0.2.0 are kept (NOT VALID): those tokens are refused anyway.
------------------------------------------------------------------------

ALTER TABLE bv.jwt_revocations ADD CONSTRAINT jwt_revocations_jti_bytes
    CHECK (pg_catalog.octet_length(jti) BETWEEN 1 AND 256) NOT VALID;
DO $validate$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM bv.jwt_revocations r WHERE pg_catalog.octet_length(r.jti) > 256) THEN
        ALTER TABLE bv.jwt_revocations VALIDATE CONSTRAINT jwt_revocations_jti_bytes;
    END IF;
END
$validate$;

CREATE OR REPLACE FUNCTION bv.jwt_revoke(jti text, expires_at timestamptz DEFAULT NULL, reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jwt_revoke.jti IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'jti must not be null',
            DETAIL = 'A token is revoked by its jti claim.',
            HINT = 'Pass the jti claim of the token to revoke.';
    END IF;
    IF pg_catalog.octet_length(jwt_revoke.jti) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('jti of %s bytes cannot be revoked', pg_catalog.octet_length(jwt_revoke.jti)),
            DETAIL = 'A jti has 1 to 256 bytes (UTF-8); bv.jwt_verify() refuses tokens with any other jti, so they need no revocation.',
            HINT = 'Pass the token''s jti claim exactly as issued.';
    END IF;
    IF pg_catalog.length(jwt_revoke.reason) > 1000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'reason is longer than 1000 characters',
            HINT = 'Give a short reason for the operators.';
    END IF;
    INSERT INTO bv.jwt_revocations AS r (jti, expires_at, reason)
    VALUES (jwt_revoke.jti, jwt_revoke.expires_at, jwt_revoke.reason)
    ON CONFLICT ON CONSTRAINT jwt_revocations_pkey DO UPDATE
        SET expires_at = EXCLUDED.expires_at, reason = EXCLUDED.reason;
END
$$;

COMMENT ON FUNCTION bv.jwt_revoke(text, timestamptz, text) IS
'Revokes a token by its jti (1 to 256 bytes; SQLSTATE 22023 otherwise, 22004 for NULL) until expires_at (its own exp; NULL: for ever). Effective in every session at commit. bv_admin only.';

COMMENT ON FUNCTION bv.jwt_is_revoked(text) IS
'Whether a token id (jti) is on the revocation list bv.jwt_revocations and not past its expiry. True also for a jti that cannot be revoked (empty or over 256 bytes), which bv.jwt_verify() never accepts. NULL for NULL (STRICT).';

COMMENT ON FUNCTION bv.jwt_verify(text) IS
'Verifies a compact JWS with the keys of bv.jwt_keys and returns its claims. Refuses, with SQLSTATE 28000 and a message that never contains the token: alg none or not matching the key, unknown kid, bad signature, malformed or oversize tokens, crit headers, expired (exp required unless bv.jwt_require_exp is off), future nbf/iat (leeway bv.jwt_leeway), wrong iss/aud (bv.jwt_issuer, bv.jwt_audience, jwt_keys.issuer), a jti that is not a string of 1 to 256 bytes, revoked jti, and replayed jti when bv.jwt_replay_check is on (53400 when the replay table has no room for a new jti: it never forgets an unexpired one). NULL for NULL (STRICT).';

COMMENT ON FUNCTION bv.jwt_sign(jsonb, text) IS
'Signs a claims object with key kid of bv.jwt_keys (an HS secret or a PEM private key) and returns the compact JWS, for service tokens and tests. NULL for NULL (STRICT). bv_admin only.';

------------------------------------------------------------------------
-- #17 item 6: the replay table never forgets an unexpired jti
--
-- Replay entries are pinned in the shared-memory table of the rate
-- limiter until their token expires; a new jti that finds no room is
-- refused (53400) rather than evicting one.  This shows the pressure.
------------------------------------------------------------------------

CREATE FUNCTION bv.jwt_replay_stats(
    OUT slots bigint, OUT replay_entries bigint, OUT replay_refused bigint,
    OUT rate_limit_untracked bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'bv_jwt_replay_stats'
LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION bv.jwt_replay_stats() IS
'Pressure on the jti replay table (bv.jwt_replay_check), which shares the rate limiter''s slots: slots in all, unexpired jtis held (never evicted), tokens refused with 53400 since start because no slot was free for their jti, and rate-limit keys that found no slot for the same reason (allowed without a bucket). If replay_refused grows, raise bv.rate_limit_buckets or shorten token lifetimes. bv_admin only.';

REVOKE ALL ON FUNCTION bv.jwt_replay_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.jwt_replay_stats() TO bv_admin;

------------------------------------------------------------------------
-- #17 item 15 (bv_core): NULL and bad arguments give 22004/22023 with a
-- hint, never a raw constraint error, and messages quote at most 64
-- characters of a client value.  STRICT functions return NULL for NULL,
-- as their comments say; the rate limiter raises instead (a NULL would
-- silently skip the limit).
------------------------------------------------------------------------

ALTER FUNCTION bv.rate_limit(text, double precision, double precision) CALLED ON NULL INPUT;
ALTER FUNCTION bv.rate_limit_enforce(text, double precision, double precision) CALLED ON NULL INPUT;
ALTER FUNCTION bv.rate_limit_retry_after(text, double precision, double precision) CALLED ON NULL INPUT;

-- Malformed request.jwt.claims: 22023 with a hint (as bv.actor()), not a
-- raw 22P02 from a jsonb cast.  In C, the claims' parse cached per request.
CREATE OR REPLACE FUNCTION bv.current_user_id()
RETURNS text
AS 'MODULE_PATHNAME', 'bv_current_user_id'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION bv.current_user_id() IS
'Id of the user the request acts for: bv.actor (set by bv.set_actor) or else the sub claim of request.jwt.claims; NULL for anonymous requests. Malformed claims or a sub that is not a usable id raise 22023. Owner-based policies compare the owner column with (SELECT bv.current_user_id()).';

CREATE OR REPLACE FUNCTION bv.has_scope(scope text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'bv_has_scope'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION bv.has_scope(text) IS
'Whether the request''s scope claim (space-separated, OAuth2 style; API keys set it too) contains scope. False without claims, NULL for NULL (STRICT); malformed claims raise 22023.';

CREATE OR REPLACE FUNCTION bv.jwt_import_jwks(jwks jsonb, issuer text DEFAULT NULL)
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
    IF jwks IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'jwks must not be null',
            HINT = 'Pass the document served at the identity provider''s jwks_uri.';
    END IF;
    IF pg_catalog.jsonb_typeof(jwks -> 'keys') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'a JWKS must be an object with a "keys" array',
            DETAIL = 'RFC 7517 section 5: {"keys": [<JWK>, ...]}.',
            HINT = 'Pass the document served at the identity provider''s jwks_uri.';
    END IF;
    FOR jwk IN SELECT e FROM pg_catalog.jsonb_array_elements(jwks -> 'keys') AS e LOOP
        IF pg_catalog.jsonb_typeof(jwk) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'an element of the JWKS "keys" array is not an object',
                DETAIL = 'RFC 7517 section 5: every element of "keys" is a JWK, a JSON object.',
                HINT = 'Pass the document served at the identity provider''s jwks_uri.';
        END IF;
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
                MESSAGE = pg_catalog.format('JWK %s is a private or symmetric key', pg_catalog.quote_literal(pg_catalog.left(jwk_kid, 64))),
                DETAIL = 'A JWKS of an identity provider publishes public keys only.',
                HINT = 'Import public keys only; add HS secrets with INSERT INTO bv.jwt_keys.';
        END IF;
        jwk_alg := COALESCE(jwk ->> 'alg',
                        CASE jwk ->> 'kty'
                            WHEN 'RSA' THEN 'RS256'
                            WHEN 'OKP' THEN 'EdDSA'
                            WHEN 'EC' THEN CASE jwk ->> 'crv' WHEN 'P-256' THEN 'ES256' WHEN 'P-384' THEN 'ES384' END
                        END);
        -- #17 hardening (attack review): kids are unique across issuers.
        -- A second provider's JWKS (or a set that lists a kid twice) must
        -- not replace another issuer's key: tokens of that issuer would stop
        -- verifying, or be checked against the wrong provider's key.
        IF jwk_kid = ANY (kids) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'invalid_parameter_value',
                MESSAGE = pg_catalog.format('the JWKS lists kid %s twice', pg_catalog.quote_literal(pg_catalog.left(jwk_kid, 64))),
                DETAIL = 'Tokens select their key by kid, so a kid names one key.',
                HINT = 'Import the provider''s JWKS as it publishes it; a set with repeated kids is malformed.';
        END IF;
        IF EXISTS (SELECT 1 FROM bv.jwt_keys k WHERE k.kid = jwk_kid AND k.source = 'jwks'
                   AND k.issuer IS DISTINCT FROM jwt_import_jwks.issuer) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'unique_violation',
                MESSAGE = pg_catalog.format('key %s was imported for another issuer', pg_catalog.quote_literal(pg_catalog.left(jwk_kid, 64))),
                DETAIL = 'bv.jwt_import_jwks() replaces only keys it imported for the same issuer.',
                HINT = 'Delete the other issuer''s key first if it is really gone.';
        END IF;
        IF EXISTS (SELECT 1 FROM bv.jwt_keys k WHERE k.kid = jwk_kid AND k.source <> 'jwks') THEN
            RAISE EXCEPTION USING
                ERRCODE = 'unique_violation',
                MESSAGE = pg_catalog.format('key %s already exists and was not imported from a JWKS', pg_catalog.quote_literal(pg_catalog.left(jwk_kid, 64))),
                DETAIL = 'bv.jwt_import_jwks() only replaces keys it imported itself.',
                HINT = 'Delete or rename the manual key first.';
        END IF;
        -- bv._jwt_key_check() refuses a weak or malformed key (22023)
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
'Creates an API key for owner (1 to 256 characters) with the given scopes and optional expiry, and returns it: "bvk_" followed by 32 random bytes in base64url. The key is shown only this once; only its SHA-256 is stored. NULL arguments raise 22004, bad ones 22023. bv_admin only.';

COMMENT ON FUNCTION bv.api_key_verify(text) IS
'The id, owner, role and scopes of a valid (known, unrevoked, unexpired) API key; all NULL otherwise, and for NULL. Looks the key up by its SHA-256, never by the key itself.';

COMMENT ON FUNCTION bv.api_key_list(text) IS
'API keys of one owner, or of all owners when owner is NULL, without their hashes. bv_admin only.';

CREATE OR REPLACE FUNCTION bv.api_key_revoke(id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF api_key_revoke.id IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'API key id must not be null',
            HINT = 'bv.api_key_list() shows the ids.';
    END IF;
    UPDATE bv.api_keys k SET revoked_at = pg_catalog.now()
    WHERE k.id = api_key_revoke.id AND k.revoked_at IS NULL;
    RETURN FOUND;
END
$$;

-- Secrets: the name is checked here, with its own message, before the
-- table's CHECK would report it as a raw 23514.
CREATE FUNCTION bv._secret_check_name(name text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'secret name must not be null',
            HINT = 'Name secrets like webhook:orders or kafka:password.';
    END IF;
    IF name !~ '^[A-Za-z0-9_.:/-]{1,200}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = pg_catalog.format('invalid secret name %s', pg_catalog.quote_literal(pg_catalog.left(name, 64))),
            DETAIL = 'A secret name has 1 to 200 characters among letters, digits and _ . : / -.',
            HINT = 'Name secrets like webhook:orders or kafka:password.';
    END IF;
END
$$;

COMMENT ON FUNCTION bv._secret_check_name(text) IS
'Internal: raises 22004/22023 unless name is a valid secret name.';

REVOKE ALL ON FUNCTION bv._secret_check_name(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bv.secret_set(name text, value text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv._secret_check_name(secret_set.name);
    IF secret_set.value IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'secret value must not be null',
            HINT = 'Delete a secret with bv.secret_delete(name).';
    END IF;
    INSERT INTO bv.secrets AS s (name, sealed)
    VALUES (secret_set.name, bv._secret_seal(secret_set.name, secret_set.value))
    ON CONFLICT ON CONSTRAINT secrets_pkey DO UPDATE
        SET sealed = EXCLUDED.sealed, updated_at = pg_catalog.now();
END
$$;

CREATE OR REPLACE FUNCTION bv.secret_get(name text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s bytea;
BEGIN
    PERFORM bv._secret_check_name(secret_get.name);
    SELECT x.sealed INTO s FROM bv.secrets x WHERE x.name = secret_get.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'undefined_object',
            MESSAGE = pg_catalog.format('secret %s does not exist', pg_catalog.quote_literal(pg_catalog.left(secret_get.name, 64))),
            DETAIL = 'There is no row with this name in bv.secrets.',
            HINT = 'Set it with bv.secret_set(name, value).';
    END IF;
    RETURN bv._secret_open(secret_get.name, s);
END
$$;

CREATE OR REPLACE FUNCTION bv.secret_delete(name text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bv._secret_check_name(secret_delete.name);
    DELETE FROM bv.secrets s WHERE s.name = secret_delete.name;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION bv.secrets_rotate_master_key(old_key_file text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    IF old_key_file IS NULL OR old_key_file = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = CASE WHEN old_key_file IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
            MESSAGE = 'old_key_file must name the previous master key''s file',
            HINT = 'Pass the path bv.master_key_file had before the rotation.';
    END IF;
    UPDATE bv.secrets s
    SET sealed = bv._secret_reseal(s.name, s.sealed, old_key_file), updated_at = pg_catalog.now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION bv.enable_owner_rls(target regclass, owner_column name DEFAULT 'owner_id')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col_type regtype;
BEGIN
    IF target IS NULL OR owner_column IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'target and owner_column must not be null',
            HINT = 'Call bv.enable_owner_rls(''app.orders'', ''owner_id'').';
    END IF;
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

------------------------------------------------------------------------
-- Schema api: the REST surface PostgREST serves, shared by every domain
-- (bv_commerce, bv_ml, bv_social, bv_iot publish views and functions into
-- it).  It belongs to the foundation so that any domain can be installed
-- first; where bv_commerce 0.2.0 already created it, it stays where it is.
------------------------------------------------------------------------
DO $$
BEGIN
    IF pg_catalog.to_regnamespace('api') IS NULL THEN
        CREATE SCHEMA api;
    END IF;
END
$$;
COMMENT ON SCHEMA api IS 'BitVelocity REST API (PostgREST): the views and functions every domain publishes; API roles see only what they are granted.';
GRANT USAGE ON SCHEMA api TO bv_anon;
