# bv_ml over real HTTP through PostgREST: /rpc/predict with a model name and
# a features object mapped by the model's feature names, equal to the
# library's own predict() (python3-xgboost); missing features are missing
# values; hostile bodies (unknown features, strings, wrong shapes, models not
# enabled for the API, anonymous callers) are refused with the right status;
# the prediction log samples as configured.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_ML_SEED} // (time() % 100000);
diag("seed $seed (rerun with BV_ML_SEED=$seed)");

# many requests from one subject: a rate limit above what the test sends
my $node = BvTest::new_node('mlrest', extra_conf => "bv.request_rate = 1000\nbv.request_burst = 1000\n");
BvTest::create_suite_db($node);
sub q1 { return $node->safe_psql('bitvelocity', $_[0]); }

# bv_ml may be installed before the extension that owns schema api: publish
# api.predict (idempotent).
q1('SELECT ml.expose_api()');
is(q1(q{SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE e.extname = 'bv_ml' AND d.objid = 'api.predict(text, jsonb)'::regprocedure AND d.deptype = 'e'}),
	1, 'api.predict belongs to bv_ml');

my $dir = "$PostgreSQL::Test::Utils::tmp_check/model";
my ($out, $err) = run_command([ '/usr/bin/python3', BvTest::src() . '/tools/bv_ml_export.py',
	'train', 'xgb_binary', $dir, '--rows', 300, '--seed', $seed, '--features', 4 ]);
ok(-s "$dir/model.json", 'trained an XGBoost model') or diag($err);
q1(qq{
	CREATE TABLE rows_m (id int PRIMARY KEY, x float8[], y float8[]);
	COPY rows_m FROM '$dir/rows.csv' WITH (FORMAT csv);
	SELECT ml.register_model('risk', 'xgboost', pg_read_file('$dir/model.json')::jsonb, stage => 'production');
	UPDATE ml.models SET api_enabled = true, log_sample_rate = 1 WHERE name = 'risk';
	SELECT ml.register_model('internal', 'xgboost', pg_read_file('$dir/model.json')::jsonb);
});
is(q1(q{SELECT feature_names FROM ml.models WHERE name = 'risk'}), '{x0,x1,x2,x3}',
	'feature names come from the XGBoost document');

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
# bv_core verifies tokens itself too (bv.jwt_keys) in its newer versions
q1("INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('ml-test', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my $user = BvTest::jwt_hs256($secret, qq({"role":"bv_user","sub":"analyst-1","exp":$exp,"jti":"ml-$seed"}));

sub predict
{
	my ($body, %o) = @_;
	my ($status, $resp) = BvTest::http('POST', "$url/rpc/predict",
		token => exists $o{token} ? $o{token} : $user, body => $body);
	my $json = eval { decode_json($resp) };
	return ($status, $json // $resp);
}

# 40 rows through HTTP, against the library's own predictions
my @rows = split /\n/, q1(q{SELECT id || ' ' || array_to_string(x, ',', 'null') || ' ' || y[1] FROM rows_m WHERE id <= 40 ORDER BY id});
my ($bad, $missing) = (0, 0);
for my $r (@rows)
{
	my ($id, $x, $y) = split / /, $r;
	my @v = split /,/, $x;
	my %f;
	for my $i (0 .. $#v)
	{
		if ($v[$i] eq 'null' || $v[$i] eq 'NaN') { $missing++; next if $i % 2; $f{"x$i"} = undef; next; }
		$f{"x$i"} = $v[$i] + 0;
	}
	my ($status, $json) = predict(encode_json({ model => 'risk', features => \%f }));
	$bad++ unless $status eq '200' && ref $json eq 'HASH' && abs($json->{prediction} - $y) <= 1e-6
	  && abs($json->{probabilities}[1] - $y) <= 1e-6 && $json->{version} == 1;
}
is($bad, 0, "/rpc/predict equals python3-xgboost's predict() on 40 rows ($missing missing values sent as null or left out)");
is(q1(q{SELECT count(*) || ' ' || count(DISTINCT actor) || ' ' || min(actor) FROM ml.prediction_log}), '40 1 analyst-1',
	'prediction log: every call logged at sample rate 1, with the JWT subject');

# sampling: rate 0.2 logs some, not all; rate 0 logs none
q1(q{UPDATE ml.models SET log_sample_rate = 0.2 WHERE name = 'risk'; TRUNCATE ml.prediction_log});
for (1 .. 60) { predict('{"model": "risk", "features": {"x0": 1}}'); }
my $logged = q1('SELECT count(*) FROM ml.prediction_log');
ok($logged > 0 && $logged < 60, "prediction log: sample rate 0.2 logged $logged of 60");
q1(q{UPDATE ml.models SET log_sample_rate = 0 WHERE name = 'risk'; TRUNCATE ml.prediction_log});
predict('{"model": "risk", "features": {"x0": 1}}') for 1 .. 5;
is(q1('SELECT count(*) FROM ml.prediction_log'), 0, 'prediction log: sample rate 0 logs nothing');

# hostile bodies
my @cases = (
	[ '{"model": "risk", "features": {"x9": 1}}', '400', 'unknown feature' ],
	[ '{"model": "risk", "features": {"x0": "1"}}', '400', 'a string value' ],
	[ '{"model": "risk", "features": {"x0": [1]}}', '400', 'an array value' ],
	[ '{"model": "risk", "features": [1, 2, 3, 4]}', '400', 'features as an array' ],
	[ '{"model": "risk", "features": {"x0": 1e400}}', '400', 'a number beyond float8' ],
	[ '{"model": "internal", "features": {"x0": 1}}', '404', 'a model not enabled for the API' ],
	[ '{"model": "nope", "features": {}}', '404', 'an unknown model' ],
	[ '{"model": "risk@99", "features": {}}', '404', 'an unknown version' ],
	[ '{"model": "risk\' OR 1=1 --", "features": {}}', '404', 'SQL in the model name' ],
	[ '{"model": "' . ('é' x 300) . '", "features": {}}', '400', 'a huge model name' ],
	[ '{"model": "risk", "features": {"x0": 1, "x0": 2}}', '200', 'a duplicate key (JSON: the last wins)' ],
);
for my $c (@cases)
{
	my ($status, $json) = predict($c->[0]);
	is($status, $c->[1], "hostile: $c->[2] -> $c->[1]");
}
my ($status, $json) = predict('{"model": "risk", "features": {"x9": 1}}');
like($json->{hint} // '', qr/x0, x1, x2, x3/, 'an unknown feature is answered with the model\'s feature names');
($status) = predict('{"model": "risk", "features": {"x0": 1}}', token => undef);
ok($status eq '401' || $status eq '403', "anonymous callers cannot score ($status)");
($status) = BvTest::http('POST', "$url/rpc/api_predict", token => $user, body => '{"model": "risk", "features": {}}');
is($status, '404', 'only api.predict is exposed, not the ml schema');
($status, $json) = predict('{"model": "risk", "features": {}}');
is($status, '200', 'an empty features object scores with every feature missing');

$pgrst->kill_kill;
$node->stop;
done_testing();
