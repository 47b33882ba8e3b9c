# Red-team round 5b (bv_audit, trigger mode): can a table's owner, or plain
# use of PostgreSQL features, change a tracked row without a record or make
# history() / as_of() lie?  Findings were TODO checks (they asserted the
# promised behaviour and failed before 0.6.0); the promises that held are plain
# checks, kept as regression tests.
#
# Finding 1 (fixed in 0.6.0: such keys are refused): a primary key under a non-deterministic collation (ICU,
#   case-insensitive: the usual way to key users by e-mail).  An UPDATE that
#   changes only the case of the key is a key change to bv_audit (the bytes
#   differ), but when it looks for "another row of the statement that took
#   the old key" it finds the row itself (equal under the collation) and
#   leaves the D out.  as_of(now()) then shows the row twice ('Abc' and
#   'abc': a ghost), and history() of the key spelt as the table matches it
#   ('ABC') finds nothing, although docs/bv_audit.md says the JSON value is
#   "compared with =" after conversion to the key column's type.
# Finding 2: DDL on a composite or range type used by a tracked column
#   changes what every row says without a record: ALTER TYPE ... RENAME
#   VALUE of an enum inside a composite, an array of composites, a domain
#   over a composite or a range (the 0.5.0 records cover the enum used
#   directly, as an array or through a domain only), and ALTER TYPE ... DROP
#   ATTRIBUTE of the composite (the attribute's values are gone from every
#   row).  enable() accepts such columns when the composite or range type
#   belongs to a superuser; the enum inside may belong to anyone.  And an
#   enum used through a domain over an array of a domain over the enum is
#   recorded (a U) but left out of that U's changed_columns.
# Finding 3: a column that takes the name of a dropped *excluded* column
#   is copied into the history.  enable('public.invoice', '{card_token}')
#   is documented as "never copy card_token"; after DROP COLUMN card_token,
#   ADD COLUMN card_token (the way a column's type is changed, and what the
#   0A000 hint of a refused type change recommends) the secret is recorded
#   and tracked.exclude_columns is empty.  Exclusions follow attribute
#   numbers (docs); nothing warns that the new column is copied.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('red5baudit');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }

# The records of one key as "op:value ..." in audit_id order.
sub hist
{
	my ($tbl, $pk, $col) = @_;
	return sql(qq{SELECT coalesce(string_agg(operation || ':' || coalesce(row_data->>'$col', '~'), ' ' ORDER BY audit_id), '')
		FROM bv_audit.history('$tbl', '$pk')});
}

sql(q{
CREATE ROLE app_owner LOGIN;
GRANT CREATE ON SCHEMA public TO app_owner;
});

# ---------------------------------------------------------------- finding 1
# Fixed in 0.6.0 by refusing such keys (0A000 with a hint), at enable() and
# at DDL that gives a tracked table one.
sql(q{
SET ROLE app_owner;
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE users_ci (email text COLLATE ci PRIMARY KEY, name text);
INSERT INTO users_ci VALUES ('Alice@Example.com', 'alice'), ('bob@example.com', 'bob');
CREATE TABLE users_det (email text PRIMARY KEY, name text);
INSERT INTO users_det VALUES ('Alice@Example.com', 'alice');
});
{
	my ($rc, undef, $err) = $node->psql('bitvelocity',
		"\\set VERBOSITY verbose\nSELECT bv_audit.enable('public.users_ci')");
	isnt($rc, 0, 'enable() refuses a key under a nondeterministic collation');
	like($err, qr/ERROR:\s+0A000:.*nondeterministic collation.*HINT:/s, '... with 0A000, the reason and a hint');
	is(sql(q{SELECT count(*) FROM bv_audit.tracked WHERE relid = 'public.users_ci'::regclass}), '0',
		'... and the table is not tracked');
}
sql(q{SELECT bv_audit.enable('public.users_det')});
{
	my ($rc, undef, $err) = $node->psql('bitvelocity',
		"\\set VERBOSITY verbose\nSET ROLE app_owner; ALTER TABLE users_det ALTER COLUMN email TYPE text COLLATE ci");
	isnt($rc, 0, 'the owner cannot give a tracked table\'s key a nondeterministic collation');
	like($err, qr/ERROR:\s+0A000:.*HINT:/s, '... 0A000 with a hint');
}
sql(q{SET ROLE app_owner; UPDATE users_det SET email = 'alice@example.com'});
is(sql(q{SELECT string_agg(r->>'email', ' ') FROM bv_audit.as_of('public.users_det', now()) r}),
	'alice@example.com', 'a case-only key change under the default collation: one row in as_of(now())');

