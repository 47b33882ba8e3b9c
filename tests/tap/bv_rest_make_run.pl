# Issue #17 items 8 and 13 in the stack `make run` starts (tools/cluster.sh
# and its peers): PostgREST's JWT secret is a key of bv.jwt_keys, so the
# tokens it accepts pass bv.pre_request()'s second check, and the payment
# webhook has its signing secret (before, it answered 400 naming bv.secrets).
# Neither secret reaches the server log.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
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
like($out, qr/PostgREST: started/, 'start: PostgREST runs');
like($out, qr/signed with the secret in \Q$home\E\/payment_webhook\.secret/, 'status: says where the webhook secret is');

my $jwt_secret = PostgreSQL::Test::Utils::slurp_file("$home/jwt.secret");
my $wh_secret = PostgreSQL::Test::Utils::slurp_file("$home/payment_webhook.secret");
like($wh_secret, qr/^whsec_[0-9a-f]{64}$/, 'a webhook secret was generated');
is(query("SELECT alg || ',' || active FROM bv.jwt_keys WHERE kid = 'postgrest'"), 'HS256,true',
	"PostgREST's secret is key 'postgrest' of bv.jwt_keys");
is(query("SELECT count(*) FROM bv.secrets WHERE name = 'commerce.payment_webhook'"), '1',
	'the webhook secret is in bv.secrets');

my $exp = time() + 600;
my $token = BvTest::jwt_hs256($jwt_secret, qq({"role":"bv_user","sub":"demo-customer","exp":$exp}));
my ($status, $body) = BvTest::http('GET', "$url/orders", token => $token);
is($status, '200', 'a token signed with the generated secret passes both checks');

my $event = '{"id":"evt_make_run","type":"charge.ignored","data":{}}';
my $t = time();
($status, $body) = BvTest::http('POST', "$url/rpc/payment_webhook", body => $event,
	headers => [ "bv-signature: t=$t,v1=" . hmac_sha256_hex("$t.$event", $wh_secret) ]);
is($status, '200', 'a webhook signed with the generated secret is accepted') or diag($body);
is(eval { decode_json($body)->{outcome} }, 'ignored', 'the event was processed');

# A second start keeps both secrets.
($rc, $out, $err) = cluster('start');
is($rc, 0, 'second start: succeeds') or diag($err);
is(PostgreSQL::Test::Utils::slurp_file("$home/payment_webhook.secret"), $wh_secret, 'second start: same webhook secret');
($status) = BvTest::http('GET', "$url/orders", token => $token);
is($status, '200', 'second start: the token still works');

my $log = join '', map { PostgreSQL::Test::Utils::slurp_file($_) } glob("$home/log/*.log");
ok(index($log, $jwt_secret) < 0 && index($log, $wh_secret) < 0, 'neither secret is in the logs');

cluster('stop');
done_testing();
