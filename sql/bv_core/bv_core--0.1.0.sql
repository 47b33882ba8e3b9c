/*
 * bv_core 0.1.0: schema "bv", the API roles and the request context.
 *
 * Roles are cluster-wide, so a second database that installs bv_core finds
 * them already there: every role and membership is created only when
 * missing, and an existing role is left as its administrator set it (a
 * password on bv_authenticator, for example).  Roles are not extension
 * members: DROP EXTENSION leaves them in place for the other databases.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION bv_core" to load this file. \quit

COMMENT ON SCHEMA bv IS 'BitVelocity core: request context (actor, trace), roles and versions.';

/*
 * The PostgREST role model: bv_authenticator logs in with no privileges of
 * its own (NOINHERIT) and switches, per request, to the role named by the
 * token: bv_anon for anonymous calls, bv_user for signed-in users,
 * bv_service for trusted back-end services, bv_admin for operators.  Each
 * role includes the one below it: anon < user < service < admin.
 */
DO $roles$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            ('bv_authenticator', true),
            ('bv_anon', false),
            ('bv_user', false),
            ('bv_service', false),
            ('bv_admin', false)) AS s(rolname, can_login)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = spec.rolname) THEN
            BEGIN
                IF spec.can_login THEN
                    EXECUTE format('CREATE ROLE %I LOGIN NOINHERIT', spec.rolname);
                ELSE
                    EXECUTE format('CREATE ROLE %I NOLOGIN', spec.rolname);
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;   -- created concurrently by another database's install
            END;
        END IF;
    END LOOP;

    FOR spec IN
        SELECT * FROM (VALUES
            ('bv_anon', 'bv_authenticator'),
            ('bv_user', 'bv_authenticator'),
            ('bv_service', 'bv_authenticator'),
            ('bv_admin', 'bv_authenticator'),
            ('bv_anon', 'bv_user'),
            ('bv_user', 'bv_service'),
            ('bv_service', 'bv_admin')) AS m(granted, member)
    LOOP
        IF NOT pg_catalog.pg_has_role(spec.member, spec.granted, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', spec.granted, spec.member);
        END IF;
    END LOOP;
END
$roles$;

GRANT USAGE ON SCHEMA bv TO bv_anon;

CREATE FUNCTION bv.version()
RETURNS text
AS 'MODULE_PATHNAME', 'bv_version'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION bv.version() IS
'Version of the loaded bv_core library.';

CREATE FUNCTION bv.actor()
RETURNS text
AS 'MODULE_PATHNAME', 'bv_actor'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION bv.actor() IS
'Actor of the current transaction: the bv.actor setting (see bv.set_actor), else the "sub" claim of request.jwt.claims, else session_user.';

CREATE FUNCTION bv.set_actor(actor text)
RETURNS text
AS 'MODULE_PATHNAME', 'bv_set_actor'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION bv.set_actor(text) IS
'Sets the actor until the end of the current transaction and returns it. Refuses an empty, over-long (over 256 characters) or control-character actor with SQLSTATE 22023.';

-- Naming somebody else as the actor is a privilege: services and admins only.
REVOKE ALL ON FUNCTION bv.set_actor(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bv.set_actor(text) TO bv_service;

CREATE FUNCTION bv.trace_context()
RETURNS text
AS 'MODULE_PATHNAME', 'bv_trace_context'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION bv.trace_context() IS
'W3C traceparent of the current request: the bv.traceparent setting, else a valid traceparent request header, else NULL.';

CREATE VIEW bv.extensions AS
SELECT a.name,
       e.extversion AS installed_version,
       a.default_version,
       e.extversion IS DISTINCT FROM a.default_version AS update_available,
       n.nspname AS schema,
       a.comment
FROM pg_catalog.pg_available_extensions a
JOIN pg_catalog.pg_extension e ON e.extname = a.name
JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE a.name LIKE 'bv\_%';

COMMENT ON VIEW bv.extensions IS
'Installed BitVelocity extensions, their installed and available versions and schemas.';

GRANT SELECT ON bv.extensions TO bv_service;
