/*
 * bv_core 0.4.0 -> 0.5.0: red-team round 3.
 *
 * Requests without a time limit.  No API role had a statement_timeout, so
 * one PostgREST request (an unindexed filter or pattern on a large view, a
 * deep GraphQL query, a slow RPC) ran for as long as it liked and held one
 * of PostgREST's pooled connections (10 by default) meanwhile: a handful of
 * anonymous requests made the API unavailable.  PostgREST (11.1+) applies
 * the settings of the role it impersonates (ALTER ROLE ... SET) to each
 * request, so the API roles now get a statement_timeout: bv_anon 10 s,
 * bv_user 30 s, bv_service 60 s (bv_admin none).  A request over its limit
 * fails with SQLSTATE 57014 and nothing it did is kept.  The roles are
 * NOLOGIN and cluster-wide: the setting reaches only requests that switch
 * to them, never a login session.  A value an operator already set (for
 * all databases) is kept; change them with
 *     ALTER ROLE bv_anon SET statement_timeout = '5s';
 * and `NOTIFY pgrst, 'reload config'` (or a PostgREST restart).
 * tests/tap/bv_redteam_rest3_timeouts.pl.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_core UPDATE TO '0.5.0'" to load this file. \quit

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES ('bv_anon', '10s'), ('bv_user', '30s'), ('bv_service', '60s')) v(role, timeout)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c
                        WHERE s.setrole = r.role::regrole AND s.setdatabase = 0
                          AND c LIKE 'statement\_timeout=%') THEN
            EXECUTE pg_catalog.format('ALTER ROLE %I SET statement_timeout = %L', r.role, r.timeout);
        END IF;
    END LOOP;
END
$$;
