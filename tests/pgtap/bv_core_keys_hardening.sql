-- bv_core security hardening (issue #17 items 1-5): keys that make tokens
-- forgeable without a private key are refused on every path a key enters
-- (INSERT, UPDATE, bv.jwt_import_jwks; PEM and JWK), HMAC secrets that are
-- keys are refused, no error about a key row quotes its secret, and a jti is
-- revocable exactly when bv.jwt_verify() accepts it (one rule, in bytes).
-- The hostile keys were built for these tests (tests/pgtap comments say
-- how); they protect nothing.  Runs as a superuser in one rolled-back
-- transaction.
BEGIN;
SELECT plan(65);

-- base64url, and a token signed with a given raw signature
CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT translate(encode(b, 'base64'), E'+/=\n', '-_') $$;
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT pg_temp.b64url(convert_to(t, 'UTF8')) $$;
CREATE FUNCTION pg_temp.signing_input(alg text, kid text, claims jsonb) RETURNS text LANGUAGE sql AS
$$ SELECT pg_temp.b64url(format('{"alg":"%s","kid":"%s"}', alg, kid)) || '.' || pg_temp.b64url(claims::text) $$;
CREATE FUNCTION pg_temp.claims() RETURNS jsonb LANGUAGE sql AS
$$ SELECT jsonb_build_object('sub', 'attacker', 'role', 'bv_admin',
                             'exp', extract(epoch FROM clock_timestamp())::bigint + 600) $$;
-- SQLSTATE of a statement ('ok' if it succeeds)
CREATE FUNCTION pg_temp.state(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
-- SQLSTATE of a failed verification ('ok' if it succeeds)
CREATE FUNCTION pg_temp.verdict(token text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bv.jwt_verify(token);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

CREATE TEMP TABLE k (name text PRIMARY KEY, value text);
INSERT INTO k VALUES
  ('rsa_n', $$tR8yRj4oCWMl8NLh6r2IHZ9qki0cP2Xj4d0VAGy9UiBIm3xOauw5FKsGrQqnbjVqP_bN7tWQgHZhp_JYQIqEmI942l3lBZthYzck8lJzCxTTNyBmOM5XF5zXjlbGTUYMZORGs-NVgfSLNxA1xeLgQ07bjRFXuPic1jEWZj9n82Zu6FkHk8GChqs3oKhS-BtEMkb9SbhvxSD2WuOeADv3mEBMu_saITXntfP4H2orPuSumrq3IpPvuSoHVgGF16AqIb708Z54-nIEYgrLK5FQf5Y21yKEWTvoZhp6kM8qcH3qJAz22CExF-8D8wxh7oAqYmWJLv0qizKyaJOFv9Mc2Q$$),
  ('rsa_e1', $$-----BEGIN PUBLIC KEY-----
MIIBIDANBgkqhkiG9w0BAQEFAAOCAQ0AMIIBCAKCAQEAtR8yRj4oCWMl8NLh6r2I
HZ9qki0cP2Xj4d0VAGy9UiBIm3xOauw5FKsGrQqnbjVqP/bN7tWQgHZhp/JYQIqE
mI942l3lBZthYzck8lJzCxTTNyBmOM5XF5zXjlbGTUYMZORGs+NVgfSLNxA1xeLg
Q07bjRFXuPic1jEWZj9n82Zu6FkHk8GChqs3oKhS+BtEMkb9SbhvxSD2WuOeADv3
mEBMu/saITXntfP4H2orPuSumrq3IpPvuSoHVgGF16AqIb708Z54+nIEYgrLK5FQ
f5Y21yKEWTvoZhp6kM8qcH3qJAz22CExF+8D8wxh7oAqYmWJLv0qizKyaJOFv9Mc
2QIBAQ==
-----END PUBLIC KEY-----$$),
  ('rsa_e3', $$-----BEGIN PUBLIC KEY-----
MIIBIDANBgkqhkiG9w0BAQEFAAOCAQ0AMIIBCAKCAQEAtR8yRj4oCWMl8NLh6r2I
HZ9qki0cP2Xj4d0VAGy9UiBIm3xOauw5FKsGrQqnbjVqP/bN7tWQgHZhp/JYQIqE
mI942l3lBZthYzck8lJzCxTTNyBmOM5XF5zXjlbGTUYMZORGs+NVgfSLNxA1xeLg
Q07bjRFXuPic1jEWZj9n82Zu6FkHk8GChqs3oKhS+BtEMkb9SbhvxSD2WuOeADv3
mEBMu/saITXntfP4H2orPuSumrq3IpPvuSoHVgGF16AqIb708Z54+nIEYgrLK5FQ
f5Y21yKEWTvoZhp6kM8qcH3qJAz22CExF+8D8wxh7oAqYmWJLv0qizKyaJOFv9Mc
2QIBAw==
-----END PUBLIC KEY-----$$),
  ('rsa_e65536', $$-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtR8yRj4oCWMl8NLh6r2I
HZ9qki0cP2Xj4d0VAGy9UiBIm3xOauw5FKsGrQqnbjVqP/bN7tWQgHZhp/JYQIqE
mI942l3lBZthYzck8lJzCxTTNyBmOM5XF5zXjlbGTUYMZORGs+NVgfSLNxA1xeLg
Q07bjRFXuPic1jEWZj9n82Zu6FkHk8GChqs3oKhS+BtEMkb9SbhvxSD2WuOeADv3
mEBMu/saITXntfP4H2orPuSumrq3IpPvuSoHVgGF16AqIb708Z54+nIEYgrLK5FQ
f5Y21yKEWTvoZhp6kM8qcH3qJAz22CExF+8D8wxh7oAqYmWJLv0qizKyaJOFv9Mc
2QIDAQAA
-----END PUBLIC KEY-----$$),
  ('rsa_e65537', $$-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtR8yRj4oCWMl8NLh6r2I
HZ9qki0cP2Xj4d0VAGy9UiBIm3xOauw5FKsGrQqnbjVqP/bN7tWQgHZhp/JYQIqE
mI942l3lBZthYzck8lJzCxTTNyBmOM5XF5zXjlbGTUYMZORGs+NVgfSLNxA1xeLg
Q07bjRFXuPic1jEWZj9n82Zu6FkHk8GChqs3oKhS+BtEMkb9SbhvxSD2WuOeADv3
mEBMu/saITXntfP4H2orPuSumrq3IpPvuSoHVgGF16AqIb708Z54+nIEYgrLK5FQ
f5Y21yKEWTvoZhp6kM8qcH3qJAz22CExF+8D8wxh7oAqYmWJLv0qizKyaJOFv9Mc
2QIDAQAB
-----END PUBLIC KEY-----$$),
  ('rsa_der_b64', $$MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtR8yRj4oCWMl8NLh6r2IHZ9qki0cP2Xj4d0VAGy9UiBIm3xOauw5FKsGrQqnbjVqP/bN7tWQgHZhp/JYQIqEmI942l3lBZthYzck8lJzCxTTNyBmOM5XF5zXjlbGTUYMZORGs+NVgfSLNxA1xeLgQ07bjRFXuPic1jEWZj9n82Zu6FkHk8GChqs3oKhS+BtEMkb9SbhvxSD2WuOeADv3mEBMu/saITXntfP4H2orPuSumrq3IpPvuSoHVgGF16AqIb708Z54+nIEYgrLK5FQf5Y21yKEWTvoZhp6kM8qcH3qJAz22CExF+8D8wxh7oAqYmWJLv0qizKyaJOFv9Mc2QIDAQAB$$),
  ('ed_identity_pem', $$-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
-----END PUBLIC KEY-----$$),
  ('ec_inf', $$-----BEGIN PUBLIC KEY-----
MBkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDAgAA
-----END PUBLIC KEY-----$$),
  ('ec_off', $$-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAQEBAQEBAQEBAQEBAQEBAQEBAQEB
AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==
-----END PUBLIC KEY-----$$);
CREATE FUNCTION pg_temp.k(name text) RETURNS text LANGUAGE sql AS $$ SELECT value FROM k WHERE k.name = $1 $$;

------------------------------------------------------------------------
-- Item 1: weak RSA exponents (PEM, JWK, INSERT, UPDATE, JWKS import)
------------------------------------------------------------------------
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rsa-e1', 'RS256', pg_temp.k('rsa_e1'))$$,
                 '22023', 'invalid key "rsa-e1" in bv.jwt_keys', 'RSA e = 1 (PEM) is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rsa-e3', 'PS256', pg_temp.k('rsa_e3'))$$,
                 '22023', 'invalid key "rsa-e3" in bv.jwt_keys', 'RSA e = 3 (PEM) is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rsa-even', 'RS512', pg_temp.k('rsa_e65536'))$$,
                 '22023', 'invalid key "rsa-even" in bv.jwt_keys', 'an even RSA exponent is refused');
