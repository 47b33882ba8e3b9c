-- Issue #17 item 7: internal functions of bv_core and bv_commerce are not
-- callable by the API roles.  bv._request_rate_limit(bucket) was granted
-- to bv_anon, so any user could drain anybody's rate-limit bucket.
--
-- Internal means: a bv function whose name starts with "_" or whose comment
-- starts with "Internal", and every commerce function that is not part of
-- the documented SQL API below.
BEGIN;
SELECT plan(9);

CREATE TEMP VIEW fn_grants AS
SELECT p.oid::regprocedure::text AS fn, n.nspname AS schema, p.proname AS name,
       obj_description(p.oid, 'pg_proc') AS comment, r.rolname AS role
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
CROSS JOIN (VALUES ('bv_anon'), ('bv_user'), ('bv_service'), ('bv_admin')) AS r(rolname)
WHERE n.nspname IN ('bv', 'commerce')
  AND has_function_privilege(r.rolname, p.oid, 'EXECUTE');

SELECT is((SELECT string_agg(format('%s by %s', fn, role), ', ' ORDER BY fn, role) FROM fn_grants
           WHERE schema = 'bv' AND (name LIKE '\_%' OR comment LIKE 'Internal%')),
          NULL, 'no internal bv function is executable by an API role');

SELECT ok(NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = '_request_rate_limit'
                      AND pronamespace = 'bv'::regnamespace),
          'the bucket-taking step bv._request_rate_limit(text) is gone');
SELECT ok(has_function_privilege('bv_authenticator', 'bv._request_admit(text)', 'EXECUTE'),
          'PostgREST''s login runs the checks of pre_request');
SELECT ok(NOT has_function_privilege('bv_anon', 'bv._request_admit(text)', 'EXECUTE')
          AND NOT has_function_privilege('bv_admin', 'bv._request_admit(text)', 'EXECUTE'),
          'no API role runs them');
SELECT ok(NOT has_function_privilege('bv_anon', 'bv.rate_limit_retry_after(text,double precision,double precision)', 'EXECUTE'),
          'bv_anon cannot take from a bucket directly');

-- commerce: exactly the documented API per role.
SELECT is((SELECT string_agg(DISTINCT name, ',' ORDER BY name) FROM fn_grants
           WHERE schema = 'commerce' AND role = 'bv_anon'),
          'handle_payment_webhook,is_staff,request_header,request_role,sees_customer',
          'bv_anon: the webhook, the request header and the RLS predicates');
SELECT is((SELECT string_agg(DISTINCT name, ',' ORDER BY name) FROM fn_grants
           WHERE schema = 'commerce' AND role = 'bv_user'),
          'add_to_cart,cancel_order,handle_payment_webhook,is_staff,order_history,place_order,request_header,request_role,sees_customer',
          'bv_user: the customer API');
SELECT is((SELECT string_agg(DISTINCT name, ',' ORDER BY name) FROM fn_grants
           WHERE schema = 'commerce' AND role = 'bv_service'),
          'add_to_cart,cancel_order,deliver_order,fulfil_order,handle_payment_webhook,is_staff,order_history,place_order,refund_order,request_header,request_role,sees_customer,ship_order',
          'bv_service: the staff API');
SELECT is((SELECT string_agg(DISTINCT name, ',' ORDER BY name) FROM fn_grants
           WHERE schema = 'commerce' AND role = 'bv_admin'
             AND name NOT IN (SELECT name FROM fn_grants WHERE schema = 'commerce' AND role = 'bv_service')),
          NULL, 'bv_admin: nothing more');

SELECT * FROM finish();
ROLLBACK;
