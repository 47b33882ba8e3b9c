# Issue #17, attack review of keys and secrets: what the first round of
# fixes left open, kept as regression tests.
#  - HMAC secrets holding a public key were accepted when the key had text
#    around it (a prefix, a suffix), or was the base64/hex of a whole PEM
#    block, or a PEM block in lower case or with four dashes.
#  - Statements carrying a secret were written to the server log when
#    PostgreSQL itself refused them (a bad timestamp, a duplicate kid, ON
#    CONFLICT ... SET with a bad value), and a malformed COPY line into
#    bv.jwt_keys was quoted in full in the CONTEXT line, to the client and
#    the log.
#  - bv.jwt_import_jwks() let a second issuer's JWKS replace another
#    issuer's key with the same kid, and a set that lists a kid twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use MIME::Base64 ();

my $node = BvTest::new_node('atkkeys', extra_conf => "log_min_error_statement = error\nlog_statement = none\nbv.jwt_leeway = 600\n");
BvTest::create_suite_db($node);

sub run_sql
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('bitvelocity', $sql);
	return ($ret, $out // '', $err // '');
}

# ---- HMAC secrets that hold a key anywhere ----
my $pem = BvTest::openssl('pkey', '-pubout', '-in', do {
	my $f = "$PostgreSQL::Test::Utils::tmp_check/rsa.key";
	BvTest::openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', $f);
	$f;
});
my $edpem = do {
	my $f = "$PostgreSQL::Test::Utils::tmp_check/ed.key";
	BvTest::openssl('genpkey', '-algorithm', 'ED25519', '-out', $f);
	BvTest::openssl('pkey', '-pubout', '-in', $f);
};
(my $body = $pem) =~ s/-----[^-]+-----//g;
$body =~ s/\s//g;
(my $edbody = $edpem) =~ s/-----[^-]+-----//g;
$edbody =~ s/\s//g;
my $der_hex = unpack('H*', MIME::Base64::decode_base64($body));
my %holds = (
	'base64 DER after a word and a space' => "x $body",
	'base64 DER after "key:"' => "key:$body",
	'base64 DER before ";"' => "$body;",
	'base64url DER inside text' => do { (my $u = $body) =~ tr{+/}{-_}; $u =~ s/=+$//; "kid=1&k=$u&x=y" },
	'Ed25519 base64 DER with a suffix' => "${edbody}xyz",
	'hex DER with a prefix' => "zz$der_hex",
	'hex of a PEM block' => unpack('H*', $pem),
	'base64 of a PEM block' => MIME::Base64::encode_base64($pem, ''),
	'PEM block in lower case' => lc $pem,
	'PEM block with four dashes' => do { (my $p = $pem) =~ s/-----/----/g; $p },
	'oct JWK whose k is base64url of text around a key' => do {
		my $k = MIME::Base64::encode_base64url("secret:$body");
		qq({"kty":"oct","k":"$k"});
	},
	'a secret over 4096 bytes' => 'a' x 4097);
for my $case (sort keys %holds)
{
	(my $v = $holds{$case}) =~ s/'/''/g;
	my ($ret, $out, $err) = run_sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('hs', 'HS256', '$v')");
	like($err, qr/ERROR:  invalid key "hs"/, "HS secret refused: $case");
	unlike($err, qr/\Q@{[substr($body, 40, 30)]}\E/, "the error does not quote the key: $case");
}
my $hex_secret = join '', map { sprintf '%02x', int rand 256 } 1 .. 64;
my ($ret, $out, $err) = run_sql(qq{INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('hs-hex', 'HS512', '$hex_secret'),
  ('hs-b64', 'HS256', encode(gen_random_uuid()::text::bytea || gen_random_uuid()::text::bytea, 'base64')),
  ('hs-4096', 'HS256', repeat('Mx3', 1365))});
is($err, '', 'random hex and base64 secrets and a 4095-byte secret are accepted');

# ---- public keys of the wrong type or curve, for every algorithm ----
my $n_key = 0;
sub genpub
{
	my (@args) = @_;
	my $f = "$PostgreSQL::Test::Utils::tmp_check/gen" . ++$n_key . '.key';
	BvTest::openssl('genpkey', @args, '-out', $f);
	return BvTest::openssl('pkey', '-pubout', '-in', $f);
}
my %pub = (
	'RSA-PSS' => genpub('-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048'),
	Ed448 => genpub('-algorithm', 'ED448'),
	X25519 => genpub('-algorithm', 'X25519'),
	X448 => genpub('-algorithm', 'X448'),
	secp256k1 => genpub('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'),
	brainpoolP256r1 => genpub('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:brainpoolP256r1'),
	'P-384' => genpub('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'),
	'P-521' => genpub('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'),
	'RSA e=3' => genpub('-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-pkeyopt', 'rsa_keygen_pubexp:3'),
	'RSA 1024' => genpub('-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'),
	Ed25519 => $edpem,
	RSA => $pem);
my %fits = (RS256 => 'RSA', PS256 => 'RSA', ES256 => '', ES384 => 'P-384', EdDSA => 'Ed25519');
my @wrong;
for my $alg (sort keys %fits)
{
	for my $type (sort keys %pub)
	{
		my ($r, $o, $e) = run_sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('t', '$alg', '$pub{$type}'); DELETE FROM bv.jwt_keys WHERE kid = 't'");
		my $accepted = $e eq '';
		push @wrong, "$alg with $type: " . ($accepted ? 'accepted' : 'refused')
		  if $accepted != ($type eq $fits{$alg});
	}
}
is(join("\n", @wrong), '', 'each algorithm takes exactly its key type (RSA-PSS, Ed448, X25519, other curves, weak RSA refused)');
for my $alg ('HS256', 'HS512')
{
	for my $type (sort keys %pub)
	{
		my ($r, $o, $e) = run_sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('t', '$alg', '$pub{$type}')");
		like($e, qr/HS\/RS confusion/, "$alg refuses a $type public key");
	}
}
my $p256 = "$PostgreSQL::Test::Utils::tmp_check/p256.key";
BvTest::openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', $p256);
my $compressed = BvTest::openssl('ec', '-in', $p256, '-pubout', '-conv_form', 'compressed');
($ret, $out, $err) = run_sql("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('p256c', 'ES256', '$compressed')");
is($err, '', 'a P-256 key with a compressed point is accepted for ES256');

# ---- no secret in any error or log line ----
my $s = 'SECRET' . join('', map { ('A' .. 'Z')[ rand 26 ] } 1 .. 34);
my $log_offset = -s $node->logfile;
my @client;
for my $sql (
	"INSERT INTO bv.jwt_keys (kid, alg, key, expires_at) VALUES ('l1', 'HS256', '$s', 'garbage')",
	"INSERT INTO bv.jwt_keys (kid, alg, key, active) VALUES ('l2', 'HS256', '$s', 'maybe')",
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('hs-hex', 'HS256', '$s')",
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('l3', 'HS256', '$s') ON CONFLICT (kid) DO UPDATE SET not_before = 'x'",
	"UPDATE bv.jwt_keys SET key = '$s', expires_at = 'soon' WHERE kid = 'hs-hex'",
	"COPY bv.jwt_keys (kid, alg, key) FROM STDIN;\nl4\tHS256\t$s\textra\n\\.\n",
	"COPY bv.jwt_keys (kid, alg, key) FROM STDIN;\n$s\tHS256\n\\.\n",
	"COPY bv.jwt_keys (kid, alg, key, active) FROM STDIN;\nl5\tHS256\t$s\tmaybe\n\\.\n",
	"SELECT bv.secret_set('bad name', '$s')",
	"SELECT bv.secret_set('ok', '$s' || (1/0)::text)",
	"SELECT bv.api_key_verify('bvk_$s' || (1/0)::text)",
	"SELECT bv.jwt_verify('$s' || (1/0)::text)")
{
	my ($r, $o, $e) = run_sql($sql);
	like($e, qr/ERROR/, 'the statement fails: ' . substr($sql, 0, 60));
	push @client, $e if $e =~ /CONTEXT:.*\Q$s\E/;
}
is(join("\n", @client), '', 'no COPY context line quotes the secret to the client');
my ($r) = run_sql('SELECT 1');    # the log lines above are written before their answers
my @leaks = grep { /\Q$s\E/ } split /\n/, slurp_file($node->logfile, $log_offset);
is(join("\n", @leaks), '', 'no server log line contains the secret');
like(slurp_file($node->logfile, $log_offset), qr/CONTEXT:  COPY jwt_keys, line 1: <input withheld/,
	'the COPY context keeps the line number');
my @stmt = grep { /STATEMENT:  SELECT 1\/0/ } do {
	run_sql('SELECT 1/0');
	split /\n/, slurp_file($node->logfile, $log_offset);
};
is(scalar(@stmt), 1, 'statements that name no secret holder are still logged');

# ---- JWKS: kids are unique across issuers ----
my $ed1 = '{"kid":"k1","kty":"OKP","crv":"Ed25519","x":"_SoilUFSRiXZGQX2zAn3I2MTQ4Y0qEVTWKkpUeNEo6E"}';
my $ed2 = '{"kid":"k1","kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}';
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_import_jwks('{"keys":[$ed1]}', 'https://a.example')});
is($out, '1', 'issuer A imports kid k1');
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_import_jwks('{"keys":[$ed2]}', 'https://b.example')});
like($err, qr/key 'k1' was imported for another issuer/, 'issuer B cannot replace issuer A\'s k1');
is((run_sql(q{SELECT issuer || ' ' || (key::jsonb ->> 'x') FROM bv.jwt_keys WHERE kid = 'k1'}))[1],
	'https://a.example _SoilUFSRiXZGQX2zAn3I2MTQ4Y0qEVTWKkpUeNEo6E', 'k1 is still issuer A\'s key');
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_import_jwks('{"keys":[$ed2]}', 'https://a.example')});
is($out, '1', 'issuer A itself rotates k1');
(my $ed3 = $ed1) =~ s/"k1"/"k2"/;
(my $ed4 = $ed2) =~ s/"k1"/"k2"/;
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_import_jwks('{"keys":[$ed3,$ed4]}', 'https://c.example')});
like($err, qr/the JWKS lists kid 'k2' twice/, 'a set with a kid twice is refused');
is((run_sql(q{SELECT count(*) FROM bv.jwt_keys WHERE kid = 'k2'}))[1], '0', 'and nothing of it is imported');