# ---------------------------------------------------------------- finding 2
# The composite and range types belong to the superuser (enable() refuses
# other owners' types); the enum belongs to the table's owner.
sql(q{
SET ROLE app_owner;
CREATE TYPE mood AS ENUM ('ok', 'happy');
RESET ROLE;
CREATE TYPE mood_pair AS (m mood, n int);
CREATE TYPE mood_range AS RANGE (subtype = mood);
CREATE DOMAIN mood_pair_d AS mood_pair;
CREATE TABLE comp (id int PRIMARY KEY, p mood_pair, r mood_range, ps mood_pair[], d mood_pair_d);
ALTER TABLE comp OWNER TO app_owner;
INSERT INTO comp VALUES (1, ROW('happy', 1), mood_range('ok', 'happy', '[]'), ARRAY[ROW('happy', 2)::mood_pair], ROW('happy', 3));
SELECT bv_audit.enable('public.comp');
});
sql(q{SET ROLE app_owner; ALTER TYPE mood RENAME VALUE 'happy' TO 'sad'});
is(sql('SELECT p::text || r::text FROM comp'), '(sad,1)[ok,sad]', 'control: the rename changed what the row says');
{
	for my $c (qw(p r ps d))
	{
		is(sql(qq{SELECT r->>'$c' FROM bv_audit.as_of('public.comp', now()) r}),
			sql(qq{SELECT $c\::text FROM comp}), "as_of(now()) agrees with the table on column $c");
	}
	like(sql(q{SELECT string_agg(operation, ' ' ORDER BY audit_id) FROM bv_audit.history('public.comp', '{"id": 1}')}),
		qr/^S U/, 'the rename is a U record of the row');
}
sql(q{ALTER TYPE mood_pair DROP ATTRIBUTE n});
is(sql('SELECT p::text FROM comp'), '(sad)', 'control: DROP ATTRIBUTE removed the value from the row');
{
	is(sql(q{SELECT r->>'p' FROM bv_audit.as_of('public.comp', now()) r}), '(sad)',
		'as_of(now()) agrees with the table after DROP ATTRIBUTE');
}

# An enum used through a domain over an array of a domain over the enum:
# the rename is recorded (the row's U), but the column is not named in
# changed_columns, so changes() readers filtering by column miss it.
sql(q{
CREATE TYPE e2 AS ENUM ('x', 'y');
CREATE DOMAIN d_e2 AS e2;
CREATE DOMAIN d_e2_arr AS d_e2[];
CREATE TABLE nested (id int PRIMARY KEY, a d_e2_arr, c d_e2);
INSERT INTO nested VALUES (1, ARRAY['x']::d_e2[], 'x');
SELECT bv_audit.enable('public.nested');
ALTER TYPE e2 RENAME VALUE 'x' TO 'z';
});
is(sql(q{SELECT r->>'a' FROM bv_audit.as_of('public.nested', now()) r}), '{z}', 'control: nested domain/array: the U holds the new text');
{
	is(sql(q{SELECT changed_columns::text FROM bv_audit.history('public.nested', '{"id": 1}') WHERE operation = 'U'}), '{a,c}',
		'the U names every column whose text the rename changed');
}

# ---------------------------------------------------------------- finding 3
sql(q{
CREATE TABLE invoice (id int PRIMARY KEY, card_token text, note text);
ALTER TABLE invoice OWNER TO app_owner;
SELECT bv_audit.enable('public.invoice', '{card_token}');
SET ROLE app_owner;
INSERT INTO invoice VALUES (1, 'tok_live_first', 'a');
ALTER TABLE invoice DROP COLUMN card_token;
ALTER TABLE invoice ADD COLUMN card_token text;
UPDATE invoice SET card_token = 'tok_live_second' WHERE id = 1;
});
is(sql(q{SELECT count(*) FROM bv_audit.history('public.invoice', '{"id": 1}') h WHERE h.row_data::text LIKE '%tok_live_first%'}),
	'0', 'control: the excluded column was never copied');
{
	is(sql(q{SELECT count(*) FROM bv_audit.history('public.invoice', '{"id": 1}') h WHERE h.row_data::text LIKE '%tok_live_second%'}),
		'0', 'a column re-added under an excluded name is not copied');
	is(sql(q{SELECT exclude_columns::text FROM bv_audit.tracked WHERE relid = 'public.invoice'::regclass}),
		'{card_token}', 'tracked.exclude_columns still names it');
}

