# Second red-team pass over bv_ml's REST surface (/rpc/predict through
# PostgREST), each case an attack that once worked or a guard next to it:
#  - hostile feature numbers: beyond a double (1e400, -1e400, 1e-400) answer
#    400 / 22003 naming the feature with a hint, never the server's cast
#    error quoting hundreds of client digits; the extremes a double holds
#    (1e308, 5e-324) still score, to finite probabilities;
#  - the model spec is exactly name or name@version: "churn@1@x" used to
#    score churn@1, trailing garbage and leading zeros name no model (404);
#  - models not enabled for the API stay 404 by every spelling;
#  - anonymous callers are refused, and the ml schema is not reachable.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('mlred', extra_conf => "bv.request_rate = 1000\nbv.request_burst = 1000\n");
BvTest::create_suite_db($node);
sub q1 { return $node->safe_psql('bitvelocity', $_[0]); }
q1('SELECT ml.expose_api()');

my $model = BvTest::src() . '/sql/bv_ml/demo-model.json';
q1(qq{
	SELECT ml.register_model('churn', 'sklearn_logistic', pg_read_file('$model')::jsonb, stage => 'production');
	SELECT ml.register_model('churn', 'sklearn_logistic', pg_read_file('$model')::jsonb);
	UPDATE ml.models SET api_enabled = true, log_sample_rate = 1 WHERE name = 'churn';
	SELECT ml.register_model('hidden', 'sklearn_logistic', pg_read_file('$model')::jsonb, stage => 'production');
});

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
q1("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ml-red', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my $user = BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"mallory","exp":$exp}));

sub predict
{
	my ($body, %o) = @_;
	my ($status, $resp) = BvTest::http('POST', "$url/rpc/predict",
		token => exists $o{token} ? $o{token} : $user, body => $body);
	my $json = eval { decode_json($resp) };
	return ($status, $json // $resp, $resp);
}

my @names = qw(orders_90d spend_90d days_since_last_order support_tickets is_subscriber);
sub features
{
	my (%over) = @_;
	return '{' . join(',', map { qq("$_": ) . ($over{$_} // 1) } @names) . '}';
}

# ---- hostile numbers ----
for my $n ('1e400', '-1e400', '1e-400', '-2.5e-999', '9' x 400)
{
	my $label = length($n) > 12 ? substr($n, 0, 12) . '...' : $n;
	my ($s, $j, $raw) = predict(qq({"model": "churn", "features": ) . features(spend_90d => $n) . '}');
	is($s, '400', "feature $label: 400");
	is($j->{code} // '', '22003', "feature $label: SQLSTATE 22003");
	like($j->{message} // '', qr/^feature "spend_90d" is out of range$/, "feature $label: the message names the feature");
	ok(length($j->{hint} // '') > 10, "feature $label: with a hint");
	unlike($raw, qr/0{30}|9{30}/, "feature $label: the client's digits are not echoed");
}
for my $n ('1e308', '-1e308', '5e-324', '0', '-0')
{
	my ($s, $j) = predict(qq({"model": "churn", "features": ) . features(map { $_ => $n } @names) . '}');
	is($s, '200', "every feature $n: scores");
	my $p = ref $j eq 'HASH' ? $j->{probabilities} : undef;
	ok(ref $p eq 'ARRAY' && @$p == 2 && !grep({ !defined $_ || $_ !~ /^[0-9.eE+-]+$/ || $_ < 0 || $_ > 1 } @$p),
		"every feature $n: finite probabilities") or diag(explain $j);
}

# ---- model specs ----
my ($s, $j) = predict(qq({"model": "churn\@1", "features": ) . features() . '}');
is($s, '200', 'churn@1 scores');
is($j->{version}, 1, 'version 1');
($s, $j) = predict(qq({"model": "churn", "features": ) . features() . '}');
is($j->{version}, 1, 'churn alone: the production version');
for my $spec ('churn@1@x', 'churn@1@2', 'churn@2@', 'churn@01', 'churn@1 ', ' churn', 'churn@+1', 'churn@1.0',
	'churn@-1', 'churn@99999999999', 'churn@', '@1', 'hidden', 'hidden@1', 'HIDDEN', "hidden\@1\@x")
{
	my ($s2, $j2) = predict(encode_json({ model => $spec, features => {} }));
	is($s2, '404', "model spec '$spec': 404");
	is($j2->{code} // '', 'PT404', "model spec '$spec': PT404") if ref $j2 eq 'HASH';
}
is(q1(q{SELECT count(*) FROM ml.prediction_log l JOIN ml.models m ON m.id = l.model_id WHERE m.name = 'hidden'}), 0,
	'the model not enabled for the API was never scored');

# ---- who ----
($s) = predict(qq({"model": "churn", "features": {}}), token => undef);
ok($s eq '401' || $s eq '403', "anonymous: refused ($s)");
($s) = BvTest::http('POST', "$url/rpc/api_predict", token => $user, body => '{"model": "churn", "features": {}}');
is($s, '404', 'ml.api_predict is not exposed');
($s) = BvTest::http('GET', "$url/models", token => $user);
is($s, '404', 'ml.models is not exposed');

$pgrst->kill_kill;
$node->stop;
done_testing();
