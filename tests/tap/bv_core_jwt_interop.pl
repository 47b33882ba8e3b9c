# JWT interoperability with an independent implementation: tokens signed by
# the openssl command line (RS256, PS256, ES256, EdDSA) verify with
# bv.jwt_verify(), and signatures made by bv.jwt_sign() verify with the
# openssl command line.  Catches errors that a sign-then-verify round trip
# inside bv_core cannot (both sides wrong the same way, e.g. DER vs R||S).
#
# Also, what one transaction cannot show: key rotation across sessions (a
# key added, deactivated or a jti revoked in another session is seen by the
# next verification of an open session once committed, and not before), and
# verification in a database that is not UTF-8.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(encode_base64url decode_base64url);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('interop');
BvTest::create_suite_db($node);
my $dir = $node->basedir . '/keys';
mkdir $dir or die $!;

sub run_cmd
{
	my ($cmd, $in) = @_;
	my ($out, $err);
	IPC::Run::run($cmd, '<', \$in, '>', \$out, '2>', \$err)
	  or die "@$cmd failed: $err";
	return $out;
}

sub slurp { my ($f) = @_; return slurp_file($f); }

run_cmd([ 'openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', "$dir/rsa.pem" ], '');
run_cmd([ 'openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', "$dir/ec.pem" ], '');
run_cmd([ 'openssl', 'genpkey', '-algorithm', 'ED25519', '-out', "$dir/ed.pem" ], '');
for my $k (qw(rsa ec ed))
{
	run_cmd([ 'openssl', 'pkey', '-in', "$dir/$k.pem", '-pubout', '-out', "$dir/$k.pub" ], '');
}

# DER ECDSA signature -> fixed 32+32 bytes R||S (RFC 7518 section 3.4)
sub der_to_rs
{
	my ($der) = @_;
	my @b = unpack('C*', $der);
	my $i = 2;
	$i++ if $b[1] & 0x80;    # long length form (not for P-256, but be safe)
	my @parts;
	for (1 .. 2)
	{
		die 'bad DER' unless $b[$i] == 0x02;
		my $len = $b[ $i + 1 ];
		my $int = pack('C*', @b[ $i + 2 .. $i + 1 + $len ]);
		$int =~ s/^\x00+//;
		push @parts, ("\x00" x (32 - length($int))) . $int;
		$i += 2 + $len;
	}
	return join('', @parts);
}

sub openssl_token
{
	my ($alg, $kid, $key) = @_;
	my $exp = time() + 300;
	my $input = encode_base64url(qq({"alg":"$alg","typ":"JWT","kid":"$kid"})) . '.'
	  . encode_base64url(qq({"sub":"openssl-$alg","exp":$exp}));
	my $sig;
	if ($alg eq 'EdDSA')
	{
		open my $fh, '>', "$dir/input" or die $!;
		print $fh $input;
		close $fh;
		$sig = run_cmd([ 'openssl', 'pkeyutl', '-sign', '-inkey', $key, '-rawin', '-in', "$dir/input" ], '');
	}
	elsif ($alg eq 'PS256')
	{
		$sig = run_cmd([ 'openssl', 'dgst', '-sha256', '-sign', $key, '-sigopt', 'rsa_padding_mode:pss',
				'-sigopt', 'rsa_pss_saltlen:32', '-sigopt', 'rsa_mgf1_md:sha256' ], $input);
	}
	else
	{
		$sig = run_cmd([ 'openssl', 'dgst', '-sha256', '-sign', $key ], $input);
		$sig = der_to_rs($sig) if $alg eq 'ES256';
	}
	return "$input." . encode_base64url($sig);
}

