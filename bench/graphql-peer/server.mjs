// bench/graphql.sh's peer: PostGraphile v5 (Amber preset) over the same
// database, schema and roles as bv_graphql.
//   node server.mjs PORT CONNECTION_STRING SCHEMA
// Connects as bv_authenticator (as PostgREST does) and, per request, sets
// the role and request.jwt.claims from the bearer token's claims, the
// contract PostgREST follows.  The token is decoded, not verified: PostGraphile
// is spared the signature check that PostgREST and bv_core do, which favours
// the peer.
import { createServer } from 'node:http';
import { postgraphile } from 'postgraphile';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';
import { makePgService } from 'postgraphile/adaptors/pg';
import { grafserv } from 'postgraphile/grafserv/node';

const [port, connectionString, schema] = process.argv.slice(2);

function claims(req) {
  const auth = req?.headers?.authorization ?? '';
  const m = /^Bearer [^.]+\.([^.]+)\./.exec(auth);
  if (!m) return null;
  return JSON.parse(Buffer.from(m[1], 'base64url').toString('utf8'));
}

const preset = {
  extends: [PostGraphileAmberPreset],
  // The commerce tables belong to extension bv_commerce, which PostGraphile
  // hides by default; and it would expose only what bv_authenticator itself
  // may do.  Grants and RLS are enforced per request under the token's role.
  disablePlugins: ['PgRBACPlugin', 'PgRemoveExtensionResourcesPlugin'],
  pgServices: [makePgService({ connectionString, schemas: [schema], poolSize: 10 })],
  grafserv: { port: Number(port), graphqlPath: '/graphql', graphiql: false, watch: false },
  grafast: {
    explain: false,
    context(requestContext) {
      const c = claims(requestContext.node?.req);
      return {
        pgSettings: c
          ? { role: c.role, 'request.jwt.claims': JSON.stringify(c) }
          : { role: 'bv_anon' },
      };
    },
  },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = createServer();
server.on('error', (e) => { console.error(e); process.exit(1); });
serv.addTo(server);
server.listen(Number(port), '127.0.0.1', () => console.error(`postgraphile listening on ${port}`));
