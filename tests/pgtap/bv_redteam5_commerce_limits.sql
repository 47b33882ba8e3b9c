-- Red-team round 5, bv_commerce: limits a client session could escape.
--  1. commerce.addresses (written directly by customers over SQL and
--     GraphQL) bounded nothing: megabytes per field, any number of rows,
--     the raw 23514 of a CHECK for a bad country.  Now 22023 with a hint.
--  2. The reservation time of unpaid orders was the custom setting
--     commerce.reservation_ttl, which any session may SET ('100 years'
--     held stock for a century; 'garbage' was a raw 22007).  Now the
--     commerce.limits row reservation_ttl_seconds.
BEGIN;
SELECT plan(14);

INSERT INTO commerce.products (slug, name) VALUES ('rt5-cup', 'Cup');
INSERT INTO commerce.skus (product_id, code) SELECT id, 'RT5-CUP' FROM commerce.products WHERE slug = 'rt5-cup';
INSERT INTO commerce.prices SELECT id, 'USD', 500 FROM commerce.skus WHERE code = 'RT5-CUP';
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 100 FROM commerce.skus WHERE code = 'RT5-CUP';

SELECT set_config('request.jwt.claims', '{"role":"bv_user","sub":"rt5-addr"}', true);
SET LOCAL ROLE bv_user;

PREPARE addr(text, text, text, text, text, text) AS
    INSERT INTO commerce.addresses (name, line1, line2, city, postal_code, country) VALUES ($1, $2, $3, $4, $5, $6);
SELECT lives_ok($$EXECUTE addr('Ann', '1 Main St', NULL, 'Springfield', '12345', 'US')$$, 'an ordinary address');
SELECT throws_ok($$EXECUTE addr(repeat('N', 5000000), '1 Main St', NULL, 'Springfield', '12345', 'US')$$,
                 '22023', 'invalid address field "name"', 'a 5 MB name: 22023');
SELECT throws_ok($$EXECUTE addr('Ann', repeat('é', 201), NULL, 'Springfield', '12345', 'US')$$,
                 '22023', 'invalid address field "line1"', 'line1 of 201 characters (multibyte): 22023');
SELECT lives_ok($$EXECUTE addr('Ann', repeat('é', 200), NULL, 'Springfield', '12345', 'US')$$,
                'line1 of exactly 200 characters');
SELECT throws_ok($$EXECUTE addr('Ann', '1 Main St', E'x\ny', 'Springfield', '12345', 'US')$$,
                 '22023', 'invalid address field "line2"', 'a newline in line2: 22023');
SELECT throws_ok($$EXECUTE addr('Ann', '1 Main St', NULL, '   ', '12345', 'US')$$,
                 '22023', 'invalid address field "city"', 'a blank city: 22023');
SELECT throws_ok($$EXECUTE addr('Ann', '1 Main St', NULL, 'Springfield', '12345', 'us')$$,
                 '22023', 'invalid address field "country"', 'a lower-case country: 22023, not the 23514 of the CHECK');
SELECT throws_ok($$UPDATE commerce.addresses SET postal_code = repeat('9', 21)$$,
                 '22023', 'invalid address field "postal_code"', 'an UPDATE is checked too');
-- The cap (lowered by the operator for the test) counts the customer's own rows.
RESET ROLE;
UPDATE commerce.limits SET value = 3 WHERE name = 'max_addresses';
SET LOCAL ROLE bv_user;
SELECT lives_ok($$EXECUTE addr('Ann', '3 Main St', NULL, 'Springfield', '12345', 'US')$$, 'the third address');
SELECT throws_ok($$EXECUTE addr('Ann', '4 Main St', NULL, 'Springfield', '12345', 'US')$$,
                 '22023', 'too many addresses', 'the fourth address: 22023');
SELECT set_config('commerce.max_addresses_per_customer', '1000', true);
SELECT throws_ok($$EXECUTE addr('Ann', '4 Main St', NULL, 'Springfield', '12345', 'US')$$,
                 '22023', 'too many addresses', 'no session setting raises the cap');

-- 2. The reservation time ignores the session.
SELECT set_config('commerce.reservation_ttl', '100 years', true);
SELECT cmp_ok((commerce.place_order(NULL, '[{"sku":"RT5-CUP","quantity":1}]') ->> 'reserved_until')::timestamptz,
              '<=', now() + interval '15 minutes', 'SET commerce.reservation_ttl = 100 years: still 15 minutes');
SELECT set_config('commerce.reservation_ttl', 'garbage', true);
SELECT lives_ok($$SELECT commerce.place_order(NULL, '[{"sku":"RT5-CUP","quantity":1}]')$$,
                'a reservation_ttl that is not an interval changes nothing (was a raw 22007)');
RESET ROLE;
UPDATE commerce.limits SET value = 120 WHERE name = 'reservation_ttl_seconds';
SET LOCAL ROLE bv_user;
SELECT cmp_ok((commerce.place_order(NULL, '[{"sku":"RT5-CUP","quantity":1}]') ->> 'reserved_until')::timestamptz,
              '<=', now() + interval '2 minutes', 'the operator''s commerce.limits row decides');

SELECT * FROM finish();
ROLLBACK;
