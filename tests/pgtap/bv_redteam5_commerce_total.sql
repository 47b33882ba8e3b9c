-- Red-team round 5, bv_commerce: an order or cart total beyond bigint.
-- Prices are any bigint of minor units and a line holds up to 1000 units,
-- so quantity * price could overflow: place_order() and add_to_cart()
-- failed with a raw 22003 "bigint out of range".  Now the order fails with
-- 22023 "order total too large" and a hint; a cart reports its exact subtotal.
BEGIN;
SELECT plan(9);

INSERT INTO commerce.products (slug, name) VALUES ('rt5-gold', 'Gold bar'), ('rt5-pin', 'Pin');
INSERT INTO commerce.skus (product_id, code) SELECT id, 'RT5-GOLD' FROM commerce.products WHERE slug = 'rt5-gold';
INSERT INTO commerce.skus (product_id, code) SELECT id, 'RT5-PIN' FROM commerce.products WHERE slug = 'rt5-pin';
-- The largest price, and one that overflows only when two lines are summed.
INSERT INTO commerce.prices SELECT id, 'USD', 9223372036854775807 FROM commerce.skus WHERE code = 'RT5-GOLD';
INSERT INTO commerce.prices SELECT id, 'USD', 4611686018427387904 FROM commerce.skus WHERE code = 'RT5-PIN';
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 5000 FROM commerce.skus WHERE code IN ('RT5-GOLD', 'RT5-PIN');

SELECT set_config('request.jwt.claims', '{"role":"bv_user","sub":"rt5-total"}', true);
SET LOCAL ROLE bv_user;

-- One unit at the largest price is still an order.
SELECT is((commerce.place_order(NULL, '[{"sku":"RT5-GOLD","quantity":1}]') ->> 'total_minor'),
          '9223372036854775807', 'one unit at the largest price: an order of exactly bigint max');
-- quantity * price overflows bigint (2 units).
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku":"RT5-GOLD","quantity":2}]')$$,
                 '22023', 'order total too large', 'two units at the largest price: 22023, not 22003');
-- Each line fits; the sum does not.
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku":"RT5-PIN","quantity":1},{"sku":"RT5-GOLD","quantity":1}]')$$,
                 '22023', 'order total too large', 'two lines whose sum overflows: 22023, not 22003');
-- Two lines of the same SKU are summed before pricing.
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku":"RT5-PIN","quantity":1},{"sku":"RT5-PIN","quantity":1}]')$$,
                 '22023', 'order total too large', 'the same SKU twice, summed to 2^63: 22023');

-- A cart: add_to_cart reports the exact subtotal instead of failing.
SELECT is((commerce.add_to_cart('RT5-GOLD', 3) ->> 'subtotal_minor')::numeric,
          3 * 9223372036854775807::numeric, 'add_to_cart: the subtotal beyond bigint is exact');
SELECT is((SELECT (commerce.add_to_cart('RT5-PIN', 1000) ->> 'subtotal_minor')::numeric),
          3 * 9223372036854775807::numeric + 1000 * 4611686018427387904::numeric, 'add_to_cart: a second line');
SELECT throws_ok(format('SELECT commerce.place_order(%s)', (SELECT id FROM commerce.carts WHERE customer_id = 'rt5-total' AND status = 'open')),
                 '22023', 'order total too large', 'ordering that cart: 22023');
-- The failed order left nothing behind: the cart is still open and no stock is reserved.
SELECT is((SELECT count(*)::int FROM commerce.carts WHERE customer_id = 'rt5-total' AND status = 'open'), 1,
          'the cart stays open after the refused order');
RESET ROLE;
SELECT is((SELECT sum(reserved)::int FROM commerce.inventory i JOIN commerce.skus s ON s.id = i.sku_id
            WHERE s.code IN ('RT5-GOLD', 'RT5-PIN')), 1, 'only the first order reserved stock');

SELECT * FROM finish();
ROLLBACK;
