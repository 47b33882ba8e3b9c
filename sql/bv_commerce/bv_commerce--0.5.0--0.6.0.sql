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

/*
 * The reservation time of unpaid orders was the custom setting
 * commerce.reservation_ttl, which any session may SET: a customer with a
 * SQL session (SET commerce.reservation_ttl = '100 years') held the units
 * of its unpaid orders for a century instead of 15 minutes, and a value
 * that is not an interval failed place_order with a raw 22007.  It is now
 * the commerce.limits row reservation_ttl_seconds (bv_admin), as
 * max_unpaid_units is since 0.4.0; the setting is ignored.
 */
ALTER TABLE commerce.limits DROP CONSTRAINT limits_name_check;
ALTER TABLE commerce.limits ADD CONSTRAINT limits_name_check
    CHECK (name IN ('max_unpaid_units', 'reservation_ttl_seconds', 'max_addresses'));
ALTER TABLE commerce.limits ADD CONSTRAINT limits_value_range
    CHECK (name <> 'reservation_ttl_seconds' OR value BETWEEN 60 AND 604800);
INSERT INTO commerce.limits (name, value) VALUES ('reservation_ttl_seconds', 900), ('max_addresses', 100)
ON CONFLICT (name) DO NOTHING;
COMMENT ON COLUMN commerce.limits.name IS 'max_unpaid_units: units one customer may hold reserved in unpaid (awaiting_payment) orders; reservation_ttl_seconds: how long an unpaid order holds its units (60 s to 7 days, default 900); max_addresses: addresses one customer may keep (default 100).';

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
    -- A table row, not a session setting: a client could SET a setting.
    v_ttl interval := coalesce((SELECT pg_catalog.make_interval(secs => l.value) FROM commerce.limits l
                                 WHERE l.name = 'reservation_ttl_seconds'), interval '15 minutes');
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

/*
 * Addresses (red-team round 5).  Customers write commerce.addresses
 * directly (SQL, and GraphQL, which exposes schema commerce): nothing
 * bounded a field or the number of rows, so one customer could store
 * megabytes per address and any number of addresses (place_order caps a
 * shipping address at 4 kB, this table had no cap), and a bad country was
 * the raw 23514 of the CHECK.  Now a BEFORE trigger checks each field
 * (22023, a hint, no client data quoted) and at most
 * the commerce.limits row max_addresses (100) addresses per customer.
 */
CREATE FUNCTION commerce.check_address()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_field text;
    v_max integer;
    v_count bigint;
BEGIN
    SELECT f.name, f.max INTO v_field, v_max
      FROM (VALUES (1, 'name', NEW.name, 200), (2, 'line1', NEW.line1, 200), (3, 'line2', NEW.line2, 200),
                   (4, 'city', NEW.city, 100), (5, 'postal_code', NEW.postal_code, 20)) AS f(n, name, value, max)
     WHERE pg_catalog.length(f.value) > f.max
        OR f.value ~ '[[:cntrl:]]'
        OR (f.name <> 'line2' AND pg_catalog.btrim(f.value) = '')
     ORDER BY f.n LIMIT 1;
    IF v_field IS NOT NULL THEN
        RAISE EXCEPTION 'invalid address field "%"', v_field
            USING ERRCODE = '22023',
                  DETAIL = pg_catalog.format('%s is at most %s characters, without control characters%s.', v_field, v_max,
                                             CASE WHEN v_field = 'line2' THEN '' ELSE ', and not blank' END),
                  HINT = 'Send the address fields only: name, line1, line2, city, postal_code, country.';
    END IF;
    IF NEW.country IS NULL OR NEW.country::text !~ '^[A-Z]{2}$' THEN
        RAISE EXCEPTION 'invalid address field "country"'
            USING ERRCODE = '22023', DETAIL = 'A country is an ISO 3166-1 alpha-2 code in capitals.',
                  HINT = 'Pass a code such as "DE" or "US".';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.customer_id IS DISTINCT FROM OLD.customer_id THEN
        -- One customer's inserts are serialised so that the cap holds under concurrency.
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('commerce.addresses:' || NEW.customer_id, 0));
        v_max := coalesce((SELECT l.value FROM commerce.limits l WHERE l.name = 'max_addresses'), 100);
        SELECT pg_catalog.count(*) INTO v_count FROM commerce.addresses a WHERE a.customer_id = NEW.customer_id;
        IF v_count >= v_max THEN
            RAISE EXCEPTION 'too many addresses'
                USING ERRCODE = '22023', DETAIL = pg_catalog.format('A customer keeps at most %s addresses.', v_max),
                      HINT = 'Delete an address you no longer use, or update one.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION commerce.check_address() IS
'Trigger: checks an address before it is written (field lengths, no control characters, country code, at most commerce.limits max_addresses per customer, default 100); 22023 with a hint.';
REVOKE ALL ON FUNCTION commerce.check_address() FROM PUBLIC;

CREATE TRIGGER check_address BEFORE INSERT OR UPDATE ON commerce.addresses
    FOR EACH ROW EXECUTE FUNCTION commerce.check_address();
