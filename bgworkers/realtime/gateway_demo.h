/*-------------------------------------------------------------------------
 *
 * gateway_demo.h
 *	  The demo page the gateway serves at "/": the browser's own WebSocket
 *	  and EventSource on the same topic, each writing what it receives into
 *	  the page (the headless-browser test reads the DOM).
 *
 * Query: ?token=<JWT>&topic=<topic>&events=<a,b>&expect=<n>&last_id=<id>;
 * with last_id both transports resume after that position (replay from
 * the history); when both have received n messages the title becomes
 * "done" and both close (the browser test waits for that title through
 * the DevTools protocol, then reads the DOM).  No data from the query is
 * inserted as HTML: received text goes in with textContent.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_REALTIME_GATEWAY_DEMO_H
#define BV_REALTIME_GATEWAY_DEMO_H

static const char rt_demo_page[] =
	"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bv_realtime demo</title></head>\n"
	"<body><h1>bv_realtime</h1>\n"
	"<p>WebSocket: <span id=\"ws-state\">connecting</span> &middot; SSE: <span id=\"sse-state\">connecting</span></p>\n"
	"<h2>WebSocket</h2><pre id=\"ws\"></pre><h2>Server-Sent Events</h2><pre id=\"sse\"></pre>\n"
	"<script>\n"
	"const q = new URLSearchParams(location.search);\n"
	"const token = q.get('token') || '', topic = q.get('topic') || 'demo';\n"
	"const expect = parseInt(q.get('expect') || '0', 10), last = q.get('last_id') || '';\n"
	"const got = {ws: 0, sse: 0};\n"
	"function add(id, text) { const el = document.getElementById(id); el.textContent += text + '\\n'; }\n"
	"function check() { if (expect > 0 && got.ws >= expect && got.sse >= expect) {\n"
	"  document.title = 'done'; es.close(); ws.close(1000, 'done'); } }\n"
	"const base = location.host;\n"
	"// token, topic and position at connect: no message to send first\n"
	"const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + base + '/socket?access_token='\n"
	"  + encodeURIComponent(token) + '&topics=' + encodeURIComponent(topic) + (last ? '&last_id=' + encodeURIComponent(last) : ''));\n"
	"ws.onopen = () => { if (document.getElementById('ws-state').textContent === 'connecting')\n"
	"  document.getElementById('ws-state').textContent = 'open'; };\n"
	"ws.onmessage = (e) => { const m = JSON.parse(e.data);\n"
	"  if (m.type === 'message') { got.ws++; add('ws', m.id + ' ' + m.event + ' ' + JSON.stringify(m.payload)); check(); }\n"
	"  else if (m.type === 'subscribed') { document.getElementById('ws-state').textContent = 'subscribed'; }\n"
	"  else add('ws', '# ' + e.data); };\n"
	"ws.onclose = (e) => { add('ws', '# closed ' + e.code + ' ' + e.reason); };\n"
	"const es = new EventSource('/events?topics=' + encodeURIComponent(topic) + '&access_token=' + encodeURIComponent(token)\n"
	"  + (last ? '&last_event_id=' + encodeURIComponent(last) : ''));\n"
	"es.onopen = () => { document.getElementById('sse-state').textContent = 'open'; };\n"
	"es.onmessage = (e) => { add('sse', '# ' + e.data); };\n"
	"es.addEventListener('error', (e) => { if (e.data) add('sse', '# error ' + e.data); });\n"
	"es.addEventListener('resync', (e) => { add('sse', '# resync ' + e.data); });\n"
	"function onEvent(e) { const m = JSON.parse(e.data); got.sse++; add('sse', e.lastEventId + ' ' + m.event + ' ' + JSON.stringify(m.payload)); check(); }\n"
	"for (const name of (q.get('events') || 'demo').split(',')) es.addEventListener(name, onEvent);\n"
	"</script></body></html>\n";

#endif /* BV_REALTIME_GATEWAY_DEMO_H */
