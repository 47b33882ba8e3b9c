-- bv_graphql: validation of whole documents (section 5 of the October 2021
-- specification), errors with their locations, several errors at once, and
-- hostile forms; and graphql.resolve_json's keys in selection order.
-- Uses its own schema, exposed through bv_graphql.schemas.
\set VERBOSITY terse
CREATE SCHEMA gqlval;
CREATE TYPE gqlval.mood AS ENUM ('happy', 'sad');
CREATE TABLE gqlval.authors (id int PRIMARY KEY, name text NOT NULL, mood gqlval.mood);
CREATE TABLE gqlval.books (id bigint PRIMARY KEY, author_id int REFERENCES gqlval.authors, title text NOT NULL,
                           price numeric(8,2));
CREATE FUNCTION gqlval.book_count(author int) RETURNS bigint STABLE LANGUAGE sql
    AS 'SELECT count(*) FROM gqlval.books WHERE author_id = author';
INSERT INTO gqlval.authors VALUES (1, 'Ann', 'happy'), (2, 'Bob', NULL);
INSERT INTO gqlval.books VALUES (10, 1, 'Alpha', 5.50), (11, 2, 'Beta', NULL);
SET bv_graphql.schemas = 'gqlval';
-- a helper: each error as "message @line:column,...", or "ok" and the data
CREATE FUNCTION public.gv(doc text, vars jsonb DEFAULT NULL) RETURNS SETOF text LANGUAGE sql AS $$
    WITH r AS (SELECT graphql.resolve(doc, vars) AS r)
    SELECT (e ->> 'message') || ' @' || coalesce((SELECT string_agg((l ->> 'line') || ':' || (l ->> 'column'), ',')
                                                   FROM jsonb_array_elements(e -> 'locations') l), '')
      FROM r, jsonb_array_elements(r -> 'errors') e
    UNION ALL
    SELECT 'ok ' || (r -> 'data')::text FROM r WHERE NOT r ? 'errors'
$$;

-- ---------- 5.2 operations ----------
SELECT gv('query A { __typename } query A { __typename }');
SELECT gv('{ __typename } query B { __typename }');
SELECT gv('subscription { __typename }');

-- ---------- 5.3.1 fields on their type ----------
SELECT gv('{ authorsCollection { edges { node { nope } } } }');
SELECT gv('{ node(nodeId: "WyJncWx2YWwiLCAiYXV0aG9ycyIsIDk5XQ==") { name } }');
SELECT gv('{ authorsCollection { __schema { queryType { name } } } }');
SELECT gv('{ node(nodeId: "WyJncWx2YWwiLCAiYXV0aG9ycyIsIDk5XQ==") { __typename ... on Authors { name } } }');

-- ---------- 5.3.2 field selection merging ----------
-- one response name, two fields
SELECT gv('{ a: authorsCollection { totalCount } a: booksCollection { totalCount } }');
-- one field, two sets of arguments (literals, variables)
SELECT gv('{ a: authorsCollection(first: 1) { totalCount } a: authorsCollection(first: 2) { totalCount } }');
SELECT gv('query Q($x: Int, $y: Int) { a: authorsCollection(first: $x) { totalCount } a: authorsCollection(first: $y) { totalCount } }');
SELECT gv('{ a: authorsCollection(first: 1) { totalCount } a: authorsCollection { totalCount } }');
-- the same arguments in another order, and the same field through fragments: fine
SELECT gv('{ a: authorsCollection(first: 1, orderBy: [{id: AscNullsLast}]) { totalCount } ...F } fragment F on Query { a: authorsCollection(orderBy: [{id: AscNullsLast}], first: 1) { totalCount } }');
-- conflicts below the top: sub-selections are merged
SELECT gv('{ a: booksCollection { edges { node { x: title } } } a: booksCollection { edges { node { x: price } } } }');
-- different object types may use one name for different fields, with one shape
SELECT gv('{ node(nodeId: "WyJncWx2YWwiLCAiYXV0aG9ycyIsIDk5XQ==") { ... on Authors { x: name } ... on Books { x: title } } }');
SELECT gv('{ node(nodeId: "WyJncWx2YWwiLCAiYXV0aG9ycyIsIDk5XQ==") { ... on Authors { x: id } ... on Books { x: id } } }');
SELECT gv('{ node(nodeId: "WyJncWx2YWwiLCAiYXV0aG9ycyIsIDk5XQ==") { ... on Authors { x: name } ... on Node { x: nodeId } } }');
-- a fragment spread twice is not a conflict with itself
SELECT gv('{ ...F ...F } fragment F on Query { a: __typename }');

-- ---------- 5.3.3 leaf field selections ----------
SELECT gv('{ authorsCollection { totalCount { x } } }');
SELECT gv('{ authorsCollection { edges } }');
SELECT gv('{ __typename { x } }');

