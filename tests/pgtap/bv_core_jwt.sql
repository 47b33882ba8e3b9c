-- bv_core security: JWT verification and signing, every attack token of
-- issue #6, the key table's strength checks, rotation, JWKS import,
-- revocation and jti replay.  Runs as a superuser in one rolled-back
-- transaction; pgcrypto (contrib) builds tokens independently of bv_core.
BEGIN;
SELECT plan(96);

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Test-only keys, generated with openssl for these tests; they protect nothing.
CREATE FUNCTION pg_temp.pem(name text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT CASE $1
  WHEN 'rsa' THEN $k$-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCpBtbrB3TfWmCa
+WmQ2gWjp5MnDpCJrtUZMwF4xfj36b2bLIWy+5RZ+xBf5fSkSQ9y77Pst7nNHP49
EEEX8WBWi4wnyBe1Bg0aKEDcEKKiKchKa2vrsgbJ7W/wn8KQN7VdFPPjHZL4jxsE
koXvP52FqW8jyoxTSSDsIFt5dUn041M9ITIhVlidDM0V6FYaWKEI5sTr+s5/YDB0
BrMWnAyQ2X1k1dqpgrYOOgpOnvIy3RqtGOxDzvcu9kRV4Q2a7zloKfYtH0XuOPOh
0+A+YY4Eprn2lIYRsxGmbVAY3fo9oVjf5S7phqQFp0A8djWHzy0dRjKD4L0Ti8b+
YEihpojdAgMBAAECgf8tW3Ixvp/zfkVmd6Zvy9OYi1eUgJncGnr1tMH97JaNdDOT
9EdRS+Pgf5Ybmi0L+GCCQPdkZ5tsnce6qqm1ytm58w3ff/kLLiAnaKXf+1D+cTAf
oX2aJs6jzcXXUC6A4eZ7p1oJBLgWZ8TgCKA12UEt+hNVA4lPDjlimCV3v+pefq5e
BLzrMx1AOT9oVUMeQUNnVdoWSMkkLUnZqaDFxkZFYqDvt0RP5u8CeDxmakKkN/pO
ufP+8yaTrvtthTnvPsZ1BckN0qxE4dNJyE9330+CbYmTBKE3xe30WO04DM0oATNT
RJ7WYrs7iPy4JF4KE0rieXmxSzgd9fzKal/D5YECgYEA27NeSOY1gBnqbEGWIeLx
ppu07s3vteDF+nZ6xx6eX98JpNplYxJrM2FiNt7fcLcpvd1d29f7E75+NugFXaPc
gMNDNmXs1pXIP20nb57rzgBZyDlcEvo+3+NElrCbdoFwRadGOmJsUYxSfNfZYqU9
BWgV2r8DDOxSoApDxrFn4n0CgYEAxPQgW/hlfmnSfU5C1bX7vw7uJUjJK7LXnwWi
MUOBZSgR1C4jX27TZ5A8/puCGSfutjTiaC6lRNmnp/JdmO1MYMTSbCeDZzX2ZL/n
MDmZPfkUTqsAlP48/V0sN1p1B21Ncd1TYpMptKxIifuQFEUV1KGeHnVS5NNwjCgF
346SreECgYEAlPvLoi/Kc/YfDA5l2tDlAhBw38fzGCk22CPkGode6rB6/7nCKy7g
V1VgnskASJVMzx4Aega6kqcJO/6XNOrbqs2/FHKF6vZjdu90YLMqQOXn/Gk5UP02
Cek6J93XbsNT+Uf3zbvUrHA1t8c/+S8IdFQjDdWeIfNYDIMpduHzCpkCgYBkZIQy
HTWu8EYI9WGAChle1D9z5dwVWD4sovR/5AcLBxe/bh09wgIkohNVPPNd20sEuYRG
0rAPnlqlcxdeombyVKFl2+ZRL+J+jItNu65vNo2xY90SFV4FT/7/4C4TMRXu2oBs
mNMDc2YuX3qbunNcRV2R7P/qABU4fBYyVDxUQQKBgQDLgO++ThyPuYES3HDnk1DN
s6AMfh2T7c6gLEYyYKqRB8vFZP0+tQpDhUkSj+XU6PF3MhpazhxPW1n3OXmOQqG+
meuuavFJ8z5Fm0bfsSLbD2wJPl5ZHZOZd/BkM2vcp+W33qhtjxxnyUSf0sUneUfR
HiYiEh6pMHiHwUg4e7jeWA==
-----END PRIVATE KEY-----$k$
  WHEN 'rsa_pub' THEN $k$-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqQbW6wd031pgmvlpkNoF
o6eTJw6Qia7VGTMBeMX49+m9myyFsvuUWfsQX+X0pEkPcu+z7Le5zRz+PRBBF/Fg
VouMJ8gXtQYNGihA3BCioinISmtr67IGye1v8J/CkDe1XRTz4x2S+I8bBJKF7z+d
halvI8qMU0kg7CBbeXVJ9ONTPSEyIVZYnQzNFehWGlihCObE6/rOf2AwdAazFpwM
kNl9ZNXaqYK2DjoKTp7yMt0arRjsQ873LvZEVeENmu85aCn2LR9F7jjzodPgPmGO
BKa59pSGEbMRpm1QGN36PaFY3+Uu6YakBadAPHY1h88tHUYyg+C9E4vG/mBIoaaI
3QIDAQAB
-----END PUBLIC KEY-----$k$
  WHEN 'rsa1024_pub' THEN $k$-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDNcUWSN0V+lT5xsy602FQ+jpLT
hRBYizOCSHZ2tiQren5qpo0AL4uf1NKeOdPoeP7ROFJpkGZIuWtfRhm+HXk+JFYX
xv1YXqgd/c36rvV2fVzdKGJR/bFGQebBryFR3pkbCGjzUPQ4XHljrLIbqfeGyb3w
DB8QH5OvZ0/gkA30DwIDAQAB
-----END PUBLIC KEY-----$k$
  WHEN 'ec256' THEN $k$-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+6iGb6TUkC50WQIk
KX32342wle/OJIRvyp77idc9lFWhRANCAASr3rS04W8hKVo8zO4G+D4iD2URR40f
2OdXEEHltttk9kj+CKfExZuEs9zeVPpuCMFtHOSTfbturT75DizzXqYm
-----END PRIVATE KEY-----$k$
  WHEN 'ec384' THEN $k$-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDFoxgif+ivxb1/f1kO
t8kzw2KK081D89XIevTne460yA/0YKXP3jeZWIpL7wXqzayhZANiAAQNzozc/ZGd
u6y0gqHgHXbVjZx4tZXI2RTEbEtgmbAFQN0O2T2PNtIGljZnoPTPL6kr6E7tKoHH
ddnBdZG4UAo1KyrrEaAGxQIHe1X2pS1aonWgbEJb//QcHVBK/Oureao=
-----END PRIVATE KEY-----$k$
  WHEN 'ed' THEN $k$-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFf4fHWuFF3h/RIRVVNhdzj8pKXWADrO2QOiUjltC8Uu
-----END PRIVATE KEY-----$k$
END $f$;

-- Independent token construction (pgcrypto's HMAC, not bv_core's).
CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT translate(encode(b, 'base64'), E'+/=\n', '-_') $$;
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT pg_temp.b64url(convert_to(t, 'UTF8')) $$;
CREATE FUNCTION pg_temp.hs256(header text, payload text, secret bytea) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.b64url(header) || '.' || pg_temp.b64url(payload) || '.' ||
           pg_temp.b64url(hmac(convert_to(pg_temp.b64url(header) || '.' || pg_temp.b64url(payload), 'UTF8'), secret, 'sha256'))
$$;
-- The same for HS384 and HS512: digest 'sha384' or 'sha512'.
CREATE FUNCTION pg_temp.hs(digest text, header text, payload text, secret bytea) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.b64url(header) || '.' || pg_temp.b64url(payload) || '.' ||
           pg_temp.b64url(hmac(convert_to(pg_temp.b64url(header) || '.' || pg_temp.b64url(payload), 'UTF8'), secret, digest))
$$;
CREATE FUNCTION pg_temp.now_s(delta integer DEFAULT 0) RETURNS bigint LANGUAGE sql AS
$$ SELECT extract(epoch FROM clock_timestamp())::bigint + delta $$;
-- SQLSTATE and detail of a failed verification ('ok' if it succeeds), and a
-- check that neither message nor detail contains any part of the token.
CREATE FUNCTION pg_temp.verdict(token text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text; det text; part text;
BEGIN
    PERFORM bv.jwt_verify(token);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    FOREACH part IN ARRAY string_to_array(token, '.') LOOP
        IF length(part) >= 8 AND (strpos(msg, part) > 0 OR strpos(coalesce(det, ''), part) > 0) THEN
            RETURN 'LEAK';
        END IF;
    END LOOP;
    RETURN SQLSTATE || ' ' || coalesce(det, '');
END $$;

INSERT INTO bv.jwt_keys (kid, alg, key) VALUES
    ('hs', 'HS256', 'test-secret-0123456789-abcdefghij-XYZ'),
    ('hs512', 'HS512', repeat('k', 64)),
    ('rs', 'RS256', pg_temp.pem('rsa')),
    ('rs-pub', 'RS256', pg_temp.pem('rsa_pub')),
    ('ps', 'PS256', pg_temp.pem('rsa')),
    ('es', 'ES256', pg_temp.pem('ec256')),
    ('es384', 'ES384', pg_temp.pem('ec384')),
    ('ed', 'EdDSA', pg_temp.pem('ed'));

-- 1. Every algorithm signs and verifies, and the claims come back.
SELECT is(bv.jwt_verify(bv.jwt_sign(jsonb_build_object('sub', 'u-' || k, 'exp', pg_temp.now_s(60)), k)) ->> 'sub',
          'u-' || k, 'sign + verify with ' || k)
FROM unnest(ARRAY['hs', 'hs512', 'rs', 'ps', 'es', 'es384', 'ed']) AS k;

-- 2. A token built independently (pgcrypto HMAC) verifies: interoperability.
SELECT is(bv.jwt_verify(pg_temp.hs256('{"alg":"HS256","typ":"JWT","kid":"hs"}',
                                      format('{"sub":"indep","exp":%s}', pg_temp.now_s(60)),
                                      'test-secret-0123456789-abcdefghij-XYZ')) ->> 'sub',
          'indep', 'an HS256 token made with pgcrypto verifies');
-- HMAC keys are pre-keyed hash states: every HS algorithm, and secrets
-- longer than the hash's block (which HMAC first hashes), agree with pgcrypto.
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES
    ('hs384', 'HS384', repeat('s', 48)),
    ('hs256-long', 'HS256', repeat('L', 100)),
    ('hs512-long', 'HS512', repeat('M', 200));
SELECT is(bv.jwt_verify(pg_temp.hs(d, format('{"alg":"%s","kid":"%s"}', a, k), format('{"sub":"indep-%s","exp":%s}', k, pg_temp.now_s(60)),
                                   convert_to(secret, 'UTF8'))) ->> 'sub',
          'indep-' || k, 'an ' || a || ' token made with pgcrypto verifies: ' || k)
FROM (VALUES ('hs384', 'HS384', 'sha384', repeat('s', 48)),
             ('hs512', 'HS512', 'sha512', repeat('k', 64)),
             ('hs256-long', 'HS256', 'sha256', repeat('L', 100)),
             ('hs512-long', 'HS512', 'sha512', repeat('M', 200))) AS v(k, a, d, secret);
SELECT is(pg_temp.verdict(pg_temp.hs('sha512', '{"alg":"HS512","kid":"hs512-long"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)),
                                     convert_to(repeat('M', 199), 'UTF8'))),
          '28000 The token''s signature, algorithm or key is not accepted.', 'a long secret one byte short does not verify');
DELETE FROM bv.jwt_keys WHERE kid IN ('hs384', 'hs256-long', 'hs512-long');

-- RFC 7515 appendix A.1 (HS256, JWK key): the signature holds, the token
-- expired in 2011, so the verdict is "expired" (claims are checked only
-- after the signature).
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rfc7515', 'HS256',
    '{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}');
SELECT is(pg_temp.verdict('eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
          '28000 The token has expired.', 'RFC 7515 A.1 vector: signature valid, token expired');
SELECT is(pg_temp.verdict('eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjfuJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
          '28000 The token''s signature, algorithm or key is not accepted.', 'RFC 7515 A.1 vector with a flipped signature bit');
DELETE FROM bv.jwt_keys WHERE kid = 'rfc7515';

-- The claims come back exactly as jsonb reads the payload (bv_core builds
-- the jsonb itself from the validated token).
SELECT is(bv.jwt_verify(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', p, 'test-secret-0123456789-abcdefghij-XYZ'))::text,
          p::jsonb::text, 'claims equal the payload read as jsonb: ' || left(regexp_replace(p, '\s+', ' ', 'g'), 40))
FROM (VALUES
    (format('{"exp":%s,"s":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00 \u2603","u":"é😀"}', pg_temp.now_s(60))),
    (format('{"exp":%s,"n":[0,-0,1.50,-2e3,1E+2,3e-5,123456789012345678901234567890,1e999,-1.5e-999]}', pg_temp.now_s(60))),
    (format('{"exp":%s,"nested":{"a":[{"b":{"c":[[],{},[null,true,false]]}}],"a2":{"dup":1,"dup":2}},"empty":""}', pg_temp.now_s(60))),
    (format(E'  {\n "exp" : %s ,\t"z":null , "a":true,"m":false}  ', pg_temp.now_s(60)))
) AS v(p);

-- 3. Attack tokens.
SELECT is(pg_temp.verdict(pg_temp.b64url('{"alg":"none"}') || '.' || pg_temp.b64url(format('{"sub":"a","exp":%s}', pg_temp.now_s(60))) || '.'),
          '28000 The token is malformed.', 'alg none with an empty signature');
SELECT is(pg_temp.verdict(pg_temp.b64url('{"alg":"none","kid":"hs"}') || '.' || pg_temp.b64url(format('{"sub":"a","exp":%s}', pg_temp.now_s(60))) || '.AAAA'),
          '28000 The token''s signature, algorithm or key is not accepted.', 'alg none with a signature');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"rs-pub"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)),
                                        convert_to(pg_temp.pem('rsa_pub'), 'UTF8'))),
          '28000 The token''s signature, algorithm or key is not accepted.', 'HS256 signed with the RSA public key (alg confusion, kid)');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)),
                                        convert_to(pg_temp.pem('rsa_pub') || E'\n', 'UTF8'))),
          '28000 The token''s signature, algorithm or key is not accepted.', 'HS256 signed with the RSA public key (alg confusion, no kid)');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"RS256","kid":"hs"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)),
                                        'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token''s signature, algorithm or key is not accepted.', 'alg RS256 with the kid of an HS key');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(-31)), 'hs')),
          '28000 The token has expired.', 'expired beyond the leeway');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(-10)), 'hs')),
          'ok', 'expired within the 30 s leeway');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a'), 'hs')),
          '28000 The token has no expiry time (exp).', 'exp is required by default');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60)::text), 'hs')),
          '28000 The token''s claims are malformed.', 'a non-numeric exp');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'nbf', 'soon'), 'hs')),
          '28000 The token''s claims are malformed.', 'a non-numeric nbf');
