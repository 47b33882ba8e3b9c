/*
 * bv_commerce 0.4.0 -> 0.5.0: payment events applied whatever the payment's
 * state (red-team round 3).
 *
 * Payment providers do not deliver webhook events in order, and a payment
 * may be reported under more than one event id.  handle_payment_webhook()
 * applied each event to the payment regardless of its state:
 *   - a payment.failed event (an earlier, failed attempt) arriving after
 *     payment.succeeded marked the captured payment "failed" while its order
 *     stayed paid; cancelling the order then recorded a refund tied to no
 *     payment (payment_id NULL), so the refund could not be matched to the
 *     money received;
 *   - a second payment.succeeded for the same payment (another event id)
 *     found the order already paid and recorded a full refund of money that
 *     was received only once: the customer kept the goods and got the money
 *     back.
 * Now a payment that succeeded stays succeeded: both events are stored and
 * answered "ignored: payment already succeeded", and nothing else changes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_commerce UPDATE TO '0.5.0'" to load this file. \quit

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

        IF v_event->>'type' = 'payment.failed' AND v_payment.status = 'succeeded' THEN
            -- 0.5.0: providers do not promise order; a failed attempt
            -- reported after the payment succeeded changes nothing.
            v_outcome := 'ignored: payment already succeeded';
        ELSIF v_event->>'type' = 'payment.failed' THEN
            UPDATE commerce.payments SET status = 'failed', updated_at = now() WHERE id = v_payment.id;
            v_outcome := 'payment failed';
        ELSIF (v_event->'data'->>'amount_minor')::bigint IS DISTINCT FROM v_payment.amount_minor
              OR (v_event->'data'->>'currency') IS DISTINCT FROM v_payment.currency THEN
            RAISE EXCEPTION 'payment amount does not match the order'
                USING ERRCODE = 'PT409',
                      DETAIL = format('Expected %s %s.', v_payment.amount_minor, v_payment.currency),
                      HINT = 'Charge exactly the amount of the payment.';
        ELSIF v_payment.status = 'succeeded' THEN
            -- 0.5.0: the same payment reported again under another event
            -- id is the same money, received once: nothing to pay back.
            v_outcome := 'ignored: payment already succeeded';
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
                -- Paid too late (the reservation expired): give the money back.
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
