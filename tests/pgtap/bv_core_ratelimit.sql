-- bv_core security: the shared-memory rate limiter, one backend.  (The
-- concurrent and READ ONLY cases are in tests/tap/bv_core_ratelimit.pl.)
BEGIN;
SELECT plan(11);

CREATE TEMP TABLE r AS
SELECT n, bv.rate_limit('pgtap:' || txid_current(), 0.001, 5) AS allowed
FROM generate_series(1, 8) AS n;
SELECT is((SELECT count(*)::int FROM r WHERE allowed), 5, 'a fresh bucket allows exactly its burst');
SELECT is((SELECT array_agg(allowed ORDER BY n) FROM r), ARRAY[true, true, true, true, true, false, false, false],
          'then refuses');
SELECT ok(bv.rate_limit_retry_after('pgtap:' || txid_current(), 0.001, 5) > 900,
          'retry_after: about 1/rate seconds until the next token');
SELECT is(bv.rate_limit_retry_after('pgtap-other:' || txid_current(), 1, 1), 0::float8, 'retry_after is 0 when allowed');
SELECT ok(bv.rate_limit('pgtap-high:' || txid_current(), 1e9, 1), 'a fast-refilling bucket allows');
SELECT throws_ok(format($$SELECT bv.rate_limit_enforce('pgtap:%s', 0.001, 5)$$, txid_current()),
                 'PT429', 'rate limit exceeded', 'enforce raises PT429');
SELECT throws_ok($$SELECT bv.rate_limit('', 1, 1)$$, '22023', 'rate limit key must not be empty', 'empty key');
SELECT throws_ok($$SELECT bv.rate_limit('k', 0, 1)$$, '22023', NULL, 'rate must be positive');
SELECT throws_ok($$SELECT bv.rate_limit('k', 'NaN', 1)$$, '22023', NULL, 'rate must be finite');
SELECT throws_ok($$SELECT bv.rate_limit('k', 1, 0.5)$$, '22023', NULL, 'burst must be at least 1');
SELECT ok((SELECT used > 0 AND used <= slots AND denied >= 3 FROM bv.rate_limit_stats()), 'stats count buckets and refusals');

SELECT * FROM finish();
ROLLBACK;