-- NumericDate claims are read from the token's text: fractions, integers
-- beyond 64 bits, and numbers no double can hold (refused like any
-- malformed claim, never with an error quoting them).
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s.75}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          'ok', 'a fractional exp');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%se0}', pg_temp.now_s(-60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token has expired.', 'an exp with an exponent');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', '{"sub":"a","exp":99999999999999999999}', 'test-secret-0123456789-abcdefghij-XYZ')),
          'ok', 'an exp beyond 64-bit integers');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', '{"sub":"a","exp":-1}', 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token has expired.', 'a negative exp');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', '{"sub":"a","exp":1e999}', 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token''s claims are malformed.', 'an exp out of the range of a double');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"iat":-1e999}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token''s claims are malformed.', 'an iat out of the range of a double');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(600), 'nbf', pg_temp.now_s(120)), 'hs')),
          '28000 The token is not valid yet (nbf or iat in the future).', 'nbf in the future');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(600), 'nbf', pg_temp.now_s(10)), 'hs')),
          'ok', 'nbf within the leeway');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(600), 'iat', pg_temp.now_s(300)), 'hs')),
          '28000 The token is not valid yet (nbf or iat in the future).', 'iat in the future');

SET LOCAL bv.jwt_audience = 'bitvelocity-api';
SET LOCAL bv.jwt_issuer = 'https://id.example';
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'iss', 'https://id.example', 'aud', 'other'), 'hs')),
          '28000 The token''s audience (aud) is not accepted.', 'wrong aud');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'iss', 'https://id.example'), 'hs')),
          '28000 The token''s audience (aud) is not accepted.', 'missing aud when one is configured');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'iss', 'https://id.example', 'aud', jsonb_build_array('x', 'bitvelocity-api')), 'hs')),
          'ok', 'aud array naming the audience');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'iss', 'https://evil.example', 'aud', 'bitvelocity-api'), 'hs')),
          '28000 The token''s issuer (iss) is not accepted.', 'wrong iss');
