/*
 * bv_commerce 0.1.0: the e-commerce domain.
 *
 * Schema "commerce" holds the tables and the domain functions (the SQL API);
 * schema "api" holds what PostgREST exposes: security-invoker views and thin
 * RPC wrappers that read the Idempotency-Key header.  Conventions:
 *
 *  - money is integer minor units plus an ISO 4217 code (commerce.currencies);
 *  - the customer is the actor (bv.actor(): the JWT "sub" through PostgREST);
 *    staff are members of bv_service (which bv_admin includes);
 *  - rows are protected by row-level security: customers see their own carts,
 *    orders and payments, staff see everything; domain functions are
 *    SECURITY DEFINER with a fixed search_path and check ownership themselves;
 *  - errors a client can cause use PostgREST's PTxyz SQLSTATEs, so that the
 *    HTTP status is right (PT404, PT409, PT401), with a hint.
 */

\echo Use "CREATE EXTENSION bv_commerce" to load this file. \quit

COMMENT ON SCHEMA commerce IS 'E-commerce domain: catalog, inventory, carts, orders, payments, refunds.';

-- Schema api is bv_core's since 0.3.0 (every domain publishes into it); a
-- database whose bv_core predates it gets the schema here, as before.
DO $$
BEGIN
    IF pg_catalog.to_regnamespace('api') IS NULL THEN
        CREATE SCHEMA api;
    END IF;
END
$$;

/* ---------- reference data ---------- */

CREATE TABLE commerce.currencies (
    code        char(3) PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    minor_units smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4),
    name        text NOT NULL
);
COMMENT ON TABLE commerce.currencies IS 'ISO 4217 currencies accepted for prices, with their number of minor units.';
INSERT INTO commerce.currencies VALUES
    ('USD', 2, 'US Dollar'), ('EUR', 2, 'Euro'), ('GBP', 2, 'Pound Sterling'),
    ('JPY', 0, 'Yen'), ('CHF', 2, 'Swiss Franc'), ('CAD', 2, 'Canadian Dollar'),
    ('AUD', 2, 'Australian Dollar'), ('INR', 2, 'Indian Rupee'), ('SEK', 2, 'Swedish Krona'),
    ('KWD', 3, 'Kuwaiti Dinar');

/* ---------- catalog ---------- */

CREATE TABLE commerce.categories (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug      text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]*$'),
    name      text NOT NULL,
    parent_id bigint REFERENCES commerce.categories
);
COMMENT ON TABLE commerce.categories IS 'Product categories, optionally nested.';

CREATE TABLE commerce.products (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]*$'),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    category_id bigint REFERENCES commerce.categories,
    active      boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE commerce.products IS 'Products; what is sold are their SKUs (variants).';

