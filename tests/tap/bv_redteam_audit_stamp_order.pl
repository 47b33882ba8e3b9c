# Red-team round 3 (bv_audit 0.5.0), two findings on a table's owner who is
# not a superuser:
#
# 1. Stamp columns forged by a BEFORE row trigger of the owner's that fires
#    after bv_audit_stamp (triggers fire in name order: "zz_forge" sorts
#    after it) and sets created_by / created_at.  Such a trigger is now
#    refused on a stamped table, at CREATE TRIGGER and at ALTER TRIGGER ...
#    RENAME; one that fires before the stamp trigger is fine (the stamp
#    trigger overwrites whatever it set).
# 2. A key rewritten by ALTER COLUMN ... TYPE ... USING is recorded as an
#    UPDATE of the key is: a D of the old key and an I of the new one (it
#    was a D and a U, so the new key's history began with a U).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('stamporder');
BvTest::create_suite_db($node);
sub sql { return $node->safe_psql('bitvelocity', $_[0]); }
sub try_sql
{
	my ($rc, $out, $err) = $node->psql('bitvelocity', "\\set VERBOSITY verbose\n$_[0]");
	return ($rc, $err);
}

sql(q{
CREATE ROLE app_owner LOGIN;
CREATE SCHEMA app AUTHORIZATION app_owner;
SET ROLE app_owner;
CREATE TABLE app.t (id int PRIMARY KEY, v text);
CREATE FUNCTION app.forge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_by := 'alice';
    NEW.created_at := '2000-01-01';
    NEW.updated_by := 'alice';
    RETURN NEW;
END $$;
RESET ROLE;
SELECT bv_audit.enable('app.t');
SELECT bv_audit.stamp('app.t');
});

my ($rc, $err) = try_sql(q{SET ROLE app_owner;
	CREATE TRIGGER zz_forge BEFORE INSERT OR UPDATE ON app.t FOR EACH ROW EXECUTE FUNCTION app.forge()});
isnt($rc, 0, 'a BEFORE row trigger that would fire after the stamp trigger is refused');
like($err, qr/ERROR:\s+42501:.*would fire after the stamp trigger/, '42501, saying why');
like($err, qr/HINT:.*sorts before "bv_audit_stamp"/, 'with a hint');
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgname = 'zz_forge'}), '0', 'the trigger is not there');

# An AFTER trigger, or a BEFORE DELETE one, cannot change the stamps: allowed.
($rc, $err) = try_sql(q{SET ROLE app_owner;
	CREATE TRIGGER zz_after AFTER INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.forge()});
is($rc, 0, 'an AFTER trigger sorting after the stamp trigger is allowed') or diag($err);

# One that fires before the stamp trigger is allowed: the stamp wins.
($rc, $err) = try_sql(q{SET ROLE app_owner;
	CREATE TRIGGER a_forge BEFORE INSERT OR UPDATE ON app.t FOR EACH ROW EXECUTE FUNCTION app.forge()});
is($rc, 0, 'a BEFORE trigger firing before the stamp trigger is allowed') or diag($err);
sql(q{SET ROLE app_owner; INSERT INTO app.t (id, v) VALUES (5, 'x')});
is(sql(q{SELECT created_by || ' ' || (created_at > now() - interval '1 hour') FROM app.t WHERE id = 5}),
	'postgres true', 'the stamp trigger has the last word (the actor is the session user)');

# Renaming it to fire after the stamp trigger is refused too.
($rc, $err) = try_sql(q{SET ROLE app_owner; ALTER TRIGGER a_forge ON app.t RENAME TO zz_forge});
isnt($rc, 0, 'renaming it to fire after the stamp trigger is refused');
like($err, qr/42501/, 'with 42501');

# A superuser may (it could bypass anything anyway).
($rc, $err) = try_sql(q{CREATE TRIGGER zz_admin BEFORE INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.forge()});
is($rc, 0, 'a superuser may create it') or diag($err);
sql(q{DROP TRIGGER zz_admin ON app.t});

# 2. A key rewritten by USING: D of the old key, I of the new one.
sql(q{SET ROLE app_owner; INSERT INTO app.t (id, v) VALUES (1, 'one')});
sql(q{SET ROLE app_owner; ALTER TABLE app.t ALTER COLUMN id TYPE bigint USING id + 1000});
is(sql(q{SELECT string_agg(operation, ' ' ORDER BY audit_id) FROM bv_audit.history('app.t', '{"id": 1001}')}),
	'I', 'the new key\'s history begins with an I');
is(sql(q{SELECT string_agg(operation, ' ' ORDER BY audit_id) FROM bv_audit.history('app.t', '{"id": 1}')}),
	'I D', 'the old key\'s history ends with a D');
is(sql(q{SELECT count(*) FROM bv_audit.as_of('app.t', now())}), '2', 'as_of(now()): the two rows, under their keys');

done_testing();
