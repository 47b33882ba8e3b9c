# bv_ml models against the libraries themselves: train with python3-xgboost
# and python3-sklearn (tools/bv_ml_export.py, seeded), export, register, and
# compare ml.predict / ml.predict_proba / ml.predict_batch with the
# library's own predict() on thousands of rows (with missing values, NULL
# and NaN, for the trees): equal within 1e-6.  Then the per-backend cache:
# an open session follows another session's change of the registry row.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $seed = $ENV{BV_ML_SEED} // (time() % 100000);
diag("seed $seed (rerun with BV_ML_SEED=$seed)");

my $node = BvTest::new_node('ml');
BvTest::create_suite_db($node);

my $py = '/usr/bin/python3';
my $export = BvTest::src() . '/tools/bv_ml_export.py';
my $rows = 3000;

# kind => [registry kind, what the library's predict returns]
my %kinds = (
	xgb_reg => [ 'xgboost', 'value' ],
	xgb_binary => [ 'xgboost', 'value' ],
	xgb_multi => [ 'xgboost', 'proba' ],
	sk_linear => [ 'sklearn_linear', 'value' ],
	sk_logistic => [ 'sklearn_logistic', 'value' ],
	sk_multinomial => [ 'sklearn_logistic', 'proba' ],);

foreach my $kind (sort keys %kinds)
{
	my ($regkind, $shape) = @{ $kinds{$kind} };
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/$kind";
	my @args = ($py, $export, 'train', $kind, $dir, '--rows', $rows,
		'--seed', $seed, '--features', 6 + $seed % 5);
	push @args, '--trees', 40, '--depth', 5 if $kind =~ /^xgb/;
	my ($out, $err) = run_command(\@args);
	ok(-s "$dir/model.json", "$kind: trained and exported") or diag($err);

	$node->safe_psql('bitvelocity', qq{
		CREATE TABLE rows_$kind (id int PRIMARY KEY, x float8[], y float8[]);
		COPY rows_$kind FROM '$dir/rows.csv' WITH (FORMAT csv);
		SELECT ml.register_model('$kind', '$regkind', pg_read_file('$dir/model.json')::jsonb);
	});
	is($node->safe_psql('bitvelocity', "SELECT count(*) FROM rows_$kind"), $rows, "$kind: $rows rows loaded");

	if ($kind =~ /^xgb/)
	{
		my ($nulls, $nans) = split /\|/, $node->safe_psql('bitvelocity', qq{
			SELECT count(*) FILTER (WHERE array_position(x, NULL) IS NOT NULL),
			       count(*) FILTER (WHERE 'NaN'::float8 = ANY (x)) FROM rows_$kind});
		ok($nulls > 100 && $nans > 100, "$kind: rows with NULL ($nulls) and NaN ($nans) missing values");
	}

	my $diff = $shape eq 'value'
	  ? "abs(ml.predict('$kind', x) - y[1])"
	  : "(SELECT max(abs(p - q)) FROM unnest(ml.predict_proba('$kind', x), y) AS u(p, q))";
	my ($n, $over, $maxdiff, $exact) = split /\|/, $node->safe_psql('bitvelocity', qq{
		SELECT count(*), count(*) FILTER (WHERE d > 1e-6), max(d), count(*) FILTER (WHERE d = 0)
		  FROM (SELECT $diff AS d FROM rows_$kind) s});
	is($n, $rows, "$kind: every row scored");
	is($over, 0, "$kind: ml.predict equals the library's predict() within 1e-6 on $rows rows (max diff $maxdiff, $exact exact)");

	if ($shape eq 'proba')
	{
		# the class ml.predict returns is the most probable one
		is($node->safe_psql('bitvelocity', qq{
			SELECT count(*) FROM rows_$kind
			 WHERE y[ml.predict('$kind', x)::int + 1] < (SELECT max(v) FROM unnest(y) v)}),
			0, "$kind: ml.predict returns the most probable class");
	}

	# the batch form agrees with the row form (200 rows in one array)
	is($node->safe_psql('bitvelocity', qq{
		WITH b AS (SELECT array_agg(x ORDER BY id) AS m FROM rows_$kind WHERE id <= 200)
		SELECT count(*) FROM ml.predict_batch('$kind', (SELECT m FROM b)) p
		  JOIN rows_$kind r ON r.id = p.ordinality
		 WHERE p.prediction IS DISTINCT FROM ml.predict('$kind', r.x)}),
		0, "$kind: ml.predict_batch equals ml.predict row by row");
}

# ---- the cache follows the registry across sessions ----
my $scorer = $node->background_psql('bitvelocity');
my $x = "(SELECT x FROM rows_xgb_reg WHERE id = 1)";
my $v1 = $scorer->query_safe("SELECT ml.predict('xgb_reg', $x)");
is($v1, $node->safe_psql('bitvelocity', "SELECT ml.predict('xgb_reg', $x)"),
	'cache: an open session scores as a fresh one');
# replace the document with the regression model shifted by base_score + 1000
$node->safe_psql('bitvelocity', q{
	UPDATE ml.models SET document = jsonb_set(document, '{learner,learner_model_param,base_score}',
		to_jsonb(((document #>> '{learner,learner_model_param,base_score}')::float8 + 1000)::text))
	 WHERE name = 'xgb_reg'});
my $v2 = $scorer->query_safe("SELECT ml.predict('xgb_reg', $x)");
ok(abs($v2 - $v1 - 1000) < 1e-2, "cache: another session's update is used by the next statement ($v1 -> $v2)");
my $writer = $node->background_psql('bitvelocity');
$writer->query_safe(q{BEGIN; UPDATE ml.models SET document = jsonb_set(document, '{learner,learner_model_param,base_score}', '"0"') WHERE name = 'xgb_reg'});
is($scorer->query_safe("SELECT ml.predict('xgb_reg', $x)"), $v2, 'cache: an uncommitted update is not used');
$writer->query_safe('ROLLBACK');
is($scorer->query_safe("SELECT ml.predict('xgb_reg', $x)"), $v2, 'cache: a rolled-back update changes nothing');
# a new production version is picked up by name
$node->safe_psql('bitvelocity', q{
	SELECT ml.register_model('xgb_reg', 'xgboost', document, stage => 'production') FROM ml.models WHERE name = 'xgb_multi'});
is($scorer->query_safe("SELECT ml.predict_proba('xgb_reg', x) = y FROM rows_xgb_multi WHERE id = 7"), 't',
	'cache: a name follows its new production version');
$writer->quit;
$scorer->quit;

$node->stop;
done_testing();
