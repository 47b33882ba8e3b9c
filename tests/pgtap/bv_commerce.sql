-- bv_commerce: every domain function and refusal, acting as customers and
-- staff the way PostgREST requests do (role + JWT claims).
BEGIN;
SELECT plan(76);

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Act as somebody for the rest of the transaction (or until the next call).
CREATE FUNCTION pg_temp.act(p_role text, p_sub text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', json_build_object('role', p_role, 'sub', p_sub)::text, true);
    EXECUTE format('SET LOCAL ROLE %I', p_role);
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text, text) TO PUBLIC;

-- A catalog: one plentiful SKU, one with 3 units.
INSERT INTO commerce.products (slug, name) VALUES ('t-mug', 'Mug'), ('t-pen', 'Pen');
INSERT INTO commerce.skus (product_id, code) SELECT id, 'T-MUG' FROM commerce.products WHERE slug = 't-mug';
INSERT INTO commerce.skus (product_id, code) SELECT id, 'T-PEN' FROM commerce.products WHERE slug = 't-pen';
INSERT INTO commerce.prices SELECT id, 'USD', 1200 FROM commerce.skus WHERE code = 'T-MUG';
INSERT INTO commerce.prices SELECT id, 'USD', 300 FROM commerce.skus WHERE code = 'T-PEN';
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 100 FROM commerce.skus WHERE code = 'T-MUG';
INSERT INTO commerce.inventory (sku_id, total) SELECT id, 3 FROM commerce.skus WHERE code = 'T-PEN';
CREATE FUNCTION pg_temp.stock(p_code text) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s/%s/%s', i.total, i.reserved, i.sold)
    FROM commerce.inventory i JOIN commerce.skus s ON s.id = i.sku_id WHERE s.code = p_code $$;
GRANT EXECUTE ON FUNCTION pg_temp.stock(text) TO PUBLIC;

-- ---- schema and privileges ----
SELECT has_schema('commerce');
SELECT has_schema('api');
SELECT has_table('commerce', 'orders', 'orders table');
SELECT col_type_is('commerce', 'prices', 'amount_minor', 'bigint', 'money is integer minor units');
SELECT throws_ok($$INSERT INTO commerce.prices SELECT id, 'usd', 1 FROM commerce.skus WHERE code = 'T-MUG'$$,
                 '23503', NULL, 'a price needs a known ISO 4217 currency');
SELECT ok(NOT has_table_privilege('bv_user', 'commerce.inventory', 'UPDATE'), 'customers cannot change stock');
SELECT ok(NOT has_function_privilege('bv_user', 'commerce.ship_order(bigint,text,text)', 'EXECUTE'), 'customers cannot ship');
SELECT ok(has_function_privilege('bv_service', 'commerce.ship_order(bigint,text,text)', 'EXECUTE'), 'staff can ship');
SELECT ok(has_table_privilege('bv_anon', 'api.catalog', 'SELECT'), 'anyone can browse the catalog');
SELECT ok(NOT has_table_privilege('bv_anon', 'api.orders', 'SELECT'), 'anonymous callers see no orders');
SELECT ok(NOT has_function_privilege('bv_user', 'commerce.reserve_stock(bigint,integer)', 'EXECUTE'), 'stock is reserved only through orders');

-- ---- carts ----
SELECT pg_temp.act('bv_user', 'alice');
SELECT is((commerce.add_to_cart('T-MUG', 2, 'USD', 'cart-1'))->'subtotal_minor', '2400', 'add_to_cart returns the cart');
SELECT is((commerce.add_to_cart('T-MUG', 2, 'USD', 'cart-1'))->'subtotal_minor', '2400', 'same key, same request: same response, not added twice');
SELECT throws_ok($$SELECT commerce.add_to_cart('T-MUG', 5, 'USD', 'cart-1')$$, 'PT409', NULL, 'same key, other request: 409');
SELECT is((commerce.add_to_cart('T-PEN', 1))->'subtotal_minor', '2700', 'a second SKU joins the same cart');
SELECT throws_ok($$SELECT commerce.add_to_cart('T-MUG', 0)$$, '22023', 'invalid quantity 0', 'quantity must be positive');
SELECT throws_ok($$SELECT commerce.add_to_cart('NOPE', 1)$$, 'PT404', 'SKU "NOPE" not found', 'unknown SKU: 404');
SELECT throws_ok($$SELECT commerce.add_to_cart('T-MUG', 1, 'EUR')$$, '22023', 'your open cart is in USD, not EUR', 'an open cart keeps its currency');
SELECT throws_ok($$SELECT commerce.add_to_cart('T-MUG', 1, 'USD', repeat('k', 256))$$, '22023', 'invalid idempotency key', 'over-long idempotency key');

