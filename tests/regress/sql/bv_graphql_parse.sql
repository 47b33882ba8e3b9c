-- bv_graphql: the GraphQL lexer and parser (October 2021 spec), request
-- errors in the spec's shape, and the limits on hostile documents.
-- Documents use only __typename / __type so that they do not depend on
-- which tables exist.
\set VERBOSITY terse

-- ---------- documents that parse ----------
SELECT graphql.resolve('{ __typename }');
-- shorthand, named operation, variables with defaults, fragments, inline
-- fragments, aliases, directives, commas and comments
SELECT graphql.resolve($$
  # a comment
  query Q($a: String = "Query", $c: Boolean! = true) {
    ...F, ... on Query { t1: __typename }
    t2: __typename @skip(if: false)
    t3: __typename @include(if: $c)
    t4: __typename @skip(if: $c)
    t5: __type(name: $a) @include(if: $c) { name }
  }
  fragment F on Query { f: __typename t6: __type(name: "Query") @skip(if: $c) { kind } }
$$);
-- a list default parses; variables that are never used are errors (5.8.4), each one
SELECT graphql.resolve($$ query U($b: [String!] = ["x", "y"], $d: Int) { __typename } $$);
-- strings: escapes, surrogate pairs, block strings with indentation removed
SELECT graphql.resolve($$ { a: __type(name: "Q\u0075ery") { name } b: __type(name: "Qu\u00e9ry\uD83D\uDE00") { name } } $$);
SELECT graphql.resolve(E'{ a: __type(name: """\n      Query\n    """) { name } b: __type(name: "Query") { name } }');
SELECT graphql.resolve(E'{ a: __type(name: """\\"""x""") { name } }');
-- the byte order mark and CRLF line ends are ignored; locations count lines
SELECT graphql.resolve(E'\xef\xbb\xbf{\r\n  __typename\r\n  nope\r\n}');
-- operationName picks one of several operations
SELECT graphql.resolve('query A { a: __typename } query B { b: __typename }', NULL, 'B');

-- ---------- syntax errors: message and location ----------
SELECT graphql.resolve('');
SELECT graphql.resolve('   # only a comment');
SELECT graphql.resolve('{ __typename');
SELECT graphql.resolve('{ __typename }}');
SELECT graphql.resolve('{ a(x: "unterminated) }');
SELECT graphql.resolve(E'{ a(x: "line\nbreak") }');
SELECT graphql.resolve($${ a(x: "\q") }$$);
SELECT graphql.resolve($${ a(x: "\u12") }$$);
SELECT graphql.resolve($${ a(x: "\uD83D") }$$);
SELECT graphql.resolve($${ a(x: "\uDE00") }$$);
SELECT graphql.resolve($${ a(x: "\u0000") }$$);
SELECT graphql.resolve(E'{ a(x: "tab\there ok, bell \x07 not") }');
SELECT graphql.resolve('{ a(x: """never closed) }');
SELECT graphql.resolve('{ a(x: 00) }');
SELECT graphql.resolve('{ a(x: 1.) }');
SELECT graphql.resolve('{ a(x: 1a) }');
SELECT graphql.resolve('{ a(x: 1.5e) }');
SELECT graphql.resolve('{ a(x: -) }');
SELECT graphql.resolve('{ a(x: .5) }');
SELECT graphql.resolve('{ a ? }');
SELECT graphql.resolve('{ a(x: $) }');
SELECT graphql.resolve('{ a() }');
SELECT graphql.resolve('{ }');
SELECT graphql.resolve('{ ... }');
SELECT graphql.resolve('{ ... on }');
SELECT graphql.resolve('fragment on on Query { a }');
SELECT graphql.resolve('fragment F Query { a }');
SELECT graphql.resolve('query Q($v: Int = $w) { a }');
SELECT graphql.resolve('query Q($v: [Int) { a }');
SELECT graphql.resolve('query Q(v: Int) { a }');
SELECT graphql.resolve('type Query { a: Int }');
SELECT graphql.resolve('schema { query: Query }');
SELECT graphql.resolve('{ a } extra');
SELECT graphql.resolve(E'{\n  a(x: {b: [1, 2, {c: }]})\n}');
-- multibyte text before an error: columns count characters, not bytes
SELECT graphql.resolve('{ a(x: "ééé") ? }');

