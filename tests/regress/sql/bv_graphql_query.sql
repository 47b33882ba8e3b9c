-- bv_graphql: the schema reflected from the catalog, queries compiled to
-- SQL (filters, ordering, keyset pagination, relationships, node), and
-- the rebuild of the cached schema after DDL and grants.  Uses its own
-- schema, exposed through bv_graphql.schemas.
\set VERBOSITY terse
CREATE SCHEMA gqltest;
CREATE TYPE gqltest.mood AS ENUM ('happy', 'sad');
CREATE TABLE gqltest.authors (
    id     int PRIMARY KEY,
    name   text NOT NULL,
    born   date,
    mood   gqltest.mood,
    secret text
);
COMMENT ON TABLE gqltest.authors IS 'People who write books. @graphql({"name": "Writer"})';
COMMENT ON COLUMN gqltest.authors.name IS 'Full name.';
COMMENT ON COLUMN gqltest.authors.born IS '@graphql({"name": "birthday"})';
CREATE TABLE gqltest.books (
    id        bigint PRIMARY KEY,
    author_id int REFERENCES gqltest.authors,
    title     text NOT NULL,
    price     numeric(8,2),
    rating    float8,
    tags      jsonb NOT NULL DEFAULT '[]',
    published timestamptz
);
CREATE VIEW gqltest.cheap_books AS SELECT id, title, price FROM gqltest.books WHERE price < 10;
COMMENT ON VIEW gqltest.cheap_books IS 'Books under 10. @graphql({"primary_key_columns": ["id"]})';
CREATE FUNCTION gqltest.book_count(author int) RETURNS bigint STABLE LANGUAGE sql
    AS 'SELECT count(*) FROM gqltest.books WHERE author_id = author';
COMMENT ON FUNCTION gqltest.book_count(int) IS 'Books by one author.';
CREATE FUNCTION gqltest.by_title(pattern text) RETURNS SETOF gqltest.books STABLE LANGUAGE sql
    AS 'SELECT * FROM gqltest.books WHERE title ILIKE pattern ORDER BY id';
INSERT INTO gqltest.authors VALUES
    (1, 'Ann', '1970-01-02', 'happy', 's1'), (2, 'Bob', NULL, 'sad', 's2'), (3, 'Cy', '1990-05-06', NULL, 's3');
INSERT INTO gqltest.books VALUES
    (10, 1, 'Alpha', 5.50, 4.5, '["a"]', '2020-01-01 10:00+00'),
    (11, 1, 'Beta', 12.00, NULL, '[]', '2021-01-01 10:00+00'),
    (12, 2, 'gamma', NULL, 3.0, '[]', NULL),
    (13, NULL, 'Delta', 9.99, 5.0, '{"x": 1}', '2019-01-01 10:00+00'),
    (14, 3, 'Epsilon', 20.00, 1.5, '[]', '2022-06-01 10:00+00');
SET bv_graphql.schemas = 'gqltest';
-- a helper: the response, or only its errors
CREATE FUNCTION public.gq(doc text, vars jsonb DEFAULT NULL) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT graphql.resolve(doc, vars) $$;

-- ---------- reflection ----------
SELECT jsonb_path_query_array(gq('{ __schema { types { name } } }'), '$.data.__schema.types[*].name ? (!(@ starts with "__"))');
SELECT gq('{ __type(name: "Writer") { description fields { name description type { kind name ofType { name } } } } }');
SELECT gq('{ __type(name: "Query") { fields { name args { name defaultValue type { kind name ofType { kind name } } } } } }')
    -> 'data' -> '__type' -> 'fields' -> 0;
SELECT jsonb_path_query_array(gq('{ __type(name: "Query") { fields { name description } } }'), '$.data.__type.fields[*]');
SELECT jsonb_path_query_array(gq('{ __type(name: "Mutation") { fields { name } } }'), '$.data.__type.fields[*].name');
SELECT gq('{ __type(name: "Mood") { kind enumValues { name } } }');
SELECT gq('{ __type(name: "StringFilter") { inputFields { name type { kind name ofType { name } } } } }');
SELECT gq('{ __type(name: "CheapBooks") { interfaces { name } } n: __type(name: "Node") { possibleTypes { name } } }');

-- ---------- lists, relationships, scalars ----------
SELECT gq('{ booksCollection { totalCount edges { node { __typename id title price rating tags published author { name birthday mood } } } } }');
SELECT gq('{ writerCollection(orderBy: [{name: DescNullsLast}]) { edges { node { name booksCollection(orderBy: [{id: DescNullsLast}]) { totalCount edges { node { title } } } } } } }');
SELECT gq('{ cheapBooksCollection { edges { node { nodeId id title price } } } }');
SELECT gq('{ bookCount(author: 1) byTitle(pattern: "%a") { id title } }');
SELECT gq('{ bookCount }');

