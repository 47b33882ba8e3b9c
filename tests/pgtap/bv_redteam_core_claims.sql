-- Red-team round 3, bv_core: forged request.jwt.claims in a direct SQL
-- session.  request.jwt.claims is a placeholder setting that any session can
-- SET; bv.actor(), bv.current_user_id() and bv.has_scope() believed it, so a
-- login role with SQL access (here a member of bv_user) named any user and
-- read that user's rows under owner row-level security, and had its writes
-- recorded under that user's name by bv_audit.  Claims now count only in
-- sessions of a superuser or of bv_authenticator (PostgREST, whose requests
-- bv.pre_request() verifies); elsewhere they are refused with 42501.
BEGIN;
SELECT plan(14);

CREATE ROLE rt_claims_app LOGIN IN ROLE bv_user;
CREATE SCHEMA rt_claims;
GRANT USAGE ON SCHEMA rt_claims TO bv_user;
CREATE TABLE rt_claims.notes (id int PRIMARY KEY, owner_id text NOT NULL, body text);
GRANT SELECT, INSERT, UPDATE, DELETE ON rt_claims.notes TO bv_user;
SELECT bv.enable_owner_rls('rt_claims.notes');
INSERT INTO rt_claims.notes VALUES (1, 'alice', 'alice''s secret'), (2, 'rt_claims_app', 'mine');
SELECT bv_audit.enable('rt_claims.notes');

-- ---- an untrusted session: its claims are refused ----
SET SESSION AUTHORIZATION rt_claims_app;
SELECT is(bv.actor(), 'rt_claims_app', 'without claims the login role is the actor');
SELECT is(bv.current_user_id(), NULL, 'and no user for owner RLS');
SET request.jwt.claims = '{"sub": "alice", "role": "bv_user", "scope": "admin"}';
SELECT throws_ok($$SELECT bv.current_user_id()$$, '42501', 'request.jwt.claims is honoured only in sessions of bv_authenticator',
                 'forged claims cannot name the RLS user');
SELECT throws_ok($$SELECT body FROM rt_claims.notes$$, '42501', NULL,
                 'a read under owner RLS with forged claims is refused, not alice''s rows');
SELECT throws_ok($$SELECT bv.actor()$$, '42501', NULL, 'forged claims cannot name the actor');
SELECT throws_ok($$SELECT bv.has_scope('admin')$$, '42501', NULL, 'forged claims cannot grant a scope');
SELECT throws_ok($$UPDATE rt_claims.notes SET body = 'x' WHERE id = 2$$, '42501', NULL,
                 'a write is not audited under a forged actor');
SET request.jwt.claims = '';
SELECT is(bv.actor(), 'rt_claims_app', 'cleared claims: the login role again');
RESET request.jwt.claims;
SET ROLE bv_user;
SELECT is((SELECT string_agg(body, ',') FROM rt_claims.notes), NULL, 'no claims, no user: owner RLS shows nothing');
RESET ROLE;
RESET SESSION AUTHORIZATION;

-- ---- PostgREST's login and superusers are trusted ----
SET SESSION AUTHORIZATION bv_authenticator;
SET request.jwt.claims = '{"sub": "alice", "role": "bv_user"}';
SELECT is(bv.current_user_id(), 'alice', 'bv_authenticator''s claims (verified by pre_request) name the user');
SET ROLE bv_user;
SELECT is((SELECT string_agg(body, ',') FROM rt_claims.notes), 'alice''s secret', 'and owner RLS follows them');
RESET ROLE;
RESET request.jwt.claims;
RESET SESSION AUTHORIZATION;
SET request.jwt.claims = '{"sub": "bob", "scope": "read"}';
SELECT is(bv.actor(), 'bob', 'a superuser session may set claims (tests, workers)');
SELECT ok(bv.has_scope('read'), 'and scopes');
RESET request.jwt.claims;
-- bv.set_actor() is the way for services
SET SESSION AUTHORIZATION rt_claims_app;
SELECT is(bv.actor(), 'rt_claims_app', 'bv.set_actor() stays the services'' way (needs bv_service)');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;
