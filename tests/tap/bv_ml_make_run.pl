# bv_ml's demo in the stack `make run` starts (tools/cluster.sh and its
# peers): tools/peers/ml.sh trains "churn_demo" with scikit-learn,
# registers it in production enabled for the API, and prints a curl for
# /rpc/predict; that very request, with a token signed by the generated
# PostgREST secret, scores the customer exactly as the logistic formula over
# the registered coefficients says.  A second start keeps the model.  The
# committed fallback (sql/bv_ml/demo-model.json) is the model the script
# trains.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;
use BvStack;

my $stack = BvStack->new();
my ($home, $port, $rest_port) = ($stack->home, $stack->port, $stack->rest_port);
my $url = $stack->url;
sub cluster { return $stack->cluster(@_); }
sub query   { return $stack->query(@_); }

my ($rc, $out, $err) = cluster('start');
is($rc, 0, 'start: succeeds') or diag($err);
like($out, qr/^ml: registered demo model churn_demo \(trained with scikit-learn\)$/m, 'start: the demo model is trained and registered');
is(query("SELECT version || ' ' || stage || ' ' || kind || ' ' || api_enabled FROM ml.models WHERE name = 'churn_demo'"),
	'1 production sklearn_logistic true', 'in production, enabled for the API');
like($out, qr{curl -s -X POST \Q$url\E/rpc/predict}, 'status: prints a curl for /rpc/predict');
my ($body) = $out =~ /-d '(\{"model":"churn_demo".*\})'$/m;
ok($body, 'with a request body');

my $jwt_secret = PostgreSQL::Test::Utils::slurp_file("$home/jwt.secret");
my $exp = time() + 600;
my $token = BvTest::jwt_hs256($jwt_secret, qq({"role":"bv_user","sub":"demo-customer","exp":$exp}));
my ($status, $resp) = BvTest::http('POST', "$url/rpc/predict", token => $token, body => $body);
is($status, '200', 'the printed request scores') or diag($resp);
my $got = eval { decode_json($resp) } // {};

# The logistic formula over the registered coefficients, by hand.
my $doc = decode_json(query("SELECT document FROM ml.models WHERE name = 'churn_demo'"));
my $f = decode_json($body)->{features};
my $z = $doc->{intercept}[0];
$z += $doc->{coef}[0][$_] * $f->{ $doc->{feature_names}[$_] } for 0 .. $#{ $doc->{feature_names} };
my $p = 1 / (1 + exp(-$z));
ok(abs(($got->{prediction} // -1) - $p) < 1e-9, "prediction $got->{prediction} = sigmoid(intercept + coef . x) = $p");
ok($p > 0.05 && $p < 0.95, 'a plausible churn probability for the example customer');
($status) = BvTest::http('POST', "$url/rpc/predict", body => $body);
is($status, '401', 'anonymous callers are refused');

# A second start keeps the model.
($rc, $out, $err) = cluster('start');
is($rc, 0, 'second start: succeeds') or diag($err);
like($out, qr/^ml: demo model churn_demo already registered$/m, 'second start: leaves the model alone');
is(query("SELECT count(*) FROM ml.models WHERE name = 'churn_demo'"), 1, 'one version');

# The committed fallback is what the script trains.
my $tmp = "$PostgreSQL::Test::Utils::tmp_check/trained.json";
system('bash', BvTest::src() . '/tools/peers/ml.sh', 'train', $tmp) == 0 or die 'ml.sh train failed';
my $trained = decode_json(PostgreSQL::Test::Utils::slurp_file($tmp));
my $committed = decode_json(PostgreSQL::Test::Utils::slurp_file(BvTest::src() . '/sql/bv_ml/demo-model.json'));
my @a = (@{ $trained->{coef}[0] }, @{ $trained->{intercept} });
my @b = (@{ $committed->{coef}[0] }, @{ $committed->{intercept} });
ok(@a == @b && !grep({ abs($a[$_] - $b[$_]) > 1e-9 } 0 .. $#a), 'sql/bv_ml/demo-model.json equals a fresh training');
is_deeply($committed->{feature_names}, $doc->{feature_names}, 'with the same feature names');

cluster('stop');
done_testing();