CREATE TABLE commerce.skus (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id bigint NOT NULL REFERENCES commerce.products,
    code       text NOT NULL UNIQUE,
    attributes jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    active     boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE commerce.skus IS 'Stock keeping units: the sellable variants of a product (size, colour...).';
CREATE INDEX ON commerce.skus (product_id);

CREATE TABLE commerce.prices (
    sku_id       bigint NOT NULL REFERENCES commerce.skus,
    currency     char(3) NOT NULL REFERENCES commerce.currencies,
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (sku_id, currency)
);
COMMENT ON TABLE commerce.prices IS 'Price of a SKU per currency, in minor units (cents).';

/*
 * Inventory: total units received, reserved by unpaid orders, sold.  The
 * constraint is the no-oversell invariant; reservations move units with one
 * conditional UPDATE (see commerce.reserve_stock).
 */
CREATE TABLE commerce.inventory (
    sku_id   bigint PRIMARY KEY REFERENCES commerce.skus,
    total    integer NOT NULL DEFAULT 0 CHECK (total >= 0),
    reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold     integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    CONSTRAINT inventory_not_oversold CHECK (reserved + sold <= total)
);
COMMENT ON TABLE commerce.inventory IS 'Stock per SKU: available = total - reserved - sold, never negative.';

/* ---------- customers ---------- */

CREATE TABLE commerce.addresses (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL DEFAULT bv.actor(),
    name        text NOT NULL,
    line1       text NOT NULL,
    line2       text,
    city        text NOT NULL,
    postal_code text NOT NULL,
    country     char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$')
);
COMMENT ON TABLE commerce.addresses IS 'Customer addresses; orders keep a copy of the shipping address.';
CREATE INDEX ON commerce.addresses (customer_id);

/* ---------- carts ---------- */

CREATE TABLE commerce.carts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL,
    currency    char(3) NOT NULL REFERENCES commerce.currencies,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ordered')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE commerce.carts IS 'Shopping carts; at most one open cart per customer.';
CREATE UNIQUE INDEX carts_one_open ON commerce.carts (customer_id) WHERE status = 'open';

CREATE TABLE commerce.cart_items (
    cart_id  bigint NOT NULL REFERENCES commerce.carts ON DELETE CASCADE,
    sku_id   bigint NOT NULL REFERENCES commerce.skus,
    quantity integer NOT NULL CHECK (quantity > 0 AND quantity <= 1000),
    PRIMARY KEY (cart_id, sku_id)
);
COMMENT ON TABLE commerce.cart_items IS 'Lines of a cart.';

/* ---------- orders and their state machine ---------- */

CREATE TYPE commerce.order_status AS ENUM (
    'pending', 'awaiting_payment', 'paid', 'fulfilled', 'shipped', 'delivered',
    'cancelled', 'refunded', 'partially_refunded');
COMMENT ON TYPE commerce.order_status IS 'States of an order; commerce.order_transitions lists the allowed moves.';

CREATE TABLE commerce.order_transitions (
    from_status commerce.order_status NOT NULL,
    to_status   commerce.order_status NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
COMMENT ON TABLE commerce.order_transitions IS 'The order state machine: every allowed status change.';
INSERT INTO commerce.order_transitions VALUES
    ('pending', 'awaiting_payment'), ('pending', 'cancelled'),
    ('awaiting_payment', 'paid'), ('awaiting_payment', 'cancelled'),
    ('paid', 'fulfilled'), ('paid', 'cancelled'), ('paid', 'refunded'), ('paid', 'partially_refunded'),
    ('fulfilled', 'shipped'), ('fulfilled', 'cancelled'), ('fulfilled', 'refunded'), ('fulfilled', 'partially_refunded'),
    ('shipped', 'delivered'), ('shipped', 'refunded'), ('shipped', 'partially_refunded'),
    ('delivered', 'refunded'), ('delivered', 'partially_refunded'),
    ('partially_refunded', 'partially_refunded'), ('partially_refunded', 'refunded');

CREATE TABLE commerce.orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id      text NOT NULL,
    status           commerce.order_status NOT NULL DEFAULT 'pending',
    currency         char(3) NOT NULL REFERENCES commerce.currencies,
    total_minor      bigint NOT NULL CHECK (total_minor >= 0),
    refunded_minor   bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    shipping_address jsonb,
    reserved_until   timestamptz,
    tracking_code    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_refund_within_total CHECK (refunded_minor <= total_minor)
);
COMMENT ON TABLE commerce.orders IS 'Orders; status changes only along commerce.order_transitions.';
CREATE INDEX ON commerce.orders (customer_id, created_at DESC);
CREATE INDEX orders_reservations ON commerce.orders (reserved_until)
    WHERE status IN ('pending', 'awaiting_payment');

CREATE TABLE commerce.order_lines (
    order_id         bigint NOT NULL REFERENCES commerce.orders,
    line_no          integer NOT NULL,
    sku_id           bigint NOT NULL REFERENCES commerce.skus,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);
COMMENT ON TABLE commerce.order_lines IS 'Order lines, with the unit price copied at order time.';

CREATE TABLE commerce.order_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES commerce.orders,
    from_status commerce.order_status,
    to_status   commerce.order_status NOT NULL,
    actor       text NOT NULL,
    reason      text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE commerce.order_events IS 'Every status change of every order, with its actor.';
CREATE INDEX ON commerce.order_events (order_id, id);

/* Raise the state machine's refusal: PT409, hint with the allowed next states. */
CREATE FUNCTION commerce.raise_invalid_transition(p_order_id bigint, p_from commerce.order_status,
                                                  p_to commerce.order_status)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    allowed text;
BEGIN
    SELECT string_agg(t.to_status::text, ', ' ORDER BY t.to_status) INTO allowed
    FROM commerce.order_transitions t WHERE t.from_status = p_from;
    RAISE EXCEPTION 'invalid order transition from % to %', p_from, p_to
        USING ERRCODE = 'PT409',
              DETAIL = format('Order %s is %s.', p_order_id, p_from),
              HINT = CASE WHEN allowed IS NULL THEN format('Status %s is final.', p_from)
                          ELSE format('Allowed next states: %s.', allowed) END;
END
$$;
COMMENT ON FUNCTION commerce.raise_invalid_transition(bigint, commerce.order_status, commerce.order_status) IS 'Raises PT409 for a status change outside commerce.order_transitions, listing the allowed next states.';

/*
 * The state machine, enforced for every writer (functions, staff with direct
 * table access, migrations): a status change not in order_transitions fails
 * with SQLSTATE PT409 and a hint that lists the allowed next states.
 */
CREATE FUNCTION commerce.order_status_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- A new order starts pending; it may be written one allowed step
        -- further (place_order writes it awaiting_payment in one go), and
        -- both steps are recorded by order_created_event.
        IF NEW.status <> 'pending' AND NOT EXISTS (
               SELECT 1 FROM commerce.order_transitions t
                WHERE t.from_status = 'pending' AND t.to_status = NEW.status) THEN
            RAISE EXCEPTION 'a new order must start in status pending'
                USING ERRCODE = 'PT409', HINT = 'Insert orders as pending, then move them along the state machine.';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       OR (NEW.status = 'partially_refunded' AND NEW.refunded_minor <> OLD.refunded_minor) THEN
        IF NOT EXISTS (SELECT 1 FROM commerce.order_transitions t
                       WHERE t.from_status = OLD.status AND t.to_status = NEW.status) THEN
            PERFORM commerce.raise_invalid_transition(OLD.id, OLD.status, NEW.status);
        END IF;
        INSERT INTO commerce.order_events (order_id, from_status, to_status, actor, reason)
        VALUES (NEW.id, OLD.status, NEW.status, bv.actor(),
                nullif(current_setting('commerce.transition_reason', true), ''));
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION commerce.order_status_guard() IS 'Trigger: enforces the order state machine and records every transition with its actor.';

CREATE TRIGGER order_status_guard
    BEFORE INSERT OR UPDATE OF status, refunded_minor ON commerce.orders
    FOR EACH ROW EXECUTE FUNCTION commerce.order_status_guard();

/* The INSERT event needs the order id, known only after the row exists. */
CREATE FUNCTION commerce.order_created_event()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO commerce.order_events (order_id, from_status, to_status, actor)
    VALUES (NEW.id, NULL, 'pending', bv.actor());
    IF NEW.status <> 'pending' THEN
        INSERT INTO commerce.order_events (order_id, from_status, to_status, actor, reason)
        VALUES (NEW.id, 'pending', NEW.status, bv.actor(),
                nullif(current_setting('commerce.transition_reason', true), ''));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION commerce.order_created_event() IS 'Trigger: records the creation of an order (pending) and, if it was written one step further, that step.';

CREATE TRIGGER order_created_event
    AFTER INSERT ON commerce.orders
    FOR EACH ROW EXECUTE FUNCTION commerce.order_created_event();

/* ---------- payments, refunds, webhooks, idempotency ---------- */

CREATE TABLE commerce.payments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     bigint NOT NULL REFERENCES commerce.orders,
    provider_ref text NOT NULL UNIQUE,
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    currency     char(3) NOT NULL REFERENCES commerce.currencies,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE commerce.payments IS 'Payment attempts of an order; provider_ref is what the payment provider quotes in its webhooks.';
CREATE INDEX ON commerce.payments (order_id);

CREATE TABLE commerce.refunds (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     bigint NOT NULL REFERENCES commerce.orders,
    payment_id   bigint REFERENCES commerce.payments,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    reason       text,
    created_by   text NOT NULL DEFAULT bv.actor(),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE commerce.refunds IS 'Refunds, full or partial, of an order''s captured payment.';
CREATE INDEX ON commerce.refunds (order_id);

CREATE TABLE commerce.webhook_events (
    event_id    text PRIMARY KEY,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    outcome     text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE commerce.webhook_events IS 'Payment provider events received, by event id: a redelivered event is recognised and not applied twice.';

CREATE TABLE commerce.idempotency_keys (
    owner        text NOT NULL,
    key          text NOT NULL,
    operation    text NOT NULL,
    request_hash bytea NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
COMMENT ON TABLE commerce.idempotency_keys IS 'Idempotency keys per actor (Stripe semantics): the first response of a request, kept 24 hours.';
CREATE INDEX ON commerce.idempotency_keys (created_at);

/* ---------- helpers ---------- */

/*
 * The role the request runs as.  Inside SECURITY DEFINER functions
 * current_user is the owner; the "role" setting still names the role the
 * request switched to (PostgREST does set_config('role', ...)).
 */
CREATE FUNCTION commerce.request_role()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN current_setting('role') = 'none' THEN session_user
                ELSE current_setting('role')::name END
$$;
COMMENT ON FUNCTION commerce.request_role() IS 'Role of the current request, also inside SECURITY DEFINER functions.';

CREATE FUNCTION commerce.is_staff()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.pg_has_role(commerce.request_role(), 'bv_service', 'MEMBER') $$;
COMMENT ON FUNCTION commerce.is_staff() IS 'Is the request made by staff (a member of bv_service, which bv_admin includes)?';

CREATE FUNCTION commerce.transition(p_order_id bigint, p_to commerce.order_status, p_reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from commerce.order_status;
BEGIN
    -- A move to the current status is a request the state machine must judge too.
    SELECT status INTO v_from FROM commerce.orders WHERE id = p_order_id;
    IF v_from = p_to AND NOT EXISTS (SELECT 1 FROM commerce.order_transitions t
                                     WHERE t.from_status = v_from AND t.to_status = p_to) THEN
        PERFORM commerce.raise_invalid_transition(p_order_id, v_from, p_to);
    END IF;
    PERFORM pg_catalog.set_config('commerce.transition_reason', coalesce(p_reason, ''), true);
    UPDATE commerce.orders SET status = p_to WHERE id = p_order_id;
    PERFORM pg_catalog.set_config('commerce.transition_reason', '', true);
END
$$;
COMMENT ON FUNCTION commerce.transition(bigint, commerce.order_status, text) IS 'Moves an order to a new status (the trigger checks it and records the event with the reason).';

/*
 * Idempotency (Stripe's semantics).  idempotency_begin claims the key for
 * this actor: a new key returns NULL and the caller does the work, then
 * idempotency_finish stores the response; a key seen before with the same
 * request returns the stored response; with a different request it fails
 * with PT409.  The claim is a row in the caller's transaction, so a retry
 * racing the first attempt waits for it, and a failed attempt leaves no key.
 * Keys older than 24 hours count as new (and are purged by pg_cron).
 */
CREATE FUNCTION commerce.idempotency_begin(p_key text, p_operation text, p_request jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner text := bv.actor();
    v_hash bytea := pg_catalog.sha256(pg_catalog.convert_to(p_operation || ':' || p_request::text, 'UTF8'));
    v_row commerce.idempotency_keys;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    IF length(p_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid idempotency key'
            USING ERRCODE = '22023', DETAIL = 'An idempotency key has 1 to 255 characters.',
                  HINT = 'Send a random key such as a UUID, the same one when retrying.';
    END IF;
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
COMMENT ON FUNCTION commerce.idempotency_begin(text, text, jsonb) IS 'Claims an idempotency key, or returns the stored response of the same earlier request; PT409 for a different request.';

CREATE FUNCTION commerce.idempotency_finish(p_key text, p_response jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_key IS NOT NULL THEN
        UPDATE commerce.idempotency_keys SET response = p_response
         WHERE owner = bv.actor() AND key = p_key;
    END IF;
    RETURN p_response;
END
$$;
COMMENT ON FUNCTION commerce.idempotency_finish(text, jsonb) IS 'Stores the response of the request that claimed an idempotency key.';

/* The no-oversell rule: one conditional UPDATE per SKU. */
CREATE FUNCTION commerce.reserve_stock(p_sku_id bigint, p_quantity integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_available integer;
BEGIN
    UPDATE commerce.inventory SET reserved = reserved + p_quantity
     WHERE sku_id = p_sku_id AND total - reserved - sold >= p_quantity;
    IF NOT FOUND THEN
        SELECT total - reserved - sold INTO v_available FROM commerce.inventory WHERE sku_id = p_sku_id;
        RAISE EXCEPTION 'insufficient stock for SKU %',
                (SELECT code FROM commerce.skus WHERE id = p_sku_id)
            USING ERRCODE = 'PT409',
                  DETAIL = format('%s requested, %s available.', p_quantity, coalesce(v_available, 0)),
                  HINT = 'Lower the quantity or remove the item, then place the order again.';
    END IF;
END
$$;
COMMENT ON FUNCTION commerce.reserve_stock(bigint, integer) IS 'Reserves units of a SKU if available (PT409 otherwise); never oversells.';

CREATE FUNCTION commerce.order_json(p_order_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', o.id, 'customer_id', o.customer_id, 'status', o.status,
        'currency', o.currency, 'total_minor', o.total_minor,
        'refunded_minor', o.refunded_minor, 'reserved_until', o.reserved_until,
        'tracking_code', o.tracking_code, 'created_at', o.created_at,
        'shipping_address', o.shipping_address,
        'payment_ref', (SELECT p.provider_ref FROM commerce.payments p
                        WHERE p.order_id = o.id ORDER BY p.id DESC LIMIT 1),
        'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'line_no', l.line_no, 'sku', s.code, 'quantity', l.quantity,
                        'unit_price_minor', l.unit_price_minor) ORDER BY l.line_no), '[]')
                  FROM commerce.order_lines l JOIN commerce.skus s ON s.id = l.sku_id
                  WHERE l.order_id = o.id))
    FROM commerce.orders o WHERE o.id = p_order_id
$$;
COMMENT ON FUNCTION commerce.order_json(bigint) IS 'An order with its lines and payment reference, as the API returns it.';

CREATE FUNCTION commerce.cart_json(p_cart_id bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'status', c.status, 'currency', c.currency,
        'items', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'sku', s.code, 'quantity', i.quantity, 'unit_price_minor', p.amount_minor)
                        ORDER BY s.code), '[]')
                  FROM commerce.cart_items i
                  JOIN commerce.skus s ON s.id = i.sku_id
                  LEFT JOIN commerce.prices p ON p.sku_id = i.sku_id AND p.currency = c.currency
                  WHERE i.cart_id = c.id),
        'subtotal_minor', (SELECT coalesce(sum(i.quantity * p.amount_minor), 0)
                           FROM commerce.cart_items i
                           JOIN commerce.prices p ON p.sku_id = i.sku_id AND p.currency = c.currency
                           WHERE i.cart_id = c.id))
    FROM commerce.carts c WHERE c.id = p_cart_id
$$;
COMMENT ON FUNCTION commerce.cart_json(bigint) IS 'A cart with its items and subtotal, as the API returns it.';

/* An order the caller may act on: its customer, or staff; else PT404. */
CREATE FUNCTION commerce.order_for_update(p_order_id bigint)
RETURNS commerce.orders
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_order commerce.orders;
BEGIN
    SELECT * INTO v_order FROM commerce.orders WHERE id = p_order_id FOR UPDATE;
    IF NOT FOUND OR (v_order.customer_id <> bv.actor() AND NOT commerce.is_staff()) THEN
        RAISE EXCEPTION 'order % not found', p_order_id
            USING ERRCODE = 'PT404', HINT = 'Check the order id; customers see only their own orders.';
    END IF;
    RETURN v_order;
END
$$;
COMMENT ON FUNCTION commerce.order_for_update(bigint) IS 'Locks an order the caller may act on (its customer or staff); PT404 otherwise.';

CREATE FUNCTION commerce.require_staff(p_action text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT commerce.is_staff() THEN
        RAISE EXCEPTION 'permission denied to %', p_action
            USING ERRCODE = '42501', HINT = 'Only staff (bv_service, bv_admin) may do this.';
    END IF;
END
$$;
COMMENT ON FUNCTION commerce.require_staff(text) IS 'Raises 42501 unless the request is made by staff.';

/* ---------- the domain API ---------- */

CREATE FUNCTION commerce.add_to_cart(p_sku text, p_quantity integer, p_currency text DEFAULT NULL,
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
    v_prior := commerce.idempotency_begin(p_idempotency_key, 'add_to_cart',
        jsonb_build_object('sku', p_sku, 'quantity', p_quantity, 'currency', p_currency));
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    IF p_quantity IS NULL OR p_quantity NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'invalid quantity %', p_quantity
            USING ERRCODE = '22023', HINT = 'Add between 1 and 1000 units.';
    END IF;
    SELECT * INTO v_sku FROM commerce.skus WHERE code = p_sku AND active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'SKU "%" not found', p_sku
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
        RAISE EXCEPTION 'SKU "%" has no price in %', p_sku, v_cart.currency
            USING ERRCODE = '22023', HINT = 'Choose another currency or another SKU.';
    END IF;
    INSERT INTO commerce.cart_items AS i (cart_id, sku_id, quantity) VALUES (v_cart.id, v_sku.id, p_quantity)
    ON CONFLICT (cart_id, sku_id) DO UPDATE SET quantity = i.quantity + excluded.quantity;
    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.cart_json(v_cart.id));
END
$$;
COMMENT ON FUNCTION commerce.add_to_cart(text, integer, text, text) IS 'Adds units of a SKU to the caller''s open cart (created on first use, in p_currency or USD) and returns the cart.';

/*
 * place_order: from the caller's open cart (p_cart_id) or from a list of
 * lines ([{"sku": "...", "quantity": n}]).  Prices are copied, stock is
 * reserved (SKUs locked in id order, so concurrent orders cannot deadlock),
 * and a payment is opened: the order is returned awaiting_payment with the
 * payment reference the provider will quote.  Unpaid reservations expire
 * (commerce.reservation_ttl, default 15 minutes).
 */
CREATE FUNCTION commerce.place_order(p_cart_id bigint DEFAULT NULL, p_lines jsonb DEFAULT NULL,
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
    v_total bigint := 0;
    v_line record;
    v_items jsonb;
    v_missing text;
    v_line_no integer := 0;
    v_ttl interval := coalesce(nullif(current_setting('commerce.reservation_ttl', true), '')::interval,
                               interval '15 minutes');
BEGIN
    v_prior := commerce.idempotency_begin(p_idempotency_key, 'place_order',
        jsonb_build_object('cart_id', p_cart_id, 'lines', p_lines,
                           'shipping_address', p_shipping_address, 'currency', p_currency));
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;

    IF (p_cart_id IS NULL) = (p_lines IS NULL) THEN
        RAISE EXCEPTION 'give either a cart or a list of lines'
            USING ERRCODE = '22023', HINT = 'Pass cart_id, or lines as [{"sku": "...", "quantity": 1}], not both.';
    END IF;
    IF p_shipping_address IS NOT NULL AND jsonb_typeof(p_shipping_address) <> 'object' THEN
        RAISE EXCEPTION 'invalid shipping address'
            USING ERRCODE = '22023', HINT = 'Pass the address as a JSON object.';
    END IF;

    -- v_items: [{"sku_id": .., "quantity": ..}] summed per SKU, in SKU id order.
    IF p_cart_id IS NOT NULL THEN
        SELECT c.currency INTO v_currency FROM commerce.carts c
         WHERE c.id = p_cart_id AND c.customer_id = v_customer AND c.status = 'open' FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'open cart % not found', p_cart_id
                USING ERRCODE = 'PT404', HINT = 'Order from your own open cart; a cart can be ordered once.';
        END IF;
        SELECT jsonb_agg(jsonb_build_object('sku_id', i.sku_id, 'quantity', i.quantity) ORDER BY i.sku_id)
          INTO v_items FROM commerce.cart_items i WHERE i.cart_id = p_cart_id;
        UPDATE commerce.carts SET status = 'ordered' WHERE id = p_cart_id;
    ELSE
        v_currency := upper(coalesce(p_currency, 'USD'));
        IF jsonb_typeof(p_lines) <> 'array' OR jsonb_array_length(p_lines) = 0 THEN
            RAISE EXCEPTION 'invalid order lines'
                USING ERRCODE = '22023', HINT = 'Pass lines as a non-empty array [{"sku": "...", "quantity": 1}].';
        END IF;
        FOR v_line IN SELECT l AS line FROM jsonb_array_elements(p_lines) l LOOP
            IF jsonb_typeof(v_line.line) IS DISTINCT FROM 'object'
               OR jsonb_typeof(v_line.line->'sku') IS DISTINCT FROM 'string'
               OR jsonb_typeof(v_line.line->'quantity') IS DISTINCT FROM 'number'
               OR (v_line.line->>'quantity')::numeric <> trunc((v_line.line->>'quantity')::numeric)
               OR (v_line.line->>'quantity')::numeric NOT BETWEEN 1 AND 1000 THEN
                RAISE EXCEPTION 'invalid order line'
                    USING ERRCODE = '22023', DETAIL = format('Line %s.', v_line.line),
                          HINT = 'Each line needs a "sku" code and an integer "quantity" from 1 to 1000.';
            END IF;
        END LOOP;
        SELECT l->>'sku' INTO v_missing
          FROM jsonb_array_elements(p_lines) l
          LEFT JOIN commerce.skus s ON s.code = l->>'sku' AND s.active
         WHERE s.id IS NULL LIMIT 1;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'SKU "%" not found', v_missing
                USING ERRCODE = 'PT404', HINT = 'Use a SKU code listed by api.catalog.';
        END IF;
        SELECT jsonb_agg(jsonb_build_object('sku_id', t.sku_id, 'quantity', t.quantity) ORDER BY t.sku_id)
          INTO v_items
          FROM (SELECT s.id AS sku_id, sum((l->>'quantity')::integer) AS quantity
                FROM jsonb_array_elements(p_lines) l JOIN commerce.skus s ON s.code = l->>'sku'
                GROUP BY s.id) t;
    END IF;

    IF v_items IS NULL THEN
        RAISE EXCEPTION 'the cart is empty'
            USING ERRCODE = '22023', HINT = 'Add items to the cart before ordering.';
    END IF;

    -- Price every line first, so that the order is written once, complete
    -- (each write of an order is audited and streamed).
    SELECT sum(r.quantity * p.amount_minor), min(s.code) FILTER (WHERE p.amount_minor IS NULL)
      INTO v_total, v_missing
      FROM jsonb_to_recordset(v_items) AS r(sku_id bigint, quantity integer)
      JOIN commerce.skus s ON s.id = r.sku_id
      LEFT JOIN commerce.prices p ON p.sku_id = r.sku_id AND p.currency = v_currency;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'SKU "%" has no price in %', v_missing, v_currency
            USING ERRCODE = '22023', HINT = 'Order in a currency the SKU is priced in.';
    END IF;

    PERFORM pg_catalog.set_config('commerce.transition_reason', 'payment opened', true);
    INSERT INTO commerce.orders (customer_id, status, currency, total_minor, shipping_address, reserved_until)
    VALUES (v_customer, 'awaiting_payment', v_currency, v_total, p_shipping_address, now() + v_ttl)
    RETURNING id INTO v_order_id;
    PERFORM pg_catalog.set_config('commerce.transition_reason', '', true);

    -- Reserve in SKU id order: concurrent orders cannot deadlock.
    FOR v_line IN
        SELECT r.sku_id, r.quantity, p.amount_minor
        FROM jsonb_to_recordset(v_items) AS r(sku_id bigint, quantity integer)
        JOIN commerce.prices p ON p.sku_id = r.sku_id AND p.currency = v_currency
        ORDER BY r.sku_id
    LOOP
        PERFORM commerce.reserve_stock(v_line.sku_id, v_line.quantity);
        v_line_no := v_line_no + 1;
        INSERT INTO commerce.order_lines (order_id, line_no, sku_id, quantity, unit_price_minor)
        VALUES (v_order_id, v_line_no, v_line.sku_id, v_line.quantity, v_line.amount_minor);
    END LOOP;

    INSERT INTO commerce.payments (order_id, provider_ref, amount_minor, currency)
    VALUES (v_order_id, 'pay_' || replace(gen_random_uuid()::text, '-', ''), v_total, v_currency);

    RETURN commerce.idempotency_finish(p_idempotency_key, commerce.order_json(v_order_id));
END
$$;
COMMENT ON FUNCTION commerce.place_order(bigint, jsonb, jsonb, text, text) IS 'Places an order from the caller''s cart or from lines: copies prices, reserves stock (PT409 if short), opens a payment; returns the order.';

/* Gives back what an order holds: reserved units, or sold ones if paid. */
CREATE FUNCTION commerce.release_stock(p_order commerce.orders)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_order.status IN ('pending', 'awaiting_payment') THEN
        UPDATE commerce.inventory i SET reserved = i.reserved - l.quantity
          FROM (SELECT sku_id, sum(quantity)::integer AS quantity FROM commerce.order_lines
                WHERE order_id = p_order.id GROUP BY sku_id) l
         WHERE i.sku_id = l.sku_id;
    ELSIF p_order.status IN ('paid', 'fulfilled') THEN
        UPDATE commerce.inventory i SET sold = i.sold - l.quantity
          FROM (SELECT sku_id, sum(quantity)::integer AS quantity FROM commerce.order_lines
                WHERE order_id = p_order.id GROUP BY sku_id) l
         WHERE i.sku_id = l.sku_id;
    END IF;
END
$$;
COMMENT ON FUNCTION commerce.release_stock(commerce.orders) IS 'Returns an order''s units to stock: reserved ones if unpaid, sold ones if paid but not shipped.';

CREATE FUNCTION commerce.record_refund(p_order commerce.orders, p_amount bigint, p_reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO commerce.refunds (order_id, payment_id, amount_minor, reason)
    VALUES (p_order.id,
            (SELECT id FROM commerce.payments WHERE order_id = p_order.id AND status = 'succeeded'
             ORDER BY id DESC LIMIT 1),
            p_amount, p_reason);
END
$$;
COMMENT ON FUNCTION commerce.record_refund(commerce.orders, bigint, text) IS 'Records a refund of an order''s captured payment.';

CREATE FUNCTION commerce.cancel_order(p_order_id bigint, p_reason text DEFAULT NULL,
                                      p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prior jsonb;
    v_order commerce.orders;
BEGIN
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
COMMENT ON FUNCTION commerce.cancel_order(bigint, text, text) IS 'Cancels an order before shipment (its customer or staff): releases its stock and refunds a captured payment.';

/* Staff moves an order one step along fulfilment (idempotent, audited). */
CREATE FUNCTION commerce.staff_move(p_operation text, p_order_id bigint, p_to commerce.order_status,
                                    p_tracking_code text, p_idempotency_key text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prior jsonb;
BEGIN
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
COMMENT ON FUNCTION commerce.staff_move(text, bigint, commerce.order_status, text, text) IS 'Staff only: moves an order to the next fulfilment status (idempotent).';

CREATE FUNCTION commerce.fulfil_order(p_order_id bigint, p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.staff_move('fulfil_order', p_order_id, 'fulfilled', NULL, p_idempotency_key) $$;
COMMENT ON FUNCTION commerce.fulfil_order(bigint, text) IS 'Staff: marks a paid order fulfilled (packed).';

CREATE FUNCTION commerce.ship_order(p_order_id bigint, p_tracking_code text DEFAULT NULL,
                                    p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.staff_move('ship_order', p_order_id, 'shipped', p_tracking_code, p_idempotency_key) $$;
COMMENT ON FUNCTION commerce.ship_order(bigint, text, text) IS 'Staff: marks a fulfilled order shipped, with its tracking code.';

CREATE FUNCTION commerce.deliver_order(p_order_id bigint, p_idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.staff_move('deliver_order', p_order_id, 'delivered', NULL, p_idempotency_key) $$;
COMMENT ON FUNCTION commerce.deliver_order(bigint, text) IS 'Staff: marks a shipped order delivered.';

CREATE FUNCTION commerce.refund_order(p_order_id bigint, p_amount_minor bigint DEFAULT NULL,
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
COMMENT ON FUNCTION commerce.refund_order(bigint, bigint, text, text) IS 'Staff: refunds all or part of a paid order (refunded or partially_refunded).';

CREATE FUNCTION commerce.order_history(p_order_id bigint)
RETURNS TABLE (at timestamptz, from_status commerce.order_status, to_status commerce.order_status,
               actor text, reason text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM commerce.orders o WHERE o.id = p_order_id
                   AND (o.customer_id = bv.actor() OR commerce.is_staff())) THEN
        RAISE EXCEPTION 'order % not found', p_order_id
            USING ERRCODE = 'PT404', HINT = 'Check the order id; customers see only their own orders.';
    END IF;
    RETURN QUERY SELECT e.at, e.from_status, e.to_status, e.actor, e.reason
                 FROM commerce.order_events e WHERE e.order_id = p_order_id ORDER BY e.id;
END
$$;
COMMENT ON FUNCTION commerce.order_history(bigint) IS 'Every status change of an order (its customer or staff), oldest first.';

/* ---------- inbound payment webhooks ---------- */

CREATE FUNCTION commerce.signature_problem(secret text, header text, body text, tolerance_s integer DEFAULT 300)
RETURNS text
AS 'MODULE_PATHNAME', 'commerce_signature_problem'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION commerce.signature_problem(text, text, text, integer) IS 'NULL if header is a valid "t=<unix>,v1=<hex HMAC-SHA256 of t.body>" signature within tolerance_s seconds, else why not. Constant-time.';
REVOKE ALL ON FUNCTION commerce.signature_problem(text, text, text, integer) FROM PUBLIC;

/*
 * A payment provider's event: {"id": "evt_...", "type": "payment.succeeded" |
 * "payment.failed", "data": {"payment_ref": "pay_...", "amount_minor": n,
 * "currency": "USD"}}, signed in the "bv-signature" request header with the
 * secret stored as bv.secret_get('commerce.payment_webhook').  A bad signature
 * is refused with PT401 before anything is read or written; an event id seen
 * before is acknowledged without being applied again.
 */
CREATE FUNCTION commerce.handle_payment_webhook(p_body text, p_signature text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
    v_event jsonb;
    v_payment commerce.payments;
    v_order commerce.orders;
    v_outcome text;
BEGIN
    v_problem := commerce.signature_problem(bv.secret_get('commerce.payment_webhook'),
                                            coalesce(p_signature, ''), coalesce(p_body, ''), 300);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid webhook signature'
            USING ERRCODE = 'PT401', DETAIL = v_problem,
                  HINT = 'Sign "<t>.<body>" with HMAC-SHA256 under the shared secret and send bv-signature: t=<t>,v1=<hex>.';
    END IF;
    PERFORM bv.set_actor('payment-provider');

    BEGIN
        v_event := p_body::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'webhook body is not JSON' USING ERRCODE = '22023', HINT = 'Send the event as a JSON object.';
    END;
    IF jsonb_typeof(v_event->'id') IS DISTINCT FROM 'string' OR jsonb_typeof(v_event->'type') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'webhook event without id or type'
            USING ERRCODE = '22023', HINT = 'Send {"id": "...", "type": "...", "data": {...}}.';
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
            RAISE EXCEPTION 'payment "%" not found', v_event->'data'->>'payment_ref'
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
COMMENT ON FUNCTION commerce.handle_payment_webhook(text, text) IS 'Verifies and applies a payment provider event (PT401 on a bad signature, nothing changed); de-duplicated by event id.';

/* ---------- scheduled maintenance ---------- */

CREATE FUNCTION commerce.release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_order commerce.orders;
    v_count integer := 0;
BEGIN
    PERFORM bv.set_actor('commerce-expiry');
    FOR v_order IN
        SELECT * FROM commerce.orders
         WHERE status IN ('pending', 'awaiting_payment') AND reserved_until < now()
         ORDER BY id
         FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM commerce.transition(v_order.id, 'cancelled', 'reservation expired');
        PERFORM commerce.release_stock(v_order);
        UPDATE commerce.orders SET reserved_until = NULL WHERE id = v_order.id;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION commerce.release_expired_reservations() IS 'Cancels unpaid orders whose reservation expired and returns their stock; run every minute by pg_cron.';

CREATE FUNCTION commerce.purge_idempotency_keys()
RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (DELETE FROM commerce.idempotency_keys WHERE created_at < now() - interval '24 hours' RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION commerce.purge_idempotency_keys() IS 'Deletes idempotency keys older than 24 hours; run hourly by pg_cron.';

CREATE FUNCTION commerce.schedule_jobs()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron is not installed in this database; commerce jobs are not scheduled'
            USING HINT = 'Install pg_cron in the database named by cron.database_name and call commerce.schedule_jobs().';
        RETURN;
    END IF;
    PERFORM cron.schedule('commerce-release-reservations', '* * * * *',
                          'SELECT commerce.release_expired_reservations()');
    PERFORM cron.schedule('commerce-purge-idempotency-keys', '17 * * * *',
                          'SELECT commerce.purge_idempotency_keys()');
END
$$;
COMMENT ON FUNCTION commerce.schedule_jobs() IS 'Schedules the commerce maintenance jobs with pg_cron (called at install when pg_cron is present).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM commerce.schedule_jobs();
    END IF;
END
$$;

/* ---------- row-level security ---------- */

CREATE FUNCTION commerce.sees_customer(p_customer_id text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT p_customer_id = bv.actor() OR pg_catalog.pg_has_role(current_user, 'bv_service', 'MEMBER') $$;
COMMENT ON FUNCTION commerce.sees_customer(text) IS 'RLS predicate: the row belongs to the actor, or the reader is staff.';

ALTER TABLE commerce.carts ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.cart_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.order_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.order_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE commerce.addresses ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_rows ON commerce.carts USING (commerce.sees_customer(customer_id));
CREATE POLICY own_rows ON commerce.orders USING (commerce.sees_customer(customer_id));
CREATE POLICY own_rows ON commerce.addresses USING (commerce.sees_customer(customer_id))
    WITH CHECK (customer_id = bv.actor());
CREATE POLICY own_rows ON commerce.cart_items
    USING (EXISTS (SELECT 1 FROM commerce.carts c WHERE c.id = cart_id));
CREATE POLICY own_rows ON commerce.order_lines
    USING (EXISTS (SELECT 1 FROM commerce.orders o WHERE o.id = order_id));
CREATE POLICY own_rows ON commerce.order_events
    USING (EXISTS (SELECT 1 FROM commerce.orders o WHERE o.id = order_id));
CREATE POLICY own_rows ON commerce.payments
    USING (EXISTS (SELECT 1 FROM commerce.orders o WHERE o.id = order_id));
CREATE POLICY own_rows ON commerce.refunds
    USING (EXISTS (SELECT 1 FROM commerce.orders o WHERE o.id = order_id));

/* ---------- privileges ---------- */

REVOKE ALL ON ALL TABLES IN SCHEMA commerce FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA commerce FROM PUBLIC;
GRANT EXECUTE ON FUNCTION commerce.sees_customer(text), commerce.is_staff(), commerce.request_role()
    TO PUBLIC;
GRANT USAGE ON SCHEMA commerce TO bv_anon;
GRANT SELECT ON commerce.currencies, commerce.categories, commerce.products, commerce.skus,
                commerce.prices, commerce.inventory, commerce.order_transitions TO bv_anon;
GRANT SELECT ON commerce.carts, commerce.cart_items, commerce.orders, commerce.order_lines,
                commerce.order_events, commerce.payments, commerce.refunds TO bv_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON commerce.addresses TO bv_user;
GRANT EXECUTE ON FUNCTION commerce.add_to_cart(text, integer, text, text),
                          commerce.place_order(bigint, jsonb, jsonb, text, text),
                          commerce.cancel_order(bigint, text, text),
                          commerce.order_history(bigint) TO bv_user;
GRANT EXECUTE ON FUNCTION commerce.fulfil_order(bigint, text), commerce.ship_order(bigint, text, text),
                          commerce.deliver_order(bigint, text),
                          commerce.refund_order(bigint, bigint, text, text) TO bv_service;
GRANT SELECT ON ALL TABLES IN SCHEMA commerce TO bv_service;
GRANT INSERT, UPDATE ON commerce.categories, commerce.products, commerce.skus, commerce.prices,
                        commerce.inventory TO bv_admin;

/* ---------- the REST API (schema api, served by PostgREST) ---------- */

GRANT USAGE ON SCHEMA api TO bv_anon;

CREATE FUNCTION commerce.request_header(p_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT nullif(current_setting('request.headers', true), '')::json ->> p_name $$;
COMMENT ON FUNCTION commerce.request_header(text) IS 'A request header (lower-case name) as PostgREST passes it in request.headers, or NULL.';
GRANT EXECUTE ON FUNCTION commerce.request_header(text) TO bv_anon;

CREATE VIEW api.catalog WITH (security_invoker = true) AS
SELECT s.code AS sku, p.slug AS product, p.name, p.description, c.slug AS category,
       s.attributes, pr.currency, pr.amount_minor,
       greatest(i.total - i.reserved - i.sold, 0) AS available
FROM commerce.skus s
JOIN commerce.products p ON p.id = s.product_id
LEFT JOIN commerce.categories c ON c.id = p.category_id
JOIN commerce.prices pr ON pr.sku_id = s.id
LEFT JOIN commerce.inventory i ON i.sku_id = s.id
WHERE s.active AND p.active;
COMMENT ON VIEW api.catalog IS 'Sellable SKUs with their product, price per currency and units available. Open to everyone.';
GRANT SELECT ON api.catalog TO bv_anon;

CREATE VIEW api.orders WITH (security_invoker = true) AS
SELECT o.id, o.status, o.currency, o.total_minor, o.refunded_minor, o.reserved_until,
       o.tracking_code, o.created_at, o.customer_id
FROM commerce.orders o;
COMMENT ON VIEW api.orders IS 'Orders: customers see their own, staff see all.';
GRANT SELECT ON api.orders TO bv_user;

CREATE VIEW api.order_lines WITH (security_invoker = true) AS
SELECT l.order_id, l.line_no, s.code AS sku, l.quantity, l.unit_price_minor
FROM commerce.order_lines l JOIN commerce.skus s ON s.id = l.sku_id;
COMMENT ON VIEW api.order_lines IS 'Lines of the orders the caller may see, with prices as ordered.';
GRANT SELECT ON api.order_lines TO bv_user;

CREATE VIEW api.payments WITH (security_invoker = true) AS
SELECT p.order_id, p.provider_ref, p.amount_minor, p.currency, p.status, p.created_at
FROM commerce.payments p;
COMMENT ON VIEW api.payments IS 'Payments of the orders the caller may see.';
GRANT SELECT ON api.payments TO bv_user;

CREATE FUNCTION api.add_to_cart(sku text, quantity integer, currency text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.add_to_cart(sku, quantity, currency, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.add_to_cart(text, integer, text) IS 'Adds units of a SKU to your cart. Honours the Idempotency-Key header.';

CREATE FUNCTION api.place_order(cart_id bigint DEFAULT NULL, lines jsonb DEFAULT NULL,
                                shipping_address jsonb DEFAULT NULL, currency text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.place_order(cart_id, lines, shipping_address, currency, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.place_order(bigint, jsonb, jsonb, text) IS 'Places an order from your cart or from lines [{"sku","quantity"}]; 409 if stock is short. Honours the Idempotency-Key header: a retry returns the same order.';

CREATE FUNCTION api.cancel_order(order_id bigint, reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.cancel_order(order_id, reason, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.cancel_order(bigint, text) IS 'Cancels your order before it ships; 409 with the allowed states otherwise.';

CREATE FUNCTION api.order_history(order_id bigint)
RETURNS TABLE (at timestamptz, from_status commerce.order_status, to_status commerce.order_status,
               actor text, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM commerce.order_history(order_id) $$;
COMMENT ON FUNCTION api.order_history(bigint) IS 'Every status change of one of your orders, with who made it.';

CREATE FUNCTION api.fulfil_order(order_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.fulfil_order(order_id, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.fulfil_order(bigint) IS 'Staff: marks a paid order packed.';

CREATE FUNCTION api.ship_order(order_id bigint, tracking_code text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.ship_order(order_id, tracking_code, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.ship_order(bigint, text) IS 'Staff: marks a packed order shipped.';

CREATE FUNCTION api.deliver_order(order_id bigint)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.deliver_order(order_id, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.deliver_order(bigint) IS 'Staff: marks a shipped order delivered.';

CREATE FUNCTION api.refund_order(order_id bigint, amount_minor bigint DEFAULT NULL, reason text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.refund_order(order_id, amount_minor, reason, commerce.request_header('idempotency-key')) $$;
COMMENT ON FUNCTION api.refund_order(bigint, bigint, text) IS 'Staff: refunds all (amount omitted) or part of a paid order.';

/* PostgREST passes a JSON body to a function with one unnamed json argument
 * unchanged (type json keeps the text as sent), so the signature is checked
 * over the exact bytes the provider signed. */
CREATE FUNCTION api.payment_webhook(json)
RETURNS jsonb LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT commerce.handle_payment_webhook($1::text, commerce.request_header('bv-signature')) $$;
COMMENT ON FUNCTION api.payment_webhook(json) IS 'Payment provider events, signed in the bv-signature header (t=<unix>,v1=<HMAC-SHA256>); 401 on a bad signature.';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION commerce.request_header(text), api.payment_webhook(json) TO bv_anon;
GRANT EXECUTE ON FUNCTION commerce.handle_payment_webhook(text, text) TO bv_anon;
GRANT EXECUTE ON FUNCTION api.add_to_cart(text, integer, text), api.place_order(bigint, jsonb, jsonb, text),
                          api.cancel_order(bigint, text), api.order_history(bigint) TO bv_user;
GRANT EXECUTE ON FUNCTION api.fulfil_order(bigint), api.ship_order(bigint, text),
                          api.deliver_order(bigint), api.refund_order(bigint, bigint, text) TO bv_service;

/* ---------- audit (bv_audit) ---------- */

/*
 * Audit columns (created_by/at, updated_by/at) and a mirrored history on
 * every commerce table.  The stored responses of idempotency keys are
 * copies of audited orders and carts, so that column is left out.
 *
 * The audit tables are created inside CREATE EXTENSION, which would make
 * them members of bv_commerce, dropped with it; they are detached, so that
 * dropping the domain never drops its history (bv_audit keeps the history of
 * dropped tables).
 */
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'commerce'::regnamespace AND c.relkind = 'r'
              ORDER BY c.relname
    LOOP
        PERFORM bv_audit.stamp(t);
        PERFORM bv_audit.enable(t, CASE WHEN t = 'commerce.idempotency_keys'::regclass
                                        THEN ARRAY['response'] ELSE '{}'::text[] END);
    END LOOP;
    FOR t IN SELECT d.objid::regclass
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_class c ON c.oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                AND d.refclassid = 'pg_extension'::regclass
                AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'bv_commerce')
                AND c.relnamespace = 'bv_audit'::regnamespace
                AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER EXTENSION bv_commerce DROP TABLE %s', t);
    END LOOP;
END
$$;