-- ---------- 5.4 arguments ----------
SELECT gv('{ authorsCollection(size: 3) { totalCount } }');
SELECT gv('{ authorsCollection(first: 1, first: 2) { totalCount } }');
SELECT gv('{ bookCount }');
SELECT gv('{ bookCount(author: null) }');
SELECT gv('{ bookCount(author: 1) }');
SELECT gv('{ __typename(x: 1) }');

-- ---------- 5.5 fragments ----------
SELECT gv('{ ...F } fragment F on Query { __typename } fragment F on Query { __typename }');
SELECT gv('{ ...Nope }');
SELECT gv('{ ...F } fragment F on Nope { __typename }');
SELECT gv('{ ...F } fragment F on Int { __typename }');
SELECT gv('{ ... on Int { __typename } }');
SELECT gv('{ ... on Nope { __typename } }');
SELECT gv('{ __typename } fragment F on Query { __typename }');
-- a fragment used only by an unused fragment is unused too
SELECT gv('{ __typename } fragment F on Query { ...G } fragment G on Query { __typename }');
SELECT gv('{ ...A } fragment A on Query { ...A }');
SELECT gv('{ ...A } fragment A on Query { ...B } fragment B on Query { ...C } fragment C on Query { ...A }');
SELECT gv('{ authorsCollection { edges { node { ...B } } } } fragment B on Books { title }');
SELECT gv('{ authorsCollection { edges { node { ... on Books { title } } } } }');
SELECT gv('{ authorsCollection { edges { node { ... on Node { nodeId } } } } }');
SELECT gv('{ node(nodeId: "WyJncWx2YWwiLCAiYXV0aG9ycyIsIDk5XQ==") { ...A } } fragment A on Authors { name }');

-- ---------- 5.6 values ----------
SELECT gv('{ authorsCollection(first: 3000000000) { totalCount } }');
SELECT gv('{ authorsCollection(first: "3") { totalCount } }');
SELECT gv('{ authorsCollection(first: 1.5) { totalCount } }');
SELECT gv('{ authorsCollection(first: [1]) { totalCount } }');
SELECT gv('{ authorsCollection(orderBy: [{name: "AscNullsLast"}]) { totalCount } }');
SELECT gv('{ authorsCollection(orderBy: [{name: Sideways}]) { totalCount } }');
SELECT gv('{ authorsCollection(filter: {mood: {eq: angry}}) { totalCount } }');
SELECT gv('{ authorsCollection(filter: {nope: {eq: 1}, name: {eq: 1}, name: {eq: "x"}}) { totalCount } }');
SELECT gv('{ authorsCollection(filter: {id: {in: [1, null]}}) { totalCount } }');
SELECT gv('{ authorsCollection(filter: {id: 1}) { totalCount } }');
SELECT gv('{ authorsCollection(filter: [{id: {eq: 1}}]) { totalCount } }');
SELECT gv('{ booksCollection(filter: {id: {eq: "12x"}}) { totalCount } }');
-- a single value stands for a list of one (input coercion): fine
SELECT gv('{ authorsCollection(filter: {id: {in: 1}}, orderBy: {id: DescNullsLast}) { totalCount } }');
-- hostile: long and multibyte values are cut in messages, never split inside a character
SELECT gv('{ authorsCollection(first: "' || repeat('é', 5000) || '") { totalCount } }');
SELECT gv('{ authorsCollection(first: {a: "' || repeat('x', 5000) || '"}) { totalCount } }');

-- ---------- 5.7 directives ----------
SELECT gv('{ __typename @nope }');
SELECT gv('{ __typename @deprecated }');
SELECT gv('query @skip(if: true) { __typename }');
SELECT gv('{ ...F } fragment F on Query @include(if: true) { __typename }');
SELECT gv('query Q($v: Boolean @skip(if: true)) { __typename @skip(if: $v) }');
SELECT gv('{ __typename @skip(if: true) @skip(if: false) }');
SELECT gv('{ __typename @include }');
SELECT gv('{ __typename @include(if: "yes") }');
SELECT gv('{ __typename @include(if: true, if: false) }');
SELECT gv('{ a: __typename @skip(if: true) b: __typename @include(if: true) }');

