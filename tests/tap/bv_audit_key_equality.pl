# bv_audit keys whose equality ignores bytes (hardening after the ghost
# rows of nondeterministic collations), in trigger mode and in WAL mode.
#
# bv_audit follows a row by the bytes of its key in some places (the
# capture trigger's "did the key change", WAL mode's "did another row of
# the statement take the old key", changes() read by a client) and by the
# type's equality in others (history(), as_of(), the unique index).  For
# numeric (1.0 = 1.00), citext ('A' = 'a'), float8 (0 = -0), jsonb
# ('{"a": 1.0}' = '{"a": 1.00}'), interval ('1 day' = '24 hours') and
# arrays or composites of them the two disagree: before 0.7.0, an UPDATE
# of a numeric key from 1.0 to 1.00 was recorded as a move without its D
# (trigger mode) or with a D that could come after the I of the row that
# took the key (WAL mode, a statement that moved rows in that order), and
# as_of() lost the row.  Such keys are now refused with 0A000 and a hint,
# at enable() and at the DDL that would give a tracked table such a key;
# keys whose btree equality is image equality (the opclass's equalimage
# function, the test PostgreSQL's index deduplication uses) are accepted,
# and their key changes are followed exactly.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('keyeq', extra_conf => "bv_audit.wal_mode = on\n");
BvTest::create_suite_db($node);
my $db = 'bitvelocity';

sub q1 { return $node->safe_psql($db, $_[0]); }

sub try_sql
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql", on_error_stop => 1);
	return ($ret, $out, $err);
}

q1(q{CREATE EXTENSION IF NOT EXISTS citext;
     CREATE TYPE public.pair AS (a numeric, b int);});

# Key types whose equality is not byte equality: refused in both modes.
my @inexact = (
	[ 'numeric',  q{1.0},                 q{1.00} ],
	[ 'citext',   q{'A'},                 q{'a'} ],
	[ 'float8',   q{0},                   q{'-0'} ],
	[ 'float4',   q{0},                   q{'-0'} ],
	[ 'jsonb',    q{'{"a": 1.0}'},        q{'{"a": 1.00}'} ],
	[ 'interval', q{'1 day'},             q{'24 hours'} ],
	[ 'numeric[]', q{'{1.0}'},            q{'{1.00}'} ],
	[ 'public.pair', q{'(1.0,1)'},        q{'(1.00,1)'} ]);

my $n = 0;
for my $mode ('trigger', 'wal')
{
	for my $t (@inexact)
	{
		my ($type, $v1, $v2) = @$t;
		$n++;
		q1(qq{CREATE TABLE public.k$n (id $type PRIMARY KEY, v int)});
		is(q1(qq{SELECT ${v1}::$type = ${v2}::$type AND ${v1}::${type}::text <> ${v2}::${type}::text}), 't',
			"$type: $v1 and $v2 are equal with different bytes (a check of the test)");
		my ($ret, $out, $err) = try_sql(qq{SELECT bv_audit.enable('public.k$n', mode => '$mode')});
		isnt($ret, 0, "$mode mode: a $type key is refused");
		like($err, qr/ERROR:  0A000: primary key column id of public\.k$n has type .* whose equality ignores differences/,
			"$mode mode, $type: 0A000 naming the column and the type");
		like($err, qr/HINT:  .*generated/, "$mode mode, $type: the hint says what to do");
		is(q1(qq{SELECT count(*) FROM bv_audit.tracked WHERE source_table = 'k$n'}), '0',
			"$mode mode, $type: the table is not tracked");
	}
}

# Exact keys are accepted and followed through key changes, in both modes.
# Composite keys, arrays of exact types, text under "C" and uuid included.
my @exact = (
	[ 'int',         q{1},                                    q{2} ],
	[ 'bigint',      q{1},                                    q{2} ],
	[ 'text',        q{'A'},                                  q{'a'} ],
	[ 'text COLLATE "C"', q{'A'},                             q{'a'} ],
	[ 'uuid',        q{'00000000-0000-0000-0000-000000000001'}, q{'00000000-0000-0000-0000-000000000002'} ],
	[ 'int[]',       q{'{1}'},                                q{'{1,2}'} ],
	[ 'timestamptz', q{'2026-01-01 00:00+00'},                q{'2026-01-01 00:00+01'} ]);