SELECT throws_ok(format($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rsa-jwk3', 'RS256', '{"kty":"RSA","n":"%s","e":"Aw"}')$$, pg_temp.k('rsa_n')),
                 '22023', 'invalid key "rsa-jwk3" in bv.jwt_keys', 'RSA e = 3 (JWK) is refused');
SELECT throws_ok(format($$SELECT bv.jwt_import_jwks('{"keys":[{"kid":"rsa-jwks1","kty":"RSA","n":"%s","e":"AQ"}]}', 'https://evil.example')$$, pg_temp.k('rsa_n')),
                 '22023', 'invalid key "rsa-jwks1" in bv.jwt_keys', 'RSA e = 1 from a JWKS is refused');
SELECT lives_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rsa-ok', 'RS256', pg_temp.k('rsa_e65537'))$$,
                'the same modulus with e = 65537 is accepted');
SELECT throws_ok($$UPDATE bv.jwt_keys SET key = pg_temp.k('rsa_e1') WHERE kid = 'rsa-ok'$$,
                 '22023', 'invalid key "rsa-ok" in bv.jwt_keys', 'an UPDATE to e = 1 is refused');
-- With e = 1 the signature is the PKCS#1 v1.5 encoding of the hash itself.
SELECT is(pg_temp.state(format($$SELECT bv.jwt_import_jwks('{"keys":[{"kid":"forge-rsa","kty":"RSA","alg":"RS256","n":"%s","e":"AQ"}]}')$$, pg_temp.k('rsa_n'))),
          '22023', 'the e = 1 key of the forgery is refused');