# ------------------------------------------------ promises that held (regression)
# A stored generated column added by the owner: a U of every row, naming it.
sql(q{
CREATE TABLE gen (id int PRIMARY KEY, v int, ts timestamptz, s text);
ALTER TABLE gen OWNER TO app_owner;
INSERT INTO gen VALUES (1, 10, '2026-01-01 12:00+00', 'hello');
SELECT bv_audit.enable('public.gen');
SET ROLE app_owner;
ALTER TABLE gen ADD COLUMN dbl int GENERATED ALWAYS AS (v * 2) STORED;
});
is(sql(q{SELECT string_agg(operation || ':' || coalesce(changed_columns::text, '') || ':' || coalesce(row_data->>'dbl', '~'), ' ' ORDER BY audit_id)
	FROM bv_audit.history('public.gen', '{"id": 1}')}), 'S::~ U:{dbl}:20', 'a generated column added: U of the row naming it');

# Type changes that would change the stored text are refused (0A000, hint).
for my $t ('timestamp', 'date', 'char(10)')
{
	my $col = $t eq 'char(10)' ? 's' : 'ts';
	my ($rc, undef, $err) = $node->psql('bitvelocity',
		"\\set VERBOSITY verbose\nSET ROLE app_owner; ALTER TABLE gen ALTER COLUMN $col TYPE $t");
	isnt($rc, 0, "ALTER COLUMN $col TYPE $t refused");
	like($err, qr/ERROR:\s+0A000:.*HINT:/s, "... with 0A000 and a hint");
}

# The actor of each statement inside a function or a procedure (with COMMIT).
sql(q{
CREATE TABLE act (id int PRIMARY KEY, v int);
INSERT INTO act VALUES (1, 0), (2, 0);
SELECT bv_audit.enable('public.act');
DO $$ BEGIN PERFORM bv.set_actor('alice'); UPDATE act SET v = 1 WHERE id = 1;
           PERFORM bv.set_actor('bob'); UPDATE act SET v = 1 WHERE id = 2; END $$;
CREATE PROCEDURE act_proc() LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bv.set_actor('carol'); UPDATE act SET v = 2 WHERE id = 1; COMMIT;
    PERFORM bv.set_actor('dave'); UPDATE act SET v = 2 WHERE id = 2; COMMIT;
    UPDATE act SET v = 3 WHERE id = 2;
END $$;
CALL act_proc();
});
is(sql(q{SELECT string_agg(audit_op || ':' || audit_actor, ' ' ORDER BY audit_id) FROM bv_audit.public__act WHERE audit_op = 'U'}),
	'U:alice U:bob U:carol U:dave U:postgres',
	'each statement of a DO block or procedure has its own actor, also after COMMIT');

# TRUNCATE and INSERT in one transaction: the new row is in as_of(now()).
sql(q{
CREATE TABLE tr (id int PRIMARY KEY, v text);
INSERT INTO tr VALUES (1, 'a'), (2, 'b');
SELECT bv_audit.enable('public.tr');
BEGIN; INSERT INTO tr VALUES (3, 'c'); TRUNCATE tr; INSERT INTO tr VALUES (4, 'd'); COMMIT;
});
is(sql(q{SELECT string_agg(r->>'id', ',' ORDER BY (r->>'id')::int) FROM bv_audit.as_of('public.tr', now()) r}), '4',
	'TRUNCATE then INSERT in one transaction: as_of(now()) shows the new row only');

# Audit partitions are append-only for the superuser too (promise 3): the
# month partition that holds the records, and TRUNCATE of the (empty)
# default partition (a statement trigger: no row needed).
my $part = sql(q{SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
	WHERE i.inhparent = 'bv_audit.public__tr'::regclass AND c.relname ~ '_p[0-9]{6}$'
	  AND EXISTS (SELECT 1 FROM bv_audit.public__tr a WHERE a.tableoid = c.oid) ORDER BY 1 LIMIT 1});
