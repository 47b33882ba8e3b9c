# bv_graphql through real PostgREST (POST /rpc/graphql): two customers'
# tokens and row-level security through any nesting; anonymous callers see
# only the catalog; graphql-js (the reference implementation, from npm)
# builds the client schema from the standard introspection query and
# validates documents the same way bv_graphql does; and a seeded randomized
# check that list queries with random filters, orders and cursors return
# exactly what the equivalent SQL returns.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BvTest;

my $node = BvTest::new_node('graphql');
BvTest::create_suite_db($node);
$node->safe_psql('bitvelocity', BvTest::slurp_src('sql/bv_commerce/demo-data.sql'));

my $secret = join '', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 48;
$node->safe_psql('bitvelocity',
	"INSERT INTO bv.jwt_keys (kid, alg, key) VALUES ('postgrest', 'HS256', '$secret')");
my ($pgrst, $url) = BvTest::start_postgrest($node, jwt_secret => $secret);
my $exp = time() + 600;
my $token = sub {
	my ($role, $sub) = @_;
	return BvTest::jwt_hs256($secret, qq({"role":"$role","sub":"$sub","exp":$exp}));
};
my %tok = (alice => $token->('bv_user', 'alice'), bob => $token->('bv_user', 'bob'));
my $json = JSON::PP->new->canonical;