SELECT is(pg_temp.verdict(si || '.' || pg_temp.b64url(
              '\x0001'::bytea || decode(repeat('ff', 256 - 3 - 19 - 32), 'hex') || '\x00'::bytea ||
              '\x3031300d060960864801650304020105000420'::bytea || sha256(convert_to(si, 'UTF8')))),
          '28000', 'a token "signed" with e = 1 (the padded hash as signature) is refused')
FROM (SELECT pg_temp.signing_input('RS256', 'forge-rsa', pg_temp.claims()) AS si) s;

------------------------------------------------------------------------
-- Item 2: small-order, non-canonical and off-curve Ed25519 keys; EC points
------------------------------------------------------------------------
CREATE TEMP TABLE ed (name text, x text);
INSERT INTO ed VALUES
  ('identity', 'AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), ('zero (order 4)', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), ('order 4, x sign set', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA'),
  ('order 2', '7P_______________________________________38'), ('order 8', 'JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_AU'), ('order 8, x sign set', 'xxdqcD1N2E-6PAt2DRBnDyogU_osOczGTsf9d5KsA_o'),
  ('identity as y = p + 1', '7v_______________________________________38'), ('y = p + 2', '7________________________________________38'),
  ('off the curve', 't3afoPFIP5WpDZ3y8TDWD88EvZP1CuaVFNqMZU7xWAY');
SELECT is(pg_temp.state(format($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ed-bad', 'EdDSA', '{"kty":"OKP","crv":"Ed25519","x":"%s"}')$$, x)),
          '22023', 'Ed25519 key refused: ' || name) FROM ed ORDER BY name;
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ed-id-pem', 'EdDSA', pg_temp.k('ed_identity_pem'))$$,
                 '22023', 'invalid key "ed-id-pem" in bv.jwt_keys', 'the Ed25519 identity as PEM is refused');
SELECT throws_ok($$SELECT bv.jwt_import_jwks('{"keys":[{"kid":"ed-jwks-id","kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}')$$,
                 '22023', 'invalid key "ed-jwks-id" in bv.jwt_keys', 'the Ed25519 identity from a JWKS is refused');
SELECT lives_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ed-ok', 'EdDSA', '{"kty":"OKP","crv":"Ed25519","x":"_SoilUFSRiXZGQX2zAn3I2MTQ4Y0qEVTWKkpUeNEo6E"}')$$,
                'a real Ed25519 public key is accepted');
-- With the identity key, R = identity and S = 0 verify any message.
SELECT is(pg_temp.state($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('forge-ed', 'EdDSA', '{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}')$$),
          '22023', 'the identity key of the forgery is refused');