my %pub = (rs => slurp("$dir/rsa.pub"), ps => slurp("$dir/rsa.pub"), es => slurp("$dir/ec.pub"), ed => slurp("$dir/ed.pub"));
my %priv = (rs => slurp("$dir/rsa.pem"), ps => slurp("$dir/rsa.pem"), es => slurp("$dir/ec.pem"), ed => slurp("$dir/ed.pem"));
my %alg = (rs => 'RS256', ps => 'PS256', es => 'ES256', ed => 'EdDSA');
my %keyfile = (rs => "$dir/rsa.pem", ps => "$dir/rsa.pem", es => "$dir/ec.pem", ed => "$dir/ed.pem");

# Public keys only under "<k>-pub"; private keys (for signing) under "<k>".
for my $k (sort keys %alg)
{
	$node->safe_psql('bitvelocity', "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('$k-pub', '$alg{$k}', \$k\$$pub{$k}\$k\$), ('$k', '$alg{$k}', \$k\$$priv{$k}\$k\$)");
}

for my $k (sort keys %alg)
{
	# openssl signs, bv_core verifies
	my $token = openssl_token($alg{$k}, "$k-pub", $keyfile{$k});
	is($node->safe_psql('bitvelocity', "SELECT bv.jwt_verify('$token') ->> 'sub'"),
		"openssl-$alg{$k}", "$alg{$k}: a token signed by openssl verifies");

	# bv_core signs, openssl verifies
	my $bvtoken = $node->safe_psql('bitvelocity',
		qq{SELECT bv.jwt_sign('{"sub":"bv","exp":4102444800}', '$k')});
	my ($h, $p, $s) = split /\./, $bvtoken;
	my $sig = decode_base64url($s);
	my $input = "$h.$p";
	my $ok;
	if ($k eq 'ed')
	{
		open my $fh, '>', "$dir/input" or die $!;
		print $fh $input;
		close $fh;
		open $fh, '>:raw', "$dir/sig" or die $!;
		print $fh $sig;
		close $fh;
		$ok = run_cmd([ 'openssl', 'pkeyutl', '-verify', '-pubin', '-inkey', "$dir/ed.pub", '-rawin',
				'-in', "$dir/input", '-sigfile', "$dir/sig" ], '');
	}
	else
	{
		if ($k eq 'es')
		{
			is(length($sig), 64, 'ES256: bv.jwt_sign makes a 64-byte R||S signature');
			# R||S -> DER for openssl
			my @ints = map {
				my $x = $_;
				$x =~ s/^\x00+//;
				$x = "\x00$x" if ord($x) & 0x80;
				"\x02" . chr(length($x)) . $x
			} (substr($sig, 0, 32), substr($sig, 32, 32));
			my $body = join('', @ints);
			$sig = "\x30" . chr(length($body)) . $body;
		}
		open my $fh, '>:raw', "$dir/sig" or die $!;
		print $fh $sig;
		close $fh;
		my @opts = $k eq 'ps'
		  ? ('-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32', '-sigopt', 'rsa_mgf1_md:sha256')
		  : ();
		$ok = run_cmd([ 'openssl', 'dgst', '-sha256', '-verify', ($k eq 'es' ? "$dir/ec.pub" : "$dir/rsa.pub"),
				@opts, '-signature', "$dir/sig" ], $input);
	}
	like($ok, qr/Verified OK|Signature Verified Successfully/, "$alg{$k}: a bv.jwt_sign signature verifies with openssl");
}

# ---- rotation across sessions ----
# An HS256 token signed here (Perl's HMAC), with a kid.
sub hs256_token
{
	my ($kid, $secret, $claims) = @_;
	my $input = encode_base64url(qq({"alg":"HS256","typ":"JWT","kid":"$kid"})) . '.' . encode_base64url($claims);
	return "$input." . encode_base64url(hmac_sha256($input, $secret));
}

my $exp = time() + 600;
my %secret = ('rot-1' => 'rotation-secret-one-0123456789abcdef', 'rot-2' => 'rotation-secret-two-0123456789abcdef');
my %tok = map { $_ => hs256_token($_, $secret{$_}, qq({"sub":"$_","exp":$exp,"jti":"jti-$_"})) } keys %secret;

