-- Red-team round 5: social.setting() read the GUC social.<name> before
-- social.settings, so any session could SET social.fanout_threshold and
-- choose fan-out on write to every follower for its own posts.  Only a
-- superuser's session may override a tunable now.
BEGIN;
SELECT plan(4);
SELECT value AS fanout FROM social.settings WHERE name = 'fanout_threshold' \gset
SELECT value AS cap FROM social.settings WHERE name = 'timeline_cap' \gset

SELECT is(social.setting('fanout_threshold'), (SELECT value FROM social.settings WHERE name = 'fanout_threshold'),
          'control: the tunable comes from social.settings');
SET LOCAL social.fanout_threshold = 7;
SELECT is(social.setting('fanout_threshold'), 7::bigint, 'a superuser''s session may override it (tests, benchmarks)');

-- social.setting() runs inside SECURITY DEFINER functions and triggers
-- (as their owner, a superuser): call it the same way.
CREATE FUNCTION public.r5_setting(text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS 'SELECT social.setting($1)';
GRANT EXECUTE ON FUNCTION public.r5_setting(text) TO bv_user;
CREATE ROLE r5_login LOGIN IN ROLE bv_user;
SET LOCAL SESSION AUTHORIZATION r5_login;
SET LOCAL ROLE bv_user;
SET LOCAL social.fanout_threshold = 1000000000;
SET LOCAL social.timeline_cap = 1000000000;
SELECT is(public.r5_setting('fanout_threshold'), :fanout::bigint,
          'a non-superuser session''s SET social.fanout_threshold is ignored, even inside a SECURITY DEFINER function');
SELECT is(public.r5_setting('timeline_cap'), :cap::bigint,
          '... and so is SET social.timeline_cap');

SELECT * FROM finish();
ROLLBACK;