-- ---------- filters ----------
SELECT gq('query F($f: BooksFilter) { booksCollection(filter: $f) { edges { node { id } } } }', jsonb_build_object('f', f))->'data'->'booksCollection'->'edges', f
  FROM (VALUES
    ('{"id": {"eq": 11}}'::jsonb), ('{"id": {"neq": 11}}'), ('{"id": {"lt": 12}}'), ('{"id": {"lte": 12}}'),
    ('{"id": {"gt": 12}}'), ('{"id": {"gte": 12}}'), ('{"id": {"in": [10, 14, 99]}}'), ('{"id": {"in": []}}'),
    ('{"price": {"is": "NULL"}}'), ('{"price": {"is": "NOT_NULL"}, "rating": {"is": "NULL"}}'),
    ('{"title": {"like": "%ta"}}'), ('{"title": {"ilike": "G%"}}'), ('{"title": {"like": "G%"}}'),
    ('{"price": {"gt": "9.99"}}'), ('{"rating": {"gte": 4.5}}'), ('{"published": {"lt": "2020-06-01T00:00:00Z"}}'),
    ('{"or": [{"id": {"eq": 10}}, {"id": {"eq": 12}}]}'), ('{"and": [{"id": {"gt": 10}}, {"id": {"lt": 13}}]}'),
    ('{"not": {"price": {"lt": 10}}}'), ('{"or": []}'), ('{"and": []}'), ('{"id": {"eq": null}}'), ('{}'),
    ('{"authorId": {"eq": 1}, "title": {"neq": "Alpha"}}'), ('{"not": {"or": [{"id": {"eq": 10}}, {"rating": {"is": "NULL"}}]}}')
  ) AS t(f);
-- nodeId takes eq, neq, in and is, as its filter type says (an author's nodeId matches no book)
SELECT gq('query F($a: ID!, $b: ID!) { booksCollection(filter: {nodeId: {in: [$a, $b, "WyJncWx0ZXN0IiwgImF1dGhvcnMiLCAxXQ=="]}}) { edges { node { id } } } }',
          jsonb_build_object('a', translate(encode(convert_to('["gqltest", "books", 10]', 'UTF8'), 'base64'), E'\n', ''),
                             'b', translate(encode(convert_to('["gqltest", "books", 12]', 'UTF8'), 'base64'), E'\n', '')));
SELECT gq('{ a: booksCollection(filter: {nodeId: {is: NULL}}) { totalCount } b: booksCollection(filter: {nodeId: {is: NOT_NULL}}) { totalCount } }');
SELECT gq('{ booksCollection(filter: {nodeId: {in: []}}) { totalCount } }');
SELECT gq('{ booksCollection(filter: {nodeId: {in: ["garbage"]}}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {mood: {eq: sad}}) { edges { node { name } } } }');
SELECT gq('{ writerCollection(filter: {mood: {in: [happy, sad]}, birthday: {gte: "1980-01-01"}}) { edges { node { name } } } }');
-- bad filter values are GraphQL errors, not SQL errors
SELECT gq('{ booksCollection(filter: {id: {eq: "x"}}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {id: {eq: 3000000000}}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {mood: {eq: angry}}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {nope: {eq: 1}}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {id: {like: 1}}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {id: 1}) { totalCount } }');
SELECT gq('{ writerCollection(filter: {secret: {eq: "s1"}}) { totalCount } }');
SELECT gq('{ booksCollection(filter: {published: {lt: "not a date"}}) { totalCount } }');
SELECT gq('{ booksCollection(filter: {title: {eq: "x"}, title: {eq: "y"}}) { totalCount } }');

-- ---------- ordering and keyset pagination ----------
SELECT gq('{ booksCollection(orderBy: [{price: AscNullsFirst}]) { edges { node { id price } } } }');
SELECT gq('{ booksCollection(orderBy: [{price: DescNullsFirst}, {id: AscNullsLast}]) { edges { node { id price } } } }');
SELECT gq('{ booksCollection(orderBy: {rating: AscNullsLast}) { edges { node { id rating } } } }');
-- walk pages of 2 forward, then backward, with NULLs in the sort key
DO $$
DECLARE
    r jsonb;
    after text := NULL;
    seen text := '';
    page int := 0;
BEGIN
    LOOP
        r := graphql.resolve('query P($a: Cursor) { booksCollection(first: 2, after: $a, orderBy: [{price: DescNullsLast}]) {
                                edges { node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }',
                             jsonb_build_object('a', after)) -> 'data' -> 'booksCollection';
        page := page + 1;
        seen := seen || (SELECT string_agg(e -> 'node' ->> 'id', ',') FROM jsonb_array_elements(r -> 'edges') e) || ';';
        RAISE NOTICE 'page %: % next=% prev=%', page, r -> 'edges', r -> 'pageInfo' -> 'hasNextPage', r -> 'pageInfo' -> 'hasPreviousPage';
        EXIT WHEN NOT (r -> 'pageInfo' ->> 'hasNextPage')::boolean;
        after := r -> 'pageInfo' ->> 'endCursor';
    END LOOP;
    RAISE NOTICE 'forward: %', seen;
    seen := '';
    after := NULL;
    LOOP
        r := graphql.resolve('query P($b: Cursor) { booksCollection(last: 2, before: $b, orderBy: [{price: DescNullsLast}]) {
                                edges { node { id } } pageInfo { hasPreviousPage startCursor } } }',
                             jsonb_build_object('b', after)) -> 'data' -> 'booksCollection';
        seen := seen || (SELECT string_agg(e -> 'node' ->> 'id', ',') FROM jsonb_array_elements(r -> 'edges') e) || ';';
        EXIT WHEN NOT (r -> 'pageInfo' ->> 'hasPreviousPage')::boolean;
        after := r -> 'pageInfo' ->> 'startCursor';
    END LOOP;
    RAISE NOTICE 'backward: %', seen;