UPDATE bv.jwt_keys SET issuer = 'https://other-idp.example' WHERE kid = 'es';
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'iss', 'https://id.example', 'aud', 'bitvelocity-api'), 'es')),
          '28000 The token''s issuer (iss) is not accepted.', 'the key''s own issuer overrides bv.jwt_issuer');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'iss', 'https://other-idp.example', 'aud', 'bitvelocity-api'), 'es')),
          'ok', 'the key''s issuer is accepted');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"iss":"https:\/\/id.example","aud":"bitvelocity-\u0061pi"}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          'ok', 'iss and aud are compared unescaped');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"iss":"https://id.example","aud":["x",["bitvelocity-api"]]}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token''s audience (aud) is not accepted.', 'an aud nested deeper than its array does not count');
RESET bv.jwt_audience;
RESET bv.jwt_issuer;

CREATE TEMP TABLE good AS
SELECT bv.jwt_sign(jsonb_build_object('sub', 'alice', 'exp', pg_temp.now_s(60), 'role', 'bv_user'), 'hs') AS t;
SELECT is(pg_temp.verdict((SELECT t FROM good)), 'ok', 'the untampered token verifies');
SELECT is(pg_temp.verdict((SELECT split_part(t, '.', 1) || '.' || pg_temp.b64url(format('{"sub":"alice","exp":%s,"role":"bv_admin"}', pg_temp.now_s(60))) || '.' || split_part(t, '.', 3) FROM good)),
          '28000 The token''s signature, algorithm or key is not accepted.', 'tampered payload');
