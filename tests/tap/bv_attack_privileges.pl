# Issue #17, attack review: what API roles can reach directly in SQL, and
# functions that let a caller touch what it could not touch itself.
# Assertions in TODO blocks are findings in other extensions, reported to
# their owners (bv_audit, bv_cdc, bv_ml); they turn into "unexpectedly succeeded"
# once fixed, and then belong outside the TODO block.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('atkpriv');
BvTest::create_suite_db($node);

sub run_sql
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('bitvelocity', $sql);
	return ($out // '', $err // '');
}

my $suite = q{('bv', 'bv_audit', 'bv_cdc', 'commerce', 'api')};
my @api_roles = qw(bv_anon bv_user bv_service);

# ---- no internal function, no secret table, no CREATE ----
for my $r (@api_roles)
{
	my ($out) = run_sql(qq{SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1)
	  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	  WHERE n.nspname IN ('bv', 'commerce', 'api')
	    AND (p.proname LIKE '\\_%' OR obj_description(p.oid, 'pg_proc') LIKE 'Internal%')
	    AND has_schema_privilege('$r', n.oid, 'USAGE') AND has_function_privilege('$r', p.oid, 'EXECUTE')});
	is($out, '', "$r can execute no internal function of bv, commerce, api");
	($out) = run_sql(qq{SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY 1)
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	  WHERE n.nspname = 'bv' AND c.relkind IN ('r', 'p', 'v', 'm')
	    AND (has_table_privilege('$r', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
	         OR (has_table_privilege('$r', c.oid, 'SELECT') AND c.relname NOT IN ('extensions', 'api_key_scopes')))});
	is($out, '', "$r can read no table of schema bv but the extension list and the scope names, and write none");
	($out) = run_sql(qq{SELECT string_agg(nspname, ', ') FROM pg_namespace
	  WHERE has_schema_privilege('$r', oid, 'CREATE')});
	is($out, '', "$r can create objects in no schema (no search_path shadowing)");
}
my ($out) = run_sql(qq{SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN $suite AND p.prosecdef
    AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c = 'search_path=pg_catalog, pg_temp')});
is($out, '', 'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp');
($out) = run_sql(q{SELECT string_agg(DISTINCT pg_get_userbyid(p.proowner), ', ')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prosecdef AND n.nspname LIKE 'bv%'});
is($out, 'postgres', 'SECURITY DEFINER functions are owned by the installing superuser');

# Over REST nothing but schema api is exposed; directly in SQL the API
# roles cannot schedule pg_cron jobs either.
for my $r (@api_roles)
{
	my (undef, $err) = run_sql(qq{SET ROLE $r; SELECT cron.schedule('* * * * *', 'SELECT 1')});
	like($err, qr/permission denied/, "$r cannot schedule pg_cron jobs");
}

