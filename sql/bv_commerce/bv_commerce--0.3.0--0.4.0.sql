/*
 * bv_commerce 0.3.0 -> 0.4.0: REST hardening from the second red-team pass.
 *
 * Denial of inventory.  Placing an order reserves its units until it is paid
 * or its reservation expires (commerce.reservation_ttl, 15 minutes), and
 * nothing bounded what one customer could hold: one signed-in account
 * placed an unpaid order for every available unit of a SKU, every other
 * buyer got PT409 "insufficient stock", and the account re-placed the order
 * each time the reservation expired, at no cost.  Now the units one
 * customer holds in unpaid (awaiting_payment) orders are capped by
 * commerce.limits.max_unpaid_units (default 1000, the most one order line
 * may ask for); an order that would go beyond answers PT429 with a hint,
 * and nothing is reserved.  Operators with scarce stock lower the cap:
 *     UPDATE commerce.limits SET value = 20 WHERE name = 'max_unpaid_units';
 *
 * The cap is a table row, not a setting: a client's SQL session could SET a
 * custom setting, it cannot write this table (bv_admin can).  The check is
 * an AFTER INSERT statement trigger on order_lines, so every way of placing
 * an order (lines or cart) passes through it; a per-customer advisory lock
 * makes two concurrent orders of one customer count each other.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_commerce UPDATE TO '0.4.0'" to load this file. \quit

CREATE TABLE commerce.limits (
    name  text PRIMARY KEY CHECK (name IN ('max_unpaid_units')),
    value bigint NOT NULL CHECK (value >= 1)
);
COMMENT ON TABLE commerce.limits IS 'Per-customer limits checked when orders are placed (bv_admin may change the values).';
COMMENT ON COLUMN commerce.limits.name IS 'max_unpaid_units: units one customer may hold reserved in unpaid (awaiting_payment) orders.';
COMMENT ON COLUMN commerce.limits.value IS 'The limit.';
-- Audited like every commerce table (bv_commerce--0.1.0.sql): who changed a
-- limit, and when.  The history table bv_audit creates belongs to bv_audit's
-- data, not to this extension.
DO $$
DECLARE
    t regclass;
BEGIN
    PERFORM bv_audit.stamp('commerce.limits'::regclass);
    PERFORM bv_audit.enable('commerce.limits'::regclass);
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
INSERT INTO commerce.limits (name, value) VALUES ('max_unpaid_units', 1000);
SELECT pg_catalog.pg_extension_config_dump('commerce.limits', '');
REVOKE ALL ON commerce.limits FROM PUBLIC;
GRANT SELECT, UPDATE ON commerce.limits TO bv_admin;

CREATE FUNCTION commerce.check_unpaid_units()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_customer text;
    v_held bigint;
    v_max bigint := coalesce((SELECT l.value FROM commerce.limits l WHERE l.name = 'max_unpaid_units'), 1000);
BEGIN
    FOR v_customer IN
        SELECT DISTINCT o.customer_id FROM new_lines n JOIN commerce.orders o ON o.id = n.order_id
         WHERE o.status = 'awaiting_payment' ORDER BY 1
    LOOP
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('commerce.unpaid_units'),
                                                 pg_catalog.hashtext(v_customer));
        SELECT coalesce(sum(l.quantity), 0) INTO v_held
          FROM commerce.orders o JOIN commerce.order_lines l ON l.order_id = o.id
         WHERE o.customer_id = v_customer AND o.status = 'awaiting_payment';
        IF v_held > v_max THEN
            RAISE EXCEPTION 'too many units held in unpaid orders'
                USING ERRCODE = 'PT429',
                      DETAIL = format('This order would hold %s units in unpaid orders; at most %s are allowed.', v_held, v_max),
                      HINT = 'Pay or cancel your unpaid orders, or order fewer units.';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION commerce.check_unpaid_units() IS 'Refuses (PT429) an order that would make its customer hold more than commerce.limits.max_unpaid_units units in unpaid orders.';
REVOKE ALL ON FUNCTION commerce.check_unpaid_units() FROM PUBLIC;

CREATE TRIGGER order_lines_unpaid_units AFTER INSERT ON commerce.order_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION commerce.check_unpaid_units();