SELECT is(pg_temp.verdict((SELECT t || '=' FROM good)), '28000 The token is malformed.', 'base64 padding is refused');
SELECT is(pg_temp.verdict((SELECT replace(t, '-', '+') FROM good WHERE t LIKE '%-%' UNION ALL SELECT overlay(t placing '+' from 3 for 1) FROM good LIMIT 1)),
          '28000 The token is malformed.', 'a character outside base64url');
SELECT is(pg_temp.verdict((SELECT split_part(t, '.', 1) || '.' || split_part(t, '.', 2) || '.' || pg_temp.b64url('\x00'::bytea) || 'B' FROM good)),
          '28000 The token is malformed.', 'non-canonical base64url (bits left over)');
SELECT is(pg_temp.verdict((SELECT t || '.' || split_part(t, '.', 3) FROM good)), '28000 The token is malformed.', 'four segments');
SELECT is(pg_temp.verdict((SELECT split_part(t, '.', 1) || '.' || split_part(t, '.', 2) FROM good)), '28000 The token is malformed.', 'two segments');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'pad', repeat('x', 9000)), 'hs')),
          '28000 The token is larger than bv.jwt_max_size.', 'oversize token');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"exp":1}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'duplicate claim names');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"\u0065xp":1}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'duplicate claim names, one escaped');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"%s":1}', pg_temp.now_s(60), repeat('n', 65)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'a claim name over 64 bytes');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"%s":{"%s":1}}', pg_temp.now_s(60), repeat('n', 64), repeat('m', 100)), 'test-secret-0123456789-abcdefghij-XYZ')),
          'ok', 'a 64-byte claim name, and longer names nested');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('["sub","a","exp",%s]', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'claims that are not an object');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a\u0000","exp":%s}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'a NUL escape in the claims');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'non-strict JSON (trailing comma)');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s, "x": 1e99999}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token is malformed.', 'a number jsonb could not hold');