# ---- functions that reach rows the caller cannot SELECT ----
$node->safe_psql('bitvelocity', q{
CREATE TABLE public.notes (id int PRIMARY KEY, owner_id text NOT NULL, body text);
GRANT SELECT ON public.notes TO bv_user;
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notes FORCE ROW LEVEL SECURITY;
CREATE POLICY own ON public.notes TO bv_user USING (owner_id = current_user);
INSERT INTO public.notes VALUES (1, 'someone', 'PRIVATE-NOTE');
SELECT bv_audit.enable('public.notes');
CREATE TABLE public.colonly (id int PRIMARY KEY, pub text, hidden text);
GRANT SELECT (id, pub) ON public.colonly TO bv_admin;
INSERT INTO public.colonly VALUES (1, 'p', 'COLUMN-SECRET');
SELECT bv_audit.enable('public.colonly');
SELECT bv.secret_set('cdc.w', 'whsecret-whsecret-whsecret-123456');
SELECT bv_cdc.add_sink('w', 'webhook', '{"url": "http://127.0.0.1:9/x", "secret": "cdc.w"}');
});
is((run_sql(q{SET ROLE bv_admin; SELECT count(*) FROM public.notes}))[0], '0', 'bv_admin sees no row of notes (RLS)');
TODO:
{
	local $TODO = 'reported: bv_audit (internal functions executable by API roles, fixed in its working tree), bv_ml (ml._column_type, ml._resolve_features executable by bv_service)';
	for my $r (@api_roles)
	{
		my ($o) = run_sql(qq{SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1)
		  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		  WHERE n.nspname NOT IN ('bv', 'commerce', 'api', 'pg_catalog', 'information_schema', 'public', 'cron')
		    AND n.nspname NOT LIKE 'pg\\_%'
		    AND (p.proname LIKE '\\_%' OR obj_description(p.oid, 'pg_proc') LIKE 'Internal%')
		    AND has_schema_privilege('$r', n.oid, 'USAGE') AND has_function_privilege('$r', p.oid, 'EXECUTE')});
		is($o, '', "$r can execute no internal function of the other extensions (bv_audit, bv_cdc, bv_ml, ...)");
	}
}
TODO:
{
	local $TODO = 'bv_audit (reported): history readers do not check the caller\'s SELECT rights or RLS; internal tables can be audited';
	my ($o, $e) = run_sql(q{SET ROLE bv_admin; SELECT bv_audit.history('public.colonly', '{"id":1}')::text});
	unlike($o, qr/COLUMN-SECRET/, 'bv_audit.history does not show a column the caller cannot SELECT');
	($o, $e) = run_sql(q{SET ROLE bv_admin; SELECT bv_audit.as_of('public.notes', now())::text});
	unlike($o, qr/PRIVATE-NOTE/, 'bv_audit.as_of does not show rows that RLS hides from the caller');
	for my $t ('bv.jwt_keys', 'bv.secrets', 'bv.api_keys', 'bv.jwt_revocations')
	{
		($o, $e) = run_sql(qq{SET ROLE bv_admin; SELECT bv_audit.enable('$t')});
		like($e, qr/ERROR/, "bv_audit.enable('$t') is refused (history would keep secrets in clear after rotation)");
	}
	($o, $e) = run_sql(q{SET ROLE bv_anon; SELECT count(*) FROM bv_audit.tracked});
	like($e, qr/permission denied/, 'bv_anon cannot list the audited tables');
}
# (found by this review; fixed in bv_cdc by ba7e44c)
{
	my ($o, $e) = run_sql(q{SET ROLE bv_admin; SELECT bv_cdc.snapshot('public.notes')});
	like($e, qr/permission denied|row-level security/, 'bv_cdc.snapshot refuses a table whose rows RLS hides from the caller');
	($o, $e) = run_sql(q{SET ROLE bv_admin; SELECT bv_cdc.add_route('public.notes', 'w')});
	like($e, qr/permission denied|row-level security/, 'bv_cdc.add_route refuses such a table');
}
# Kafka secrets are names in bv.secrets, as for the other sink kinds.
{
	my ($o, $e) = run_sql(q{SET ROLE bv_admin; SELECT bv_cdc.add_sink('k', 'kafka', '{"bootstrap.servers": "127.0.0.1:1",
	  "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "KAFKA-PASSWORD"}')});
	like($e, qr/holds a secret and is never stored in clear/, 'a Kafka sink with sasl.password in clear is refused');
	unlike($e, qr/KAFKA-PASSWORD/, 'the refusal does not repeat the password');
	($o, $e) = run_sql(q{SELECT count(*) FROM bv_cdc.sinks WHERE config::text LIKE '%KAFKA-PASSWORD%'});
	is($o, '0', 'a Kafka sink keeps no password in clear (sasl.password, ssl.key.password: names in bv.secrets, as for webhook and MQTT sinks)');
	($o, $e) = run_sql(q{SET ROLE bv_admin; SELECT bv_cdc.add_sink('k2', 'kafka', '{"bootstrap.servers": "127.0.0.1:1",
	  "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password_secret": "kafka.password"}')});
	is($e, '', 'a Kafka sink naming its password in bv.secrets is accepted');
}
my (undef, $err) = run_sql(q{SET ROLE bv_admin; SELECT bv_cdc.add_route('public.colonly', 'w')});
like($err, qr/permission denied to route table/, 'bv_cdc.add_route refuses a table the caller cannot SELECT');

$node->stop;
done_testing();
