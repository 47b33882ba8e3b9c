# Every BitVelocity extension: installing its oldest version and running
# ALTER EXTENSION ... UPDATE gives exactly what a fresh install of the
# default version gives (functions, their properties and privileges,
# relations, their columns and privileges).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('upgrade');

my @exts = BvTest::extensions();
ok(scalar(@exts) >= 1, 'the suite has extensions to check: ' . join(' ', @exts));

# A description of everything extension $ext owns, one line per object.
my $signature_sql = <<'SQL';
WITH members AS (
    SELECT d.classid, d.objid
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
      AND e.extname = :'ext'
)
SELECT 'function ' || p.oid::regprocedure || ' ' || p.provolatile::text || p.proisstrict::text
       || p.prosecdef::text || ' ' || coalesce(p.proconfig::text, '') || ' '
       || coalesce(p.proacl::text, '') || ' ' || md5(p.prosrc || coalesce(p.probin, ''))
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
       || coalesce(c.relrowsecurity::text, '') || ' '
       || coalesce((SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod)
                                      || coalesce(':' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                                      ',' ORDER BY a.attnum)
                    FROM pg_attribute a
                    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
       || ' ' || coalesce(md5(pg_get_viewdef(c.oid)), '')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
UNION ALL
SELECT pg_describe_object(m.classid, m.objid, 0)
FROM members m WHERE m.classid NOT IN ('pg_proc'::regclass, 'pg_class'::regclass)
ORDER BY 1;
SQL

my $n = 0;
foreach my $ext (@exts)
{
	$n++;
	my @versions = split /\n/, $node->safe_psql('postgres', qq{
		SELECT version FROM pg_available_extension_versions WHERE name = '$ext'
		ORDER BY string_to_array(version, '.')::int[]});
	my $default = $node->safe_psql('postgres',
		"SELECT default_version FROM pg_available_extensions WHERE name = '$ext'");
	ok(scalar(@versions) >= 1, "$ext: versions on disk: @versions");

	$node->safe_psql('postgres', "CREATE DATABASE fresh_$n");
	$node->safe_psql('postgres', "CREATE DATABASE upgraded_$n");
	$node->safe_psql("fresh_$n", qq{CREATE EXTENSION "$ext" CASCADE});
	$node->safe_psql("upgraded_$n",
		qq{CREATE EXTENSION "$ext" VERSION '$versions[0]' CASCADE});
	$node->safe_psql("upgraded_$n", qq{ALTER EXTENSION "$ext" UPDATE});

	is($node->safe_psql("upgraded_$n",
			"SELECT extversion FROM pg_extension WHERE extname = '$ext'"),
		$default, "$ext: $versions[0] updates to $default");

	my $sig = sub {
		$node->safe_psql($_[0], "\\set ext $ext\n" . $signature_sql);
	};
	my $fresh = $sig->("fresh_$n");
	ok(length($fresh) > 0, "$ext: a fresh install owns objects");
	is($sig->("upgraded_$n"), $fresh,
		"$ext: updated from $versions[0] equals a fresh $default");
}

$node->stop;
done_testing();
