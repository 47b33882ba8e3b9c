// One GraphQL-over-HTTP POST to PostgREST's /rpc/graphql, for check.mjs and
// differ.mjs.  bv_core's per-user rate limit answers 429 with Retry-After
// when requests come faster than it allows: wait as told and retry.
export async function post(url, token, query, variables) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  for (let attempt = 0; ; attempt += 1) {
    const r = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
    if (r.status === 429 && attempt < 20) {
      await r.arrayBuffer();
      const wait = Number(r.headers.get('retry-after')) || 1;
      await new Promise((done) => { setTimeout(done, wait * 1000); });
      continue;
    }
    return { status: r.status, body: await r.json() };
  }
}