SELECT is(pg_temp.verdict(pg_temp.b64url('{"alg":"ES256","kid":"es"}') || '.' || pg_temp.b64url(format('{"sub":"a","exp":%s}', pg_temp.now_s(60))) || '.' || pg_temp.b64url(decode(repeat('00', 64), 'hex'))),
          '28000 The token''s signature, algorithm or key is not accepted.', 'ES256 with r = s = 0 (CVE-2022-21449)');
SELECT is(pg_temp.verdict(pg_temp.b64url('{"alg":"ES256","kid":"es"}') || '.' || pg_temp.b64url(format('{"sub":"a","exp":%s}', pg_temp.now_s(60))) || '.'
                          || pg_temp.b64url(decode(repeat('FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551', 2), 'hex'))),
          '28000 The token''s signature, algorithm or key is not accepted.', 'ES256 with r = s = n');
SELECT is(pg_temp.verdict((SELECT split_part(t, '.', 1) || '.' || split_part(t, '.', 2) || '.' || split_part(t, '.', 3) || 'AA'
                           FROM (SELECT bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60)), 'es') AS t) s)),
          '28000 The token''s signature, algorithm or key is not accepted.', 'ES256 signature longer than R||S');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"nope"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token''s signature, algorithm or key is not accepted.', 'unknown kid');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs","crit":["exp"]}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token requires an unsupported header extension (crit).', 'crit header');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","jwk":{"kty":"oct","k":"YXR0YWNrZXItc2VjcmV0LWF0dGFja2VyLXNlY3JldC0xMjM0"}}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)), 'attacker-secret-attacker-secret-1234')),
          '28000 The token''s signature, algorithm or key is not accepted.', 'an embedded jwk header is never used');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","jku":"https://evil.example/jwks"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)), 'attacker-secret-attacker-secret-1234')),
          '28000 The token''s signature, algorithm or key is not accepted.', 'a jku header is never used');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","jku":"https://evil.example/jwks"}', format('{"sub":"a","exp":%s}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          'ok', 'a jku header does not stop a token signed by a configured key');

