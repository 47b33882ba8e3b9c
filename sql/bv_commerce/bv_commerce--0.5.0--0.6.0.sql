/*
 * bv_commerce 0.5.0 -> 0.6.0: order totals beyond bigint (red-team round 5).
 *
 * A price is any bigint of minor units, and a line holds up to 1000 units:
 * quantity * price, or the sum of an order's lines, could overflow bigint.
 * place_order() then failed with PostgreSQL's raw "bigint out of range"
 * (22003) and cart_json() (every add_to_cart response) with the same error,
 * which told the client neither what was wrong nor what to do.
 *
 * Now the total is computed in numeric and checked: an order (or a cart)
 * whose total exceeds the largest bigint fails with 22023 "order total too
 * large", a detail giving the limit and a hint to split the order.  A cart's
 * subtotal is reported exactly (numeric) whatever its size, so a big cart can
 * still be looked at and emptied.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_commerce UPDATE TO '0.6.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION commerce.cart_json(p_cart_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        WITH items AS (
            SELECT (SELECT s.code FROM commerce.skus s WHERE s.id = i.sku_id) AS code, i.quantity,
                   (SELECT p.amount_minor FROM commerce.prices p
                     WHERE p.sku_id = i.sku_id AND p.currency = c.currency) AS price
              FROM commerce.carts c JOIN commerce.cart_items i ON i.cart_id = c.id
             WHERE c.id = p_cart_id)
        SELECT jsonb_build_object(
            'id', c.id, 'status', c.status, 'currency', c.currency,
            'items', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                            'sku', i.code, 'quantity', i.quantity, 'unit_price_minor', i.price)
                            ORDER BY i.code), '[]')
                      FROM items i),
            'subtotal_minor', (SELECT coalesce(sum(i.quantity::numeric * i.price), 0) FROM items i))
        FROM commerce.carts c WHERE c.id = p_cart_id);
END
$$;

-- place_order: as in 0.3.0, with the total computed in numeric and checked against bigint.
CREATE OR REPLACE FUNCTION commerce.place_order(p_cart_id bigint DEFAULT NULL, p_lines jsonb DEFAULT NULL,
                                                p_shipping_address jsonb DEFAULT NULL, p_currency text DEFAULT NULL,
                                                p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_customer text := bv.actor();
    v_prior jsonb;
    v_currency char(3);
    v_order_id bigint;
    v_total bigint;
    v_total_exact numeric;
    v_line jsonb;
    v_missing text;
    -- The order's lines, one per SKU, sorted by SKU id.
    v_sku_ids bigint[];
    v_quantities integer[];
    v_prices bigint[];
    v_ttl interval := coalesce(nullif(current_setting('commerce.reservation_ttl', true), '')::interval,
                               interval '15 minutes');
BEGIN
    PERFORM commerce.check_currency(p_currency);
    IF p_shipping_address IS NOT NULL AND pg_catalog.octet_length(p_shipping_address::text) > 4096 THEN
        RAISE EXCEPTION 'shipping address too large'
            USING ERRCODE = '22023', DETAIL = 'A shipping address has at most 4096 bytes of JSON.',
                  HINT = 'Send the address fields only (name, lines, city, postal code, country).';
    END IF;
    IF p_lines IS NOT NULL AND jsonb_typeof(p_lines) = 'array' AND jsonb_array_length(p_lines) > 100 THEN
        RAISE EXCEPTION 'too many order lines'
            USING ERRCODE = '22023', DETAIL = format('%s lines; an order has at most 100.', jsonb_array_length(p_lines)),
                  HINT = 'Split the order, or merge lines of the same SKU.';
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        v_prior := commerce.idempotency_begin(p_idempotency_key, 'place_order',
            jsonb_build_object('cart_id', p_cart_id, 'lines', p_lines,
                               'shipping_address', p_shipping_address, 'currency', p_currency));
        IF v_prior IS NOT NULL THEN
            RETURN v_prior;
        END IF;
    END IF;

    IF (p_cart_id IS NULL) = (p_lines IS NULL) THEN
        RAISE EXCEPTION 'give either a cart or a list of lines'
            USING ERRCODE = '22023', HINT = 'Pass cart_id, or lines as [{"sku": "...", "quantity": 1}], not both.';
    END IF;
    IF p_shipping_address IS NOT NULL AND jsonb_typeof(p_shipping_address) <> 'object' THEN
        RAISE EXCEPTION 'invalid shipping address'
            USING ERRCODE = '22023', HINT = 'Pass the address as a JSON object.';
    END IF;

    IF p_cart_id IS NOT NULL THEN
        SELECT c.currency INTO v_currency FROM commerce.carts c
         WHERE c.id = p_cart_id AND c.customer_id = v_customer AND c.status = 'open' FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'open cart % not found', p_cart_id
                USING ERRCODE = 'PT404', HINT = 'Order from your own open cart; a cart can be ordered once.';
        END IF;
        SELECT array_agg(i.sku_id ORDER BY i.sku_id), array_agg(i.quantity ORDER BY i.sku_id)
          INTO v_sku_ids, v_quantities
          FROM commerce.cart_items i WHERE i.cart_id = p_cart_id;
        UPDATE commerce.carts SET status = 'ordered' WHERE id = p_cart_id;
    ELSE
        v_currency := upper(coalesce(p_currency, 'USD'));
        IF jsonb_typeof(p_lines) <> 'array' OR jsonb_array_length(p_lines) = 0 THEN
            RAISE EXCEPTION 'invalid order lines'
                USING ERRCODE = '22023', HINT = 'Pass lines as a non-empty array [{"sku": "...", "quantity": 1}].';
        END IF;
        FOR v_line IN SELECT jsonb_array_elements(p_lines) LOOP
            IF jsonb_typeof(v_line) IS DISTINCT FROM 'object'
               OR jsonb_typeof(v_line->'sku') IS DISTINCT FROM 'string'
               OR jsonb_typeof(v_line->'quantity') IS DISTINCT FROM 'number'
               OR (v_line->>'quantity')::numeric <> trunc((v_line->>'quantity')::numeric)
               OR (v_line->>'quantity')::numeric NOT BETWEEN 1 AND 1000 THEN
                RAISE EXCEPTION 'invalid order line'
                    USING ERRCODE = '22023', DETAIL = format('Line %s.', commerce.excerpt(v_line::text)),
                          HINT = 'Each line needs a "sku" code and an integer "quantity" from 1 to 1000.';
            END IF;
        END LOOP;
        -- One index lookup per line (the scalar subquery); lines of the same
        -- SKU are summed; unknown or inactive codes are grouped under NULL.
        SELECT min(t.code) FILTER (WHERE t.sku_id IS NULL),
               array_agg(t.sku_id ORDER BY t.sku_id) FILTER (WHERE t.sku_id IS NOT NULL),
               array_agg(t.quantity ORDER BY t.sku_id) FILTER (WHERE t.sku_id IS NOT NULL)
          INTO v_missing, v_sku_ids, v_quantities
          FROM (SELECT l.sku_id, min(l.code) AS code, sum(l.quantity)::integer AS quantity
                  FROM (SELECT (SELECT s.id FROM commerce.skus s WHERE s.code = e->>'sku' AND s.active) AS sku_id,
                               e->>'sku' AS code, (e->>'quantity')::numeric::integer AS quantity
                          FROM jsonb_array_elements(p_lines) AS e) l
                 GROUP BY l.sku_id) t;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'SKU "%" not found', commerce.excerpt(v_missing)
                USING ERRCODE = 'PT404', HINT = 'Use a SKU code listed by api.catalog.';
        END IF;
    END IF;

    IF v_sku_ids IS NULL THEN
        RAISE EXCEPTION 'the cart is empty'
            USING ERRCODE = '22023', HINT = 'Add items to the cart before ordering.';
    END IF;

    -- Price every line first, so that the order is written once, complete
    -- (each write of an order is audited and streamed).  OFFSET 0 keeps the
    -- price lookup from being repeated for each use of "price".
    SELECT array_agg(u.price ORDER BY u.n), sum(u.quantity::numeric * u.price),
           min((SELECT s.code FROM commerce.skus s WHERE s.id = u.sku_id)) FILTER (WHERE u.price IS NULL)
      INTO v_prices, v_total_exact, v_missing
      FROM (SELECT u.n, u.sku_id, u.quantity,
                   (SELECT p.amount_minor FROM commerce.prices p
                     WHERE p.sku_id = u.sku_id AND p.currency = v_currency) AS price
              FROM unnest(v_sku_ids, v_quantities) WITH ORDINALITY AS u(sku_id, quantity, n)
            OFFSET 0) u;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'SKU "%" has no price in %', commerce.excerpt(v_missing), v_currency
            USING ERRCODE = '22023', HINT = 'Order in a currency the SKU is priced in.';
    END IF;
    IF v_total_exact > 9223372036854775807 THEN
        RAISE EXCEPTION 'order total too large'
            USING ERRCODE = '22023',
                  DETAIL = 'An order total is at most 9223372036854775807 minor units.',
                  HINT = 'Split the order into smaller orders, or order fewer units.';
    END IF;
    v_total := v_total_exact;

    PERFORM pg_catalog.set_config('commerce.transition_reason', 'payment opened', true);
    INSERT INTO commerce.orders (customer_id, status, currency, total_minor, shipping_address, reserved_until)
    VALUES (v_customer, 'awaiting_payment', v_currency, v_total, p_shipping_address, now() + v_ttl)
    RETURNING id INTO v_order_id;
    PERFORM pg_catalog.set_config('commerce.transition_reason', '', true);

    -- Reserve in SKU id order: concurrent orders cannot deadlock.  The
    -- conditional UPDATE is the no-oversell rule; when it finds too little
    -- stock, reserve_stock() tries once more and reports the shortage.
    FOR i IN 1 .. cardinality(v_sku_ids) LOOP
        UPDATE commerce.inventory SET reserved = reserved + v_quantities[i]
         WHERE sku_id = v_sku_ids[i] AND total - reserved - sold >= v_quantities[i];
        IF NOT FOUND THEN
            PERFORM commerce.reserve_stock(v_sku_ids[i], v_quantities[i]);
        END IF;
    END LOOP;

    INSERT INTO commerce.order_lines (order_id, line_no, sku_id, quantity, unit_price_minor)
    SELECT v_order_id, u.n, u.sku_id, u.quantity, u.price
      FROM unnest(v_sku_ids, v_quantities, v_prices) WITH ORDINALITY AS u(sku_id, quantity, price, n);

    INSERT INTO commerce.payments (order_id, provider_ref, amount_minor, currency)
    VALUES (v_order_id, 'pay_' || replace(gen_random_uuid()::text, '-', ''), v_total, v_currency);

    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.order_json(v_order_id));
END
$$;