SELECT is(pg_temp.verdict(pg_temp.signing_input('EdDSA', 'forge-ed', pg_temp.claims()) || '.' ||
                          pg_temp.b64url('\x01'::bytea || decode(repeat('00', 63), 'hex'))),
          '28000', 'a token "signed" 01 00..00 for the identity key is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ec-inf', 'ES256', pg_temp.k('ec_inf'))$$,
                 '22023', 'invalid key "ec-inf" in bv.jwt_keys', 'the P-256 point at infinity (PEM, accepted by OpenSSL''s decoder) is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ec-off', 'ES256', pg_temp.k('ec_off'))$$,
                 '22023', 'invalid key "ec-off" in bv.jwt_keys', 'a P-256 point off the curve (PEM) is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ec-off', 'ES256', '{"kty":"EC","crv":"P-256","x":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE","y":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"}')$$,
                 '22023', 'invalid key "ec-off" in bv.jwt_keys', 'a P-256 point off the curve (JWK) is refused');

-- Against a model: random 32-byte encodings (a third of them near p or a
-- small-order point, half with the x sign bit flipped) are accepted exactly
-- when an independent decoding in numeric arithmetic says they are a
-- canonical point of the curve and not of small order.
CREATE FUNCTION pg_temp.modexp(b numeric, e numeric, m numeric) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE r numeric := 1;
BEGIN
    b := mod(b, m);
    WHILE e > 0 LOOP
        IF mod(e, 2) = 1 THEN r := mod(r * b, m); END IF;
        b := mod(b * b, m);
        e := div(e, 2);
    END LOOP;
    RETURN r;
END $$;
CREATE FUNCTION pg_temp.ed_model(x bytea) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    p numeric := 2::numeric ^ 255 - 19;
    d numeric := 37095705934669439343138083508754565189542113879843219016388785533085940283555;
    y numeric := 0;
    w numeric;
    l numeric;
    i integer;
BEGIN
    FOR i IN REVERSE 31 .. 0 LOOP
        y := y * 256 + CASE WHEN i = 31 THEN get_byte(x, i) & 127 ELSE get_byte(x, i) END;
    END LOOP;
    IF y IN (0, 1, p - 1,
             2707385501144840649318225287225658788936804267575313519463743609750303402022,
             55188659117513257062467267217118295137698188065244968500265048394206261417927) OR y >= p THEN
        RETURN false;
    END IF;
    w := mod(mod(y * y - 1 + p, p) * pg_temp.modexp(mod(d * y * y + 1, p), p - 2, p), p);
    l := pg_temp.modexp(w, div(p - 1, 2), p);
    RETURN l IN (0, 1) AND NOT (w = 0 AND get_byte(x, 31) >= 128);
END $$;
CREATE FUNCTION pg_temp.ed_accepts(x bytea) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bv.jwt_keys (kid, alg, key)
    VALUES ('ed-model', 'EdDSA', format('{"kty":"OKP","crv":"Ed25519","x":"%s"}', pg_temp.b64url(x)));
    DELETE FROM bv.jwt_keys WHERE kid = 'ed-model';
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END $$;
CREATE TEMP TABLE ed_seed AS SELECT (floor(random() * 1000000))::integer AS seed;
SELECT setseed((SELECT seed FROM ed_seed) / 1000000.0);
CREATE TEMP TABLE ed_sample AS
SELECT n, (SELECT string_agg(set_byte('\x00'::bytea, 0, floor(random() * 256)::integer), '')
           FROM generate_series(1, 32 + 0 * n)) AS x
FROM generate_series(1, 200) n;
-- a sixth near p (below and above it), a sixth small-order points
UPDATE ed_sample SET x = decode('ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', 'hex')
    WHERE n % 6 = 0;
UPDATE ed_sample SET x = set_byte(x, 0, 247 - (n % 40)) WHERE n % 6 = 0;  -- p - 29 .. p + 10
UPDATE ed_sample SET x = (ARRAY[
    '\x0000000000000000000000000000000000000000000000000000000000000000',
    '\x0100000000000000000000000000000000000000000000000000000000000000',
    '\xecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    '\x26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
    '\xc7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a']::bytea[])[1 + n % 5]
    WHERE n % 6 = 1;