END
$$;
SELECT gq('{ booksCollection(first: 0) { edges { cursor } pageInfo { hasNextPage startCursor endCursor } } }');
SELECT gq('{ booksCollection(first: 1, last: 1) { totalCount } }');
SELECT gq('{ booksCollection(first: -1) { totalCount } }');
SELECT gq('{ booksCollection(first: 1001) { totalCount } }');
SELECT gq('{ booksCollection(after: "bm90IGpzb24=") { totalCount } }');
SELECT gq('{ booksCollection(after: "WzFd", orderBy: [{price: AscNullsLast}]) { totalCount } }');
SELECT gq('{ booksCollection(after: "%%%") { totalCount } }');

-- ---------- node ----------
SELECT gq('query N($id: ID!) { node(nodeId: $id) { __typename nodeId ... on Books { title author { name } } ... on Writer { name } } }',
         jsonb_build_object('id', gq('{ booksCollection(first: 1) { edges { node { nodeId } } } }') #>> '{data,booksCollection,edges,0,node,nodeId}'));
SELECT gq('{ node(nodeId: "WyJncWx0ZXN0IiwgImF1dGhvcnMiLCA5OV0=") { nodeId } }');
SELECT gq('{ node(nodeId: "WyJwZ19jYXRhbG9nIiwgInBnX2F1dGhpZCIsIDEwXQ==") { nodeId } }');
SELECT gq('{ node(nodeId: "garbage") { nodeId } }');
SELECT gq('{ booksCollection(filter: {nodeId: {eq: "WyJncWx0ZXN0IiwgImJvb2tzIiwgMTFd"}}) { edges { node { id } } } }');

-- ---------- the cached schema follows DDL, comments and grants ----------
SELECT gq('{ writerCollection { edges { node { nickname } } } }')->'errors'->0->>'message';
ALTER TABLE gqltest.authors ADD COLUMN nickname text;
SELECT gq('{ writerCollection(first: 1) { edges { node { nickname } } } }');
COMMENT ON COLUMN gqltest.authors.nickname IS 'What friends say.';
SELECT jsonb_path_query(gq('{ __type(name: "Writer") { fields { name description } } }'), '$.data.__type.fields[*] ? (@.name == "nickname")');
CREATE ROLE bv_graphql_reader;
GRANT USAGE ON SCHEMA gqltest, graphql TO bv_graphql_reader;
GRANT EXECUTE ON FUNCTION graphql.resolve(text, jsonb, text, jsonb) TO bv_graphql_reader;
GRANT SELECT (id, name) ON gqltest.authors TO bv_graphql_reader;
SET ROLE bv_graphql_reader;
SELECT jsonb_path_query_array(gq('{ __schema { queryType { fields { name } } mutationType { name } } }'), '$.data.__schema.queryType.fields[*].name'),
       gq('{ __schema { mutationType { name } } }');
SELECT gq('{ __type(name: "Writer") { fields { name } } }');
SELECT gq('{ writerCollection { edges { node { id name } } } }');
SELECT gq('{ writerCollection { edges { node { secret } } } }');
SELECT gq('mutation { deleteFromWriterCollection { affectedCount } }');
RESET ROLE;
GRANT SELECT ON gqltest.books TO bv_graphql_reader;
GRANT EXECUTE ON FUNCTION gqltest.book_count(int) TO bv_graphql_reader;
REVOKE EXECUTE ON FUNCTION gqltest.book_count(int) FROM PUBLIC;
SET ROLE bv_graphql_reader;
SELECT jsonb_path_query_array(gq('{ __type(name: "Query") { fields { name } } }'), '$.data.__type.fields[*].name');
SELECT gq('{ booksCollection(first: 1) { edges { node { title author { name } } } } }');
RESET ROLE;
REVOKE SELECT ON gqltest.books FROM bv_graphql_reader;
SET ROLE bv_graphql_reader;
SELECT jsonb_path_query_array(gq('{ __type(name: "Query") { fields { name } } }'), '$.data.__type.fields[*].name');
RESET ROLE;
-- a function call error is a GraphQL error without internals
CREATE FUNCTION gqltest.boom() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1/0';
CREATE FUNCTION gqltest.internal() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT count(*) FROM gqltest.missing_table); END $$;
SELECT gq('{ boom }'), gq('{ internal }');

DROP OWNED BY bv_graphql_reader;
DROP ROLE bv_graphql_reader;
DROP SCHEMA gqltest CASCADE;
DROP FUNCTION public.gq(text, jsonb);