-- ---- placing orders ----
SELECT commerce.place_order((SELECT id FROM commerce.carts WHERE customer_id = 'alice'), NULL,
                            '{"city": "Oslo"}', NULL, 'order-1') AS o1 \gset
SELECT is(:'o1'::jsonb->>'status', 'awaiting_payment', 'a placed order awaits payment');
SELECT is(:'o1'::jsonb->>'total_minor', '2700', 'total from the copied prices');
SELECT ok(:'o1'::jsonb->>'payment_ref' LIKE 'pay\_%', 'a payment reference is returned');
SELECT is(pg_temp.stock('T-PEN'), '3/1/0', 'the ordered unit is reserved');
SELECT is(commerce.place_order((SELECT id FROM commerce.carts WHERE customer_id = 'alice'), NULL,
                               '{"city": "Oslo"}', NULL, 'order-1'), :'o1'::jsonb,
          'retry with the same key returns the same order');
SELECT is(pg_temp.stock('T-PEN'), '3/1/0', 'the retry reserved nothing more');
SELECT throws_ok($$SELECT commerce.place_order((SELECT id FROM commerce.carts WHERE customer_id = 'alice'))$$,
                 'PT404', NULL, 'an ordered cart cannot be ordered again');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "T-PEN", "quantity": 3}]')$$,
                 'PT409', 'insufficient stock for SKU T-PEN', 'oversell: 409');
SELECT is(pg_temp.stock('T-PEN'), '3/1/0', 'a refused order reserves nothing');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "T-PEN", "quantity": 1.5}]')$$, '22023', 'invalid order line', 'fractional quantity');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": 7, "quantity": 1}]')$$, '22023', 'invalid order line', 'non-string sku');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[]')$$, '22023', 'invalid order lines', 'empty lines');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "GONE", "quantity": 1}]')$$, 'PT404', 'SKU "GONE" not found', 'unknown SKU in lines');
SELECT throws_ok($$SELECT commerce.place_order(1, '[{"sku": "T-PEN", "quantity": 1}]')$$, '22023', NULL, 'cart and lines together');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "T-PEN", "quantity": 1}]', '"Oslo"')$$, '22023', 'invalid shipping address', 'address must be an object');
SELECT commerce.place_order(NULL, '[{"sku": "T-PEN", "quantity": 1}, {"sku": "T-PEN", "quantity": 1}]') AS o2 \gset
SELECT is(jsonb_array_length(:'o2'::jsonb->'lines'), 1, 'lines of one SKU are merged');
SELECT is(pg_temp.stock('T-PEN'), '3/3/0', 'all three units are now reserved');

-- ---- another customer ----
SELECT pg_temp.act('bv_user', 'bob');
SELECT is((SELECT count(*) FROM api.orders), 0::bigint, 'bob sees none of alice''s orders');
SELECT is((SELECT count(*) FROM commerce.order_lines), 0::bigint, 'nor their lines');
SELECT throws_ok(format('SELECT commerce.cancel_order(%s)', :'o1'::jsonb->>'id'), 'PT404', NULL, 'bob cannot cancel alice''s order: 404');
SELECT throws_ok(format('SELECT * FROM commerce.order_history(%s)', :'o1'::jsonb->>'id'), 'PT404', NULL, 'nor read its history');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "T-PEN", "quantity": 1}]')$$, 'PT409', NULL, 'stock held by alice is not sold to bob');
SELECT throws_ok('SELECT count(*) FROM commerce.idempotency_keys', '42501', NULL, 'bob cannot read idempotency keys');

-- ---- cancelling ----
SELECT pg_temp.act('bv_user', 'alice');
SELECT is((commerce.cancel_order((:'o2'::jsonb->>'id')::bigint, 'changed my mind'))->>'status', 'cancelled', 'alice cancels her order');
SELECT is(pg_temp.stock('T-PEN'), '3/1/0', 'cancelling releases the reservation');
SELECT throws_ok(format('SELECT commerce.cancel_order(%s)', :'o2'::jsonb->>'id'), 'PT409',
                 'invalid order transition from cancelled to cancelled', 'a cancelled order stays cancelled');
