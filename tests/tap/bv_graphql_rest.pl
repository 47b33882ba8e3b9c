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

# ---------- the response over HTTP keeps the selection order ----------
# (jsonb would sort the keys: "a" before "z", "id" before "name")
{
	my ($st, $body) = BvTest::http('POST', "$url/rpc/graphql", token => $tok{alice},
		body => $json->encode({ query => '{ z: __typename productsCollection(first: 1, orderBy: [{id: AscNullsLast}]) { totalCount edges { node { name id } } } a: __typename }' }));
	is($st, '200', 'ordered response: 200');
	like($body, qr/\A\{"data":\{"z"\s*:\s*"Query",\s*"productsCollection"\s*:\s*\{"totalCount"\s*:\s*\d+,\s*"edges"\s*:\s*\[\{"node"\s*:\s*\{"name"\s*:\s*"[^"]+",\s*"id"\s*:\s*"\d+"\}\}\]\},\s*"a"\s*:\s*"Query"\}\}\z/,
		'POST /rpc/graphql answers with the keys in selection order at every level') or diag($body);
	($st, $body) = BvTest::http('POST', "$url/rpc/graphql", token => $tok{alice},
		body => $json->encode({ query => 'mutation { b: updateAddressesCollection(set: {city: "X"}, atMost: 0) { affectedCount } }' }));
	like($body, qr/\A\{"errors":\[\{"message":.*\],"data":\{"b":null\}\}\z/s, 'errors come first, then data') or diag($body);
}

# ---------- graphql-js ----------
SKIP:
{
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/graphql-js";
	mkdir $dir;
	system('cp', BvTest::src() . '/tests/tap/bv_graphql_js/package.json',
		BvTest::src() . '/tests/tap/bv_graphql_js/package-lock.json',
		BvTest::src() . '/tests/tap/bv_graphql_js/check.mjs', BvTest::src() . '/tests/tap/bv_graphql_js/differ.mjs',
		BvTest::src() . '/tests/tap/bv_graphql_js/post.mjs', $dir) == 0 or die 'cp failed';
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'npm', 'ci', '--no-audit', '--no-fund', '--loglevel=error', '--prefix', $dir ],
		'>', \$out, '2>', \$err, init => sub { $ENV{npm_config_cache} = "$dir/.npm"; $ENV{HOME} = $dir; });
	# the npm registry is part of this project's environment: a failed
	# install is a failure, not a reason to skip
	ok(-d "$dir/node_modules/graphql", 'npm installed graphql-js') or diag($err);
	skip "npm could not install graphql-js", 18 unless -d "$dir/node_modules/graphql";
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
	# Section 5 rules, each document valid or not for both (ok => 1: valid).
	# The fake nodeId names no record: node() answers null.
	my $fake = 'WyJjb21tZXJjZSIsICJwcm9kdWN0cyIsIDk5OTld';
	my @rules = (
		[ 1, 'merge: one field twice through a fragment', '{ a: productsCollection(first: 1) { totalCount } ...F } fragment F on Query { a: productsCollection(first: 1) { edges { node { name } } } }' ],
		[ 1, 'merge: one name on two object types', qq[{ node(nodeId: "$fake") { ... on Products { x: name } ... on Skus { x: code } } }] ],
		[ 1, 'variable with a default in a non-null position', qq[query Q(\$id: ID = "$fake") { node(nodeId: \$id) { nodeId } }] ],
		[ 1, 'list variable', 'query Q($o: [ProductsOrderBy!]) { productsCollection(orderBy: $o) { totalCount } }' ],
		[ 1, 'variable in a directive', 'query Q($s: Boolean!) { __typename @skip(if: $s) }', { s => JSON::PP::false } ],
		[ 1, 'variable used in a fragment only', 'query Q($n: Int) { ...F } fragment F on Query { productsCollection(first: $n) { totalCount } }' ],
		[ 0, 'unused variable', 'query Q($n: Int) { productsCollection { totalCount } }' ],
		[ 0, 'undefined variable', 'query Q { productsCollection(first: $n) { totalCount } }' ],
		[ 0, 'variable undefined by one operation', 'query A($n: Int) { ...F } query B { ...F } fragment F on Query { productsCollection(first: $n) { totalCount } }' ],
		[ 0, 'variable of the wrong type', 'query Q($n: String) { productsCollection(first: $n) { totalCount } }' ],
		[ 0, 'nullable variable in a non-null position', 'query Q($id: ID) { node(nodeId: $id) { nodeId } }' ],
		[ 0, 'item variable in a list position', 'query Q($o: ProductsOrderBy) { productsCollection(orderBy: $o) { totalCount } }' ],
		[ 0, 'list of nullable items for non-null items', 'query Q($i: [BigInt]) { productsCollection(filter: {id: {in: $i}}) { totalCount } }' ],
		[ 0, 'merge: differing arguments', '{ a: productsCollection(first: 1) { totalCount } a: productsCollection(first: 2) { totalCount } }' ],
		[ 0, 'merge: different fields', '{ a: productsCollection { totalCount } a: skusCollection { totalCount } }' ],
		[ 0, 'merge: conflicting subfields', '{ productsCollection { edges { node { x: name } } } productsCollection { edges { node { x: slug } } } }' ],
		[ 0, 'merge: conflicting types', qq[{ node(nodeId: "$fake") { ... on Products { x: name } ... on Skus { x: id } } }] ],
		[ 0, 'unused fragment', '{ __typename } fragment F on Query { __typename }' ],
		[ 0, 'fragment cycle', '{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }' ],
		[ 0, 'impossible spread', '{ productsCollection { edges { node { ... on Skus { code } } } } }' ],
		[ 0, 'fragment on a scalar', '{ ...F } fragment F on String { __typename }' ],
		[ 0, 'unknown variable type', 'query Q($n: Nope) { productsCollection(first: $n) { totalCount } }' ],
		[ 0, 'output type variable', 'query Q($n: Products) { __typename }' ],
		[ 0, 'duplicate operation names', 'query A { __typename } query A { __typename }' ],
		[ 0, 'anonymous among others', '{ __typename } query B { __typename }' ],
		[ 0, 'directive on a query', 'query @skip(if: true) { __typename }' ],
		[ 0, 'directive twice', '{ __typename @skip(if: true) @skip(if: false) }' ],
		[ 0, 'directive without its argument', '{ __typename @include }' ],
		[ 0, 'missing required argument', '{ node { nodeId } }' ],
		[ 0, 'Int out of range', '{ productsCollection(first: 3000000000) { totalCount } }' ],
		[ 0, 'default of the wrong type', 'query Q($n: Int = "x") { productsCollection(first: $n) { totalCount } }' ],
		[ 0, 'duplicate input field', '{ productsCollection(filter: {name: {eq: "a"}, name: {eq: "b"}}) { totalCount } }' ],
		[ 0, 'unknown input field', '{ productsCollection(filter: {nope: {eq: 1}}) { totalCount } }' ],
		[ 0, 'null for a non-null list item', '{ productsCollection(filter: {name: {in: ["a", null]}}) { totalCount } }' ],
		[ 0, 'duplicate argument', '{ productsCollection(first: 1, first: 2) { totalCount } }' ],
		[ 0, 'duplicate variable', 'query Q($n: Int, $n: Int) { productsCollection(first: $n) { totalCount } }' ],
	);
	push @docs, map { { name => "rule: $_->[1]", query => $_->[2], variables => $_->[3] // {} } } @rules;
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
	my @disagree = grep { !$r{"rule: $_->[1]"} || $r{"rule: $_->[1]"}{js_valid} != $_->[0] || $r{"rule: $_->[1]"}{bv_ok} != $_->[0] } @rules;
	is_deeply([ map { $_->[1] } @disagree ], [],
		scalar(@rules) . ' section 5 documents: graphql-js and bv_graphql agree on each, as expected')
	  or diag($json->encode([ map { $r{"rule: $_->[1]"} } @disagree ]));
	# the same words as graphql-js (less its "Did you mean" suggestions)
	my @wording = grep {
		my $d = $r{"rule: $_->[1]"};
		!$_->[0] && $d && ($d->{bv_error} // '') ne (($d->{js_error} // '') =~ s/ Did you mean .*\z//r)
	} @rules;
	is_deeply([ map { $_->[1] } @wording ], [], 'validation messages read as graphql-js\'s')
	  or diag($json->encode([ map { $r{"rule: $_->[1]"} } @wording ]));

	# Seeded randomized documents, about half broken by one mutation:
	# graphql-js (the model) and bv_graphql must agree on each.
	my $vseed = $ENV{BV_SEED} // time();
	# one token sends them all: lift bv.pre_request()'s per-actor rate limit meanwhile
	$node->safe_psql('bitvelocity', 'ALTER SYSTEM SET bv.request_rate = 1000000; ALTER SYSTEM SET bv.request_burst = 1000000; SELECT pg_reload_conf()');
	($out, $err) = ('', '');
	IPC::Run::run([ 'node', "$dir/differ.mjs", "$url/rpc/graphql", $tok{alice}, $vseed, 150 ], '>', \$out, '2>', \$err);
	my $dres = eval { decode_json($out) };
	ok($dres && $dres->{count} == 150 && $dres->{valid} > 20 && $dres->{invalid} > 20,
		"randomized validation: 150 documents, both valid and invalid ones (seed $vseed)") or diag("out: $out\nerr: $err");
	is_deeply($dres->{disagree} // ['no answer'], [], "randomized validation: graphql-js and bv_graphql agree on every document (seed $vseed; BV_SEED=$vseed reruns it)")
	  or diag($json->encode([ grep { defined } @{ $dres->{disagree} // [] }[ 0 .. 4 ] ]));
	$node->safe_psql('bitvelocity', 'ALTER SYSTEM RESET bv.request_rate; ALTER SYSTEM RESET bv.request_burst; SELECT pg_reload_conf()');

	# Name clashes: tables and columns whose GraphQL names collide still
	# give a schema graphql-js accepts, each name mapped deterministically.
	$node->safe_psql('bitvelocity', q{
CREATE TYPE commerce.gql_clash_filter AS ENUM ('one', 'two');
CREATE TYPE commerce.gql_flag AS ENUM ('true', 'false');
CREATE TABLE commerce.gql_clash (id int PRIMARY KEY, a_b int, "aB" int, node_id int, "and" text, "ünï" int, n int,
                                 f commerce.gql_clash_filter, g commerce.gql_flag);
CREATE TABLE commerce."gqlClash" (id int PRIMARY KEY, x int);
CREATE TABLE commerce.gql_clash_connection (id int PRIMARY KEY);
CREATE TABLE commerce.page_info (id int PRIMARY KEY);
COMMENT ON TABLE commerce.page_info IS '@graphql({"name": "__Reserved"})';
CREATE FUNCTION commerce.gql_clash_collection() RETURNS int STABLE LANGUAGE sql AS 'SELECT 7';
INSERT INTO commerce.gql_clash VALUES (1, 10, 11, 12, 'and', 13, 14, 'two', 'true');
INSERT INTO commerce."gqlClash" VALUES (1, 20);
GRANT SELECT ON commerce.gql_clash, commerce."gqlClash", commerce.gql_clash_connection, commerce.page_info TO bv_user;
GRANT EXECUTE ON FUNCTION commerce.gql_clash_collection() TO bv_user;
});
	my $clash_q = '{ gqlClashCollection { edges { node { id x } } } '
	  . 'commerceGqlClashCollection { edges { node { a_b aB node_id and_2 n n_2 f g } } } gqlClashCollection_2 '
	  . 'commerceGqlClashConnection2Collection { totalCount } commercePageInfoCollection { totalCount } '
	  . 'c: __type(name: "CommerceGqlClash") { description } e: __type(name: "CommerceGqlClashFilter2") { kind } '
	  . 'fi: __type(name: "GqlClashFilter") { kind } }';
	open $fh, '>', $docs_file or die;
	print $fh encode_json([ { name => 'clash', query => $clash_q } ]);
	close $fh;
	($out, $err) = ('', '');
	IPC::Run::run([ 'node', "$dir/check.mjs", "$url/rpc/graphql", $tok{alice}, $docs_file ], '>', \$out, '2>', \$err);
	$res = eval { decode_json($out) };
	ok($res && !$res->{error}, 'name clashes: graphql-js builds and accepts the schema') or diag("out: $out\nerr: $err");
	ok($res->{docs}[0]{js_valid} && $res->{docs}[0]{bv_ok}, 'name clashes: the renamed fields are valid and answer')
	  or diag($json->encode($res->{docs}));
	($status, $r) = gql('alice', $clash_q);
	is_deeply($r->{data}{commerceGqlClashCollection}{edges}[0]{node},
		{ a_b => 10, aB => 11, node_id => 12, and_2 => 'and', n_2 => 13, n => 14, f => 'two', g => 'true' },
		'name clashes: each renamed field reads its own column (aB keeps its name, a_b falls back to its SQL name)')
	  or diag($json->encode($r));
	is_deeply($r->{data}{gqlClashCollection}{edges}, [ { node => { id => 1, x => 20 } } ],
		'name clashes: "gqlClash" comes first in C order and keeps GqlClash');
	is($r->{data}{gqlClashCollection_2}, 7, 'name clashes: a function named like a collection gets _2');
	is($r->{data}{fi}{kind}, 'INPUT_OBJECT', 'name clashes: the enum does not take the table\'s GqlClashFilter');
	is($r->{data}{e}{kind}, 'ENUM', 'name clashes: the enum is CommerceGqlClashFilter2 (the schema prefix, then a number)');
	like($r->{data}{c}{description} // '', qr/"GqlClash" is taken/, 'name clashes: the renamed type says so');
	$node->safe_psql('bitvelocity', 'DROP TABLE commerce.gql_clash, commerce."gqlClash", commerce.gql_clash_connection, commerce.page_info; '
		  . 'DROP TYPE commerce.gql_clash_filter, commerce.gql_flag; DROP FUNCTION commerce.gql_clash_collection()');
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
