-- bv_core security: row-level security conventions (bv.current_user_id,
-- bv.has_scope, bv.enable_owner_rls) and isolation between two users.
BEGIN;
SELECT plan(16);

CREATE TABLE public.bv_rls_notes (id serial PRIMARY KEY, owner_id text NOT NULL, body text);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.bv_rls_notes TO bv_user;
GRANT USAGE ON SEQUENCE public.bv_rls_notes_id_seq TO bv_user;
SELECT lives_ok($$SELECT bv.enable_owner_rls('public.bv_rls_notes')$$, 'enable_owner_rls');
SELECT lives_ok($$SELECT bv.enable_owner_rls('public.bv_rls_notes')$$, 'enable_owner_rls is idempotent');
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'public.bv_rls_notes'::regclass),
          'row-level security is enabled and forced');
SELECT is((SELECT array_agg(polname::text ORDER BY polname) FROM pg_policy WHERE polrelid = 'public.bv_rls_notes'::regclass),
          ARRAY['bv_owner', 'bv_service'], 'the owner and service policies exist');
SELECT throws_ok($$SELECT bv.enable_owner_rls('public.bv_rls_notes', 'nope')$$, '42703', NULL, 'a missing owner column');
SELECT throws_ok($$SELECT bv.enable_owner_rls('public.bv_rls_notes', 'id')$$, '42804', NULL, 'an owner column that is not text');

-- alice writes two notes (the owner defaults to her id)
SET LOCAL ROLE bv_user;
SELECT set_config('request.jwt.claims', '{"sub":"alice","role":"bv_user","scope":"read write"}', true);
SELECT is(bv.current_user_id(), 'alice', 'current_user_id is the sub claim');
SELECT ok(bv.has_scope('write') AND NOT bv.has_scope('admin'), 'has_scope reads the scope claim');
INSERT INTO public.bv_rls_notes (body) VALUES ('a1'), ('a2');
-- bob writes one, and cannot write one in alice's name
SELECT set_config('request.jwt.claims', '{"sub":"bob","role":"bv_user"}', true);
INSERT INTO public.bv_rls_notes (body) VALUES ('b1');
SELECT throws_ok($$INSERT INTO public.bv_rls_notes (owner_id, body) VALUES ('alice', 'forged')$$, '42501', NULL,
                 'bob cannot insert a row owned by alice');
SELECT is((SELECT array_agg(body ORDER BY body) FROM public.bv_rls_notes), ARRAY['b1'], 'bob sees only his note');
UPDATE public.bv_rls_notes SET body = 'hacked';
DELETE FROM public.bv_rls_notes WHERE body LIKE 'a%';
SELECT set_config('request.jwt.claims', '{"sub":"alice","role":"bv_user"}', true);
SELECT is((SELECT array_agg(body ORDER BY body) FROM public.bv_rls_notes), ARRAY['a1', 'a2'],
          'alice sees her notes, untouched by bob''s UPDATE and DELETE');
SELECT set_config('request.jwt.claims', '{"role":"bv_user"}', true);
SELECT is(bv.current_user_id(), NULL, 'no sub: no user id');
SELECT is((SELECT count(*)::int FROM public.bv_rls_notes), 0, 'a request without a user sees nothing');
RESET ROLE;
SET LOCAL ROLE bv_service;
SELECT is((SELECT count(*)::int FROM public.bv_rls_notes), 3, 'bv_service sees every row');
RESET ROLE;
SELECT is(bv.current_user_id(), NULL, 'a plain SQL session has no user id');
SELECT ok(bv.set_actor('svc-acting-for-carol') IS NOT NULL AND bv.current_user_id() = 'svc-acting-for-carol',
          'bv.set_actor names the user a service acts for');

SELECT * FROM finish();
ROLLBACK;
