-- bv.actor() precedence: bv.actor setting > JWT "sub" claim > session_user.

-- Nothing set: the session user.
SELECT bv.actor() = session_user AS actor_is_session_user;

-- A JWT claims document with a "sub", as PostgREST sets it per request.
BEGIN;
SELECT set_config('request.jwt.claims', '{"role":"bv_user","sub":"user-42"}', true) IS NOT NULL AS claims_set;
SELECT bv.actor();
-- bv.set_actor() wins over the claim, for this transaction only.
SELECT bv.set_actor('billing-service');
SELECT bv.actor();
COMMIT;
-- Both were transaction-local: back to the session user.
SELECT bv.actor() = session_user AS actor_is_session_user;

-- A later request with other claims is not served from the cache.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":"user-1"}', true) IS NOT NULL;
SELECT bv.actor();
SELECT set_config('request.jwt.claims', '{"sub":"user-2"}', true) IS NOT NULL;
SELECT bv.actor();
-- Escapes in the claim are decoded; the last duplicate key wins, as in jsonb.
SELECT set_config('request.jwt.claims', '{"sub":"a\u00e9\"b"}', true) IS NOT NULL;
SELECT bv.actor();
SELECT set_config('request.jwt.claims', '{"sub":"first","x":{"sub":"nested"},"sub":"last"}', true) IS NOT NULL;
SELECT bv.actor();
-- Claims without a "sub" (an anonymous token) fall through to session_user.
SELECT set_config('request.jwt.claims', '{"role":"bv_anon","sub":null}', true) IS NOT NULL;
SELECT bv.actor() = session_user AS actor_is_session_user;
SELECT set_config('request.jwt.claims', '[1,2]', true) IS NOT NULL;
SELECT bv.actor() = session_user AS actor_is_session_user;
ROLLBACK;

-- bv.set_actor() refuses unusable actors with SQLSTATE 22023.
\set VERBOSITY default
SELECT bv.set_actor('');
SELECT bv.set_actor(repeat('x', 257));
SELECT length(bv.set_actor(repeat('é', 256))) AS accepted_length;
SELECT bv.set_actor(E'alice\nbob');
SELECT bv.set_actor(NULL);
\set VERBOSITY sqlstate
SELECT bv.set_actor('');
SELECT bv.set_actor(NULL);
\set VERBOSITY default

-- The setting itself applies the same checks, however it is set.
SET bv.actor = 'tab	here';
SET bv.actor = 'ok-actor';
SELECT bv.actor();
RESET bv.actor;

-- Bad claims are errors, not a silent fall-through to the login role.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":', true) IS NOT NULL;
SELECT bv.actor();
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":12345}', true) IS NOT NULL;
SELECT bv.actor();
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub":""}', true) IS NOT NULL;
SELECT bv.actor();
ROLLBACK;

-- Only privileged roles may name the actor: bv_user can neither SET it nor
-- call bv.set_actor(); bv_service can call it.
SET ROLE bv_user;
SET bv.actor = 'mallory';
SELECT bv.set_actor('mallory');
SELECT bv.actor() = session_user AS actor_is_session_user;
RESET ROLE;
SET ROLE bv_service;
BEGIN;
SELECT bv.set_actor('on-behalf-of-user-7');
SELECT bv.actor();
COMMIT;
RESET ROLE;

-- Without a setting or claims the actor is the session user, also after SET
-- SESSION AUTHORIZATION names another one (the name is cached per role).
SELECT bv.actor() = session_user AS actor_is_session_user;
SET SESSION AUTHORIZATION bv_user;
SELECT bv.actor() = 'bv_user' AS actor_is_new_session_user;
RESET SESSION AUTHORIZATION;
SELECT bv.actor() = session_user AS actor_is_session_user_again;
