-- bv_graphql: mutations (insert many, update and delete by filter with
-- atMost), functions as mutations, database errors mapped to GraphQL
-- errors without internals, and serial execution of mutation fields.
\set VERBOSITY terse
CREATE SCHEMA gqlmut;
CREATE TABLE gqlmut.items (
    id      int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code    text NOT NULL UNIQUE,
    qty     int NOT NULL DEFAULT 1 CHECK (qty >= 0),
    note    text,
    created date NOT NULL DEFAULT '2026-01-01'
);
CREATE TABLE gqlmut.parts (
    item_id int NOT NULL REFERENCES gqlmut.items,
    n       int NOT NULL,
    PRIMARY KEY (item_id, n)
);
CREATE FUNCTION gqlmut.restock(amount int) RETURNS int LANGUAGE sql
    AS 'UPDATE gqlmut.items SET qty = qty + amount; SELECT sum(qty)::int FROM gqlmut.items';
CREATE FUNCTION gqlmut.fail(msg text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'PT409', MESSAGE = msg, HINT = 'A hint for clients.';
END $$;
SET bv_graphql.schemas = 'gqlmut';
CREATE FUNCTION public.gm(doc text, vars jsonb DEFAULT NULL) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT graphql.resolve(doc, vars) $$;

-- insert many: absent fields take defaults, explicit null is NULL
SELECT gm('mutation { insertIntoItemsCollection(objects: [{code: "a"}, {code: "b", qty: 5, note: null}, {code: "c", note: "n"}]) {
             affectedCount records { id code qty note created } } }');
SELECT gm('mutation M($o: [ItemsInsertInput!]!) { insertIntoItemsCollection(objects: $o) { affectedCount } }',
          '{"o": [{"code": "d", "qty": 2}]}');
SELECT gm('mutation { insertIntoItemsCollection(objects: []) { affectedCount records { id } } }');
SELECT gm('mutation { insertIntoItemsCollection(objects: {code: "single"}) { affectedCount } }');
SELECT gm('mutation { insertIntoPartsCollection(objects: [{itemId: 1, n: 1}, {itemId: 1, n: 2}]) { records { n item { code partsCollection { totalCount } } } } }');
-- identity columns are not insertable; unknown fields are errors
SELECT gm('mutation { insertIntoItemsCollection(objects: [{id: 9, code: "x"}]) { affectedCount } }');
SELECT gm('mutation { insertIntoItemsCollection(objects: [{code: "x", code: "y"}]) { affectedCount } }');
SELECT gm('mutation { insertIntoItemsCollection { affectedCount } }');
SELECT gm('mutation { insertIntoItemsCollection(objects: [null]) { affectedCount } }');
SELECT gm('mutation { insertIntoItemsCollection(objects: [{code: "x", qty: "many"}]) { affectedCount } }');
-- database errors: no constraint or table names, a SQLSTATE and a hint
SELECT gm('mutation { insertIntoItemsCollection(objects: [{code: "a"}]) { affectedCount } }');
SELECT gm('mutation { insertIntoItemsCollection(objects: [{code: "neg", qty: -1}]) { affectedCount } }');
SELECT gm('mutation { insertIntoItemsCollection(objects: [{code: null}]) { affectedCount } }');
SELECT gm('mutation { insertIntoPartsCollection(objects: [{itemId: 999, n: 1}]) { affectedCount } }');
SELECT gm('mutation { deleteFromItemsCollection(filter: {code: {eq: "a"}}) { affectedCount } }');
-- update: filter and atMost (default 1)
SELECT gm('mutation { updateItemsCollection(set: {note: "x"}, filter: {qty: {eq: 1}}) { affectedCount } }');
SELECT count(*) AS unchanged FROM gqlmut.items WHERE note = 'x';
SELECT gm('mutation { updateItemsCollection(set: {note: "x"}, filter: {qty: {eq: 1}}, atMost: 2) { affectedCount records { code note } } }');
SELECT gm('mutation { updateItemsCollection(set: {qty: 7}, filter: {code: {eq: "b"}}) { affectedCount records { code qty } } }');
SELECT gm('mutation { updateItemsCollection(set: {}, filter: {code: {eq: "b"}}) { affectedCount } }');
SELECT gm('mutation { updateItemsCollection(set: {qty: 1}, filter: {code: {eq: "b"}}, atMost: -1) { affectedCount } }');
SELECT gm('mutation { updateItemsCollection(set: {qty: 1}, filter: {nope: {eq: 1}}) { affectedCount } }');
-- delete
SELECT gm('mutation { deleteFromPartsCollection(filter: {n: {eq: 2}}) { affectedCount records { n } } }');
SELECT gm('mutation { deleteFromPartsCollection(atMost: 0) { affectedCount } }');
SELECT count(*) AS parts_left FROM gqlmut.parts;
-- fields run in order, each on its own: a failing field is null with an
-- error and its changes are undone; the fields before and after stay done
SELECT gm('mutation {
  first: insertIntoItemsCollection(objects: [{code: "s1"}]) { affectedCount }
  dup: insertIntoItemsCollection(objects: [{code: "s2"}, {code: "s2"}]) { affectedCount }
  __typename
  third: updateItemsCollection(set: {note: "after"}, filter: {code: {eq: "s1"}}) { records { code note } }
}');
SELECT code, note FROM gqlmut.items WHERE code LIKE 's%' ORDER BY code;
-- functions: volatile ones are mutations
SELECT gm('mutation { restock(amount: 1) }');
SELECT gm('query { restock(amount: 1) }');
SELECT gm('mutation { fail(msg: "out of stock") }');
-- a mutation that would be a query: no mutation field, or a query field
SELECT gm('mutation { itemsCollection { totalCount } }');
SELECT gm('query { insertIntoItemsCollection(objects: []) { affectedCount } }');

DROP FUNCTION public.gm(text, jsonb);
DROP SCHEMA gqlmut CASCADE;
