// Seeded randomized validation check (tests/tap/bv_graphql_rest.pl):
//   node differ.mjs URL TOKEN SEED COUNT
// graphql-js is the model: builds the client schema from bv_graphql's
// introspection answer, then makes COUNT random documents over it (query
// collections with arguments, nested relations, aliases, variables,
// fragments, inline fragments, directives), about half of them broken by
// one random mutation (unknown field, clashing alias, unused or undefined
// variable, variable of the wrong type, unused or impossible fragment,
// bad literal, duplicate directive or argument...). Each document is
// validated by graphql-js and sent to bv_graphql; they must agree on
// whether it is valid. Literals are only given to arguments of the
// specified scalars and enums (custom scalars of a client schema accept
// any literal in graphql-js), pages are small, no cursors or nodeIds, so
// that a valid document also runs. Prints one JSON object.
import {
  buildClientSchema, getIntrospectionQuery, getNamedType, isEnumType, isInputObjectType, isLeafType,
  isListType, isNonNullType, isObjectType, isScalarType, parse, validate,
} from 'graphql';
import { post } from './post.mjs';

const [url, token, seedArg, countArg] = process.argv.slice(2);
let seed = Number(seedArg) >>> 0 || 1;
const rand = () => {
  // mulberry32
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (a) => a[Math.floor(rand() * a.length)];
const chance = (p) => rand() < p;

async function gql(query, variables) {
  return (await post(url, token, query, variables)).body;
}

const intro = await gql(getIntrospectionQuery());
const schema = buildClientSchema(intro.data);
const query = schema.getQueryType();
const builtin = new Set(['Int', 'String', 'Boolean', 'ID', 'Float']);

// A literal of an input type built only from specified scalars and enums; null when none can be made.
function literal(type, depth = 0) {
  const t = getNamedType(type);
  let v;
  if (isEnumType(t)) v = pick(t.getValues()).name;
  else if (isScalarType(t)) {
    // custom scalars take any literal in graphql-js; an ID here is a nodeId, which must decode
    if (!builtin.has(t.name) || t.name === 'ID') return null;
    v = { Int: String(Math.floor(rand() * 4)), Float: '1.5', String: '"x"', Boolean: pick(['true', 'false']), ID: '"1"' }[t.name];
  } else if (isInputObjectType(t)) {
    if (depth > 1) return null;
    const fields = Object.values(t.getFields()).filter((f) => !['and', 'or', 'not'].includes(f.name));
    const parts = [];
    for (let i = 0; i < 2 && fields.length; i++) {
      const f = pick(fields);
      const fv = literal(f.type, depth + 1);
      if (fv !== null && !parts.some((p) => p.startsWith(`${f.name}:`))) parts.push(`${f.name}: ${fv}`);
    }
    if (!parts.length) return null;
    v = `{${parts.join(', ')}}`;
  }
  if (v === undefined) return null;
  let u = type;
  if (isNonNullType(u)) u = u.ofType;
  return isListType(u) ? `[${v}]` : v;
}

// A random selection set on object type t: [text, fragments to define].
function selection(t, depth, ctx) {
  const fields = Object.values(t.getFields());
  const out = [];
  const n = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < n; i++) {
    const f = pick(fields);
    const nt = getNamedType(f.type);
    if (!isLeafType(nt) && depth >= 3) continue;
    if (f.args.some((a) => isNonNullType(a.type) && a.defaultValue == null)) continue; // node(), functions
    if (f.name === '__schema' || f.name === '__type') continue;
    let args = [];
    for (const a of f.args) {
      if (a.name === 'first' && chance(0.5)) {
        if (chance(0.4)) {
          const v = `v${ctx.vars.length}`;
          ctx.vars.push(`$${v}: Int`);
          args.push(`first: $${v}`);
        } else args.push(`first: ${Math.floor(rand() * 3)}`);
      } else if ((a.name === 'filter' || a.name === 'orderBy') && chance(0.3)) {
        const v = literal(a.type);
        if (v !== null) args.push(`${a.name}: ${v}`);
      }
    }
    const alias = chance(0.2) ? `a${ctx.alias++}: ` : '';
    let text = `${alias}${f.name}${args.length ? `(${args.join(', ')})` : ''}`;
    if (chance(0.15)) {
      const v = `b${ctx.vars.length}`;
      ctx.vars.push(`$${v}: Boolean!`);
      text += ` @${pick(['skip', 'include'])}(if: $${v})`;
    }
    if (!isLeafType(nt)) text += ` { ${selection(nt, depth + 1, ctx)} }`;
    out.push(text);
  }
  if (!out.length) out.push('__typename');
  if (chance(0.2)) out.push(`... on ${t.name} { __typename }`);
  if (chance(0.2)) {
    const name = `F${ctx.frags.length}`;
    ctx.frags.push(`fragment ${name} on ${t.name} { ${out.pop() ?? '__typename'} }`);
    out.push(`...${name}`);
  }
  return out.join(' ');
}

