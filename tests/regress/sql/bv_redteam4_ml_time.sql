-- Red-team round 3 (bv_ml 0.3.0): the point-in-time join must not depend on
-- the session's TimeZone.  Labels recorded as UTC timestamps (without time
-- zone), features with timestamptz event times.  Before 0.3.0 a session in
-- America/New_York read the label time 12:00 as 17:00 UTC and took the
-- feature recorded at 14:00 UTC, two hours after the label: the future
-- leaked into the training set.
CREATE TABLE red4_stats (customer_id int, event_ts timestamptz, spend int);
INSERT INTO red4_stats VALUES (7, '2026-01-01 10:00+00', 1), (7, '2026-01-01 14:00+00', 999);
SELECT name FROM ml.define_entity('red4_cust', ARRAY['customer_id']);
SELECT version FROM ml.define_feature_view('red4_stats', 'red4_cust', 'public.red4_stats', ARRAY['spend'],
                                           event_ts_column => 'event_ts', ttl => interval '1 day');
CREATE TABLE red4_labels (customer_id int, event_timestamp timestamp, label int);
INSERT INTO red4_labels VALUES (7, '2026-01-01 12:00', 1);
CREATE TABLE red4_day_labels (customer_id int, event_timestamp date, label int);
INSERT INTO red4_day_labels VALUES (7, '2026-01-02', 1);

SET TimeZone = 'UTC';
SELECT red4_stats__spend AS utc FROM ml.training_rows('public.red4_labels', ARRAY['red4_stats:spend']) r,
       jsonb_to_record(r) AS x(red4_stats__spend int);
SET TimeZone = 'America/New_York';
SELECT red4_stats__spend AS new_york FROM ml.training_rows('public.red4_labels', ARRAY['red4_stats:spend']) r,
       jsonb_to_record(r) AS x(red4_stats__spend int);
SET TimeZone = 'Asia/Tokyo';
SELECT red4_stats__spend AS tokyo FROM ml.training_rows('public.red4_labels', ARRAY['red4_stats:spend']) r,
       jsonb_to_record(r) AS x(red4_stats__spend int);
-- a date is midnight UTC: the 14:00 value of the day before, in every zone
SELECT red4_stats__spend AS date_tokyo FROM ml.training_rows('public.red4_day_labels', ARRAY['red4_stats:spend']) r,
       jsonb_to_record(r) AS x(red4_stats__spend int);
SET TimeZone = 'America/Los_Angeles';
SELECT red4_stats__spend AS date_los_angeles FROM ml.training_rows('public.red4_day_labels', ARRAY['red4_stats:spend']) r,
       jsonb_to_record(r) AS x(red4_stats__spend int);

-- the other way round: naive UTC event times in the source, timestamptz labels
CREATE TABLE red4_naive (customer_id int, event_ts timestamp, spend int);
INSERT INTO red4_naive VALUES (7, '2026-01-01 10:00', 1), (7, '2026-01-01 14:00', 999);
SELECT version FROM ml.define_feature_view('red4_naive', 'red4_cust', 'public.red4_naive', ARRAY['spend'],
                                           event_ts_column => 'event_ts');
CREATE TABLE red4_tz_labels (customer_id int, event_timestamp timestamptz, label int);
INSERT INTO red4_tz_labels VALUES (7, '2026-01-01 12:00+00', 1);
SET TimeZone = 'Asia/Tokyo';
SELECT red4_naive__spend AS naive_source_tokyo FROM ml.training_rows('public.red4_tz_labels', ARRAY['red4_naive:spend']) r,
       jsonb_to_record(r) AS x(red4_naive__spend int);
-- and the online store agrees (online = offline), in any session
SELECT ml.materialize('red4_naive', '2026-01-01 12:00+00');
SET TimeZone = 'America/New_York';
SELECT "values" FROM ml.online_features('[{"customer_id": 7}]', ARRAY['red4_naive:spend'], at => '2026-01-01 12:00+00');
SELECT ml.materialize('red4_naive', '2026-01-01 15:00+00');
SELECT "values" FROM ml.online_features('[{"customer_id": 7}]', ARRAY['red4_naive:spend'], at => '2026-01-01 15:00+00');
RESET TimeZone;

-- online_features: a key value that does not fit the key column's type is
-- 22023 with a hint and no client data (it was the cast's error, quoting
-- the whole value)
\set VERBOSITY default
SELECT * FROM ml.online_features(jsonb_build_array(jsonb_build_object('customer_id', repeat('x', 3000))),
                                 ARRAY['red4_naive:spend']);
SELECT * FROM ml.online_features('[{"customer_id": 99999999999}]', ARRAY['red4_naive:spend']);
SELECT * FROM ml.online_features('[{"customer_id": {"a": 1}}]', ARRAY['red4_naive:spend']);
-- other refusals keep their own message
SELECT * FROM ml.online_features('[{"customer_id": 7}]', ARRAY[]::text[]);
-- a key as a string of digits still finds the entity
SELECT ordinality, "values" FROM ml.online_features('[{"customer_id": "7"}]', ARRAY['red4_naive:spend'],
                                                    at => '2026-01-01 15:00+00');

-- an entity time column that is not a time
CREATE TABLE red4_bad_labels (customer_id int, event_timestamp text);
SELECT ml.training_set_sql('public.red4_bad_labels', ARRAY['red4_stats:spend']);
