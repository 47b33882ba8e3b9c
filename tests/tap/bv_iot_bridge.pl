# bv_iot's MQTT bridge against a real mosquitto with per-device passwords
# and the devices/%u/... ACL: single and batch messages land exactly once;
# every kind of bad input is quarantined with its reason while the good
# readings around it land; configuration changes apply without a restart;
# the broker refuses a device that speaks on another device's topic or
# with a wrong secret; the bridge refuses disabled and unknown devices.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvMqtt;
use BvIot;

my $node = BvTest::new_node('iot', extra_conf => "bv_iot.naptime = 200\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub poll { return $node->poll_query_until('bitvelocity', $_[0]); }

my $b = BvIot::start_broker($node, $dir);
my %secret;
$secret{$_} = BvIot::provision($node, undef, $_) for qw(dev-a dev-b dev-c);
BvIot::reload_auth($node, $b);
BvIot::enable_bridge($node, $b, batch_ms => 20);

sub pub
{
	my ($dev, $topic, @p) = @_;
	my ($rc, $err) = BvIot::publish($b, $dev, $secret{$dev}, $topic, @p);
	return $rc;
}

# ---- 1. single readings and batches, exactly once ----
my $t0 = 1796500000;    # a fixed base: every reading has its own ts
my @single = map { qq({"metric":"temp","value":$_,"ts":) . ($t0 + $_) . '}' } 1 .. 200;
is(pub('dev-a', 'devices/dev-a/telemetry', @single), 0, '200 single-reading messages published');
my @batches = map {
	my $k = $_;
	'[' . join(',', map { qq({"metric":"hum","value":$_,"ts":) . ($t0 + $k * 100 + $_) . '}' } 1 .. 50) . ']'
} 1 .. 10;
is(pub('dev-b', 'devices/dev-b/telemetry', @batches), 0, '10 messages of 50 readings published');
ok(poll("SELECT count(*) = 700 FROM iot.telemetry"), '700 readings landed');
is(sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'dev-a' AND metric = 'temp'"), 200, '200 from dev-a');
is(sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'dev-b' AND metric = 'hum'"), 500, '500 from dev-b');
is(sql("SELECT sum(value) FROM iot.telemetry WHERE device_id = 'dev-a'"), 200 * 201 / 2, 'values intact');
is(sql("SELECT count(*) FROM (SELECT device_id, metric, ts FROM iot.telemetry GROUP BY 1, 2, 3 HAVING count(*) > 1) d"),
	0, 'no reading twice');
is(sql("SELECT messages, readings FROM iot.bridge_counters"), '210|700', 'bridge_stats counts messages and readings');
ok(sql("SELECT batches BETWEEN 1 AND 210 AND commit_max_ms >= 0 AND lag_ms >= 0 FROM iot.bridge_stats") eq 't', 'batches counted');
is(sql("SELECT count(*) FROM iot.device_status WHERE online AND device_id IN ('dev-a', 'dev-b')"), 2,
	'the publishing devices are online (last_seen)');

# A redelivered reading (same device, metric, ts) is a duplicate: dropped.
is(pub('dev-a', 'devices/dev-a/telemetry', $single[0], qq({"metric":"temp","value":999,"ts":) . ($t0 + 999) . '}'),
	0, 'a duplicate and a new reading');
ok(poll("SELECT count(*) = 201 FROM iot.telemetry WHERE device_id = 'dev-a'"), 'the new one landed');
is(sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'dev-a' AND ts = to_timestamp($t0 + 1)"), 1,
	'the duplicate did not');

# ---- 2. bad input: quarantined with its reason, good readings flow ----
sql("UPDATE iot.bridge_config SET max_payload_bytes = 2048");    # applies without restart
ok(poll("SELECT (SELECT updated_at FROM iot.bridge_config) < now() - interval '1.5 seconds'"), 'config settled');
my $now = time();
my @bad = (
	[ 'garbage{', 'malformed_json' ],
	[ "\x{fe}\x{ff}", 'malformed_json' ],
	[ '{"metric":"t","value":1e999999}', 'malformed_json' ],
	[ '"just a string"', 'not_object' ],
	[ '[]', 'empty_batch' ],
	[ '[1]', 'not_object' ],
	[ '{"value":1}', 'missing_field' ],
	[ '{"metric":"t"}', 'missing_field' ],
	[ '{"metric":5,"value":1}', 'wrong_type' ],
	[ '{"metric":"t","value":"12"}', 'wrong_type' ],
	[ '{"metric":"t","value":true}', 'wrong_type' ],
	[ '{"metric":"t","value":"NaN"}', 'non_finite' ],
	[ '{"metric":"t","value":"-Infinity"}', 'non_finite' ],
	[ '{"metric":"t","value":1e308000}', 'malformed_json' ],
	[ '{"metric":"t","value":1e309}', 'non_finite' ],
	[ '{"metric":"bad metric","value":1}', 'bad_metric' ],
	[ '{"metric":"' . ('m' x 65) . '","value":1}', 'bad_metric' ],
	[ '{"metric":"t","value":1,"ts":"2026-02-30T00:00:00Z"}', 'bad_timestamp' ],
	[ '{"metric":"t","value":1,"ts":"infinity"}', 'bad_timestamp' ],
	[ '{"metric":"t","value":1,"ts":"not a time"}', 'bad_timestamp' ],
	[ '{"metric":"t","value":1,"ts":true}', 'wrong_type' ],
	[ '{"metric":"t","value":1,"ts":' . ($now + 86400) . '}', 'ts_future' ],
	[ '{"metric":"t","value":1,"ts":' . ($now - 30 * 86400) . '}', 'ts_past' ],
	[ '{"metric":"t","value":1,"ts":1e300}', 'bad_timestamp' ],
	[ '{"metric":"t","value":1,"payload":[1]}', 'wrong_type' ],
	[ '{"device":"dev-b","metric":"t","value":1}', 'device_mismatch' ],
	[ '{"device":"x/y","metric":"t","value":1}', 'bad_device' ],
	[ '{"metric":"t","value":1,"pad":"' . ('x' x 3000) . '"}', 'oversized' ],
	[ '{"metric":"t\u0000","value":1}', 'malformed_json' ],
);
my $i = 0;
for my $case (@bad)
{
	$i++;
	my ($payload) = @$case;
	# A good reading before and after each bad one.
	is(pub('dev-c', 'devices/dev-c/telemetry', qq({"metric":"ok","value":$i,"ts":) . ($now - $i) . '}'), 0,
		"good reading before case $i");
	is(pub('dev-c', 'devices/dev-c/telemetry', $payload), 0, "bad case $i published");
}
is(pub('dev-c', 'devices/dev-c/telemetry', qq({"metric":"ok","value":0,"ts":$now})), 0, 'last good reading');
my $n = scalar @bad;
ok(poll("SELECT count(*) = $n + 1 FROM iot.telemetry WHERE device_id = 'dev-c' AND metric = 'ok'"),
	'every good reading around the bad ones landed');
ok(poll("SELECT count(*) = $n FROM iot.quarantine WHERE topic = 'devices/dev-c/telemetry'"),
	'every bad message quarantined');
my %want;
$want{ $_->[1] }++ for @bad;
my %got = map { split /\|/ } split /\n/,
  sql("SELECT reason, count(*) FROM iot.quarantine WHERE topic = 'devices/dev-c/telemetry' GROUP BY reason");
is_deeply(\%got, \%want, 'each bad input has its reason');
is(sql("SELECT count(*) FROM iot.telemetry WHERE device_id = 'dev-c' AND metric <> 'ok'"), 0,
	'nothing of the bad input landed');
is(sql("SELECT payload_prefix FROM iot.quarantine WHERE reason = 'malformed_json' AND payload_prefix LIKE 'garbage%'"),
	'garbage{', 'the raw payload is kept');
ok(sql("SELECT bool_and(octet_length(payload_prefix) <= 256) AND bool_and(detail <> '') FROM iot.quarantine") eq 't',
	'payload prefixes are bounded and every refusal says why');
like(sql("SELECT quarantined_by_reason::text FROM iot.bridge_stats"), qr/"non_finite": 3/, 'stats by reason');

# A batch with good and bad readings: the good ones land.
is(pub('dev-c', 'devices/dev-c/telemetry',
	'[{"metric":"mix","value":1,"ts":' . ($now - 1) . '},{"metric":"mix","value":"x"},{"metric":"mix","value":3,"ts":' . ($now - 3) . '}]'),
	0, 'mixed batch');
ok(poll("SELECT count(*) = 2 FROM iot.telemetry WHERE device_id = 'dev-c' AND metric = 'mix'"), 'its good readings landed');
like(sql("SELECT detail FROM iot.quarantine WHERE payload_prefix LIKE '%\"mix\"%'"), qr/^reading 2 of 3: /,
	'the bad one is named by its position');

# ---- 3. a device speaks only as itself ----
is(pub('dev-a', 'devices/dev-b/telemetry', qq({"metric":"spoof","value":1,"ts":$now})), 0,
	'dev-a publishes on dev-b\'s topic (MQTT 3.1.1: the broker acknowledges and drops it)');
my ($rc) = BvIot::publish($b, 'dev-a', 'wrong-secret', 'devices/dev-a/telemetry', '{"metric":"pw","value":1}');
isnt($rc, 0, 'a wrong secret is refused by the broker');
($rc) = BvIot::publish($b, 'nobody', 'x', 'devices/nobody/telemetry', '{"metric":"pw","value":1}');
isnt($rc, 0, 'an unknown user is refused by the broker');
# A marker after the spoofed message: once it landed, the spoof had its chance.
is(pub('dev-b', 'devices/dev-b/telemetry', qq({"metric":"marker","value":1,"ts":$now})), 0, 'marker');
ok(poll("SELECT count(*) = 1 FROM iot.telemetry WHERE metric = 'marker'"), 'marker landed');
is(sql("SELECT count(*) FROM iot.telemetry WHERE metric IN ('spoof', 'pw')"), 0, 'the spoofed readings never landed');

# The bridge refuses what the registry refuses, even if the broker lets it in.
sql("UPDATE iot.devices SET status = 'disabled' WHERE device_id = 'dev-b'");
is(pub('dev-b', 'devices/dev-b/telemetry', qq({"metric":"off","value":1,"ts":$now})), 0, 'disabled device publishes');
ok(poll("SELECT count(*) = 1 FROM iot.quarantine WHERE reason = 'disabled_device' AND topic = 'devices/dev-b/telemetry'"),
	'a disabled device is quarantined');
sql("DELETE FROM iot.devices WHERE device_id = 'dev-b'");
is(pub('dev-b', 'devices/dev-b/telemetry', qq({"metric":"gone","value":1,"ts":$now})), 0, 'deleted device publishes');
ok(poll("SELECT count(*) = 1 FROM iot.quarantine WHERE reason = 'unknown_device' AND topic = 'devices/dev-b/telemetry'"),
	'an unknown device is quarantined');
is(sql("SELECT count(*) FROM iot.telemetry WHERE metric IN ('off', 'gone')"), 0, 'neither landed');
BvIot::reload_auth($node, $b);
($rc) = BvIot::publish($b, 'dev-b', $secret{'dev-b'}, 'devices/dev-b/telemetry', '{"metric":"pw","value":1}');
isnt($rc, 0, 'after regenerating the password file the broker refuses the removed device');

# ---- 4. configuration: the bridge stays up, the stats say so ----
is(sql("SELECT state FROM iot.bridge_stats"), 'running', 'the bridge runs');
is(sql("SELECT reconnects FROM iot.bridge_stats"), 0, 'without reconnecting');

BvMqtt::stop_broker($b);
$node->stop;
done_testing();
