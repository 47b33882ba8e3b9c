# Red-team round 3, bv_cdc sink configuration: what bv_admin (not a
# superuser) and the worker may reach.
#  - Webhook SSRF.  A webhook sink took any URL: bv_admin could make the
#    worker POST from inside the server's network to the cloud metadata
#    service (169.254.169.254), to loopback services or to private hosts.
#    Now a destination that is not a public address is refused unless it is
#    in bv_cdc.webhook_allowed_networks (postgresql.conf; make run allows
#    127.0.0.1/32 for its demo receiver): numeric hosts in any spelling when
#    the sink is set, and every address the worker connects to (host names,
#    a setting reloaded later).
#  - Kafka OIDC token endpoint: "sasl.oauthbearer.token.endpoint.url" made
#    the worker send requests to any URL; only a superuser may set it now.
#  - Kafka Kerberos principal: librdkafka puts it unquoted into the shell
#    command it runs for GSSAPI (`kinit ... -k %{sasl.kerberos.principal}`):
#    "x;touch file" ran `touch` as the server's OS user once a keytab was
#    set.  Principal and keytab are limited to shell-inert characters.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use BvTest;
use lib "$ENV{BV_SRC}/tests/tools";
use BvWebhook;

my $node = BvTest::new_node('rtdest',
	extra_conf => "bv_cdc.heartbeat_interval = 500\nbv_cdc.naptime = 200\nbv_cdc.retry_max = 1000\n");
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', 'CREATE EXTENSION IF NOT EXISTS bv_cdc CASCADE');
my $dir = $node->basedir;
chmod 0777, $dir;

sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub as_admin
{
	my ($q) = @_;
	my ($ret, $out, $err) = $node->psql('bitvelocity', "SET ROLE bv_admin; $q", on_error_stop => 1);
	return ($ret, $err);
}
sql("SELECT bv.secret_set('hook.s', 'whsec_redteam_destinations_0123456789')");

# ---- the shipped configuration ----
like(sql("SHOW bv_cdc.webhook_allowed_networks"), qr{^127\.0\.0\.1/32$},
	'make run allows its loopback receiver (127.0.0.1/32) and nothing else');

# ---- numeric destinations refused when the sink is set ----
my @refused = (
	'http://169.254.169.254/latest/meta-data/',            # cloud metadata
	'http://169.254.169.254.:80/x',
	'http://[::ffff:169.254.169.254]/x',                     # IPv4-mapped IPv6
	'http://[::ffff:a9fe:a9fe]/x',
	'http://[64:ff9b::a9fe:a9fe]/x',                         # NAT64
	'http://2852039166/x',                                   # 169.254.169.254 as one number
	'http://0xa9.0xfe.0xa9.0xfe/x',                          # hex octets
	'http://10.0.0.1/x', 'http://172.16.5.4:8080/x', 'http://192.168.1.1/x',
	'http://100.64.0.1/x', 'http://0.0.0.0:5432/x', 'http://127.0.0.2/x',
	'http://0x7f.0.0.2/x', 'http://[::1]:8080/x', 'http://[::]/x', 'http://[fe80::1]/x',
	'http://[fd00::1]/x', 'http://224.0.0.1/x', 'http://255.255.255.255/x',
	'https://[::ffff:10.1.2.3]:443/x',
);
my $n = 0;
for my $url (@refused)
{
	$n++;
	my ($ret, $err) = as_admin(qq{SELECT bv_cdc.add_sink('r$n', 'webhook', '{"url": "$url", "secret": "hook.s"}')});
	isnt($ret, 0, "webhook to $url refused");
	like($err, qr/ERROR:  webhook "url" points to an address that is not allowed/, "... with the policy's message")
	  or diag($err);
}
for my $url ('https://user:pw@hooks.example.com/x', 'http://a@169.254.169.254/', 'http://:tok@93.184.216.34/')
{
	my ($ret, $err) = as_admin(qq{SELECT bv_cdc.add_sink('cred', 'webhook', '{"url": "$url", "secret": "hook.s"}')});
	like($err, qr/ERROR:  webhook "url" must not contain credentials/, "credentials in the URL refused ($url)");
	unlike($err, qr/pw|tok/, '... without quoting them');
}
my ($ret, $err) = as_admin(q{SELECT bv_cdc.add_sink('r0', 'webhook', '{"url": "http://169.254.169.254/", "secret": "hook.s"}')});
like($err, qr/HINT:  .*bv_cdc\.webhook_allowed_networks/, 'the hint names the setting');
unlike($err, qr/latest|meta-data/, 'the error quotes no part of the URL beyond the address');
($ret, $err) = as_admin(q{SELECT bv_cdc.add_sink('ok1', 'webhook', '{"url": "https://93.184.216.34/hook", "secret": "hook.s"}')});
is($ret, 0, 'a public address is accepted') or diag($err);
($ret, $err) = as_admin(q{SELECT bv_cdc.add_sink('ok2', 'webhook', '{"url": "https://hooks.example.invalid/hook", "secret": "hook.s"}')});
is($ret, 0, 'a host name is accepted (checked when the worker connects)') or diag($err);
($ret, $err) = as_admin(q{SELECT bv_cdc.alter_sink('ok1', '{"url": "http://169.254.169.254/", "secret": "hook.s"}')});
isnt($ret, 0, 'alter_sink is checked the same way');
($ret, $err) = $node->psql('bitvelocity', q{SELECT bv_cdc.add_sink('su', 'webhook', '{"url": "http://10.1.1.1/", "secret": "hook.s"}')});
isnt($ret, 0, 'a superuser is held to the same policy (the worker enforces it anyway)');
sql("SELECT bv_cdc.drop_sink(name) FROM bv_cdc.sinks");

