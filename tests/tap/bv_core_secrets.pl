# bv_core secrets: AES-256-GCM under a master key file; the file's checks
# (mode 0600, owner, size), round trips, binding to the name, wrong key,
# tampering, privileges (bv_user cannot read), and no value in messages.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

# PostgreSQL::Test::Cluster logs every statement; turn that off, as in
# production, to check what bv_core itself may leak.
my $node = BvTest::new_node('secrets', extra_conf => "log_statement = none\n");
BvTest::create_suite_db($node);
my $dir = $node->basedir;

sub write_key
{
	my ($file, $bytes, $mode) = @_;
	open my $fh, '>:raw', $file or die "$file: $!";
	print $fh $bytes;
	close $fh;
	chmod $mode, $file or die $!;
}

sub set_key_file
{
	my ($file) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET bv.master_key_file = '$file'");
	$node->reload;
	$node->poll_query_until('bitvelocity', "SELECT current_setting('bv.master_key_file') = '$file'")
	  or die "bv.master_key_file did not change";
}

# psql with verbose errors; returns stderr
sub try_sql
{
	my ($sql, @opts) = @_;
	my ($ret, $out, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\n$sql", @opts);
	return $err;
}

$node->safe_psql('postgres', 'CREATE ROLE sec_user LOGIN IN ROLE bv_user; CREATE ROLE sec_admin LOGIN IN ROLE bv_admin');

my $value = 'hunter2-webhook-signing-secret-' . int(rand(1e9));

# 1. No key configured (BvTest::new_node configures one: remove it): a
#    clear error, no value in it.
set_key_file('');
my $err = try_sql("SELECT bv.secret_set('webhook:orders', '$value')");
like($err, qr/ERROR:  F0000: the secrets master key is not usable/, 'no key file: F0000');
like($err, qr/HINT:  Point bv.master_key_file at a file/, 'no key file: the hint says what to do');
unlike($err, qr/DETAIL:.*\Q$value\E|ERROR:.*\Q$value\E/, 'the value is not in the message');

# 2. A key file readable by others is refused.
my @key = map { chr(int(rand(256))) } 1 .. 32;
write_key("$dir/master.key", join('', @key), 0644);
set_key_file("$dir/master.key");
like(try_sql("SELECT bv.secret_set('webhook:orders', '$value')"),
	qr/accessible by group or others; it must have mode 0600/, 'mode 0644 is refused');
write_key("$dir/short.key", 'too short', 0600);
set_key_file("$dir/short.key");
like(try_sql("SELECT bv.secret_set('webhook:orders', '$value')"),
	qr/must hold exactly 32 bytes or 64 hex digits/, 'a key of the wrong size is refused');

# 3. Mode 0600: round trip.
chmod 0600, "$dir/master.key";
set_key_file("$dir/master.key");
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('webhook:orders', '$value')");
is($node->safe_psql('bitvelocity', "SELECT bv.secret_get('webhook:orders')"), $value, 'secret_get returns the value');
is($node->safe_psql('bitvelocity', "SELECT strpos(encode(sealed, 'escape'), '$value') FROM bv.secrets"), '0',
	'the stored bytes do not contain the value');
is($node->safe_psql('bitvelocity', q{SELECT length(sealed) - 33 FROM bv.secrets WHERE name = 'webhook:orders'}),
	length($value), 'sealed = 33 bytes of overhead + ciphertext');
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('webhook:orders', '$value')");
is($node->safe_psql('bitvelocity', q{SELECT count(DISTINCT sealed) FROM (SELECT sealed FROM bv.secrets) s}), '1',
	'setting again replaces the row');
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('unicode', 'пароль ✓'); SELECT bv.secret_set('empty', '')");
is($node->safe_psql('bitvelocity', "SELECT bv.secret_get('unicode') || '|' || bv.secret_get('empty') || '|'"),
	'пароль ✓||', 'non-ASCII and empty values round-trip');

# 4. Bound to the name: a sealed value copied to another name does not open.
$node->safe_psql('bitvelocity',
	q{INSERT INTO bv.secrets (name, sealed) SELECT 'copy', sealed FROM bv.secrets WHERE name = 'webhook:orders'});
$err = try_sql("SELECT bv.secret_get('copy')");
like($err, qr/ERROR:  XX001: secret could not be decrypted/, 'a copied sealed value does not open under another name');
unlike($err, qr/\Q$value\E/, 'the failure does not show the value');

# 5. Tampering is detected.
$node->safe_psql('bitvelocity',
	q{UPDATE bv.secrets SET sealed = set_byte(sealed, 20, get_byte(sealed, 20) # 1) WHERE name = 'webhook:orders'});
like(try_sql("SELECT bv.secret_get('webhook:orders')"), qr/XX001: secret could not be decrypted/,
	'a flipped ciphertext bit is detected');
like(try_sql("SELECT bv.secret_get('missing')"), qr/42704: secret 'missing' does not exist/, 'a missing secret');

# 6. Another master key (hex form): "sealed with a different master key".
write_key("$dir/other.key", join('', map { sprintf('%02x', int(rand(256))) } 1 .. 32) . "\n", 0600);
set_key_file("$dir/other.key");
like(try_sql("SELECT bv.secret_get('unicode')"), qr/secret was sealed with a different master key/,
	'a different master key is recognised');
set_key_file("$dir/master.key");
is($node->safe_psql('bitvelocity', "SELECT bv.secret_get('unicode')"), 'пароль ✓',
	'back to the right key (reload, no restart)');

# 6b. Rotation: the new key becomes current, every secret is re-sealed.
#     (The tampered and the copied value cannot be re-sealed: drop them.)
$node->safe_psql('bitvelocity', q{DELETE FROM bv.secrets WHERE name IN ('webhook:orders', 'copy')});
my $before = $node->safe_psql('bitvelocity', q{SELECT string_agg(encode(sealed, 'hex'), ',' ORDER BY name) FROM bv.secrets});
set_key_file("$dir/other.key");
is($node->safe_psql('bitvelocity', "SELECT bv.secrets_rotate_master_key('$dir/master.key')"), '2',
	'rotation re-seals both secrets');
isnt($node->safe_psql('bitvelocity', q{SELECT string_agg(encode(sealed, 'hex'), ',' ORDER BY name) FROM bv.secrets}),
	$before, 'the stored values changed');
is($node->safe_psql('bitvelocity', "SELECT bv.secret_get('unicode')"), 'пароль ✓',
	'readable under the new key after rotation');
is($node->safe_psql('bitvelocity', "SELECT bv.secrets_rotate_master_key('$dir/nonexistent.key')"), '2',
	'running it again changes nothing and needs no old key (idempotent)');
set_key_file("$dir/master.key");
like(try_sql("SELECT bv.secret_get('unicode')"), qr/secret was sealed with a different master key/,
	'the old key no longer opens them');
$node->safe_psql('bitvelocity', "SELECT bv.secret_set('under-old', 'x')");
set_key_file("$dir/other.key");
like(try_sql("SELECT bv.secrets_rotate_master_key('$dir/short.key')"), qr/F0000: the secrets master key is not usable/,
	'a bad old key file is refused');
like(try_sql("SELECT bv.secrets_rotate_master_key('$dir/master.key')", extra_params => [ '-U', 'sec_admin' ]),
	qr/42501: permission denied for function secrets_rotate_master_key/, 'rotation is for superusers only');
is($node->safe_psql('bitvelocity', "SELECT bv.secrets_rotate_master_key('$dir/master.key')"), '3',
	'a secret written under the old key in between is re-sealed too');

# 7. Privileges: bv_user and bv_service cannot read; bv_admin can.
like(try_sql("SELECT bv.secret_get('unicode')", extra_params => [ '-U', 'sec_user' ]),
	qr/42501: permission denied for function secret_get/, 'bv_user cannot call secret_get');
like(try_sql("SELECT sealed FROM bv.secrets", extra_params => [ '-U', 'sec_user' ]),
	qr/42501: permission denied for table secrets/, 'bv_user cannot read the table');
like(try_sql("SELECT bv._secret_open(name, sealed) FROM bv.secrets", extra_params => [ '-U', 'sec_admin' ]),
	qr/42501: permission denied/, 'the internal decrypt function is not callable, even by bv_admin');
is($node->safe_psql('bitvelocity', "SELECT bv.secret_get('unicode')", extra_params => [ '-U', 'sec_admin' ]),
	'пароль ✓', 'bv_admin reads secrets through secret_get');
is($node->safe_psql('bitvelocity', "SELECT bv.secret_delete('empty')::text || bv.secret_delete('empty')::text",
		extra_params => [ '-U', 'sec_admin' ]),
	'truefalse', 'secret_delete');

# 8. The server log never saw the value: not in a message, and not in the
#    STATEMENT line of the failed calls above (bv_core's errors hide it).
#    Statement logging (log_statement) is the operator's choice, off here.
my $log = slurp_file($node->logfile);
like($log, qr/F0000|the secrets master key is not usable/, 'the failures above were logged');
unlike($log, qr/\Q$value\E/, 'the server log does not contain the value');

$node->stop;
done_testing();
