-- Red-team round 5, bv_graphql: the number of mutation root fields in one
-- operation.  Each runs as a statement of its own (a function call such as
-- placeOrder, chatSend, createPost, iotSendCommand, or an insert of up to
-- max_rows objects), but the request rate limit counts the request once: a
-- document of 200 aliases of a mutation did 200 writes per request.  Now at
-- most bv_graphql.max_mutations (20) mutation fields per operation; more is
-- a request error (GRAPHQL_VALIDATION_FAILED), nothing runs.
BEGIN;
SELECT plan(6);

SELECT set_config('request.jwt.claims', '{"role":"bv_user","sub":"rt5-gql"}', true);
SET LOCAL ROLE bv_user;

CREATE TEMP TABLE docs (n int, doc text);
INSERT INTO docs
SELECT n, 'mutation { ' || string_agg(format('m%s: insertIntoAddressesCollection(objects: [{name: "A", line1: "L", city: "C", postalCode: "P", country: "DE"}]) { affectedCount }', i), ' ') || ' }'
  FROM (VALUES (20), (21)) AS v(n), generate_series(1, n) AS i GROUP BY n;

SELECT is((SELECT graphql.resolve((SELECT doc FROM docs WHERE n = 20)) -> 'data' -> 'm20' ->> 'affectedCount'), '1',
          '20 mutation fields: all run');
SELECT is((SELECT count(*)::int FROM commerce.addresses WHERE customer_id = 'rt5-gql'), 20, '20 addresses written');
SELECT is((SELECT graphql.resolve((SELECT doc FROM docs WHERE n = 21)) -> 'errors' -> 0 ->> 'message'),
          'the operation has more than 20 mutation fields (bv_graphql.max_mutations)', '21 mutation fields: refused');
SELECT is((SELECT graphql.resolve((SELECT doc FROM docs WHERE n = 21)) -> 'errors' -> 0 -> 'extensions' ->> 'code'),
          'GRAPHQL_VALIDATION_FAILED', 'as a request error');
SELECT is((SELECT count(*)::int FROM commerce.addresses WHERE customer_id = 'rt5-gql'), 20, 'and nothing of it ran');
-- Queries are not concerned: 21 aliases of a read are one statement.
SELECT ok((SELECT graphql.resolve('{ ' || string_agg(format('q%s: addressesCollection(first: 1) { totalCount }', i), ' ') || ' }')
             FROM generate_series(1, 21) i) -> 'errors' IS NULL, '21 aliased reads still run');

SELECT * FROM finish();
ROLLBACK;
