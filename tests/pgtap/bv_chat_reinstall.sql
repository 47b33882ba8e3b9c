-- bv_chat: DROP EXTENSION then CREATE EXTENSION leaves a working install.
-- bv_chat's rows of bv_realtime.topic_grants outlive the extension (the
-- table is bv_realtime's); before 0.3.0 a re-install kept the old rows,
-- whose check function no longer existed, beside the new ones, and the
-- gateway refused every room subscription.
BEGIN;
SELECT plan(5);

SELECT is((SELECT count(*)::int FROM bv_realtime.topic_grants WHERE comment LIKE 'bv\_chat: %'), 5,
          'an install has its five topic grants (0.3.0: the WebSocket send handler''s)');
DROP EXTENSION bv_chat CASCADE;
SELECT is((SELECT count(*)::int FROM bv_realtime.topic_grants WHERE comment LIKE 'bv\_chat: %'), 5,
          'the grants outlive DROP EXTENSION (they are rows of bv_realtime''s table)');
CREATE EXTENSION bv_chat;
SELECT is((SELECT count(*)::int FROM bv_realtime.topic_grants WHERE comment LIKE 'bv\_chat: %'), 5,
          'a re-install leaves exactly its own five grants');
SELECT is((SELECT count(*)::int FROM bv_realtime.topic_grants g
            WHERE g.check_function IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = g.check_function::oid)), 0,
          'no grant names a check function that no longer exists');
SELECT is((SELECT count(*)::int FROM bv_realtime.topic_grants g
            WHERE g.handler IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = g.handler::oid)), 0,
          'no grant names a handler that no longer exists');

SELECT * FROM finish();
ROLLBACK;
