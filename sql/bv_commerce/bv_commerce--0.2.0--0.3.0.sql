/*
 * bv_commerce 0.2.0 -> 0.3.0: hardening (issues #17, #18, #27).
 *
 * A fresh install of 0.3.0 runs bv_commerce--0.1.0.sql and the upgrade scripts in
 * order.  Each section below names the issue item it fixes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_commerce UPDATE TO '0.3.0'" to load this file. \quit


------------------------------------------------------------------------
-- #17 item 15: arguments are checked before use (NULL -> 22004, a bad
-- value -> 22023 with a hint), and errors quote at most a short prefix of
-- what the client sent.
------------------------------------------------------------------------

/* At most 40 characters of a client value, for messages. */
CREATE FUNCTION commerce.excerpt(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.length(p_value) > 40 THEN pg_catalog.left(p_value, 40) || '...'
                ELSE p_value END
$$;
COMMENT ON FUNCTION commerce.excerpt(text) IS 'The first 40 characters of a client value (with "..." when cut), for error messages.';

/* 22004 for a required argument that is NULL. */
CREATE FUNCTION commerce.require_arg(p_name text, p_is_null boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_is_null THEN
        RAISE EXCEPTION '% must not be null', coalesce(p_name, 'argument')
            USING ERRCODE = '22004', HINT = format('Pass a value for %s.', coalesce(p_name, 'every required argument'));
    END IF;
END
$$;
COMMENT ON FUNCTION commerce.require_arg(text, boolean) IS 'Raises 22004 (null value not allowed) when a required argument is NULL.';

/* A currency argument: NULL (the default) or a known ISO 4217 code. */
CREATE FUNCTION commerce.check_currency(p_currency text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_currency IS NULL THEN
        RETURN;
    END IF;
    IF p_currency !~ '^[A-Za-z]{3}$' THEN
        RAISE EXCEPTION 'invalid currency "%"', commerce.excerpt(p_currency)
            USING ERRCODE = '22023', DETAIL = 'A currency is a three-letter ISO 4217 code.',
                  HINT = 'Pass a code such as USD or EUR; SELECT code FROM commerce.currencies lists them.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM commerce.currencies c WHERE c.code = pg_catalog.upper(p_currency)) THEN
        RAISE EXCEPTION 'unsupported currency "%"', p_currency
            USING ERRCODE = '22023', DETAIL = 'The shop does not sell in this currency.',
                  HINT = 'SELECT code FROM commerce.currencies lists the accepted currencies.';
    END IF;
END
$$;
COMMENT ON FUNCTION commerce.check_currency(text) IS 'Raises 22023 unless the currency is NULL or a code of commerce.currencies (any case).';

/* A free-text argument stored with an order (reason, tracking code). */
CREATE FUNCTION commerce.check_note(p_name text, p_value text, p_max integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NOT NULL AND pg_catalog.length(p_value) NOT BETWEEN 1 AND p_max THEN
        RAISE EXCEPTION 'invalid %', p_name
            USING ERRCODE = '22023', DETAIL = format('A %s has 1 to %s characters.', p_name, p_max),
                  HINT = format('Shorten the %s, or leave it out.', p_name);
    END IF;
END
$$;
COMMENT ON FUNCTION commerce.check_note(text, text, integer) IS 'Raises 22023 when a free-text argument is empty or longer than p_max characters.';

REVOKE ALL ON FUNCTION commerce.excerpt(text), commerce.require_arg(text, boolean),
                       commerce.check_currency(text), commerce.check_note(text, text, integer) FROM PUBLIC;

/*
 * Item 15: a malformed request.headers is a clean error, not 22P02.
 */
CREATE OR REPLACE FUNCTION commerce.request_header(p_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_headers jsonb;
BEGIN
    IF p_name IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_headers := nullif(current_setting('request.headers', true), '')::jsonb;
    EXCEPTION WHEN invalid_text_representation OR program_limit_exceeded OR statement_too_complex THEN
        v_headers := '[]';
    END;
    IF v_headers IS NOT NULL AND jsonb_typeof(v_headers) <> 'object' THEN
        RAISE EXCEPTION 'malformed request.headers'
            USING ERRCODE = 'PT400', DETAIL = 'request.headers must be a JSON object of header names and values.',
                  HINT = 'The setting is made by PostgREST; set it the same way when replaying a request.';
    END IF;
    RETURN v_headers ->> p_name;
END
$$;


-- place_order: the currency and the size of the request are checked first; messages quote a prefix of client values.
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
    SELECT array_agg(u.price ORDER BY u.n), sum(u.quantity * u.price),
           min((SELECT s.code FROM commerce.skus s WHERE s.id = u.sku_id)) FILTER (WHERE u.price IS NULL)
      INTO v_prices, v_total, v_missing
      FROM (SELECT u.n, u.sku_id, u.quantity,
                   (SELECT p.amount_minor FROM commerce.prices p
                     WHERE p.sku_id = u.sku_id AND p.currency = v_currency) AS price
              FROM unnest(v_sku_ids, v_quantities) WITH ORDINALITY AS u(sku_id, quantity, n)
            OFFSET 0) u;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'SKU "%" has no price in %', commerce.excerpt(v_missing), v_currency
            USING ERRCODE = '22023', HINT = 'Order in a currency the SKU is priced in.';
    END IF;

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

CREATE OR REPLACE FUNCTION commerce.add_to_cart(p_sku text, p_quantity integer, p_currency text DEFAULT NULL,
                                                p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_customer text := bv.actor();
    v_prior jsonb;
    v_sku commerce.skus;
    v_cart commerce.carts;
BEGIN
    PERFORM commerce.require_arg('sku', p_sku IS NULL);
    PERFORM commerce.require_arg('quantity', p_quantity IS NULL);
    IF p_quantity NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'invalid quantity %', p_quantity
            USING ERRCODE = '22023', HINT = 'Add between 1 and 1000 units.';
    END IF;
    PERFORM commerce.check_currency(p_currency);
    v_prior := commerce.idempotency_begin(p_idempotency_key, 'add_to_cart',
        jsonb_build_object('sku', p_sku, 'quantity', p_quantity, 'currency', p_currency));
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    SELECT * INTO v_sku FROM commerce.skus WHERE code = p_sku AND active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'SKU "%" not found', commerce.excerpt(p_sku)
            USING ERRCODE = 'PT404', HINT = 'Use a SKU code listed by api.catalog.';
    END IF;
    SELECT * INTO v_cart FROM commerce.carts WHERE customer_id = v_customer AND status = 'open' FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO commerce.carts (customer_id, currency) VALUES (v_customer, upper(coalesce(p_currency, 'USD')))
        ON CONFLICT (customer_id) WHERE status = 'open' DO NOTHING;
        SELECT * INTO v_cart FROM commerce.carts WHERE customer_id = v_customer AND status = 'open' FOR UPDATE;
    END IF;
    IF p_currency IS NOT NULL AND upper(p_currency) <> v_cart.currency THEN
        RAISE EXCEPTION 'your open cart is in %, not %', v_cart.currency, upper(p_currency)
            USING ERRCODE = '22023', HINT = 'Add items in the cart''s currency, or order the cart first.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM commerce.prices WHERE sku_id = v_sku.id AND currency = v_cart.currency) THEN
        RAISE EXCEPTION 'SKU "%" has no price in %', commerce.excerpt(p_sku), v_cart.currency
            USING ERRCODE = '22023', HINT = 'Choose another currency or another SKU.';
    END IF;
    IF (SELECT i.quantity FROM commerce.cart_items i WHERE i.cart_id = v_cart.id AND i.sku_id = v_sku.id)
       > 1000 - p_quantity THEN
        RAISE EXCEPTION 'too many units of SKU "%" in the cart', commerce.excerpt(p_sku)
            USING ERRCODE = '22023', DETAIL = 'A cart line holds at most 1000 units.',
                  HINT = 'Order the cart, then add more in a new cart.';
    END IF;
    INSERT INTO commerce.cart_items AS i (cart_id, sku_id, quantity) VALUES (v_cart.id, v_sku.id, p_quantity)
    ON CONFLICT (cart_id, sku_id) DO UPDATE SET quantity = i.quantity + excluded.quantity;
    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.cart_json(v_cart.id));
END
$$;

CREATE OR REPLACE FUNCTION commerce.cancel_order(p_order_id bigint, p_reason text DEFAULT NULL,
                                                 p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prior jsonb;
    v_order commerce.orders;
BEGIN
    PERFORM commerce.require_arg('order_id', p_order_id IS NULL);
    PERFORM commerce.check_note('reason', p_reason, 500);
    v_prior := commerce.idempotency_begin(p_idempotency_key, 'cancel_order',
        jsonb_build_object('order_id', p_order_id, 'reason', p_reason));
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    v_order := commerce.order_for_update(p_order_id);
    -- The state machine refuses shipped and later orders (PT409 with the allowed states).
    PERFORM commerce.transition(v_order.id, 'cancelled', coalesce(p_reason, 'cancelled'));
    PERFORM commerce.release_stock(v_order);
    IF v_order.status IN ('paid', 'fulfilled') THEN
        PERFORM commerce.record_refund(v_order, v_order.total_minor - v_order.refunded_minor, 'order cancelled');
        UPDATE commerce.orders SET refunded_minor = total_minor WHERE id = v_order.id;
    END IF;
    UPDATE commerce.orders SET reserved_until = NULL WHERE id = v_order.id;
    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.order_json(v_order.id));
END
$$;

CREATE OR REPLACE FUNCTION commerce.staff_move(p_operation text, p_order_id bigint, p_to commerce.order_status,
                                               p_tracking_code text, p_idempotency_key text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prior jsonb;
BEGIN
    PERFORM commerce.require_arg('operation', p_operation IS NULL);
    PERFORM commerce.require_arg('order_id', p_order_id IS NULL);
    PERFORM commerce.require_arg('target status', p_to IS NULL);
    PERFORM commerce.check_note('tracking code', p_tracking_code, 100);
    PERFORM commerce.require_staff(replace(p_operation, '_', ' ') || 's');
    v_prior := commerce.idempotency_begin(p_idempotency_key, p_operation,
        jsonb_strip_nulls(jsonb_build_object('order_id', p_order_id, 'tracking_code', p_tracking_code)));
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    PERFORM commerce.order_for_update(p_order_id);
    PERFORM commerce.transition(p_order_id, p_to, p_to::text);
    IF p_tracking_code IS NOT NULL THEN
        UPDATE commerce.orders SET tracking_code = p_tracking_code WHERE id = p_order_id;
    END IF;
    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.order_json(p_order_id));
END
$$;

CREATE OR REPLACE FUNCTION commerce.refund_order(p_order_id bigint, p_amount_minor bigint DEFAULT NULL,
                                                 p_reason text DEFAULT NULL, p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prior jsonb;
    v_order commerce.orders;
    v_amount bigint;
BEGIN
    PERFORM commerce.require_arg('order_id', p_order_id IS NULL);
    PERFORM commerce.check_note('reason', p_reason, 500);
    PERFORM commerce.require_staff('refund orders');
    v_prior := commerce.idempotency_begin(p_idempotency_key, 'refund_order',
        jsonb_build_object('order_id', p_order_id, 'amount_minor', p_amount_minor, 'reason', p_reason));
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    v_order := commerce.order_for_update(p_order_id);
    v_amount := coalesce(p_amount_minor, v_order.total_minor - v_order.refunded_minor);
    IF v_amount <= 0 OR v_amount > v_order.total_minor - v_order.refunded_minor THEN
        RAISE EXCEPTION 'invalid refund amount %', v_amount
            USING ERRCODE = '22023',
                  DETAIL = format('%s of %s %s can still be refunded.',
                                  v_order.total_minor - v_order.refunded_minor, v_order.total_minor, v_order.currency),
                  HINT = 'Refund a positive amount no larger than what remains.';
    END IF;
    PERFORM pg_catalog.set_config('commerce.transition_reason', coalesce(p_reason, 'refund'), true);
    UPDATE commerce.orders
       SET refunded_minor = refunded_minor + v_amount,
           status = CASE WHEN refunded_minor + v_amount = total_minor THEN 'refunded'
                         ELSE 'partially_refunded' END::commerce.order_status
     WHERE id = v_order.id;
    PERFORM pg_catalog.set_config('commerce.transition_reason', '', true);
    PERFORM commerce.record_refund(v_order, v_amount, p_reason);
    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.order_json(v_order.id));
END
$$;

CREATE OR REPLACE FUNCTION commerce.order_history(p_order_id bigint)
RETURNS TABLE (at timestamptz, from_status commerce.order_status, to_status commerce.order_status,
               actor text, reason text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM commerce.require_arg('order_id', p_order_id IS NULL);
    IF NOT EXISTS (SELECT 1 FROM commerce.orders o WHERE o.id = p_order_id
                   AND (o.customer_id = bv.actor() OR commerce.is_staff())) THEN
        RAISE EXCEPTION 'order % not found', p_order_id
            USING ERRCODE = 'PT404', HINT = 'Check the order id; customers see only their own orders.';
    END IF;
    RETURN QUERY SELECT e.at, e.from_status, e.to_status, e.actor, e.reason
                 FROM commerce.order_events e WHERE e.order_id = p_order_id ORDER BY e.id;
END
$$;

/*
 * Items 13 and 15: the payment webhook.  A missing secret is the operator's
 * problem: the client gets a generic 503, the log says which secret.  The
 * event is bounded and validated before anything is stored: a body of at
 * most 256 kB, an id of 1 to 255 characters, a type of 1 to 100, and the
 * payment's fields of the right JSON types.
 */
CREATE OR REPLACE FUNCTION commerce.handle_payment_webhook(p_body text, p_signature text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_secret text;
    v_problem text;
    v_event jsonb;
    v_payment commerce.payments;
    v_order commerce.orders;
    v_outcome text;
    -- #17 hardening (attack review): over REST the webhook limits itself
    -- (bv.request_routes.self_limited): refused calls and signed calls have
    -- separate buckets, so a flood of unsigned requests cannot throttle the
    -- provider.  Direct SQL callers are not rate-limited.
    v_rest boolean := coalesce(current_setting('request.method', true), '') <> '';
BEGIN
    BEGIN
        v_secret := bv.secret_get('commerce.payment_webhook');
    EXCEPTION WHEN undefined_object THEN
        IF v_rest THEN
            PERFORM bv._route_limit('/rpc/payment_webhook', 'refused');
        END IF;
        RAISE LOG 'bv_commerce: payment webhook refused: the secret "commerce.payment_webhook" is not set in bv.secrets'
            USING HINT = 'Set it with SELECT bv.secret_set(''commerce.payment_webhook'', <the provider''s signing secret>).';
        RAISE EXCEPTION 'payment webhook unavailable'
            USING ERRCODE = 'PT503', DETAIL = 'The webhook is not configured on this server.',
                  HINT = 'Retry later; the operator has been told (server log).';
    END;
    v_problem := commerce.signature_problem(v_secret, coalesce(p_signature, ''), coalesce(p_body, ''), 300);
    IF v_problem IS NOT NULL THEN
        IF v_rest THEN
            PERFORM bv._route_limit('/rpc/payment_webhook', 'refused');
        END IF;
        RAISE EXCEPTION 'invalid webhook signature'
            USING ERRCODE = 'PT401', DETAIL = v_problem,
                  HINT = 'Sign "<t>.<body>" with HMAC-SHA256 under the shared secret and send bv-signature: t=<t>,v1=<hex>.';
    END IF;
    IF v_rest THEN
        PERFORM bv._route_limit('/rpc/payment_webhook', 'authenticated');
    END IF;
    PERFORM bv.set_actor('payment-provider');

    IF octet_length(p_body) > 262144 THEN
        RAISE EXCEPTION 'webhook body too large'
            USING ERRCODE = 'PT413', DETAIL = format('%s bytes; at most 262144 are accepted.', octet_length(p_body)),
                  HINT = 'Send one event per request.';
    END IF;
    BEGIN
        v_event := p_body::jsonb;
    EXCEPTION WHEN invalid_text_representation OR program_limit_exceeded OR statement_too_complex THEN
        RAISE EXCEPTION 'webhook body is not JSON' USING ERRCODE = '22023', HINT = 'Send the event as a JSON object.';
    END;
    IF jsonb_typeof(v_event->'id') IS DISTINCT FROM 'string' OR jsonb_typeof(v_event->'type') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'webhook event without id or type'
            USING ERRCODE = '22023', HINT = 'Send {"id": "...", "type": "...", "data": {...}}.';
    END IF;
    IF length(v_event->>'id') NOT BETWEEN 1 AND 255 OR length(v_event->>'type') NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'invalid webhook event id or type'
            USING ERRCODE = '22023', DETAIL = 'An event id has 1 to 255 characters, a type 1 to 100.',
                  HINT = 'Send the provider''s event id, such as evt_123.';
    END IF;
    IF v_event->>'type' IN ('payment.succeeded', 'payment.failed')
       AND (jsonb_typeof(v_event->'data'->'payment_ref') IS DISTINCT FROM 'string'
            OR length(v_event->'data'->>'payment_ref') > 255
            OR (v_event->>'type' = 'payment.succeeded'
                AND (jsonb_typeof(v_event->'data'->'amount_minor') IS DISTINCT FROM 'number'
                     OR (v_event->'data'->>'amount_minor') !~ '^[0-9]{1,18}$'
                     OR jsonb_typeof(v_event->'data'->'currency') IS DISTINCT FROM 'string'))) THEN
        RAISE EXCEPTION 'invalid payment event data'
            USING ERRCODE = '22023',
                  DETAIL = 'data needs a payment_ref string (at most 255 characters) and, for payment.succeeded, an integer amount_minor and a currency.',
                  HINT = 'Send {"payment_ref": "pay_...", "amount_minor": 4900, "currency": "USD"}.';
    END IF;

    INSERT INTO commerce.webhook_events (event_id, type, payload, outcome)
    VALUES (v_event->>'id', v_event->>'type', v_event, 'received')
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('event_id', v_event->>'id', 'outcome', 'duplicate');
    END IF;

    IF v_event->>'type' NOT IN ('payment.succeeded', 'payment.failed') THEN
        v_outcome := 'ignored';
    ELSE
        SELECT * INTO v_payment FROM commerce.payments
         WHERE provider_ref = v_event->'data'->>'payment_ref' FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'payment "%" not found', commerce.excerpt(v_event->'data'->>'payment_ref')
                USING ERRCODE = 'PT404', HINT = 'The event must quote the payment_ref returned with the order.';
        END IF;
        SELECT * INTO v_order FROM commerce.orders WHERE id = v_payment.order_id FOR UPDATE;

        IF v_event->>'type' = 'payment.failed' THEN
            UPDATE commerce.payments SET status = 'failed', updated_at = now() WHERE id = v_payment.id;
            v_outcome := 'payment failed';
        ELSIF (v_event->'data'->>'amount_minor')::bigint IS DISTINCT FROM v_payment.amount_minor
              OR (v_event->'data'->>'currency') IS DISTINCT FROM v_payment.currency THEN
            RAISE EXCEPTION 'payment amount does not match the order'
                USING ERRCODE = 'PT409',
                      DETAIL = format('Expected %s %s.', v_payment.amount_minor, v_payment.currency),
                      HINT = 'Charge exactly the amount of the payment.';
        ELSE
            UPDATE commerce.payments SET status = 'succeeded', updated_at = now() WHERE id = v_payment.id;
            IF v_order.status = 'awaiting_payment' THEN
                PERFORM commerce.transition(v_order.id, 'paid', 'payment ' || v_payment.provider_ref);
                UPDATE commerce.inventory i SET reserved = i.reserved - l.quantity, sold = i.sold + l.quantity
                  FROM (SELECT sku_id, sum(quantity)::integer AS quantity FROM commerce.order_lines
                        WHERE order_id = v_order.id GROUP BY sku_id) l
                 WHERE i.sku_id = l.sku_id;
                UPDATE commerce.orders SET reserved_until = NULL WHERE id = v_order.id;
                v_outcome := 'order paid';
            ELSE
                -- Paid too late (the reservation expired) or twice: give the money back.
                INSERT INTO commerce.refunds (order_id, payment_id, amount_minor, reason)
                VALUES (v_order.id, v_payment.id, v_payment.amount_minor,
                        format('payment received while the order was %s', v_order.status));
                v_outcome := 'refunded: order was ' || v_order.status;
            END IF;
        END IF;
    END IF;
    UPDATE commerce.webhook_events SET outcome = v_outcome WHERE event_id = v_event->>'id';
    RETURN jsonb_build_object('event_id', v_event->>'id', 'outcome', v_outcome);
END
$$;

------------------------------------------------------------------------
-- #17 item 11: the API's views are read-only; writing to them is a clear
-- refusal, never 55000 ("not automatically updatable", HTTP 500).  API
-- roles hold SELECT only, so PostgREST answers 401/403 (permission denied
-- for the view); the INSTEAD OF triggers answer 405 to anybody else.
------------------------------------------------------------------------

CREATE FUNCTION commerce.api_read_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%.% is read-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'PT405', DETAIL = format('%s is not allowed on this resource.', TG_OP),
              HINT = 'Change carts and orders through the API functions: /rpc/add_to_cart, /rpc/place_order, /rpc/cancel_order.';
END
$$;
COMMENT ON FUNCTION commerce.api_read_only() IS 'Trigger: refuses INSERT, UPDATE and DELETE on the read-only views of schema api (PT405).';
REVOKE ALL ON FUNCTION commerce.api_read_only() FROM PUBLIC;

CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON api.catalog
    FOR EACH ROW EXECUTE FUNCTION commerce.api_read_only();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON api.orders
    FOR EACH ROW EXECUTE FUNCTION commerce.api_read_only();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON api.order_lines
    FOR EACH ROW EXECUTE FUNCTION commerce.api_read_only();
CREATE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON api.payments
    FOR EACH ROW EXECUTE FUNCTION commerce.api_read_only();

------------------------------------------------------------------------
-- #17 item 12: the payment webhook has a rate-limit bucket of its own
-- (bv_core's bv.request_routes), so other anonymous traffic cannot
-- throttle the provider.
------------------------------------------------------------------------

-- #17 hardening (attack review): self-limited.  With one bucket for the
-- path, a flood of unsigned requests to the webhook itself drained it and
-- the provider's signed events got 429; commerce.handle_payment_webhook()
-- now takes from separate buckets for refused and signed calls
-- (bv._route_limit()), after it has checked the signature.
INSERT INTO bv.request_routes (path, description, extension, self_limited)
VALUES ('/rpc/payment_webhook', 'Payment provider events (bv_commerce): limited by the webhook itself, in separate buckets for refused and signed calls, so that other anonymous traffic, unsigned requests to the webhook included, cannot throttle the provider.', 'bv_commerce', true)
ON CONFLICT (path) DO UPDATE SET self_limited = true;

------------------------------------------------------------------------
-- #17 item 15: the internal steps refuse NULL with 22004 too, instead of
-- a raw 23502 from the table they write.
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION commerce.idempotency_begin(p_key text, p_operation text, p_request jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner text;
    v_hash bytea;
    v_row commerce.idempotency_keys;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM commerce.require_arg('operation', p_operation IS NULL);
    PERFORM commerce.require_arg('request', p_request IS NULL);
    IF length(p_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid idempotency key'
            USING ERRCODE = '22023', DETAIL = 'An idempotency key has 1 to 255 characters.',
                  HINT = 'Send a random key such as a UUID, the same one when retrying.';
    END IF;
    v_owner := bv.actor();
    v_hash := pg_catalog.sha256(pg_catalog.convert_to(p_operation || ':' || p_request::text, 'UTF8'));
    DELETE FROM commerce.idempotency_keys
     WHERE owner = v_owner AND key = p_key AND created_at < now() - interval '24 hours';
    INSERT INTO commerce.idempotency_keys (owner, key, operation, request_hash)
    VALUES (v_owner, p_key, p_operation, v_hash)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_row FROM commerce.idempotency_keys WHERE owner = v_owner AND key = p_key;
    IF v_row.operation <> p_operation OR v_row.request_hash <> v_hash THEN
        RAISE EXCEPTION 'idempotency key "%" was already used for a different request', p_key
            USING ERRCODE = 'PT409',
                  DETAIL = format('The key was first used for %s with other parameters.', v_row.operation),
                  HINT = 'Reuse a key only to retry the same request; use a new key for a new request.';
    END IF;
    RETURN v_row.response;
END
$$;


CREATE OR REPLACE FUNCTION commerce.record_refund(p_order commerce.orders, p_amount bigint, p_reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM commerce.require_arg('order', p_order.id IS NULL);
    PERFORM commerce.require_arg('amount', p_amount IS NULL);
    INSERT INTO commerce.refunds (order_id, payment_id, amount_minor, reason)
    VALUES (p_order.id,
            (SELECT id FROM commerce.payments WHERE order_id = p_order.id AND status = 'succeeded'
             ORDER BY id DESC LIMIT 1),
            p_amount, p_reason);
END
$$;