# ---- the setting: superuser-only, validated ----
($ret, $err) = $node->psql('bitvelocity', q{SET ROLE bv_admin; SET bv_cdc.webhook_allowed_networks = '0.0.0.0/0'});
isnt($ret, 0, 'bv_admin cannot widen the allow-list in its session');
(my $out, $ret, $err) = (undef);
($ret, $out, $err) = $node->psql('bitvelocity', q{ALTER SYSTEM SET bv_cdc.webhook_allowed_networks = '10.0.0.0/33'});
like($err, qr/invalid value for parameter/, 'a malformed network is refused');

# ---- the worker checks every address it connects to ----
my $secret = 'whsec_redteam_destinations_0123456789';
my $hook = BvWebhook::start($dir, secrets => [$secret]);
sql(qq{
CREATE TABLE public.dest (id int PRIMARY KEY, v text);
SELECT bv_cdc.add_sink('hook', 'webhook', '{"url": "$hook->{url}", "secret": "hook.s", "retry_base_ms": 100, "retry_max_ms": 300, "circuit_failures": 1000}');
SELECT bv_cdc.add_route('public.dest', 'hook');
});
$node->poll_query_until('bitvelocity', "SELECT state = 'up' FROM bv_cdc.stats WHERE sink = 'hook'")
  or diag('the webhook sink did not come up');
sql("INSERT INTO public.dest VALUES (1, 'allowed')");
BvWebhook::wait_delivered($hook, 1);
is(scalar(BvWebhook::delivered($hook)), 1, 'with 127.0.0.1/32 allowed, the receiver on loopback gets the event');

sql("ALTER SYSTEM SET bv_cdc.webhook_allowed_networks = ''; SELECT pg_reload_conf()");
$node->poll_query_until('bitvelocity', "SELECT current_setting('bv_cdc.webhook_allowed_networks') = ''");
sql("INSERT INTO public.dest VALUES (2, 'refused')");
ok($node->poll_query_until('bitvelocity',
	"SELECT count(*) > 0 FROM bv_cdc.webhook_spool WHERE last_error LIKE 'destination 127.0.0.1 is not a public address%'"),
	'after the reload the worker refuses to connect to loopback; the event waits in the spool with the reason');
is(scalar(BvWebhook::delivered($hook)), 1, 'the receiver got nothing more');

sql("ALTER SYSTEM RESET bv_cdc.webhook_allowed_networks; SELECT pg_reload_conf()");
BvWebhook::wait_delivered($hook, 2);
is(scalar(BvWebhook::delivered($hook)), 2, 'allowed again: the spooled event is delivered');
BvWebhook::stop($hook);

# ---- Kafka: the OIDC token endpoint ----
# (Debian's librdkafka is built without OIDC and refuses the property
# anyway; a build with it must not let bv_admin set it.)
($ret, $err) = as_admin(q{SELECT bv_cdc.add_sink('ko', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "sasl.oauthbearer.token.endpoint.url": "http://169.254.169.254/token"}')});
isnt($ret, 0, 'bv_admin cannot point the OIDC token endpoint anywhere');
like($err, qr/invalid Kafka sink property "sasl.oauthbearer.token.endpoint.url"\n.*only a superuser may set it/, '... refused naming it, whatever the build');

# ---- Kafka: the Kerberos principal in librdkafka's kinit shell command ----
my $marker = "$dir/kinit-principal-ran";
($ret, $out, $err) = $node->psql('bitvelocity', qq{SELECT bv_cdc.add_sink('kk', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI", "sasl.kerberos.keytab": "/nonexistent/keytab", "sasl.kerberos.principal": "x;touch $marker;#"}')});
isnt($ret, 0, 'a principal with shell syntax is refused, even for a superuser');
like($err, qr/invalid Kafka sink property "sasl.kerberos.principal"/, '... naming the property');
($ret, $err) = $node->psql('bitvelocity', q{SELECT bv_cdc.add_sink('kk2', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "sasl.kerberos.keytab": "/etc/$(id)/keytab"}')});
isnt($ret, 0, 'a keytab path with shell syntax is refused');
($ret, $err) = $node->psql('bitvelocity', q{SELECT bv_cdc.add_sink('kk3', 'kafka', '{"bootstrap.servers": "127.0.0.1:1", "sasl.kerberos.principal": "bv_cdc/db1.example.com@EXAMPLE.COM"}')});
is($ret, 0, 'an ordinary principal is accepted') or diag($err);
# whatever was accepted, the command never ran
$node->poll_query_until('bitvelocity',
	q{SELECT count(*) = (SELECT count(*) FROM bv_cdc.sinks) FROM bv_cdc.stats WHERE state IS NOT NULL});
ok(!-e $marker, 'no Kerberos property made the worker run a command');

$node->stop;
done_testing();