SELECT is((SELECT array_agg(to_status::text || ':' || actor ORDER BY at) FROM commerce.order_history((:'o2'::jsonb->>'id')::bigint)),
          ARRAY['pending:alice', 'awaiting_payment:alice', 'cancelled:alice'], 'history: every transition with its actor');
SELECT is((SELECT reason FROM commerce.order_history((:'o2'::jsonb->>'id')::bigint) WHERE to_status = 'cancelled'),
          'changed my mind', 'history keeps the reason');

-- ---- the state machine, for every writer ----
RESET ROLE;
SELECT throws_ok(format('UPDATE commerce.orders SET status = ''shipped'' WHERE id = %s', :'o1'::jsonb->>'id'),
                 'PT409', 'invalid order transition from awaiting_payment to shipped', 'direct UPDATEs obey the state machine');
PREPARE bad_move AS UPDATE commerce.orders SET status = 'delivered' WHERE status = 'awaiting_payment';
SELECT throws_like('bad_move', '%awaiting_payment to delivered%', 'invalid transition names both states');
DO $$
BEGIN
    UPDATE commerce.orders SET status = 'delivered' WHERE status = 'awaiting_payment';
EXCEPTION WHEN OTHERS THEN
    DECLARE h text; BEGIN
        GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
        PERFORM set_config('bv_test.hint', h, true);
    END;
END $$;
SELECT is(current_setting('bv_test.hint'), 'Allowed next states: paid, cancelled.', 'the hint lists the allowed next states');
SELECT throws_ok($$INSERT INTO commerce.orders (customer_id, currency, total_minor, status) VALUES ('x', 'USD', 0, 'paid')$$,
                 'PT409', NULL, 'orders start pending');

-- ---- staff ----
SELECT pg_temp.act('bv_user', 'alice');
SELECT throws_ok(format('SELECT commerce.fulfil_order(%s)', :'o1'::jsonb->>'id'), '42501', NULL, 'customers cannot fulfil');
SELECT pg_temp.act('bv_service', 'staff-1');
SELECT is((SELECT count(*) FROM api.orders WHERE customer_id = 'alice'), 2::bigint, 'staff see every order');
SELECT throws_ok(format('SELECT commerce.ship_order(%s)', :'o1'::jsonb->>'id'), 'PT409', NULL, 'an unpaid order cannot ship');
SELECT throws_ok(format('SELECT commerce.refund_order(%s, 100)', :'o1'::jsonb->>'id'), 'PT409', NULL, 'an unpaid order cannot be refunded');