UPDATE ed_sample SET x = set_byte(x, 31, get_byte(x, 31) # 128) WHERE random() < 0.5;
SELECT is((SELECT array_agg(encode(x, 'hex') ORDER BY n) FROM ed_sample WHERE pg_temp.ed_accepts(x) <> pg_temp.ed_model(x)),
          NULL, format('200 random Ed25519 encodings: bv_core agrees with the model (seed %s)', (SELECT seed FROM ed_seed)));
SELECT ok((SELECT count(*) FILTER (WHERE pg_temp.ed_model(x)) BETWEEN 20 AND 180 FROM ed_sample),
          'the sample holds accepted and refused encodings');

-- A weak key written before these checks (here: with the trigger disabled)
-- is skipped by the key cache, can be deactivated, but not reactivated.
ALTER TABLE bv.jwt_keys DISABLE TRIGGER jwt_keys_check;
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('legacy-ed', 'EdDSA', '{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}');
ALTER TABLE bv.jwt_keys ENABLE TRIGGER jwt_keys_check;
SET LOCAL client_min_messages = error;  -- the cache's WARNING about the key
SELECT is(pg_temp.verdict(pg_temp.signing_input('EdDSA', 'legacy-ed', pg_temp.claims()) || '.' ||
                          pg_temp.b64url('\x01'::bytea || decode(repeat('00', 63), 'hex'))),
          '28000', 'a stored identity key is skipped: its forged token is refused');
RESET client_min_messages;
SELECT lives_ok($$UPDATE bv.jwt_keys SET active = false WHERE kid = 'legacy-ed'$$,
                'a stored weak key can be deactivated');
SELECT throws_ok($$UPDATE bv.jwt_keys SET active = true WHERE kid = 'legacy-ed'$$,
                 '22023', 'invalid key "legacy-ed" in bv.jwt_keys', 'but not reactivated');

------------------------------------------------------------------------
-- Item 3: HMAC secrets that contain or are keys (HS/RS confusion)
------------------------------------------------------------------------
CREATE TEMP TABLE hs (name text, secret text);
INSERT INTO hs VALUES
  ('PEM after CRLF', E'\r\n' || pg_temp.k('rsa_e65537')),
  ('PEM after spaces', '   ' || pg_temp.k('rsa_e65537')),
  ('PEM inside text', 'my-secret: ' || pg_temp.k('rsa_e65537') || ' end'),
  ('PEM in an oct JWK', format('{"kty":"oct","k":"%s"}', pg_temp.b64url(pg_temp.k('rsa_e65537')))),
  ('DER in an oct JWK', format('{"kty":"oct","k":"%s"}', pg_temp.b64url(decode(pg_temp.k('rsa_der_b64'), 'base64')))),
  ('PEM body without armour', pg_temp.k('rsa_der_b64')),
  ('DER in hex', encode(decode(pg_temp.k('rsa_der_b64'), 'base64'), 'hex')),
  ('RSA JWK after a space', format(' {"kty":"RSA","n":"%s","e":"AQAB"}', pg_temp.k('rsa_n'))),
  ('RSA JWK inside text', format('secret={"kty":"RSA","n":"%s","e":"AQAB"}', pg_temp.k('rsa_n')));
SELECT is(pg_temp.state(format($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('hs-bad', 'HS256', %L)$$, secret)),
          '22023', 'HMAC secret refused: ' || name) FROM hs ORDER BY name;
SELECT lives_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES
    ('hs-hex', 'HS256', encode(sha512('hex secret'::bytea), 'hex')),
    ('hs-b64', 'HS512', encode(sha512('b64 secret'::bytea) || sha512('more'::bytea), 'base64')),
    ('hs-jwk', 'HS256', format('  {"kty":"oct","k":"%s"}', pg_temp.b64url(sha256('jwk secret'::bytea))))$$,
    'random secrets (hex, base64, an oct JWK after white space) are accepted');