-- ---------- 5.8 variables ----------
SELECT gv('query Q($n: Int, $n: Int) { authorsCollection(first: $n) { totalCount } }');
SELECT gv('query Q($n: Nope) { authorsCollection(first: $n) { totalCount } }');
SELECT gv('query Q($n: Authors) { authorsCollection(first: $n) { totalCount } }');
SELECT gv('query Q { authorsCollection(first: $n) { totalCount } }');
SELECT gv('{ authorsCollection(first: $n) { totalCount } }');
-- used in a fragment: defined by one operation, not the other
SELECT gv('query A($n: Int) { ...F } query B { ...F } fragment F on Query { authorsCollection(first: $n) { totalCount } }', '{"n": 1}');
SELECT gv('query A($n: Int) { ...F } fragment F on Query { authorsCollection(first: $n) { totalCount } }', '{"n": 1}');
SELECT gv('query Q($n: Int, $unused: String) { authorsCollection(first: $n) { totalCount } }');
-- variables only in skipped fields are used all the same (validation ignores @skip)
SELECT gv('query Q($n: Int) { authorsCollection(first: $n) @skip(if: true) { totalCount } }');
-- 5.8.5: types where variables are used
SELECT gv('query Q($n: String) { authorsCollection(first: $n) { totalCount } }');
SELECT gv('query Q($n: Int) { bookCount(author: $n) }', '{"n": 1}');
SELECT gv('query Q($n: Int = 1) { bookCount(author: $n) }');
SELECT gv('query Q($n: Int = null) { bookCount(author: $n) }');
SELECT gv('query Q($n: Int!) { bookCount(author: $n) }', '{"n": 1}');
SELECT gv('query Q($n: Int!) { authorsCollection(first: $n) { totalCount } }', '{"n": 1}');
SELECT gv('query Q($i: Int) { authorsCollection(filter: {id: {in: $i}}) { totalCount } }');
SELECT gv('query Q($i: [Int]) { authorsCollection(filter: {id: {in: $i}}) { totalCount } }');
SELECT gv('query Q($i: [Int!]!) { authorsCollection(filter: {id: {in: $i}}) { totalCount } }', '{"i": [1]}');
SELECT gv('query Q($i: Int!) { authorsCollection(filter: {id: {in: [$i, 2]}}) { totalCount } }', '{"i": 1}');
SELECT gv('query Q($i: Int) { authorsCollection(filter: {id: {in: [$i]}}) { totalCount } }');
SELECT gv('query Q($f: AuthorsFilter) { a: authorsCollection(filter: {and: [$f]}) { totalCount } }', '{"f": {"id": {"eq": 1}}}');
SELECT gv('query Q($f: BooksFilter) { a: authorsCollection(filter: $f) { totalCount } }');
SELECT gv('query Q($b: Boolean) { __typename @skip(if: $b) }');
SELECT gv('query Q($b: Boolean! = false) { __typename @skip(if: $b) }');
-- a default value of the wrong type
SELECT gv('query Q($n: Int = "x") { authorsCollection(first: $n) { totalCount } }');

-- ---------- several errors at once, and the cap ----------
SELECT gv('query Q($u: Int) { nope ...Missing authorsCollection(first: "x") { totalCount } } fragment Lost on Query { __typename }');
SELECT count(*) FROM gv('{ ' || (SELECT string_agg('f' || g, ' ') FROM generate_series(1, 150) g) || ' }');
SELECT g FROM gv('{ ' || (SELECT string_agg('f' || g, ' ') FROM generate_series(1, 150) g) || ' }') g OFFSET 99;

-- ---------- hostile: fragment bombs and deep spread chains ----------
SELECT gv('{ ...A0 } ' || (SELECT string_agg(format('fragment A%s on Query { ...A%s ...A%s }', g, g + 1, g + 1), ' ')
                            FROM generate_series(0, 19) g) || ' fragment A20 on Query { __typename }');
SELECT gv('{ ...C0 } ' || (SELECT string_agg(format('fragment C%s on Query { ...C%s }', g, g + 1), ' ')
                            FROM generate_series(0, 69) g) || ' fragment C70 on Query { __typename }');

-- side by side, spreads do not nest: 70 of them are fine
SELECT gv('{ ' || repeat('...F ', 70) || '} fragment F on Query { __typename }');

-- ---------- graphql.resolve_json: keys in selection order ----------
SELECT graphql.resolve_json('{ z: __typename a: __typename booksCollection(first: 1, orderBy: [{id: AscNullsLast}]) { totalCount edges { node { title id author { name id } } } } }');
SELECT graphql.resolve_json('mutation { z: insertIntoBooksCollection(objects: [{id: 20, title: "Z"}]) { records { title id } affectedCount } a: deleteFromBooksCollection(filter: {id: {eq: 20}}) { affectedCount } }');
-- errors first, then data
SELECT graphql.resolve_json('mutation { a: insertIntoBooksCollection(objects: [{id: 10, title: "dup"}]) { affectedCount } }');
SELECT graphql.resolve_json('{ nope }');
SELECT graphql.resolve_json(NULL);
-- the same answer as graphql.resolve, but for the order of keys
SELECT graphql.resolve_json(q)::jsonb = graphql.resolve(q) AS same
  FROM (VALUES ('{ authorsCollection { edges { node { name mood booksCollection { totalCount } } } } }'),
               ('{ __schema { queryType { name } } }'), ('{ x }')) AS t(q);
-- as PostgREST's POST /rpc/graphql: api.graphql returns the ordered json
SELECT api.graphql('{ z: __typename a: __typename }');

DROP FUNCTION public.gv(text, jsonb);
DROP SCHEMA gqlval CASCADE;