-- ---------- limits ----------
SHOW bv_graphql.max_depth;
SELECT graphql.resolve(repeat('{ a ', 16) || repeat('}', 16));
SELECT graphql.resolve(repeat('{ a ', 17) || repeat('}', 17));
SELECT graphql.resolve('{ a(x: ' || repeat('[', 20) || repeat(']', 20) || ') }');
SELECT graphql.resolve('query Q($v: ' || repeat('[', 20) || 'Int' || repeat(']', 20) || ') { a }');
-- alias overloading
SELECT graphql.resolve('{ ' || string_agg('a' || i || ': __typename', ' ') || ' }')->'errors'
  FROM generate_series(1, 201) i;
SELECT jsonb_typeof(graphql.resolve('{ ' || string_agg('a' || i || ': __typename', ' ') || ' }')->'data')
  FROM generate_series(1, 200) i;
-- tokens (ignored commas cost nothing, but each token counts)
SET bv_graphql.max_size = 1000000;
SELECT graphql.resolve('{ ' || repeat('__typename ', 20001) || '}')->'errors';
SELECT jsonb_typeof(graphql.resolve('{ ' || repeat('__typename ', 19998) || '}')->'data');
RESET bv_graphql.max_size;
-- size, checked before anything is parsed
SELECT graphql.resolve('{ __typename }' || repeat(' ', 100000))->'errors';
SET bv_graphql.max_size = 1000000;
SELECT jsonb_typeof(graphql.resolve('{ __typename }' || repeat(' ', 100000))->'data');
RESET bv_graphql.max_size;
-- a fragment bomb: each fragment spreads the next twice (2^20 fields);
-- bv_graphql.max_fields stops it while fields are collected
SELECT graphql.resolve('{ ...F0 } ' || string_agg(format('fragment F%s on Query { a: __typename ...F%s ...F%s }', i, i + 1, i + 1), ' ')
  || ' fragment F20 on Query { __typename }')->'errors'
  FROM generate_series(0, 19) i;
-- introspection cannot nest deeper than bv_graphql.max_depth through fragments
-- (__Type.ofType is a nullable __Type: the model itself is a cycle)
SELECT graphql.resolve('{ __type(name: "__Type") { ...T0 } } ' || string_agg(format('fragment T%s on __Type { name fields { type { ...T%s } } }', i, i + 1), ' ')
  || ' fragment T10 on __Type { name }')->'errors'
  FROM generate_series(0, 9) i;

-- ---------- operations, fragments, directives, variables ----------
SELECT graphql.resolve('{ a: __typename } { b: __typename }');
SELECT graphql.resolve('query A { a: __typename } query B { b: __typename }');
SELECT graphql.resolve('query A { a: __typename } query A { b: __typename }', NULL, 'A');
SELECT graphql.resolve('query A { a: __typename }', NULL, 'Nope');
SELECT graphql.resolve('subscription S { __typename }');
SELECT graphql.resolve('fragment F on Query { __typename }');
SELECT graphql.resolve('{ ...Missing }');
SELECT graphql.resolve('{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }');
SELECT graphql.resolve('{ ...A } fragment A on Query { a: __typename } fragment A on Query { b: __typename }');
SELECT graphql.resolve('{ ... on Nope { __typename } }');
SELECT graphql.resolve('{ ... on String { __typename } }');
SELECT graphql.resolve('{ __typename @deprecated }');
SELECT graphql.resolve('{ __typename @skip }');
SELECT graphql.resolve('{ __typename @skip(if: "yes") }');
SELECT graphql.resolve('{ __typename @skip(unless: true) }');
SELECT graphql.resolve('{ __typename { x } }');
SELECT graphql.resolve('{ a: __typename a: __schema { description } }');
SELECT graphql.resolve('{ __schema }');
SELECT graphql.resolve('query Q($n: String!) { __type(name: $n) { name } }');
SELECT graphql.resolve('query Q($n: String!) { __type(name: $n) { name } }', '{"n": null}');
SELECT graphql.resolve('query Q($n: String!) { __type(name: $n) { name } }', '{"n": "Query"}');
SELECT graphql.resolve('query Q($n: String!) { __type(name: $n) { name } }', '[1]');
SELECT graphql.resolve('query Q($n: Nope) { __typename }');
SELECT graphql.resolve('query Q($n: Query) { __typename }');
SELECT graphql.resolve('query Q($n: Int, $n: Int) { __typename }');
SELECT graphql.resolve('{ __type(name: $undefined) { name } }');
SELECT graphql.resolve('{ __type(name: 5) { name } }');
SELECT graphql.resolve('{ __type { name } }');
SELECT graphql.resolve('{ __type(name: "Query", name: "Query") { name } }');
SELECT graphql.resolve('{ __type(name: "Query", extra: 1) { name } }');
SELECT graphql.resolve(NULL);
SELECT graphql.resolve('{ __typename }', NULL, NULL, '{"persistedQuery": {}}');
