-- Issue #17 items 11 and 15 for bv_commerce: arguments are checked first
-- (NULL -> 22004, a bad value -> 22023 with a hint, never a raw 22001 or
-- 23xxx), messages quote at most a short prefix of client values, a
-- malformed request.headers is a clean error, and the API's views refuse
-- writes with PT405 even for roles that hold the privilege.
BEGIN;
SELECT plan(20);

INSERT INTO commerce.products (slug, name) VALUES ('a-mug', 'Mug');
INSERT INTO commerce.skus (product_id, code) SELECT id, 'A-MUG' FROM commerce.products WHERE slug = 'a-mug';
INSERT INTO commerce.prices SELECT id, 'USD', 1200 FROM commerce.skus WHERE code = 'A-MUG';
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 5000 FROM commerce.skus WHERE code = 'A-MUG';

SELECT set_config('request.jwt.claims', '{"role":"bv_user","sub":"arg-tester"}', true);
SET LOCAL ROLE bv_user;

-- NULL where a value is required: 22004.
SELECT throws_ok($$SELECT commerce.add_to_cart(NULL, 1)$$, '22004', 'sku must not be null', 'add_to_cart: NULL sku');
SELECT throws_ok($$SELECT commerce.add_to_cart('A-MUG', NULL)$$, '22004', 'quantity must not be null', 'add_to_cart: NULL quantity');
SELECT throws_ok($$SELECT commerce.cancel_order(NULL)$$, '22004', NULL, 'cancel_order: NULL order id');
SELECT throws_ok($$SELECT * FROM commerce.order_history(NULL)$$, '22004', NULL, 'order_history: NULL order id');
SELECT throws_ok($$SELECT api.cancel_order(NULL)$$, '22004', NULL, 'api.cancel_order: NULL order id');

-- Bad values: 22023 with a hint.
SELECT throws_ok($$SELECT commerce.add_to_cart('A-MUG', 1, 'USDX')$$, '22023', 'invalid currency "USDX"',
                 'add_to_cart: a four-letter currency is 22023, not 22001');
SELECT throws_ok($$SELECT commerce.add_to_cart('A-MUG', 1, 'XYZ')$$, '22023', 'unsupported currency "XYZ"',
                 'add_to_cart: an unknown currency is 22023, not 23503');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku":"A-MUG","quantity":1}]', NULL, 'DOLLARS')$$, '22023', NULL,
                 'place_order: a bad currency is 22023');
SELECT throws_ok($$SELECT commerce.cancel_order(1, repeat('r', 501))$$, '22023', 'invalid reason', 'cancel_order: a reason over 500 characters');
SELECT is((SELECT commerce.add_to_cart('A-MUG', 1000) ->> 'subtotal_minor'), '1200000', 'a cart line of 1000 units');
SELECT throws_ok($$SELECT commerce.add_to_cart('A-MUG', 1)$$, '22023', 'too many units of SKU "A-MUG" in the cart',
                 'a cart line over 1000 units is 22023, not 23514');
SELECT throws_ok($$SELECT commerce.place_order(NULL, (SELECT jsonb_agg(jsonb_build_object('sku', 'A-MUG', 'quantity', 1)) FROM generate_series(1, 101)))$$,
                 '22023', 'too many order lines', 'place_order: at most 100 lines');

-- Client values are quoted by a short prefix only.
SELECT throws_ok(format('SELECT commerce.add_to_cart(%L, 1)', repeat('S', 100000)), 'PT404',
                 format('SKU "%s..." not found', repeat('S', 40)), 'a 100,000-character SKU is quoted by 40 characters');
SELECT throws_ok(format('SELECT commerce.place_order(NULL, %L)', jsonb_build_array(jsonb_build_object('sku', repeat('S', 100000), 'quantity', 1))),
                 'PT404', format('SKU "%s..." not found', repeat('S', 40)), 'place_order: the same');
CREATE TEMP TABLE msgs (m text);
GRANT ALL ON msgs TO PUBLIC;
DO $$
BEGIN
    PERFORM commerce.place_order(NULL, jsonb_build_array(jsonb_build_object('sku', repeat('S', 100000), 'quantity', 0)));
EXCEPTION WHEN OTHERS THEN
    DECLARE d text; BEGIN GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL; INSERT INTO msgs VALUES (d); END;
END $$;
SELECT cmp_ok((SELECT length(m) FROM msgs), '<', 100, 'an invalid line is quoted by a prefix in the detail');

-- A malformed request.headers: a clean PT400, not 22P02.
SELECT set_config('request.headers', '{broken', true);
SELECT throws_ok($$SELECT commerce.request_header('idempotency-key')$$, 'PT400', 'malformed request.headers',
                 'request_header: malformed headers');
SELECT set_config('request.headers', '["a"]', true);
SELECT throws_ok($$SELECT api.add_to_cart('A-MUG', 1)$$, 'PT400', 'malformed request.headers',
                 'api functions: malformed headers');
SELECT set_config('request.headers', '{"idempotency-key":"k1"}', true);
SELECT is(commerce.request_header('idempotency-key'), 'k1', 'request_header reads a header');

-- The views refuse writes with PT405 whoever holds the privilege (API
-- roles do not: PostgREST answers 401/403 for them).
RESET ROLE;
SELECT throws_ok($$INSERT INTO api.order_lines (order_id, line_no, sku, quantity, unit_price_minor) VALUES (1, 1, 'A-MUG', 1, 1)$$,
                 'PT405', 'api.order_lines is read-only', 'INSERT into api.order_lines: PT405, not 55000');
SELECT throws_ok($$UPDATE api.catalog SET amount_minor = 1 WHERE sku = 'A-MUG'$$,
                 'PT405', 'api.catalog is read-only', 'UPDATE of api.catalog: PT405, not 55000');

SELECT * FROM finish();
ROLLBACK;
