-- bv_core security: API keys (create, hash-only storage, verify, list,
-- revoke, expiry, scopes to roles, privileges).
BEGIN;
SELECT plan(21);

CREATE TEMP TABLE k AS
SELECT bv.api_key_create('user-1', ARRAY['read', 'write']) AS key1,
       bv.api_key_create('svc-1', ARRAY['read', 'service'], now() + interval '1 day') AS key2;

SELECT matches((SELECT key1 FROM k), '^bvk_[A-Za-z0-9_-]{43}$', 'a key is bvk_ and 32 random bytes in base64url');
SELECT isnt((SELECT key1 FROM k), (SELECT key2 FROM k), 'two keys differ');
SELECT is((SELECT count(*)::int FROM bv.api_keys a, k
           WHERE a.key_hash = sha256(convert_to(k.key1, 'UTF8'))), 1, 'the SHA-256 of the key is stored');
SELECT is((SELECT count(*)::int FROM bv.api_keys a, k
           WHERE strpos(a::text, k.key1) > 0 OR strpos(a::text, substr(k.key1, 13)) > 0), 0,
          'no column holds the key or its secret part');
SELECT is((SELECT prefix FROM bv.api_keys WHERE owner = 'user-1'), (SELECT left(key1, 12) FROM k),
          'the prefix is the first 12 characters');

SELECT is((SELECT row(v.owner, v.role, v.scopes)::text FROM k, bv.api_key_verify(k.key1) v),
          '(user-1,bv_user,"{read,write}")', 'verify: owner, role and scopes of a user key');
SELECT is((SELECT v.role::text FROM k, bv.api_key_verify(k.key2) v), 'bv_service',
          'a key acts as the most privileged role among its scopes');
SELECT ok((SELECT v.id IS NULL FROM bv.api_key_verify('bvk_' || repeat('A', 43)) v), 'an unknown key does not verify');
SELECT ok((SELECT v.id IS NULL FROM k, bv.api_key_verify(k.key1 || 'x') v), 'a longer key does not verify');
SELECT ok((SELECT v.id IS NULL FROM k, bv.api_key_verify(upper(k.key1)) v), 'keys are case-sensitive');

SELECT is((SELECT count(*)::int FROM bv.api_key_list('user-1')), 1, 'api_key_list filters by owner');
SELECT ok(NOT EXISTS (SELECT 1 FROM information_schema.routines r
                      JOIN information_schema.parameters p USING (specific_schema, specific_name)
                      WHERE r.routine_schema = 'bv' AND r.routine_name = 'api_key_list'
                        AND p.parameter_name = 'key_hash'), 'api_key_list does not return hashes');

SELECT ok(bv.api_key_revoke((SELECT id FROM bv.api_keys WHERE owner = 'user-1')), 'revoke returns true');
SELECT ok(NOT bv.api_key_revoke((SELECT id FROM bv.api_keys WHERE owner = 'user-1')), 'revoking twice returns false');
SELECT ok((SELECT v.id IS NULL FROM k, bv.api_key_verify(k.key1) v), 'a revoked key does not verify');
UPDATE bv.api_keys SET expires_at = now() - interval '1 second' WHERE owner = 'svc-1';
SELECT ok((SELECT v.id IS NULL FROM k, bv.api_key_verify(k.key2) v), 'an expired key does not verify');

SELECT throws_ok($$SELECT bv.api_key_create('u', ARRAY['root'])$$, '22023', 'unknown API key scope ''root''',
                 'an unknown scope is refused');
SELECT throws_ok($$SELECT bv.api_key_create('u', ARRAY[]::text[])$$, '22023', 'an API key needs an owner and at least one scope',
                 'a key without scopes is refused');
SELECT throws_ok($$SELECT bv.api_key_create('u', ARRAY['read'], now() - interval '1 day')$$, '22023',
                 'an API key cannot expire in the past', 'an expiry in the past is refused');

SELECT ok(NOT has_function_privilege('bv_service', 'bv.api_key_create(text, text[], timestamptz)', 'EXECUTE')
          AND has_function_privilege('bv_admin', 'bv.api_key_create(text, text[], timestamptz)', 'EXECUTE'),
          'only bv_admin creates keys');
SELECT ok(NOT has_table_privilege('bv_admin', 'bv.api_keys', 'SELECT')
          AND has_function_privilege('bv_anon', 'bv.api_key_verify(text)', 'EXECUTE'),
          'nobody reads the hash table directly; everyone can verify a key they hold');

SELECT * FROM finish();
ROLLBACK;