// One random document (text, variables), broken by a random mutation when broken is true.
function document(broken) {
  const ctx = { vars: [], frags: [], alias: 0 };
  let body = selection(query, 0, ctx);
  let kind = 'valid';
  if (broken) {
    kind = pick(['unknown field', 'clashing alias', 'unused variable', 'undefined variable', 'wrong variable type',
      'nullable in non-null', 'unused fragment', 'impossible fragment', 'bad literal', 'duplicate directive',
      'duplicate argument', 'leaf with selection']);
    const coll = Object.values(query.getFields()).filter((f) => f.name.endsWith('Collection'));
    const c = pick(coll);
    switch (kind) {
      case 'unknown field': body += ' nopeField'; break;
      case 'clashing alias': body += ` x: ${c.name} { totalCount } x: __typename`; break;
      case 'unused variable': ctx.vars.push('$unused: Int'); break;
      case 'undefined variable': body += ` ${c.name}(first: $undefinedVar) { totalCount }`; break;
      case 'wrong variable type': ctx.vars.push('$w: String'); body += ` ${c.name}(first: $w) { totalCount }`; break;
      case 'nullable in non-null': ctx.vars.push('$nb: Boolean'); body += ' __typename @skip(if: $nb)'; break;
      case 'unused fragment': ctx.frags.push('fragment Lost on Query { __typename }'); break;
      case 'impossible fragment': body += ` ${c.name} { ... on Query { __typename } }`; break;
      case 'bad literal': body += ` ${c.name}(first: "two") { totalCount }`; break;
      case 'duplicate directive': body += ' __typename @skip(if: false) @skip(if: false)'; break;
      case 'duplicate argument': body += ` ${c.name}(first: 1, first: 1) { totalCount }`; break;
      default: body += ` ${c.name} { totalCount { x } }`; break;
    }
  }
  const vars = {};
  for (const v of ctx.vars) {
    const [name, type] = v.slice(1).split(': ');
    if (type === 'Int') vars[name] = 2;
    else if (type === 'Boolean!') vars[name] = chance(0.5);
  }
  const head = ctx.vars.length ? `query Q(${ctx.vars.join(', ')}) ` : 'query Q ';
  return { kind, text: `${head}{ ${body} } ${ctx.frags.join(' ')}`, vars };
}

const out = { seed: Number(seedArg), count: 0, valid: 0, invalid: 0, disagree: [] };
for (let i = 0; i < Number(countArg); i++) {
  const d = document(chance(0.5));
  const js = validate(schema, parse(d.text));
  const bv = await gql(d.text, d.vars);
  const bvInvalid = (bv.errors ?? []).some((e) => e.extensions?.code === 'GRAPHQL_VALIDATION_FAILED');
  out.count++;
  if (js.length) out.invalid++;
  else out.valid++;
  if (!('data' in bv) && !('errors' in bv)) {
    out.disagree.push({ doc: d.text, kind: d.kind, not_graphql: bv }); // e.g. PostgREST refused the request
  } else if ((js.length > 0) !== bvInvalid || (!bvInvalid && bv.errors)) {
    out.disagree.push({ doc: d.text, vars: d.vars, kind: d.kind, js: js.map((e) => e.message), bv: bv.errors ?? null });
  }
}
console.log(JSON.stringify(out));