# ---- revocation and the leeway ----
# Revoked "until its own exp" (as documented), a token is still within the
# leeway after exp: the revocation must outlast it by the leeway.
my $exp = time() - 10;    # expired 10 s ago, inside the leeway (600 s here)
my $tok = (run_sql(qq{SELECT bv.jwt_sign('{"sub":"u","jti":"j-boundary","exp":$exp}', 'hs-hex')}))[1];
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_verify('$tok') ->> 'jti'});
is($out, 'j-boundary', 'a token 10 s past exp verifies (leeway)');
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_revoke('j-boundary', to_timestamp($exp), 'test')});
is($err, '', 'revoked until its own exp');
($ret, $out, $err) = run_sql(qq{SELECT bv.jwt_verify('$tok')});
like($err, qr/DETAIL:  The token has been revoked/, 'revoked until its exp: refused through the leeway too');
is((run_sql(q{SELECT bv.jwt_is_revoked('j-boundary')}))[1], 't', 'bv.jwt_is_revoked agrees');

# ---- replay: a jti is unique per issuer only ----
run_sql(q{INSERT INTO bv.jwt_keys (kid, alg, key, issuer) VALUES
  ('iss-a', 'HS256', 'issuer-A-secret-0123456789-0123456789-xyz', 'https://a.example'),
  ('iss-b', 'HS256', 'issuer-B-secret-0123456789-0123456789-xyz', 'https://b.example')});
my $fut = time() + 3600;
my $tok_a = (run_sql(qq{SELECT bv.jwt_sign('{"sub":"u","iss":"https://a.example","jti":"7","exp":$fut}', 'iss-a')}))[1];
my $tok_b = (run_sql(qq{SELECT bv.jwt_sign('{"sub":"u","iss":"https://b.example","jti":"7","exp":$fut}', 'iss-b')}))[1];
my $tok_n = (run_sql(qq{SELECT bv.jwt_sign('{"sub":"u","jti":"7","exp":$fut}', 'hs-hex')}))[1];
my @seen = map {
	my (undef, $o, $e) = run_sql("SET bv.jwt_replay_check = on; SELECT bv.jwt_verify('$_') ->> 'jti'");
	$e =~ /already been used/ ? 'replay' : $o eq '7' ? 'ok' : "error: $e";
} ($tok_b, $tok_a, $tok_n, $tok_a, $tok_b, $tok_n);
is(join(',', @seen), 'ok,ok,ok,replay,replay,replay',
	'replay: the same jti from two issuers (and without iss) are three tokens, each accepted once');

$node->stop;
done_testing();