-- 4. Revocation and replay.
CREATE TEMP TABLE jt AS
SELECT bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60), 'jti', 'jti-' || txid_current() || '-' || n), 'hs') AS t, n
FROM generate_series(1, 2) AS n;
SELECT is(pg_temp.verdict((SELECT t FROM jt WHERE n = 1)), 'ok', 'a token with a jti verifies');
SELECT bv.jwt_revoke((SELECT bv.jwt_verify(t) ->> 'jti' FROM jt WHERE n = 1), now() + interval '1 minute', 'test');
SELECT is(pg_temp.verdict((SELECT t FROM jt WHERE n = 1)), '28000 The token has been revoked.', 'revoked jti');
SELECT ok(bv.jwt_is_revoked((SELECT 'jti-' || txid_current() || '-1')), 'bv.jwt_is_revoked sees the revocation');
SELECT bv.jwt_revoke('jti/escaped', now() + interval '1 minute', 'test');
SELECT is(pg_temp.verdict(pg_temp.hs256('{"alg":"HS256","kid":"hs"}', format('{"sub":"a","exp":%s,"jti":"jti\/escaped"}', pg_temp.now_s(60)), 'test-secret-0123456789-abcdefghij-XYZ')),
          '28000 The token has been revoked.', 'a revoked jti written with an escape');