-- Payment (as the provider's webhook would apply it; the HTTP path is in the TAP test).
RESET ROLE;
SELECT commerce.transition((:'o1'::jsonb->>'id')::bigint, 'paid', 'test payment');
UPDATE commerce.inventory i SET reserved = reserved - 1, sold = sold + 1 FROM commerce.skus s WHERE s.id = i.sku_id AND s.code = 'T-PEN';
SELECT pg_temp.act('bv_service', 'staff-1');
SELECT is((commerce.fulfil_order((:'o1'::jsonb->>'id')::bigint))->>'status', 'fulfilled', 'staff fulfil a paid order');
SELECT is((commerce.ship_order((:'o1'::jsonb->>'id')::bigint, 'TRACK-1'))->>'tracking_code', 'TRACK-1', 'staff ship it with a tracking code');
SELECT pg_temp.act('bv_user', 'alice');
SELECT throws_ok(format('SELECT commerce.cancel_order(%s)', :'o1'::jsonb->>'id'), 'PT409', NULL, 'a shipped order cannot be cancelled');
SELECT pg_temp.act('bv_service', 'staff-1');
SELECT is((commerce.deliver_order((:'o1'::jsonb->>'id')::bigint))->>'status', 'delivered', 'staff mark it delivered');
SELECT throws_ok(format('SELECT commerce.refund_order(%s, 999999)', :'o1'::jsonb->>'id'), '22023', 'invalid refund amount 999999', 'refund larger than the order');
SELECT is((commerce.refund_order((:'o1'::jsonb->>'id')::bigint, 700, 'damaged'))->>'status', 'partially_refunded', 'partial refund');
SELECT is((commerce.refund_order((:'o1'::jsonb->>'id')::bigint))->>'status', 'refunded', 'refund of the rest');
SELECT is((SELECT sum(amount_minor) FROM commerce.refunds WHERE order_id = (:'o1'::jsonb->>'id')::bigint), 2700::numeric, 'refunds add up to the total');

-- ---- reservation expiry and key purge (the pg_cron jobs) ----
SELECT pg_temp.act('bv_user', 'carol');
SELECT commerce.place_order(NULL, '[{"sku": "T-MUG", "quantity": 4}]', NULL, NULL, 'carol-1') AS o3 \gset
RESET ROLE;
UPDATE commerce.orders SET reserved_until = now() - interval '1 second' WHERE id = (:'o3'::jsonb->>'id')::bigint;
SELECT is(commerce.release_expired_reservations(), 1, 'one expired reservation released');
SELECT is((SELECT status::text || ':' || (SELECT actor FROM commerce.order_events e WHERE e.order_id = o.id ORDER BY id DESC LIMIT 1)
           FROM commerce.orders o WHERE id = (:'o3'::jsonb->>'id')::bigint), 'cancelled:commerce-expiry', 'expired order cancelled by the job');
-- created_at is an audit column that bv_audit protects; to let time pass,
-- the test switches its trigger off (rolled back at the end).
ALTER TABLE commerce.idempotency_keys DISABLE TRIGGER bv_audit_stamp;
UPDATE commerce.idempotency_keys SET created_at = now() - interval '25 hours' WHERE owner = 'carol';
SELECT is(commerce.purge_idempotency_keys(), 1, 'keys older than 24 hours are purged');

-- ---- audit: columns and history on every commerce table ----
SELECT is((SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'commerce'::regnamespace AND c.relkind = 'r'
            AND NOT EXISTS (SELECT 1 FROM bv_audit.tracked t WHERE t.relid = c.oid)), 0::bigint,
          'every commerce table is audited');
SELECT has_column('commerce', 'orders', 'updated_by', 'orders carry audit columns');
SELECT is((SELECT created_by FROM commerce.orders WHERE id = (:'o1'::jsonb->>'id')::bigint), 'alice',
          'created_by is the customer who placed the order');
SELECT ok((SELECT count(*) FROM bv_audit.history('commerce.orders', jsonb_build_object('id', (:'o1'::jsonb->>'id')::bigint))) >= 6,
          'the order''s audit history has every version');

-- ---- place_order 0.2.0: lines, prices and responses ----
SELECT pg_temp.act('bv_user', 'dave');
SELECT commerce.place_order(NULL, '[{"sku": "T-MUG", "quantity": 2.0}, {"sku": "T-MUG", "quantity": 1}]') AS o4 \gset
SELECT is(:'o4'::jsonb->'lines', '[{"sku": "T-MUG", "line_no": 1, "quantity": 3, "unit_price_minor": 1200}]'::jsonb,
          'a whole quantity written 2.0 is accepted; lines of one SKU are summed, priced at order time');
SELECT is((:'o4'::jsonb->>'total_minor')::bigint, 3600::bigint, 'the total is the sum of the lines');
RESET ROLE;
SELECT is(:'o4'::jsonb, commerce.order_json((:'o4'::jsonb->>'id')::bigint), 'place_order returns the stored order');
UPDATE commerce.skus SET active = false WHERE code = 'T-MUG';
SELECT pg_temp.act('bv_user', 'dave');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "T-MUG", "quantity": 1}]')$$, 'PT404', 'SKU "T-MUG" not found',
                 'an inactive SKU cannot be ordered');
SELECT throws_ok($$SELECT commerce.place_order(NULL, '[{"sku": "T-PEN", "quantity": 1}]', NULL, 'EUR')$$, '22023',
                 'SKU "T-PEN" has no price in EUR', 'a SKU without a price in the currency is refused');
RESET ROLE;
SELECT is((SELECT count(*) FROM pg_proc WHERE oid IN ('commerce.sees_customer(text)'::regprocedure,
                                                      'commerce.is_staff()'::regprocedure,
                                                      'commerce.request_role()'::regprocedure)
            AND proconfig IS NULL AND NOT prosecdef), 3::bigint,
          'the row-level security predicates can be inlined (no SET clause, not SECURITY DEFINER)');

SELECT * FROM finish();
ROLLBACK;
