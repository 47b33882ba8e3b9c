# bv_iot registry: provisioning returns the secret once and stores only its
# mosquitto-format hash; devices are audited without the hash; row-level
# security shows an owner only their devices, telemetry and commands; the
# SQL ingestion path writes only for the caller's devices; hostile ids.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('iotreg');
BvTest::create_suite_db($node);

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub as_user
{
	my ($actor, $q) = @_;
	# As PostgREST does: the JWT's claims, then the role.
	return $node->psql('bitvelocity',
		"BEGIN; SELECT FROM set_config('request.jwt.claims', '{\"sub\": \"$actor\", \"role\": \"bv_user\"}', true); "
		  . "SET LOCAL ROLE bv_user; $q; COMMIT;");
}

# ---- provisioning ----
my ($rc, $out, $err) = as_user('alice', "SELECT username || ' ' || secret FROM iot.provision_device('a-1')");
is($rc, 0, 'a bv_user provisions a device') or diag($err);
my ($secret) = $out =~ /a-1 (\S+)/;
ok(length($secret) >= 32, 'the secret is returned');
as_user('bob', "SELECT iot.provision_device('b-1')");
is(sql("SELECT owner FROM iot.devices WHERE device_id = 'a-1'"), 'alice', 'owned by the caller');
like(sql("SELECT secret_hash FROM iot.devices WHERE device_id = 'a-1'"), qr/^\$7\$1000\$[A-Za-z0-9+\/=]{16}\$[A-Za-z0-9+\/=]{88}$/,
	'stored as a mosquitto PBKDF2-SHA512 hash');
is(sql("SELECT count(*) FROM iot.devices WHERE secret_hash LIKE '%' || '$secret' || '%'"), 0, 'the secret is not stored');
like(sql("SELECT string_agg(l, E'\\n') FROM iot.mosquitto_passwd() l"), qr/^a-1:\$7\$/m, 'the password file lists the device');
($rc, $out, $err) = as_user('alice', "SELECT iot.provision_device('a-1')");
like($err, qr/device 'a-1' already exists/, 'a duplicate id is refused');
for my $bad ('', 'a/b', '+', '#', 'x' x 65, "a\nb", 'é')
{
	($rc, $out, $err) = $node->psql('bitvelocity', "SELECT iot.provision_device(\$q\$$bad\$q\$)");
	like($err, qr/invalid device id/, 'hostile id refused: ' . substr($bad, 0, 10));
}
($rc, $out, $err) = $node->psql('bitvelocity', "SELECT iot.provision_device(NULL)");
like($err, qr/invalid device id/, 'NULL id refused');

# ---- audit ----
ok(sql("SELECT count(*) FROM bv_audit.history('iot.devices', '{\"device_id\": \"a-1\"}')") >= 1, 'provisioning is audited');
sql("UPDATE iot.devices SET firmware = '1.2.3' WHERE device_id = 'a-1'");
ok(sql("SELECT count(*) FROM bv_audit.history('iot.devices', '{\"device_id\": \"a-1\"}')") >= 2, 'changes are audited');
is(sql("SELECT count(*) FROM bv_audit.history('iot.devices', '{\"device_id\": \"a-1\"}') h WHERE h::text LIKE '%\$7\$%'"),
	0, 'the audit trail holds no secret hash');

# ---- RLS and SQL ingestion ----
($rc, $out, $err) = as_user('alice', "SELECT * FROM iot.ingest('[{\"device\":\"a-1\",\"metric\":\"t\",\"value\":1},{\"device\":\"b-1\",\"metric\":\"t\",\"value\":2}]')");
like($out, qr/1\|1/, 'alice writes for her device only; bob\'s reading is quarantined');
is(sql("SELECT reason FROM iot.quarantine WHERE device_id = 'b-1'"), 'unknown_device', 'as an unknown device (no existence leak)');
sql(q{SELECT iot.ingest('{"device":"b-1","metric":"t","value":3}')});
($rc, $out) = as_user('alice', "SELECT string_agg(device_id, ',' ORDER BY device_id) FROM iot.devices");
like($out, qr/^a-1$/m, 'alice sees only her device');
($rc, $out) = as_user('alice', "SELECT count(*) FROM iot.telemetry");
like($out, qr/^1$/m, 'and only her telemetry');
($rc, $out) = as_user('bob', "SELECT count(*) FROM iot.telemetry");
like($out, qr/^1$/m, 'bob only his');
($rc, $out, $err) = as_user('alice', "SELECT secret_hash FROM iot.devices");
like($err, qr/permission denied/, 'the hash is not readable by users');
($rc, $out, $err) = as_user('alice', "SELECT iot.send_command('b-1', 'reboot')");
like($err, qr/does not exist or is disabled/, 'no commands to another owner\'s device');
($rc, $out, $err) = as_user('alice', "SELECT iot.send_command('a-1', 'reboot')");
is($rc, 0, 'commands to her own device');
($rc, $out) = as_user('bob', "SELECT count(*) FROM iot.commands");
like($out, qr/^0$/m, 'bob does not see alice\'s commands');
($rc, $out, $err) = as_user('alice', "UPDATE iot.devices SET owner = 'alice' WHERE device_id = 'b-1'");
like($err, qr/permission denied/, 'owners cannot be changed by users');
($rc, $out, $err) = as_user('alice', "UPDATE iot.devices SET status = 'disabled' WHERE device_id = 'b-1'");
is(sql("SELECT status FROM iot.devices WHERE device_id = 'b-1'"), 'active', 'alice cannot disable bob\'s device');
($rc, $out, $err) = as_user('alice', "SELECT iot.ingest(NULL)");
like($err, qr/readings must not be null/, 'NULL readings refused');
($rc, $out, $err) = as_user('alice', "SELECT * FROM iot.quarantine");
like($err, qr/permission denied/, 'the quarantine is for bv_service');

$node->stop;
done_testing();