SELECT ok(NOT bv.jwt_is_revoked('never-revoked'), 'bv.jwt_is_revoked: other jti are not revoked');
SET LOCAL bv.jwt_replay_check = on;
SELECT is(pg_temp.verdict((SELECT t FROM jt WHERE n = 2)), 'ok', 'replay check: first use');
SELECT is(pg_temp.verdict((SELECT t FROM jt WHERE n = 2)), '28000 The token has already been used (jti replay).', 'replayed jti');
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60)), 'hs')),
          '28000 The token''s claims are malformed.', 'replay check needs a jti');
RESET bv.jwt_replay_check;

-- 5. The key table: strength checks, rotation, privileges.
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('weak', 'HS256', 'short-secret')$$,
                 '22023', 'invalid key "weak" in bv.jwt_keys', 'an HMAC secret shorter than the hash is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('weak', 'HS512', repeat('k', 63))$$,
                 '22023', 'invalid key "weak" in bv.jwt_keys', 'HS512 needs 64 bytes');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('weak', 'RS256', pg_temp.pem('rsa1024_pub'))$$,
                 '22023', 'invalid key "weak" in bv.jwt_keys', 'an RSA key under 2048 bits is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('weak', 'HS256', pg_temp.pem('rsa_pub'))$$,
                 '22023', 'invalid key "weak" in bv.jwt_keys', 'a PEM key as HS secret is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('weak', 'ES256', pg_temp.pem('ec384'))$$,
                 '22023', 'invalid key "weak" in bv.jwt_keys', 'an ES256 key on the wrong curve is refused');
SELECT throws_ok($$INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('weak', 'none', repeat('k', 64))$$,
                 '22023', 'invalid key "weak" in bv.jwt_keys', 'alg none cannot be a key''s algorithm');
CREATE TEMP TABLE rot AS SELECT bv.jwt_sign(jsonb_build_object('sub', 'r', 'exp', pg_temp.now_s(60)), 'ed') AS t;
UPDATE bv.jwt_keys SET active = false WHERE kid = 'ed';
SELECT is(pg_temp.verdict((SELECT t FROM rot)), '28000 The token''s signature, algorithm or key is not accepted.', 'a deactivated key no longer verifies');
UPDATE bv.jwt_keys SET active = true, not_before = now() + interval '1 hour' WHERE kid = 'ed';
SELECT is(pg_temp.verdict((SELECT t FROM rot)), '28000 The token''s signature, algorithm or key is not accepted.', 'a key before its not_before is not used');
UPDATE bv.jwt_keys SET not_before = NULL WHERE kid = 'ed';
SELECT is(pg_temp.verdict((SELECT t FROM rot)), 'ok', 'the reactivated key verifies again, without restart');

-- A key written with the triggers disabled (replica mode) that does not load
-- is skipped with a WARNING; the other keys keep working.
SET LOCAL session_replication_role = replica;
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('bypassed', 'HS256', 'short');
SET LOCAL session_replication_role = origin;
UPDATE bv.jwt_keys SET active = true WHERE kid = 'hs';  -- fires the cache invalidation
SET LOCAL client_min_messages = error;
SELECT is(pg_temp.verdict(bv.jwt_sign(jsonb_build_object('sub', 'a', 'exp', pg_temp.now_s(60)), 'hs')), 'ok',
          'a key that does not load does not stop the others');
RESET client_min_messages;
DELETE FROM bv.jwt_keys WHERE kid = 'bypassed';

-- 6. JWKS import (public JWKs of the test keys).
CREATE TEMP TABLE jwks_tokens (t text, kid text);
INSERT INTO bv.jwt_keys (kid, alg, key) VALUES
    ('idp-rs', 'RS256', pg_temp.pem('rsa')), ('idp-es', 'ES256', pg_temp.pem('ec256')), ('idp-ed', 'EdDSA', pg_temp.pem('ed'));
