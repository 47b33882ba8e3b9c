-- Red-team round 5, bv_iot: direct writes to the registry follow
-- provision_device()'s rules.  A device owner's UPDATE of iot.devices put
-- its device into another owner's group (the foreign key is checked without
-- row-level security), stored megabytes of metadata, and got raw
-- 23514/23503 errors; a group insert took any description and answered a
-- taken name with a raw 23505.
BEGIN;
SELECT plan(13);

INSERT INTO iot.device_groups (name, owner) VALUES ('rt5-bobs', 'rt5-bob');
SELECT set_config('request.jwt.claims', '{"role":"bv_user","sub":"rt5-alice"}', true);
-- Alice provisions a device through the API function, then writes directly.
RESET ROLE;
SELECT bv.set_actor('rt5-alice');
SET LOCAL ROLE bv_user;
SELECT lives_ok($$SELECT iot.provision_device('rt5-a1')$$, 'alice provisions a device');
SELECT lives_ok($$INSERT INTO iot.device_groups (name) VALUES ('rt5-alices')$$, 'alice creates a group');
SELECT lives_ok($$UPDATE iot.devices SET group_name = 'rt5-alices' WHERE device_id = 'rt5-a1'$$, 'her device joins her group');
SELECT throws_ok($$UPDATE iot.devices SET group_name = 'rt5-bobs' WHERE device_id = 'rt5-a1'$$,
                 '22023', 'device group ''rt5-bobs'' does not exist', 'another owner''s group: 22023 as in provision_device');
SELECT is((SELECT group_name FROM iot.devices WHERE device_id = 'rt5-a1'), 'rt5-alices', 'the device stays in her group');
SELECT throws_ok($$UPDATE iot.devices SET metadata = jsonb_build_object('x', repeat('m', 5000000)) WHERE device_id = 'rt5-a1'$$,
                 '22023', 'invalid device metadata', '5 MB of metadata: 22023');
SELECT throws_ok($$UPDATE iot.devices SET metadata = '[1]' WHERE device_id = 'rt5-a1'$$,
                 '22023', 'invalid device metadata', 'metadata that is not an object: 22023, not 23514');
SELECT throws_ok($$UPDATE iot.devices SET firmware = repeat('9', 65) WHERE device_id = 'rt5-a1'$$,
                 '22023', 'invalid firmware version', 'a 65-character firmware: 22023, not 23514');
SELECT throws_ok($$UPDATE iot.devices SET device_type = 'no-such-type' WHERE device_id = 'rt5-a1'$$,
                 '22023', 'device type ''no-such-type'' does not exist', 'an unknown type: 22023, not 23503');
SELECT lives_ok($$UPDATE iot.devices SET status = 'disabled', metadata = '{"site": "lab"}' WHERE device_id = 'rt5-a1'$$,
                'ordinary updates still work');
SELECT throws_ok($$INSERT INTO iot.device_groups (name) VALUES ('rt5-bobs')$$,
                 'PT409', 'device group name ''rt5-bobs'' is taken', 'a taken group name: PT409, not a raw 23505');
SELECT throws_ok($$INSERT INTO iot.device_groups (name, description) VALUES ('rt5-big', repeat('d', 1001))$$,
                 '22023', 'invalid device group description', 'a description over 1000 characters: 22023');
SELECT throws_ok($$INSERT INTO iot.device_groups (name) VALUES (E'a\nb')$$,
                 '22023', NULL, 'a group name with a newline: 22023, not 23514');

SELECT * FROM finish();
ROLLBACK;