------------------------------------------------------------------------
-- Item 4: no error about a row of bv.jwt_keys quotes its secret
------------------------------------------------------------------------
-- SQLSTATE of the statement, or LEAK if any part of the error names the secret
CREATE FUNCTION pg_temp.key_error(stmt text, secret text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text; det text; hnt text; ctx text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
    IF strpos(concat_ws(' ', msg, det, hnt, ctx), secret) > 0 THEN
        RETURN 'LEAK ' || SQLSTATE;
    END IF;
    RETURN SQLSTATE;
END $$;
CREATE TEMP TABLE bad_rows (name text, stmt text, want text);
INSERT INTO bad_rows VALUES
  ('kid too long', $$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES (repeat('k', 300), 'HS256', 'TopSecret-0123456789-0123456789-0123456789')$$, '22023'),
  ('kid of 257 bytes', $$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES (repeat('é', 128) || 'x', 'HS256', 'TopSecret-0123456789-0123456789-0123456789')$$, '22023'),
  ('empty kid', $$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('', 'HS256', 'TopSecret-0123456789-0123456789-0123456789')$$, '22023'),
  ('NULL kid', $$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES (NULL, 'HS256', 'TopSecret-0123456789-0123456789-0123456789')$$, '22004'),
  ('expires_at before not_before', $$INSERT INTO bv.jwt_keys (kid, alg, key, not_before, expires_at) VALUES ('w', 'HS256', 'TopSecret-0123456789-0123456789-0123456789', now(), now() - interval '1 day')$$, '22023'),
  ('bad source', $$INSERT INTO bv.jwt_keys (kid, alg, key, source) VALUES ('w', 'HS256', 'TopSecret-0123456789-0123456789-0123456789', 'stolen')$$, '22023'),
  ('NULL source', $$INSERT INTO bv.jwt_keys (kid, alg, key, source) VALUES ('w', 'HS256', 'TopSecret-0123456789-0123456789-0123456789', NULL)$$, '22004'),
  ('NULL active', $$INSERT INTO bv.jwt_keys (kid, alg, key, active) VALUES ('w', 'HS256', 'TopSecret-0123456789-0123456789-0123456789', NULL)$$, '22004'),
  ('NULL created_at', $$INSERT INTO bv.jwt_keys (kid, alg, key, created_at) VALUES ('w', 'HS256', 'TopSecret-0123456789-0123456789-0123456789', NULL)$$, '22004'),
  ('NULL alg', $$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('w', NULL, 'TopSecret-0123456789-0123456789-0123456789')$$, '22004'),
  ('UPDATE: window reversed', $$UPDATE bv.jwt_keys SET not_before = now(), expires_at = now() - interval '1 hour' WHERE kid = 'hs-stored'$$, '22023'),
  ('UPDATE: kid too long', $$UPDATE bv.jwt_keys SET kid = repeat('k', 300) WHERE kid = 'hs-stored'$$, '22023'),
  ('UPDATE: bad source', $$UPDATE bv.jwt_keys SET source = 'x' WHERE kid = 'hs-stored'$$, '22023');
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('hs-stored', 'HS256', 'TopSecret-0123456789-0123456789-0123456789');
SELECT is(pg_temp.key_error(stmt, 'TopSecret'), want, 'no secret in the error: ' || name) FROM bad_rows ORDER BY name;
SELECT is(pg_temp.key_error($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES (repeat('k', 100000), 'HS256', 'x')$$, repeat('k', 65)),
          '22023', 'a huge kid is quoted as a short prefix only');
SELECT ok((SELECT active FROM bv.jwt_keys WHERE kid = 'hs-stored'), 'the stored key is unchanged');

------------------------------------------------------------------------
-- Item 5: one jti rule, in bytes (1 to 256), for revocation and verification
------------------------------------------------------------------------
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('jti-key', 'HS256', encode(sha256('jti key'::bytea), 'hex'));
SELECT throws_ok($$SELECT bv.jwt_revoke(repeat('€', 100))$$, '22023', 'jti of 300 bytes cannot be revoked',
                 'a jti of 100 characters but 300 bytes cannot be revoked');
SELECT ok(bv.jwt_is_revoked(repeat('€', 100)), 'such a jti counts as revoked');
SELECT is(pg_temp.verdict(bv.jwt_sign(pg_temp.claims() || jsonb_build_object('jti', repeat('€', 100)), 'jti-key')),
          '28000', 'and bv.jwt_verify() refuses a token carrying it');
SELECT throws_ok($$SELECT bv.jwt_revoke('')$$, '22023', 'jti of 0 bytes cannot be revoked', 'an empty jti cannot be revoked');
SELECT lives_ok($$SELECT bv.jwt_revoke(repeat('€', 85) || 'x', now() + interval '1 hour')$$, 'a jti of exactly 256 bytes (86 characters) is revoked');
SELECT ok(bv.jwt_is_revoked(repeat('€', 85) || 'x'), 'bv.jwt_is_revoked() finds it');
SELECT is(pg_temp.verdict(bv.jwt_sign(pg_temp.claims() || jsonb_build_object('jti', repeat('€', 85) || 'x'), 'jti-key')),
          '28000', 'and its token is refused');
SELECT is(pg_temp.verdict(bv.jwt_sign(pg_temp.claims() || jsonb_build_object('jti', repeat('€', 85) || 'y'), 'jti-key')),
          'ok', 'a token with another 256-byte jti is accepted');
SELECT throws_ok($$INSERT INTO bv.jwt_revocations (jti) VALUES (repeat('€', 86))$$, '23514', NULL,
                 'the table itself holds no jti over 256 bytes');

SELECT * FROM finish();
ROLLBACK;