for my $q ("TRUNCATE bv_audit.$part", "DELETE FROM bv_audit.$part", "UPDATE bv_audit.$part SET audit_actor = 'x'",
	'TRUNCATE bv_audit.public__tr_default', 'TRUNCATE bv_audit.public__tr')
{
	my ($rc, undef, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\n$q");
	like($err, qr/ERROR:\s+42501/, "superuser: $q refused (42501)");
}
is(sql('SELECT count(*) FROM bv_audit.public__tr'), '5', 'the records are all there');

# Columns named like the audit metadata are refused, by CREATE or by RENAME.
sql(q{CREATE TABLE meta (id int PRIMARY KEY, v text); SELECT bv_audit.enable('public.meta');});
for my $ddl ('ADD COLUMN audit_actor text', 'ADD COLUMN audit_ts timestamptz', 'RENAME COLUMN v TO audit_op')
{
	my ($rc) = $node->psql('bitvelocity', "ALTER TABLE meta $ddl");
	isnt($rc, 0, "ALTER TABLE ... $ddl refused on a tracked table");
}

# A TOAST-sized, incompressible value round-trips through the history.
sql(q{
CREATE TABLE big (id int PRIMARY KEY, doc text, n int);
SELECT bv_audit.enable('public.big');
INSERT INTO big SELECT 1, string_agg(md5(g::text), ''), 0 FROM generate_series(1, 20000) g;
UPDATE big SET n = 1;
});
is(sql(q{SELECT string_agg(h.operation || ':' || coalesce(h.changed_columns::text, '') || ':' || (md5(h.row_data->>'doc') = md5(b.doc))::text, ' ' ORDER BY h.audit_id)
	FROM bv_audit.history('public.big', '{"id": 1}') h, big b}), 'I::true U:{n}:true',
	'a 640 kB value is recorded whole, and a U of another column names only that column');

# ------------------------------------------------ a seeded model of DML forms
# MERGE, INSERT ... ON CONFLICT, COPY, writable CTEs, key moves and deletes
# by the table's owner, in random order; after every statement as_of(now())
# must equal the table, and every key's last record must be its row.
my $seed = $ENV{BV_RED5B_SEED} // int(rand(1_000_000));
diag("seed $seed (BV_RED5B_SEED=$seed replays)");
srand($seed);
sql(q{
CREATE TABLE dml (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
ALTER TABLE dml OWNER TO app_owner;
SELECT bv_audit.enable('public.dml');
});
my @forms = (
	sub { my ($k, $v) = @_; "INSERT INTO dml VALUES ($k, '$v') ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = dml.n + 1" },
	sub { my ($k, $v) = @_; "INSERT INTO dml VALUES ($k, '$v') ON CONFLICT DO NOTHING" },
	sub { my ($k, $v) = @_;
		"MERGE INTO dml t USING (VALUES ($k, '$v')) s(id, v) ON t.id = s.id
		 WHEN MATCHED AND t.n > 2 THEN DELETE WHEN MATCHED THEN UPDATE SET v = s.v, n = t.n + 1
		 WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)" },
	sub { my ($k, $v) = @_;
		"WITH d AS (DELETE FROM dml WHERE id = $k RETURNING id) INSERT INTO dml SELECT $k + 0, '$v' FROM (SELECT count(*) FROM d) x ON CONFLICT DO NOTHING" },
	sub { my ($k, $v) = @_; "WITH u AS (UPDATE dml SET v = '$v' WHERE id = $k RETURNING id) UPDATE dml SET n = n + 1 WHERE id IN (SELECT id + 1 FROM u)" },
	sub { my ($k) = @_; my $to = $k + 20 + int(rand(20)); "UPDATE dml SET id = $to WHERE id = $k AND NOT EXISTS (SELECT 1 FROM dml WHERE id = $to)" },
	sub { my ($k) = @_; "DELETE FROM dml WHERE id = $k" },
	sub { my ($k, $v) = @_; "DELETE FROM dml WHERE id = $k; COPY dml (id, v) FROM STDIN;\n$k\t$v\n\\.\n" },
	sub { "UPDATE dml SET n = n + 1 WHERE id % 3 = 0" },
);
my $bad = 0;
for my $step (1 .. 120)
{
	my $k = 1 + int(rand(12));
	my $v = join '', map { ('a' .. 'f')[ int(rand(6)) ] } 1 .. 3;
	my $q = $forms[ int(rand(@forms)) ]->($k, $v);
	sql("SET ROLE app_owner;\n$q");
	my $table = sql(q{SELECT coalesce(jsonb_agg(to_jsonb(d) ORDER BY d.id), '[]') FROM dml d});
	my $asof = sql(q{SELECT coalesce(jsonb_agg(r ORDER BY (r->>'id')::int), '[]') FROM bv_audit.as_of('public.dml', now()) r});
	if ($table ne $asof)
	{
		$bad++;
		diag("step $step: $q\n table: $table\n as_of: $asof") if $bad <= 3;
	}
}
is($bad, 0, "120 random DML statements (MERGE, ON CONFLICT, COPY, CTEs, key moves): as_of(now()) equals the table after each");
is(sql(q{SELECT count(*) FROM dml d WHERE to_jsonb(d) IS DISTINCT FROM
	(SELECT h.row_data FROM bv_audit.history('public.dml', jsonb_build_object('id', d.id)) h ORDER BY h.audit_id DESC LIMIT 1)}),
	'0', 'every row\'s last record is the row');

done_testing();
