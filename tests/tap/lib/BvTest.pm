# BvTest: BitVelocity's helpers for TAP tests on PostgreSQL::Test::Cluster.
#
#   my $node = BvTest::new_node('primary');           # suite settings, started
#   BvTest::create_suite_db($node);                   # db "bitvelocity" + extensions
#   my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $s);
#   my ($status, $body) = BvTest::http('GET', "$url/rpc/f", token => $jwt);
#   my $jwt = BvTest::jwt_hs256($secret, '{"role":"bv_user","sub":"u1"}');
#
# The node gets tools/bitvelocity.conf (wal_level=logical, wal2json allowed,
# pg_cron and the suite preloaded), the same settings as `make run`.
package BvTest;

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256);
use IPC::Run;
use MIME::Base64 qw(encode_base64url);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

# Root of the copied source tree (set by tools/test.sh).
sub src { return $ENV{BV_SRC} // die "BV_SRC is not set; run through tools/test.sh\n"; }

sub suite_conf { return slurp_src('tools/bitvelocity.conf'); }

# The text of a file of the source tree (tools/test.sh copies sql/ too).
sub slurp_src
{
	my ($path) = @_;
	my $file = src() . "/$path";
	open my $fh, '<', $file or die "cannot read $file: $!";
	local $/;
	return <$fh>;
}

# The suite's extensions in dependency order, as tools/lib.sh computes them.
sub extensions
{
	my $src = src();
	my @ext = split /\s+/,
	  `bash -c 'source "$src/tools/lib.sh"; bv_extensions_ordered'`;
	return grep { length } @ext;
}

sub new_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	$node->append_conf('postgresql.conf', suite_conf());
	# The secrets master key: 32 random bytes, mode 0600 (bv_core refuses
	# anything looser).
	my $key = $node->basedir . '/master.key';
	open my $kf, '>', $key or die "cannot write $key: $!";
	print $kf join '', map { chr(int(rand(256))) } 1 .. 32;
	close $kf;
	chmod 0600, $key;
	$node->append_conf('postgresql.conf', "bv.master_key_file = '$key'\n");
	# bv_realtime's gateway: a port of its own per test cluster.
	$node->append_conf('postgresql.conf',
		'bv_realtime.port = ' . PostgreSQL::Test::Cluster::get_free_port() . "\n");
	$node->append_conf('postgresql.conf', $opts{extra_conf}) if $opts{extra_conf};
	$node->start unless $opts{no_start};
	return $node;
}

sub create_suite_db
{
	my ($node, @extra) = @_;
	$node->safe_psql('postgres', 'CREATE DATABASE bitvelocity');
	$node->safe_psql('bitvelocity', qq{CREATE EXTENSION "$_" CASCADE})
	  for ('pg_cron', extensions(), @extra);
	# As make run does: pg_cron reloads the jobs the extensions scheduled.
	$node->safe_psql('bitvelocity', slurp_src('tools/cron-reload.sql'));
	return;
}

# PostgREST servers started by this test; stopped when the test ends, even
# when it dies.
my @postgrest;
END { $_->kill_kill for grep { $_->pumpable } @postgrest; }

# Start the pinned PostgREST (tools/postgrest.sh, path in $BV_POSTGREST)
# against $node as bv_authenticator, on a free port; wait until it answers.
# Returns the IPC::Run handle and the base URL.
sub start_postgrest
{
	my ($node, %o) = @_;
	my $bin = $ENV{BV_POSTGREST}
	  // die "BV_POSTGREST is not set; run through tools/test.sh\n";
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $conf = "$PostgreSQL::Test::Utils::tmp_check/postgrest_$port.conf";
	my $log = "$PostgreSQL::Test::Utils::log_path/postgrest_$port.log";
	my $uri = sprintf('postgresql:///%s?host=%s&port=%d&user=bv_authenticator',
		$o{dbname} // 'bitvelocity', $node->host, $node->port);
	system('bash', src() . '/tools/postgrest.sh', 'render', $conf, $uri,
		$o{schemas} // 'api', $o{jwt_secret}, $port) == 0
	  or die "cannot render $conf";
	my $h = IPC::Run::start([ $bin, $conf ], '>&', $log);
	push @postgrest, $h;
	my $url = "http://127.0.0.1:$port";
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (1)
	{
		my ($status) = http('GET', "$url/");
		last if $status =~ /^[23]\d\d$/;
		die "PostgREST did not answer on $url; see $log" if time() > $deadline;
		usleep(100_000);
	}
	return ($h, $url);
}

# One HTTP request with curl.  Options: token (Bearer), headers (array ref of
# "Name: value"), body.  Returns (status, body).
sub http
{
	my ($method, $url, %o) = @_;
	my @cmd = ('curl', '-s', '-X', $method, '-w', "\n%{http_code}");
	push @cmd, '-H', "Authorization: Bearer $o{token}" if $o{token};
	push @cmd, '-H', $_ for @{ $o{headers} // [] };
	push @cmd, '-H', 'Content-Type: application/json', '--data-binary', $o{body}
	  if defined $o{body};
	my ($out, $err) = ('', '');
	IPC::Run::run([ @cmd, $url ], '>', \$out, '2>', \$err);
	my ($body, $status) = $out =~ /\A(.*)\n(\d+)\z/s ? ($1, $2) : ($out, '000');
	return ($status, $body);
}

# An HS256 JSON Web Token over the given claims JSON.
sub jwt_hs256
{
	my ($secret, $claims) = @_;
	my $head = encode_base64url('{"alg":"HS256","typ":"JWT"}');
	my $body = encode_base64url($claims);
	return "$head.$body." . encode_base64url(hmac_sha256("$head.$body", $secret));
}


# A test PKI in $dir (EC P-256, valid 2 days): make_ca($dir, $name, $cn)
# writes $name.crt/.key; make_cert($dir, $name, $cn, $ca, $ext) a
# certificate signed by CA $ca with the X.509 extensions $ext (e.g.
# "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").
sub openssl
{
	my @args = @_;
	my ($out, $err);
	IPC::Run::run([ 'openssl', @args ], '>', \$out, '2>', \$err)
	  or die "openssl @args failed: $err";
	return $out;
}

sub make_ca
{
	my ($dir, $name, $cn) = @_;
	openssl('req', '-x509', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
		'-subj', "/CN=$cn", '-days', '2', '-keyout', "$dir/$name.key", '-out', "$dir/$name.crt");
	return;
}

sub make_cert
{
	my ($dir, $name, $cn, $ca, $ext) = @_;
	openssl('req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
		'-subj', "/CN=$cn", '-keyout', "$dir/$name.key", '-out', "$dir/$name.csr");
	open my $fh, '>', "$dir/$name.ext" or die $!;
	print $fh $ext // "basicConstraints=CA:FALSE\n";
	close $fh;
	openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/$ca.crt", '-CAkey', "$dir/$ca.key",
		'-CAcreateserial', '-days', '2', '-extfile', "$dir/$name.ext", '-out', "$dir/$name.crt");
	chmod 0600, "$dir/$name.key";
	return;
}

1;