# the verifying session stays open (and keeps its key cache) throughout;
# each query is a transaction of its own, as a pooled connection's would be
my $verifier = $node->background_psql('bitvelocity');
$verifier->query_safe(q{CREATE FUNCTION pg_temp.verdict(token text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    PERFORM bv.jwt_verify(token);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ' ' || detail;
END $$});
my $refused = "28000 The token's signature, algorithm or key is not accepted.";
sub verdict
{
	my ($token) = @_;
	return $verifier->query_safe("SELECT pg_temp.verdict('$token')");
}

$node->safe_psql('bitvelocity', "INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rot-1', 'HS256', '$secret{'rot-1'}')");
is(verdict($tok{'rot-1'}), 'ok', 'rotation: a key added by another session verifies in an open session');
is(verdict($tok{'rot-2'}), $refused, 'rotation: a key not yet added does not');

# an uncommitted change is not seen; its commit is, by the next call
my $writer = $node->background_psql('bitvelocity');
$writer->query_safe("BEGIN; INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('rot-2', 'HS256', '$secret{'rot-2'}'); UPDATE bv.jwt_keys SET active = false WHERE kid = 'rot-1'");
is(verdict($tok{'rot-2'}), $refused, 'rotation: an uncommitted new key is not used');
is(verdict($tok{'rot-1'}), 'ok', 'rotation: an uncommitted deactivation does not apply');
$writer->query_safe('COMMIT');
is(verdict($tok{'rot-2'}), 'ok', 'rotation: the committed new key verifies in the open session');
is(verdict($tok{'rot-1'}), $refused, 'rotation: the committed deactivation applies in the open session');

# a rolled-back change leaves the cache as it was
$writer->query_safe("BEGIN; UPDATE bv.jwt_keys SET active = false WHERE kid = 'rot-2'");
$writer->query_safe('ROLLBACK');
is(verdict($tok{'rot-2'}), 'ok', 'rotation: a rolled-back deactivation changes nothing');

# revocation from another session
$writer->query_safe("SELECT bv.jwt_revoke('jti-rot-2', now() + interval '1 hour', 'interop test')");
is(verdict($tok{'rot-2'}), '28000 The token has been revoked.', 'rotation: a jti revoked by another session is refused in the open session');
$writer->quit;
$verifier->quit;

# ---- a database that is not UTF-8 ----
# The claims go through jsonb_in there (strings converted to the server
# encoding); the checks read the same claims.
$node->safe_psql('postgres', "CREATE DATABASE latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('latin1', 'CREATE EXTENSION bv_core');
$node->safe_psql('latin1', "INSERT INTO bv.jwt_keys (kid, alg, key, issuer) VALUES ('rot-1', 'HS256', '$secret{'rot-1'}', 'https://id.example')");
my $latin1_token = hs256_token('rot-1', $secret{'rot-1'},
	qq({"sub":"caf\\u00e9","exp":$exp,"iss":"https:\\/\\/id.example","jti":"j\\u00e9"}));
is($node->safe_psql('latin1', "SELECT bv.jwt_verify('$latin1_token') ->> 'sub' = 'caf' || chr(233)"),
	't', 'LATIN1 database: the claims are converted to the server encoding');
my $bad_iss = hs256_token('rot-1', $secret{'rot-1'}, qq({"sub":"x","exp":$exp,"iss":"https://other.example"}));
my ($ret, $stdout, $stderr) = $node->psql('latin1', "SELECT bv.jwt_verify('$bad_iss')");
like($stderr, qr/The token's issuer \(iss\) is not accepted/, 'LATIN1 database: the issuer is checked');
$node->safe_psql('latin1', "SELECT bv.jwt_revoke('j' || chr(233), now() + interval '1 hour', 'interop test')");
($ret, $stdout, $stderr) = $node->psql('latin1', "SELECT bv.jwt_verify('$latin1_token')");
like($stderr, qr/The token has been revoked/, 'LATIN1 database: a revoked jti is compared in the server encoding');

$node->stop;
done_testing();