sub gql
{
	my ($who, $query, $vars) = @_;
	my ($status, $body) = BvTest::http('POST', "$url/rpc/graphql",
		token => $who ? $tok{$who} : undef,
		body => $json->encode({ query => $query, variables => $vars // {} }));
	my $r = eval { decode_json($body) } // { raw => $body };
	return ($status, $r);
}

# Orders for both customers through the REST API, addresses directly.
for my $o ([ 'alice', 'a-1', 'BOOK-PGI' ], [ 'alice', 'a-2', 'TSHIRT-M' ], [ 'bob', 'b-1', 'BOOK-PGI' ])
{
	my ($status) = BvTest::http('POST', "$url/rpc/place_order", token => $tok{ $o->[0] },
		headers => ["Idempotency-Key: $o->[1]"],
		body => qq({"lines":[{"sku":"$o->[2]","quantity":1}],"shipping_address":{"city":"Oslo"}}));
	is($status, '200', "place_order for $o->[0]");
}
$node->safe_psql('bitvelocity', q{
INSERT INTO commerce.addresses (customer_id, name, line1, city, postal_code, country)
VALUES ('alice', 'Alice', '1 Main St', 'Oslo', '0150', 'NO'), ('bob', 'Bob', '2 Side St', 'Bergen', '5003', 'NO');
});

# ---------- RLS through GraphQL ----------
my ($status, $r) = gql('alice', '{ ordersCollection { totalCount edges { node { customerId } } } }');
is($status, '200', 'POST /rpc/graphql: 200');
is($r->{data}{ordersCollection}{totalCount}, 2, 'alice counts her two orders');
is_deeply([ map { $_->{node}{customerId} } @{ $r->{data}{ordersCollection}{edges} } ], [ 'alice', 'alice' ],
	'alice lists only her orders');

# Every path to customer data: from the catalog down to order lines and
# carts, to-one back up to orders, the api views, node(nodeId).
my $deep = q{
{
  skusCollection { edges { node { code
    orderLinesCollection { totalCount edges { node { order { customerId nodeId
      orderLinesCollection { edges { node { order { customerId } } } }
      paymentsCollection { edges { node { order { customerId } } } }
      orderEventsCollection { edges { node { order { customerId } } } } } } } }
    cartItemsCollection { edges { node { cart { customerId cartItemsCollection { totalCount } } } } }
  } } }
  ordersCollection { edges { node { customerId nodeId } } }
  addressesCollection { totalCount edges { node { customerId } } }
  cartsCollection { edges { node { customerId } } }
  apiOrdersCollection { edges { node { customerId } } }
  apiOrderLinesCollection { edges { node { orderId } } }
}};
my %seen;
sub customers
{
	my ($v, $into) = @_;
	if (ref $v eq 'HASH')
	{
		for my $k (keys %$v)
		{
			$into->{ $v->{$k} } = 1 if $k eq 'customerId' && defined $v->{$k};
			customers($v->{$k}, $into);
		}
	}
	elsif (ref $v eq 'ARRAY') { customers($_, $into) for @$v; }
	return;
}
for my $who ('alice', 'bob')
{
	($status, $r) = gql($who, $deep);
	is($status, '200', "$who: the deep query answers");
	ok(!$r->{errors}, "$who: the deep query has no errors") or diag($json->encode($r->{errors}));
	my %c;
	customers($r->{data}, \%c);
	is_deeply([ sort keys %c ], [$who], "$who: only $who\'s rows at any depth");
	$seen{$who} = $r;
}
is($seen{bob}{data}{addressesCollection}{totalCount}, 1, 'bob counts one address');

# alice cannot reach bob's order by its nodeId, nor filter her way to it.
my $bob_node = $seen{bob}{data}{ordersCollection}{edges}[0]{node}{nodeId};
($status, $r) = gql('alice', 'query N($id: ID!) { node(nodeId: $id) { nodeId } }', { id => $bob_node });
is_deeply($r, { data => { node => undef } }, "alice: bob's order by nodeId is null");
($status, $r) = gql('alice', 'query N($id: ID!) { ordersCollection(filter: {nodeId: {eq: $id}}) { totalCount } }',
	{ id => $bob_node });
is($r->{data}{ordersCollection}{totalCount}, 0, "alice: filtering on bob's nodeId finds nothing");
($status, $r) = gql('alice', '{ ordersCollection(filter: {customerId: {eq: "bob"}}) { totalCount } }');
is($r->{data}{ordersCollection}{totalCount}, 0, "alice: filtering on bob's id finds nothing");
# alice may update her address, not bob's (RLS hides it: nothing matches)
($status, $r) = gql('alice', 'mutation { updateAddressesCollection(set: {city: "X"}, filter: {customerId: {eq: "bob"}}) { affectedCount } }');
is($r->{data}{updateAddressesCollection}{affectedCount}, 0, "alice: updating bob's address changes nothing");
is($node->safe_psql('bitvelocity', "SELECT city FROM commerce.addresses WHERE customer_id = 'bob'"), 'Bergen',
	"bob's address is unchanged");
($status, $r) = gql('alice', 'mutation { insertIntoAddressesCollection(objects: [{customerId: "bob", name: "x", line1: "y", city: "z", postalCode: "1", country: "NO"}]) { affectedCount } }');
is($r->{errors}[0]{extensions}{code}, '42501', "alice: inserting an address for bob is refused by RLS")
  or diag($json->encode($r));

# Anonymous callers: the catalog, nothing of orders.
($status, $r) = gql(undef, '{ productsCollection { totalCount } }');
is($r->{data}{productsCollection}{totalCount}, 2, 'anonymous: the catalog');
($status, $r) = gql(undef, '{ ordersCollection { totalCount } }');
like($r->{errors}[0]{message}, qr/Cannot query field "ordersCollection"/, 'anonymous: no orders in the schema');
($status, $r) = gql(undef, '{ __type(name: "Mutation") { fields { name } } }');
is_deeply([ grep { /^(insertInto|update|deleteFrom)/ } map { $_->{name} } @{ $r->{data}{__type}{fields} // [] } ], [],
	'anonymous: no insert, update or delete mutations');

# ---------- the schema cached in PostgREST's backends follows DDL made elsewhere ----------
# (PostgREST's pooled connections are other backends than psql's: the
# relcache invalidation of the table, and the event trigger's for COMMENT and
# new tables, reach them.)
my $desc = q[{ __type(name: "Addresses") { description } }];
($status, $r) = gql('alice', $desc);
$node->safe_psql('bitvelocity', q[COMMENT ON TABLE commerce.addresses IS 'Where parcels go.']);
($status, $r) = gql('alice', $desc);
is($r->{data}{__type}{description}, 'Where parcels go.', 'a COMMENT made in another backend is the new description');
$node->safe_psql('bitvelocity', 'REVOKE SELECT ON commerce.addresses FROM bv_user');
($status, $r) = gql('alice', '{ addressesCollection { totalCount } }');
like($r->{errors}[0]{message} // '', qr/Cannot query field "addressesCollection"/,
	'a REVOKE made in another backend removes the collection');
$node->safe_psql('bitvelocity', 'GRANT SELECT ON commerce.addresses TO bv_user');
($status, $r) = gql('alice', '{ addressesCollection { totalCount } }');
is($r->{data}{addressesCollection}{totalCount}, 1, 'the GRANT brings it back');
$node->safe_psql('bitvelocity', 'CREATE TABLE commerce.gql_new (id int PRIMARY KEY, label text); '
	  . "INSERT INTO commerce.gql_new VALUES (1, 'fresh'); GRANT SELECT ON commerce.gql_new TO bv_anon");
($status, $r) = gql(undef, '{ gqlNewCollection { edges { node { label } } } }');
is_deeply($r, { data => { gqlNewCollection => { edges => [ { node => { label => 'fresh' } } ] } } },
	'a table created in another backend is queryable at once');
$node->safe_psql('bitvelocity', 'DROP TABLE commerce.gql_new');

# ---------- graphql-js ----------
SKIP:
{
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/graphql-js";
	mkdir $dir;
	system('cp', BvTest::src() . '/tests/tap/bv_graphql_js/package.json',
		BvTest::src() . '/tests/tap/bv_graphql_js/package-lock.json',
		BvTest::src() . '/tests/tap/bv_graphql_js/check.mjs', $dir) == 0 or die 'cp failed';
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'npm', 'ci', '--no-audit', '--no-fund', '--loglevel=error', '--prefix', $dir ],
		'>', \$out, '2>', \$err, init => sub { $ENV{npm_config_cache} = "$dir/.npm"; $ENV{HOME} = $dir; });
	# the npm registry is part of this project's environment: a failed
	# install is a failure, not a reason to skip
	ok(-d "$dir/node_modules/graphql", 'npm installed graphql-js') or diag($err);
	skip "npm could not install graphql-js", 8 unless -d "$dir/node_modules/graphql";
	my @docs = (
		{ name => 'list', query => '{ productsCollection(first: 2, orderBy: [{name: AscNullsLast}]) { edges { cursor node { nodeId name category { slug } } } pageInfo { hasNextPage endCursor } } }' },
		{ name => 'variables', query => 'query Q($f: ProductsFilter, $n: Int = 1) { productsCollection(filter: $f, first: $n) { totalCount } }', variables => { f => { name => { ilike => '%shirt%' } } } },
		{ name => 'fragments', query => 'query { ...Q ... on Query { productsCollection(first: 1) { totalCount } } } fragment Q on Query { __typename skusCollection { edges { node { ...S } } } } fragment S on Skus { code product { name } }' },
		{ name => 'mutation', query => 'mutation { insertIntoAddressesCollection(objects: [{name: "n", line1: "l", city: "c", postalCode: "p", country: "NO"}]) { affectedCount records { id customerId } } }' },
		{ name => 'unknown field', query => '{ productsCollection { edges { node { nope } } } }' },
		{ name => 'unknown argument', query => '{ productsCollection(size: 3) { totalCount } }' },
		{ name => 'missing subselection', query => '{ productsCollection }' },
		{ name => 'leaf with subselection', query => '{ productsCollection { totalCount { x } } }' },
		{ name => 'unknown fragment', query => '{ ...Nope }' },
		{ name => 'bad enum', query => '{ productsCollection(orderBy: [{name: Sideways}]) { totalCount } }' },
	);
	my $docs_file = "$dir/docs.json";
	open my $fh, '>', $docs_file or die;
	print $fh encode_json(\@docs);
	close $fh;
	($out, $err) = ('', '');
	IPC::Run::run([ 'node', "$dir/check.mjs", "$url/rpc/graphql", $tok{alice}, $docs_file ], '>', \$out, '2>', \$err);
	my $res = eval { decode_json($out) };
	ok($res && !$res->{error}, 'graphql-js: buildClientSchema and assertValidSchema accept the introspection answer')
	  or diag("out: $out\nerr: $err");
	cmp_ok($res->{types} // 0, '>', 50, "graphql-js: the client schema has $res->{types} types");
	my %r = map { $_->{name} => $_ } @{ $res->{docs} // [] };
	for my $n ('list', 'variables', 'fragments', 'mutation')
	{
		ok($r{$n}{js_valid} && $r{$n}{bv_ok}, "graphql-js and bv_graphql both accept: $n")
		  or diag($json->encode($r{$n}));
	}
	my @bad = ('unknown field', 'unknown argument', 'missing subselection', 'leaf with subselection',
		'unknown fragment', 'bad enum');
	is_deeply([ grep { $r{$_}{js_valid} || $r{$_}{bv_ok} } @bad ], [],
		'graphql-js and bv_graphql both refuse the invalid documents')
	  or diag($json->encode([ map { $r{$_} } @bad ]));
}

# ---------- randomized: GraphQL lists == the equivalent SQL ----------
my $seed = $ENV{BV_SEED} // time();
note("randomized check seed: $seed (BV_SEED=$seed reruns it)");
srand($seed);
my @rows;
for my $id (1 .. 60)
{
	my $a = rand() < 0.2 ? 'NULL' : int(rand(6));
	my $b = rand() < 0.2 ? 'NULL' : "'" . (qw(x y z xy Xz yy))[ int(rand(6)) ] . "'";
	my $c = rand() < 0.2 ? 'NULL' : sprintf('%.2f', rand(20) - 5);
	push @rows, "($id, $a, $b, $c)";
}
$node->safe_psql('bitvelocity', 'CREATE SCHEMA gqlrand; CREATE TABLE gqlrand.t (id int PRIMARY KEY, a int, b text, c numeric(6,2));'
	  . 'INSERT INTO gqlrand.t VALUES ' . join(',', @rows));
# Walks every page of one list query (forward with first/after, or backward
# with last/before) and returns the ids in order: the GraphQL side of the
# comparison, one round trip per random query.
$node->safe_psql('bitvelocity', q{
CREATE FUNCTION gqlrand.walk(vars jsonb, backward boolean) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    fwd text := 'query P($f: TFilter, $o: [TOrderBy!], $n: Int, $c: Cursor) { tCollection(filter: $f, orderBy: $o, first: $n, after: $c) { edges { node { id } } pageInfo { more: hasNextPage c: endCursor } } }';
    bwd text := 'query P($f: TFilter, $o: [TOrderBy!], $n: Int, $c: Cursor) { tCollection(filter: $f, orderBy: $o, last: $n, before: $c) { edges { node { id } } pageInfo { more: hasPreviousPage c: startCursor } } }';
    r jsonb;
    ids text[] := '{}';
    page text[];
BEGIN
    FOR i IN 1..200 LOOP
        r := graphql.resolve(CASE WHEN backward THEN bwd ELSE fwd END, vars);
        IF r ? 'errors' THEN
            RETURN r::text;
        END IF;
        r := r -> 'data' -> 'tCollection';
        page := ARRAY(SELECT e -> 'node' ->> 'id' FROM jsonb_array_elements(r -> 'edges') e);
        ids := CASE WHEN backward THEN page || ids ELSE ids || page END;
        EXIT WHEN NOT (r -> 'pageInfo' ->> 'more')::boolean;
        vars := vars || jsonb_build_object('c', r -> 'pageInfo' ->> 'c');
    END LOOP;
    RETURN array_to_string(ids, ',');
END $$;
});

my %ops = (
	a => [ [ 'eq', '=' ], [ 'neq', '<>' ], [ 'lt', '<' ], [ 'lte', '<=' ], [ 'gt', '>' ], [ 'gte', '>=' ], ['in'], ['is'] ],
	b => [ [ 'eq', '=' ], [ 'neq', '<>' ], [ 'like', 'LIKE' ], [ 'ilike', 'ILIKE' ], ['in'], ['is'] ],
	c => [ [ 'lt', '<' ], [ 'gte', '>=' ], ['is'] ]);
sub rand_value
{
	my ($col) = @_;
	return int(rand(6)) if $col eq 'a';
	return (qw(x y z xy))[ int(rand(4)) ] if $col eq 'b';
	return sprintf('%.2f', rand(20) - 5);
}
sub sql_lit { my ($col, $v) = @_; return $col eq 'b' ? "'$v'" : $v; }
# a random filter: (GraphQL value, SQL condition)
sub rand_filter
{
	my ($depth) = @_;
	my (%f, @sql);
	for my $col (grep { rand() < 0.4 } qw(a b c))
	{
		my $op = $ops{$col}[ int(rand(@{ $ops{$col} })) ];
		if ($op->[0] eq 'is')
		{
			my $null = rand() < 0.5;
			$f{$col} = { is => $null ? 'NULL' : 'NOT_NULL' };
			push @sql, "$col IS " . ($null ? 'NULL' : 'NOT NULL');
		}
		elsif ($op->[0] eq 'in')
		{
			my @v = map { rand_value($col) } 1 .. int(rand(3));
			$f{$col} = { in => [ map { $col eq 'b' ? $_ : $_ + 0 } @v ] };
			push @sql, @v ? "$col IN (" . join(',', map { sql_lit($col, $_) } @v) . ')' : 'false';
		}
		else
		{
			my $v = rand_value($col);
			$v = $v =~ /^x/ ? "$v%" : "%$v" if $op->[0] =~ /like/;
			$v = uc $v if $op->[0] eq 'ilike' && rand() < 0.5;
			$f{$col} = { $op->[0] => $col eq 'b' ? $v : $v + 0 };
			$f{$col}{ $op->[0] } = "$v" if $col eq 'c';
			push @sql, "$col $op->[1] " . sql_lit($col, $v);
		}
	}
	if ($depth < 2 && rand() < 0.3)
	{
		my ($g1, $s1) = rand_filter($depth + 1);
		my ($g2, $s2) = rand_filter($depth + 1);
		$f{or} = [ $g1, $g2 ];
		push @sql, "(coalesce($s1, false) OR coalesce($s2, false))";
	}
	if ($depth < 2 && rand() < 0.2)
	{
		my ($g, $s) = rand_filter($depth + 1);
		$f{not} = $g;
		push @sql, "NOT coalesce($s, false)";
	}
	return (\%f, @sql ? '(' . join(' AND ', map { "coalesce($_, false)" } @sql) . ')' : 'true');
}

my $failures = 0;
for my $i (1 .. 40)
{
	my ($filter, $where) = rand_filter(0);
	my @keys = grep { rand() < 0.5 } qw(a b c);
	my @order = map { [ $_, rand() < 0.5 ? 'Asc' : 'Desc', rand() < 0.5 ? 'First' : 'Last' ] } @keys;
	my $gorder = [ map { { $_->[0] => "$_->[1]Nulls$_->[2]" } } @order ];
	my $sorder = join(', ', (map { "$_->[0] " . uc($_->[1]) . " NULLS " . uc($_->[2]) } @order), 'id ASC');
	my $backward = rand() < 0.3;
	my $n = 1 + int(rand(7));
	my $expected = $node->safe_psql('bitvelocity', "SELECT string_agg(id::text, ',' ORDER BY $sorder) FROM gqlrand.t WHERE $where");
	my $got = $node->safe_psql('bitvelocity', "SET bv_graphql.schemas = 'gqlrand'; SELECT gqlrand.walk(\$v\$"
		  . $json->encode({ f => $filter, o => $gorder, n => $n }) . "\$v\$, " . ($backward ? 'true' : 'false') . ')');
	if ($got ne $expected)
	{
		$failures++;
		diag("seed $seed query $i: filter " . $json->encode($filter) . " order $sorder page $n"
			  . ($backward ? ' backward' : '') . "\n  sql:     $expected\n  graphql: $got");
	}
}
is($failures, 0, "randomized: 40 paginated list queries equal their SQL (seed $seed)");

$pgrst->kill_kill;
$node->stop;
done_testing();
