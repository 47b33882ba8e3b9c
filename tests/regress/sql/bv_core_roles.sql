-- The API roles of the PostgREST model and their grants.

SELECT rolname, rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls
FROM pg_roles
WHERE rolname IN ('bv_authenticator', 'bv_anon', 'bv_user', 'bv_service', 'bv_admin')
ORDER BY rolname;

-- The authenticator can switch to every API role; each role includes the
-- one below it (anon < user < service < admin).
SELECT r.rolname AS role, m.rolname AS member
FROM pg_auth_members a
JOIN pg_roles r ON r.oid = a.roleid
JOIN pg_roles m ON m.oid = a.member
WHERE r.rolname LIKE 'bv\_%'
ORDER BY 1, 2;

-- What each role may run in schema bv.
SELECT r AS role,
       has_schema_privilege(r, 'bv', 'USAGE') AS bv_usage,
       has_function_privilege(r, 'bv.actor()', 'EXECUTE') AS actor,
       has_function_privilege(r, 'bv.set_actor(text)', 'EXECUTE') AS set_actor,
       has_function_privilege(r, 'bv.trace_context()', 'EXECUTE') AS trace_context,
       has_table_privilege(r, 'bv.extensions', 'SELECT') AS extensions
FROM unnest(ARRAY['bv_anon', 'bv_user', 'bv_service', 'bv_admin', 'bv_authenticator']) AS r
ORDER BY 1;

-- Roles are cluster-wide: a second database that installs bv_core finds
-- them, changes nothing, and keeps an administrator's changes.
ALTER ROLE bv_authenticator CONNECTION LIMIT 50;
CREATE DATABASE bv_regress_second;
\c bv_regress_second
SELECT count(*) AS roles_before FROM pg_roles WHERE rolname LIKE 'bv\_%';
CREATE EXTENSION bv_core;
SELECT count(*) AS roles_after FROM pg_roles WHERE rolname LIKE 'bv\_%';
SELECT rolconnlimit FROM pg_roles WHERE rolname = 'bv_authenticator';
-- Dropping the extension keeps the roles the other databases use.
DROP EXTENSION bv_core;
SELECT count(*) AS roles_kept FROM pg_roles WHERE rolname LIKE 'bv\_%';

-- Only superusers can install it (it creates roles).
CREATE ROLE bv_regress_owner LOGIN CREATEDB;
SET ROLE bv_regress_owner;
CREATE EXTENSION bv_core;
RESET ROLE;
DROP ROLE bv_regress_owner;
\c bitvelocity
DROP DATABASE bv_regress_second;
ALTER ROLE bv_authenticator CONNECTION LIMIT -1;
