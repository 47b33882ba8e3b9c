-- Red-team review of bv_core's arguments: hostile forms the NULL/huge sweep
-- (tap/bv_null_args) does not try: multi-dimensional arrays, non-default
-- lower bounds, NaN and infinities, 'infinity' timestamps.  Each is a
-- clear 22xxx with a hint, or accepted with a sound meaning.
BEGIN;
SELECT plan(22);

SELECT throws_ok($$SELECT bv.api_key_create('o', ARRAY[['read', 'write'], ['read', 'read']])$$,
    '22023', 'API key scopes must be a one-dimensional array',
    'a 2-D scopes array: 22023, not a raw 0A000');
SELECT throws_ok($$SELECT bv.api_key_create('o', '{{{read}}}'::text[])$$,
    '22023', 'API key scopes must be a one-dimensional array', 'a 3-D scopes array: 22023');
SELECT matches(bv.api_key_create('o', '[5:5]={read}'::text[]), '^bvk_', 'a 1-D array with another lower bound is a list');
SELECT matches(bv.api_key_create('o', ARRAY['read'], 'infinity'), '^bvk_', 'expires_at infinity: a key that does not expire');
SELECT throws_ok($$SELECT bv.api_key_create('o', ARRAY['read'], '-infinity')$$, '22023', NULL,
    'expires_at -infinity: in the past, 22023');
SELECT throws_ok($$SELECT bv.rate_limit('rt:nan', 'NaN', 1)$$, '22023', NULL, 'rate NaN: 22023');
SELECT throws_ok($$SELECT bv.rate_limit('rt:inf', 1, 'Infinity')$$, '22023', NULL, 'burst infinity: 22023');
-- A revocation until 'infinity' lasts for ever, as one with no expiry
-- (expires_at + leeway overflowed and wrapped into the past: the revoked
-- token kept working).
SELECT lives_ok($$SELECT bv.jwt_revoke('rt-forever', 'infinity')$$, 'a revocation until infinity');
SELECT ok(bv.jwt_is_revoked('rt-forever'), 'a revocation until infinity lasts');
SELECT lives_ok($$SELECT bv.jwt_revoke('rt-past', '-infinity')$$, 'a revocation until -infinity');
SELECT ok(NOT bv.jwt_is_revoked('rt-past'), 'a revocation until -infinity is over');
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rt-k', 'HS256', repeat('k', 32) || md5(random()::text));
CREATE TEMP TABLE rt_tok AS
SELECT bv.jwt_sign(jsonb_build_object('sub', 'u', 'jti', 'rt-forever-2',
                   'exp', extract(epoch FROM now() + interval '1 hour')::bigint), 'rt-k') AS t;
SELECT is((SELECT bv.jwt_verify(t) ->> 'jti' FROM rt_tok), 'rt-forever-2', 'the token verifies');
SELECT bv.jwt_revoke('rt-forever-2', 'infinity');
SELECT throws_ok($$SELECT bv.jwt_verify(t) FROM rt_tok$$, '28000', 'invalid token',
    'revoked until infinity: refused');

-- Keys sign only for their roles (bv.jwt_keys.roles): an identity
-- provider's key could mint tokens for any API role, bv_admin included.
INSERT INTO bv.jwt_keys (kid, alg, key, roles) VALUES ('rt-user-only', 'HS256', repeat('u', 32) || md5(random()::text), '{bv_user}');
CREATE TEMP TABLE rt_roles AS
SELECT r, bv.jwt_sign(jsonb_build_object('sub', 'u', 'exp', extract(epoch FROM now() + interval '1 hour')::bigint)
                      || CASE WHEN r = '-' THEN '{}'::jsonb ELSE jsonb_build_object('role', r::jsonb) END, 'rt-user-only') AS t
  FROM unnest(ARRAY['"bv_user"', '"bv_admin"', '"bv_service"', '-', '1', '["bv_user"]']) AS r;
SELECT is((SELECT bv.jwt_verify(t) ->> 'role' FROM rt_roles WHERE r = '"bv_user"'), 'bv_user', 'a key with roles {bv_user} signs for bv_user');
SELECT throws_ok($$SELECT bv.jwt_verify(t) FROM rt_roles WHERE r = '"bv_admin"'$$, '28000', 'invalid token', '... not for bv_admin');
SELECT throws_ok($$SELECT bv.jwt_verify(t) FROM rt_roles WHERE r = '"bv_service"'$$, '28000', 'invalid token', '... not for bv_service');
SELECT throws_ok($$SELECT bv.jwt_verify(t) FROM rt_roles WHERE r = '-'$$, '28000', 'invalid token', '... not without a role (bv_anon)');
SELECT throws_ok($$SELECT bv.jwt_verify(t) FROM rt_roles WHERE r = '1'$$, '28000', 'invalid token', '... not for a numeric role');
SELECT throws_ok($$SELECT bv.jwt_verify(t) FROM rt_roles WHERE r = '["bv_user"]'$$, '28000', 'invalid token', '... not for an array role');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key, roles) VALUES ('rt-bad-roles', 'HS256', repeat('b', 48), '{bv_user,NULL}')$$,
    '22023', NULL, 'roles with a NULL: 22023 (the secret is never in the error)');
SELECT is(bv.jwt_import_jwks('{"keys": [{"kid": "rt-idp-ed", "kty": "OKP", "crv": "Ed25519", "x": "iBYyIUejC9vnWm7b1mV9c-SqgopXGE0ejc46ct2g17o"}]}', 'https://rt-idp.example'),
          1, 'a JWKS key is imported');
SELECT is((SELECT roles FROM bv.jwt_keys WHERE kid = 'rt-idp-ed'), ARRAY['bv_anon', 'bv_user']::name[],
          'a key imported from a JWKS signs for bv_anon and bv_user only');

SELECT * FROM finish();
ROLLBACK;
