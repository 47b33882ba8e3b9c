-- bv_graphql under attack: what an independent checker tried, and what
-- must keep being refused.  Each block names the gap it covers.
\set VERBOSITY terse
CREATE SCHEMA gqlred;
-- a self-referencing tree: one parent with many children, the worst shape
-- for nested pages (to-one back to the parent, then to-many again)
CREATE TABLE gqlred.tree (id int PRIMARY KEY, parent_id int REFERENCES gqlred.tree);
INSERT INTO gqlred.tree VALUES (1, NULL);
INSERT INTO gqlred.tree SELECT g, 1 FROM generate_series(2, 6) g;
CREATE ROLE gqlred_user;
GRANT USAGE ON SCHEMA gqlred, graphql TO gqlred_user;
GRANT EXECUTE ON FUNCTION graphql.resolve(text, jsonb, text, jsonb) TO gqlred_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON gqlred.tree TO gqlred_user;
SET bv_graphql.schemas = 'gqlred';
SET ROLE gqlred_user;

-- ---------- nested page bomb (critical: a 170-byte request made the server
-- build 27 million rows and be killed by the OOM killer) ----------
-- every nested connection multiplies: 300 x 300 x 300 records are refused
-- before anything runs, whatever the data holds
SELECT graphql.resolve('{ treeCollection(first: 300) { edges { node { parent { treeCollection(first: 300) { edges { node { id parent { treeCollection(first: 300) { edges { node { id } } } } } } } } } } } }');
-- aliases add up: 40 x (1000 + 1000 x 2) is refused too, each alone is fine
SELECT graphql.resolve('{ ' || string_agg(format('a%s: treeCollection(first: 1000) { edges { node { parent { treeCollection(first: 2) { edges { node { id } } } } } } }', g), ' ') || ' }')
  FROM generate_series(1, 40) g;
SELECT graphql.resolve('{ a: treeCollection(first: 1000) { edges { node { parent { treeCollection(first: 2) { edges { node { id } } } } } } } }') -> 'errors';
-- the same under a mutation's records: atMost rows times the nested page
SELECT graphql.resolve('mutation { deleteFromTreeCollection(atMost: 1000, filter: {id: {eq: 99}}) { records { parent { treeCollection(first: 1000) { edges { node { id } } } } } } }');
-- the records themselves are only the rows changed: a large atMost alone is fine
SELECT graphql.resolve('mutation { deleteFromTreeCollection(atMost: 1000000, filter: {id: {eq: 99}}) { affectedCount records { id parent { id } } } }');
-- an ordinary nested read stays within the budget and answers
SELECT graphql.resolve('{ treeCollection(first: 2, filter: {id: {lte: 2}}) { edges { node { id parent { treeCollection(first: 3) { edges { node { id } } } } } } } }');
-- the budget is a setting (superuser)
RESET ROLE;
SET bv_graphql.max_records = 10;
SET ROLE gqlred_user;
SELECT graphql.resolve('{ treeCollection(first: 5) { edges { node { parent { treeCollection(first: 5) { edges { node { id } } } } } } } }');
-- a connection asked only for totalCount builds no records: it counts one
SELECT graphql.resolve('{ treeCollection(first: 5) { edges { node { parent { treeCollection(first: 5) { totalCount } } } } } }') -> 'errors';
SELECT graphql.resolve('{ treeCollection(first: 2) { edges { node { parent { treeCollection(first: 4) { edges { node { id } } } } } } } }') -> 'errors';
RESET ROLE;
RESET bv_graphql.max_records;
SET ROLE gqlred_user;

-- ---------- orderBy naming a column again and again (a 50000-entry list
-- made a 50000-term ORDER BY and cursors of 50000 values) ----------
-- a repeated column cannot change the order: it is skipped, the first wins
SELECT convert_from(decode(e ->> 'cursor', 'base64'), 'UTF8') AS cursor, e -> 'node' -> 'id' AS id
  FROM jsonb_array_elements(graphql.resolve('{ treeCollection(first: 2, orderBy: [{id: DescNullsLast}, {id: AscNullsLast}, {id: AscNullsFirst}]) { edges { cursor node { id } } } }')
       -> 'data' -> 'treeCollection' -> 'edges') e;
SELECT graphql.resolve('query($o: [TreeOrderBy!]) { treeCollection(first: 1, orderBy: $o) { edges { node { id } } } }',
                       jsonb_build_object('o', (SELECT jsonb_agg(jsonb_build_object('id', 'DescNullsLast')) FROM generate_series(1, 5000))));

-- ---------- filters from variables escape the document's token limit: a
-- 20000-entry "or" took seconds to compile and plan; filter objects count
-- against bv_graphql.max_fields ----------
SELECT graphql.resolve('query($f: TreeFilter) { treeCollection(filter: $f) { totalCount } }',
                       jsonb_build_object('f', jsonb_build_object('or', (SELECT jsonb_agg(jsonb_build_object('id', jsonb_build_object('eq', g))) FROM generate_series(1, 5001) g))));
SELECT graphql.resolve('query($f: TreeFilter) { treeCollection(filter: $f) { totalCount } }',
                       jsonb_build_object('f', jsonb_build_object('or', (SELECT jsonb_agg(jsonb_build_object('id', jsonb_build_object('eq', g))) FROM generate_series(1, 100) g))));

-- ---------- kept plans: clients choose the shapes; 100 distinct ones kept
-- about 66 MB in this backend (256 large ones, times PostgREST's pool, would
-- be gigabytes).  The cache is bounded by its statements' text too ----------
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM graphql.resolve(format('{ a: treeCollection(filter: {or: [%s]}) { totalCount edges { cursor node { id parentId } } } b: treeCollection(filter: {or: [%s]}) { totalCount edges { cursor node { id } } } }',
                                       repeat('{id: {eq: 1}}, ', i), repeat('{parentId: {eq: 1}}, ', i)));
    END LOOP;
END
$$;
RESET ROLE;
SELECT sum(total_bytes) < 32 * 1024 * 1024 AS plans_under_32mb
  FROM pg_backend_memory_contexts
 WHERE name IN ('CachedPlanSource', 'CachedPlan') AND ident LIKE '%json_build_object%';
SET ROLE gqlred_user;

-- ---------- "variables": null is no variables (GraphQL over HTTP) ----------
SELECT graphql.resolve('{ treeCollection(first: 1) { totalCount } }', 'null'::jsonb);
SELECT graphql.resolve('{ treeCollection(first: 1) { totalCount } }', '[1]'::jsonb);

RESET ROLE;
DROP SCHEMA gqlred CASCADE;
DROP OWNED BY gqlred_user;
DROP ROLE gqlred_user;