for my $mode ('trigger', 'wal')
{
	for my $t (@exact)
	{
		my ($type, $v1, $v2) = @$t;
		$n++;
		q1(qq{CREATE TABLE public.k$n (id $type PRIMARY KEY, v int)});
		my ($ret, $out, $err) = try_sql(qq{SELECT bv_audit.enable('public.k$n', mode => '$mode')});
		is($ret, 0, "$mode mode: a $type key is accepted") or diag($err);
		q1(qq{INSERT INTO public.k$n VALUES ($v1, 1);
		      UPDATE public.k$n SET id = $v2 WHERE id = $v1;
		      UPDATE public.k$n SET v = 2;});
		is(q1(q{SELECT bv_audit.wait_for(pg_current_wal_insert_lsn(), '120 seconds')}), 't', 'caught up');
		is(q1(qq{SELECT string_agg((j->>'id') || ':' || (j->>'v'), ',') FROM bv_audit.as_of('public.k$n', now()) j}),
			q1(qq{SELECT string_agg((to_jsonb(k)->>'id') || ':' || k.v, ',') FROM public.k$n k}),
			"$mode mode, $type: as_of() is the table after a key change");
		is(q1(qq{SELECT string_agg(h.operation, '' ORDER BY h.audit_id)
		           FROM bv_audit.history('public.k$n', jsonb_build_object('id', ${v1}::$type)) h}),
			'ID', "$mode mode, $type: the old key's history ends with the move's D");
		is(q1(qq{SELECT string_agg(h.operation, '' ORDER BY h.audit_id)
		           FROM bv_audit.history('public.k$n', jsonb_build_object('id', ${v2}::$type)) h}),
			'IU', "$mode mode, $type: the new key's history starts with the move's I");
	}
}

# Composite keys: every column counts.
q1(q{CREATE TABLE public.kc (a int, b numeric, v int, PRIMARY KEY (a, b))});
my ($ret, $out, $err) = try_sql(q{SELECT bv_audit.enable('public.kc')});
like($err, qr/0A000: primary key column b of public\.kc has type numeric/,
	'a composite key with a numeric column is refused');

# DDL that would give a tracked table such a key is refused too.
q1(q{CREATE TABLE public.kd (id int PRIMARY KEY, x numeric NOT NULL, v int);
     SELECT bv_audit.enable('public.kd');});
($ret, $out, $err) = try_sql(q{ALTER TABLE public.kd ALTER COLUMN id TYPE numeric});
like($err, qr/0A000: primary key column id of public\.kd has type numeric/,
	'ALTER COLUMN TYPE numeric of a tracked key is refused');
($ret, $out, $err) = try_sql(q{ALTER TABLE public.kd DROP CONSTRAINT kd_pkey, ADD PRIMARY KEY (x)});
like($err, qr/0A000: primary key column x of public\.kd has type numeric/,
	'a new primary key on a numeric column of a tracked table is refused');
is(q1(q{SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'public.kd'::regclass AND attname = 'id'}),
	'integer', 'the refused DDL changed nothing');

# Nondeterministic collations keep their own, more specific message (0.6.0).
q1(q{CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
     CREATE TABLE public.kn (id text COLLATE public.ci PRIMARY KEY)});
($ret, $out, $err) = try_sql(q{SELECT bv_audit.enable('public.kn')});
like($err, qr/0A000: primary key column id of public\.kn uses the nondeterministic collation/,
	'a key under a nondeterministic collation: the 0.6.0 message');

is(q1(q{SELECT count(*) FROM bv_audit.wal_quarantine}), '0', 'nothing quarantined');
$node->stop;
done_testing();