INSERT INTO jwks_tokens
SELECT bv.jwt_sign(jsonb_build_object('sub', 'jwks-' || kid, 'exp', pg_temp.now_s(60), 'iss', 'https://idp.example'), kid), kid
FROM unnest(ARRAY['idp-rs', 'idp-es', 'idp-ed']) AS kid;
DELETE FROM bv.jwt_keys WHERE kid LIKE 'idp-%';
SELECT is(bv.jwt_import_jwks($j${"keys": [
  {"kid": "idp-rs", "use": "sig", "kty": "RSA", "n": "qQbW6wd031pgmvlpkNoFo6eTJw6Qia7VGTMBeMX49-m9myyFsvuUWfsQX-X0pEkPcu-z7Le5zRz-PRBBF_FgVouMJ8gXtQYNGihA3BCioinISmtr67IGye1v8J_CkDe1XRTz4x2S-I8bBJKF7z-dhalvI8qMU0kg7CBbeXVJ9ONTPSEyIVZYnQzNFehWGlihCObE6_rOf2AwdAazFpwMkNl9ZNXaqYK2DjoKTp7yMt0arRjsQ873LvZEVeENmu85aCn2LR9F7jjzodPgPmGOBKa59pSGEbMRpm1QGN36PaFY3-Uu6YakBadAPHY1h88tHUYyg-C9E4vG_mBIoaaI3Q", "e": "AQAB"},
  {"kid": "idp-es", "kty": "EC", "crv": "P-256", "x": "q960tOFvISlaPMzuBvg-Ig9lEUeNH9jnVxBB5bbbZPY", "y": "SP4Ip8TFm4Sz3N5U-m4IwW0c5JN9u26tPvkOLPNepiY"},
  {"kid": "idp-ed", "kty": "OKP", "crv": "Ed25519", "x": "iBYyIUejC9vnWm7b1mV9c-SqgopXGE0ejc46ct2g17o"},
  {"kid": "idp-enc", "use": "enc", "kty": "RSA", "n": "AQAB", "e": "AQAB"}
]}$j$, 'https://idp.example'), 3, 'bv.jwt_import_jwks imports the three signing keys');
SELECT is(array_agg(bv.jwt_verify(t) ->> 'sub' ORDER BY kid), ARRAY['jwks-idp-ed', 'jwks-idp-es', 'jwks-idp-rs'],
          'tokens verify with the imported JWKs') FROM jwks_tokens;
SELECT is(bv.jwt_import_jwks($j${"keys": [
  {"kid": "idp-ed", "kty": "OKP", "crv": "Ed25519", "x": "iBYyIUejC9vnWm7b1mV9c-SqgopXGE0ejc46ct2g17o"}]}$j$, 'https://idp.example'),
  1, 'a second import with one key left');
SELECT is(array_agg(kid || ':' || active ORDER BY kid), ARRAY['idp-ed:true', 'idp-es:false', 'idp-rs:false'],
          'keys the provider no longer lists are deactivated') FROM bv.jwt_keys WHERE kid LIKE 'idp-%';
SELECT throws_ok($$SELECT bv.jwt_import_jwks('{"keys":[{"kid":"x","kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}', NULL)$$,
                 '22023', 'invalid key "x" in bv.jwt_keys', 'a malformed JWK is refused');

-- 7. Privileges: only bv_admin manages keys and signs.
SELECT ok(NOT has_table_privilege('bv_service', 'bv.jwt_keys', 'SELECT'), 'bv_service cannot read the keys');
SELECT ok(NOT has_function_privilege('bv_service', 'bv.jwt_sign(jsonb, text)', 'EXECUTE'), 'bv_service cannot sign');
SELECT ok(has_function_privilege('bv_anon', 'bv.jwt_verify(text)', 'EXECUTE'), 'everyone can verify');

SELECT * FROM finish();
ROLLBACK;
