// graphql-js against bv_graphql (tests/tap/bv_graphql_rest.pl):
//   node check.mjs URL TOKEN DOCS.json
// Sends graphql-js's standard introspection query to URL (PostgREST's
// /rpc/graphql) with the bearer TOKEN, builds the client schema with
// buildClientSchema (which throws on a malformed answer) and checks it with
// assertValidSchema; then, for each {name, query, variables} of DOCS.json,
// validates the document against that schema with graphql-js and runs it
// through bv_graphql.  Prints one JSON object: the schema's size and, per
// document, whether graphql-js found it valid and whether bv_graphql
// answered without errors, with the first message of each.
import { readFileSync } from 'node:fs';
import {
  assertValidSchema, buildClientSchema, getIntrospectionQuery, parse, printSchema, validate,
} from 'graphql';
import { post } from './post.mjs';

const [url, token, docsFile] = process.argv.slice(2);

async function gql(query, variables) {
  return post(url, token, query, variables);
}

const intro = await gql(getIntrospectionQuery({
  descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true,
  schemaDescription: true, inputValueDeprecation: true,
}));
if (intro.status !== 200 || intro.body.errors) {
  console.log(JSON.stringify({ error: 'introspection failed', response: intro }));
  process.exit(2);
}
const schema = buildClientSchema(intro.body.data);
assertValidSchema(schema);
const out = {
  types: Object.keys(schema.getTypeMap()).length,
  sdl_lines: printSchema(schema).split('\n').length,
  docs: [],
};
for (const d of JSON.parse(readFileSync(docsFile, 'utf8'))) {
  let js;
  try {
    js = validate(schema, parse(d.query)).map((e) => e.message);
  } catch (e) {
    js = [e.message];
  }
  const bv = await gql(d.query, d.variables);
  out.docs.push({
    name: d.name,
    js_valid: js.length === 0,
    bv_ok: bv.status === 200 && !bv.body.errors,
    js_error: js[0] ?? null,
    bv_error: bv.body.errors ? bv.body.errors[0].message : null,
    bv_status: bv.status,
  });
}
console.log(JSON.stringify(out));
