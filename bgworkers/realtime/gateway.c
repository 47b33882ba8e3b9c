/*-------------------------------------------------------------------------
 *
 * gateway.c
 *	  The network side of bv_realtime: libwebsockets serving WebSocket
 *	  (RFC 6455) and Server-Sent Events on one port, the topic registry and
 *	  the bounded per-client queues.
 *
 * Event loop: the worker waits in PostgreSQL's WaitEventSet (latch,
 * postmaster death, the replication socket) and must also wake for the
 * gateway's sockets.  Debian's libwebsockets is built without external-poll
 * callbacks, so this file keeps an epoll set of its own, whose single
 * descriptor the worker adds to its WaitEventSet: the listening socket
 * (level-triggered) and every accepted socket (edge-triggered, registered
 * at LWS_CALLBACK_FILTER_NETWORK_CONNECTION, leaving the set when closed).
 * rt_gateway_service() hands ready sockets to lws_service_fd(), then hands
 * the clients that queued something to lws_service_fd() as writable
 * (flush_writers: an already-writable socket gives no edge), and every
 * 100 ms runs lws_service_tsi(ctx, -1) for lws's timers and a poll of all
 * its sockets that catches anything an edge missed.  One process, one
 * thread, no locks.
 *
 * Routes (one protocol handles HTTP and WebSocket reasons):
 *   GET /socket (WebSocket upgrade; any path upgrades)  JSON messages
 *   GET /events?topics=a,b   text/event-stream
 *   GET /        the demo page;  GET /health  "ok"
 * A token comes as "Authorization: Bearer", ?access_token= (browsers'
 * EventSource cannot set headers) or, for WebSocket, a first message
 * {"type":"auth","token":...} within bv_realtime.auth_timeout.
 *
 * Delivery: rt_gateway_publish() turns each committed event into one
 * RtMsg holding both wire forms, and puts a reference into the queue of
 * every subscriber of its topic whose subscription started before it.  A
 * queue over bv_realtime.client_queue messages or client_queue_bytes bytes
 * is a slow client: its queue is dropped, it is closed with a reason
 * (WebSocket 4008, SSE "event: error") and counted; the others never wait.
 *
 * Limits against one abusive client: connections per client address
 * (bv_realtime.max_connections_per_ip, counted in a dynahash of addresses
 * while a WebSocket or SSE connection is counted; refused with HTTP 429 or
 * close 1008) and a token bucket per WebSocket on client messages
 * (bv_realtime.client_messages_per_second and _burst: over the rate a
 * message is dropped with an error reply; more than a burst of refusals in
 * a row closes the connection with 1008).
 *
 * Memory: everything that libwebsockets callbacks touch is malloc'd (the
 * per-session Client is lws's per_session_data), so no PostgreSQL error
 * can unwind through lws; the topic registry is a dynahash in
 * TopMemoryContext; transient palloc's happen in the worker's per-pass
 * context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <libwebsockets.h>

#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "bv_common.h"
#include "bv_realtime.h"
#include "gateway_demo.h"

/* Bytes of request line and headers lws keeps for one request. */
#define RT_MAX_HEADER_DATA (4096 + RT_TOKEN_MAX)

typedef enum ClientKind
{
	CK_HTTP = 0, /* a plain request (demo page, health, refusal) */
	CK_WS,
	CK_SSE
} ClientKind;

typedef struct TopicEntry
{
	char topic[RT_TOPIC_MAX + 1]; /* hash key */
	dlist_head subs;              /* broadcast topics: the subscriptions */
	int nsubs;                    /* all subscriptions, grouped or not */
	bool is_table;                /* "table:...": subscriptions are in groups */
	dlist_head groups;            /* table topics: RlsGroups */
} TopicEntry;

/*
 * The subscribers of one table that share a role and claims (apart from
 * exp, iat, nbf, jti): RLS gives them the same rows, so visibility is
 * checked once per group, table and batch (changes.c).
 */
typedef struct RlsGroup
{
	dlist_node node; /* in TopicEntry.groups */
	char role[NAMEDATALEN];
	char *claims; /* malloc'd */
	dlist_head subs;
	int nsubs;
	uint64 vis_gen; /* vis is for publish pass number vis_gen */
	bool *vis;      /* per event of the batch (the pass's context) */
} RlsGroup;

struct Client;

typedef struct Sub
{
	dlist_node topic_node;  /* in TopicEntry.subs */
	dlist_node client_node; /* in Client.subs */
	struct Client *client;
	TopicEntry *entry;
	RtPos after;     /* deliver only positions after this */
	RlsGroup *group; /* table subscriptions: their group (topic_node is in it) */
	RtFilter filter; /* table subscriptions: operations and conditions */
} Sub;

typedef struct Client
{
	struct lws *wsi;
	ClientKind kind;
	bool counted; /* in the connection gauges */
	bool authed;
	RtIdentity id;
	TimestampTz connected_at, last_rx, last_tx, ping_sent_at;
	bool ping_due, ping_sent;
	/* queue: a ring of references */
	RtMsg **q;
	int qhead, qcount, qcap;
	size_t qbytes;
	dlist_head subs;
	int nsubs;
	dlist_node all_node;
	dlist_node write_node; /* in pending_writers while write_pending */
	bool write_pending;
	/* closing */
	bool closing;
	bool close_now; /* SSE: the final event is out, close */
	int close_code;
	char close_reason[120];
	/* a WebSocket message being received in fragments */
	char *rx;
	size_t rxlen;
	/* client messages and presence */
	uint64 conn_id;       /* this connection's number (presence entries) */
	struct Grant *grants; /* publish / presence decisions, cached */
	int ngrants;
	bool has_presence; /* may have presence entries */
	/* client message rate (token bucket) and the client's address */
	double rl_tokens;
	TimestampTz rl_at;               /* when rl_tokens was last refilled */
	int rl_strikes;                  /* messages refused in a row */
	char peer[INET6_ADDRSTRLEN + 8]; /* counted in peers while counted */
	struct UserEntry *user;          /* counted in users (its token's sub); NULL: not */
									 /* handler replies (client messages routed to an SQL handler) */
} Client;

/* Connections per client address (bv_realtime.max_connections_per_ip). */
typedef struct PeerEntry
{
	char peer[INET6_ADDRSTRLEN + 8]; /* hash key */
	int n;
} PeerEntry;

/*
 * Connections per user (bv_realtime.max_connections_per_user): keyed by the
 * token's sub claim, "=<sub>" when it is at most RT_PRESENCE_KEY bytes,
 * else "#<64-bit hash of it, hex>:<length>".  Entries stay where dynahash
 * put them, so a Client points at its own.
 */
#define RT_USER_KEY_LEN (RT_PRESENCE_KEY + 2)
typedef struct UserEntry
{
	char key[RT_USER_KEY_LEN]; /* hash key */
	int n;
} UserEntry;

/* A cached authorization of one action on one topic (malloc'd). */
typedef struct Grant
{
	struct Grant *next;
	char action[16];
	bool ok;
	Oid handler; /* publish: the SQL handler of the topic and event; InvalidOid: broadcast */
	char topic[FLEXIBLE_ARRAY_MEMBER];
} Grant;

static struct lws_context *ctx = NULL;
static int epfd = -1;
static HTAB *topics = NULL;
static HTAB *peers = NULL;
static HTAB *users = NULL;
static dlist_head all_clients = DLIST_STATIC_INIT(all_clients);
static TimestampTz last_lws_timers = 0;
static dlist_head pending_writers = DLIST_STATIC_INIT(pending_writers);
static uint64 next_conn_id = 1;
static bool stopping = false; /* the context is being destroyed: no fan-out */
/* client_writable()'s buffer for several queued messages in one send (malloc'd) */
#define RT_GATHER_BYTES (64 * 1024)
static unsigned char *gather_buf = NULL;
static size_t gather_cap = 0;

static void client_close(Client *c, int code, const char *reason);
static void presence_leave_all(Client *c);
static char *url_arg(struct lws *wsi, const char *name, int maxlen);

/* ---- messages ---- */

static void
msg_unref(RtMsg *m)
{
	if (m && --m->refcount <= 0)
	{
		free(m->ws);
		free(m->sse);
		free(m);
	}
}

/*
 * The header of an unmasked, final WebSocket text frame of len payload
 * bytes (RFC 6455 5.2), written to hdr (at most 10 bytes); returns its
 * length.
 */
static size_t
ws_frame_header(unsigned char *hdr, size_t len)
{
	int i;

	hdr[0] = 0x81; /* FIN, text */
	if (len < 126)
	{
		hdr[1] = (unsigned char) len;
		return 2;
	}
	if (len < 65536)
	{
		hdr[1] = 126;
		hdr[2] = (unsigned char) (len >> 8);
		hdr[3] = (unsigned char) len;
		return 4;
	}
	hdr[1] = 127;
	for (i = 0; i < 8; i++)
		hdr[2 + i] = (unsigned char) ((uint64) len >> (56 - 8 * i));
	return 10;
}

/*
 * A message with the given wire forms (either may be NULL).  The
 * WebSocket form is framed here, once for all its subscribers: ws +
 * LWS_PRE holds the complete frame, which client_writable() writes as raw
 * bytes (several queued frames in one send).
 */
static RtMsg *
msg_new(const char *ws, size_t ws_len, const char *sse, size_t sse_len)
{
	RtMsg *m = calloc(1, sizeof(RtMsg));

	if (m == NULL)
		return NULL;
	if (ws)
	{
		size_t hlen;

		m->ws = malloc(LWS_PRE + 10 + ws_len + 1);
		if (m->ws == NULL)
			goto oom;
		hlen = ws_frame_header(m->ws + LWS_PRE, ws_len);
		memcpy(m->ws + LWS_PRE + hlen, ws, ws_len);
		m->ws_len = hlen + ws_len;
	}
	if (sse)
	{
		m->sse = malloc(LWS_PRE + sse_len + 1);
		if (m->sse == NULL)
			goto oom;
		memcpy(m->sse + LWS_PRE, sse, sse_len);
		m->sse_len = sse_len;
	}
	return m;
oom:
	free(m->ws);
	free(m);
	return NULL;
}

/* The two wire forms of a broadcast message (palloc'd scratch, then copied). */
static RtMsg *
msg_from_event(const RtEvent *ev)
{
	char id[RT_ID_LEN];
	StringInfoData ws, sse;
	RtMsg *m;

	rt_pos_format(ev->pos, id);
	initStringInfo(&ws);
	appendStringInfo(&ws, "{\"type\":\"message\",\"topic\":\"%s\",\"event\":\"%s\",\"id\":\"%s\","
						  "\"payload\":%s}",
					 ev->topic, ev->event, id, ev->payload);
	initStringInfo(&sse);
	appendStringInfo(&sse, "id: %s\nevent: %s\ndata: %s\n\n", id, ev->event, ws.data);
	m = msg_new(ws.data, ws.len, sse.data, sse.len);
	pfree(ws.data);
	pfree(sse.data);
	if (m)
	{
		m->pos = ev->pos;
		m->commit_time = ev->commit_time;
		strlcpy(m->topic, ev->topic, sizeof(m->topic));
	}
	return m;
}

/* A control message: JSON for WebSocket, an SSE event of the given name. */
static RtMsg *
msg_control(const char *sse_event, const char *json)
{
	StringInfoData sse;
	RtMsg *m;

	initStringInfo(&sse);
	if (sse_event)
		appendStringInfo(&sse, "event: %s\ndata: %s\n\n", sse_event, json);
	else
		appendStringInfoString(&sse, json); /* already SSE text (comments) */
	m = msg_new(json, strlen(json), sse.data, sse.len);
	pfree(sse.data);
	return m;
}

/*
 * JSON string contents for a short text (at most 120 bytes kept): anything
 * but printable ASCII other than quotes and backslashes becomes '?'.
 * Returns a palloc'd string (the worker's per-pass context).
 */
static const char *
json_safe(const char *s)
{
	char *buf = palloc(121);
	int i, j = 0;

	for (i = 0; s[i] && j < 120; i++)
	{
		unsigned char ch = (unsigned char) s[i];

		buf[j++] = (ch < 0x20 || ch == '"' || ch == '\\' || ch >= 0x7f) ? '?' : ch;
	}
	buf[j] = '\0';
	return buf;
}

/* ---- queues ---- */

/*
 * c has something to write: ask lws, and note c for flush_writers(), which
 * hands its socket to lws as writable from the worker's loop (the epoll set
 * is edge-triggered, so a socket that stays writable gives no event).
 */
static void
want_write(Client *c)
{
	lws_callback_on_writable(c->wsi);
	if (!c->write_pending)
	{
		c->write_pending = true;
		dlist_push_tail(&pending_writers, &c->write_node);
	}
}

/* Serve the clients that want to write (never from inside a callback). */
static void
flush_writers(void)
{
	while (!dlist_is_empty(&pending_writers))
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		Client *c = dlist_container(Client, write_node, dlist_pop_head_node(&pending_writers));
		struct lws_pollfd pfd;

		c->write_pending = false;
		pfd.fd = lws_get_socket_fd(c->wsi);
		pfd.events = POLLOUT;
		pfd.revents = POLLOUT;
		if (pfd.fd >= 0)
			lws_service_fd(ctx, &pfd);
	}
}

static void
queue_clear(Client *c)
{
	while (c->qcount > 0)
	{
		msg_unref(c->q[c->qhead]);
		c->qhead = (c->qhead + 1) % c->qcap;
		c->qcount--;
	}
	c->qbytes = 0;
}

static size_t
msg_size(Client *c, RtMsg *m)
{
	return c->kind == CK_SSE ? m->sse_len : m->ws_len;
}

/*
 * Queue a reference to m for c; a queue over its bounds disconnects c as a
 * slow client (control messages are exempt from the bounds).
 */
static void
enqueue(Client *c, RtMsg *m, bool data)
{
	if (c->closing || m == NULL)
		return;
	if (data && (c->qcount >= rt_client_queue ||
				 c->qbytes + msg_size(c, m) > (size_t) rt_client_queue_bytes))
	{
		rt_count(RT_C_DROPS, 1);
		client_close(c, 4008, "slow client: queue full");
		return;
	}
	if (c->qcount == c->qcap)
	{
		int ncap = c->qcap ? c->qcap * 2 : 8;
		RtMsg **nq = malloc(ncap * sizeof(RtMsg *));
		int i;

		if (nq == NULL)
		{
			client_close(c, 1011, "out of memory");
			return;
		}
		for (i = 0; i < c->qcount; i++)
			nq[i] = c->q[(c->qhead + i) % c->qcap];
		free(c->q);
		c->q = nq;
		c->qhead = 0;
		c->qcap = ncap;
	}
	c->q[(c->qhead + c->qcount) % c->qcap] = m;
	c->qcount++;
	c->qbytes += msg_size(c, m);
	m->refcount++;
	want_write(c);
}

static void
send_control(Client *c, const char *sse_event, const char *json)
{
	RtMsg *m = msg_control(sse_event, json);

	if (m == NULL)
		return;
	enqueue(c, m, false);
	if (m->refcount == 0)
		msg_unref(m);
}

/*
 * Close c with a reason: WebSocket close frame (code, reason), or for SSE a
 * final "event: error".  The queue is dropped; lws kills the connection if
 * the peer does not take the close within 5 s.
 */
static void
client_close(Client *c, int code, const char *reason)
{
	if (c->closing)
		return;
	queue_clear(c);
	if (c->kind == CK_SSE)
	{
		char json[200];

		snprintf(json, sizeof(json), "{\"type\":\"error\",\"code\":%d,\"reason\":\"%s\"}", code,
				 json_safe(reason));
		send_control(c, "error", json);
	}
	c->closing = true;
	c->close_code = code;
	strlcpy(c->close_reason, reason, sizeof(c->close_reason));
	want_write(c);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 5);
}

/* ---- subscriptions ---- */

static Sub *
find_sub(Client *c, const char *topic)
{
	dlist_iter it;

	dlist_foreach(it, &c->subs)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		Sub *s = dlist_container(Sub, client_node, it.cur);

		if (strcmp(s->entry->topic, topic) == 0)
			return s;
	}
	return NULL;
}

static void
sub_remove(Sub *s)
{
	TopicEntry *e = s->entry;

	dlist_delete(&s->topic_node);
	dlist_delete(&s->client_node);
	if (s->group && --s->group->nsubs == 0)
	{
		dlist_delete(&s->group->node);
		free(s->group->claims);
		free(s->group);
	}
	rt_filter_free(&s->filter);
	s->client->nsubs--;
	if (--e->nsubs == 0)
		hash_search(topics, e->topic, HASH_REMOVE, NULL);
	pg_atomic_fetch_sub_u32(&rt_shared->subscriptions, 1);
	free(s);
}

/* The group of table topic e for c's role and claims (created if new). */
static RlsGroup *
group_for(TopicEntry *e, Client *c)
{
	dlist_iter it;
	RlsGroup *g;

	dlist_foreach(it, &e->groups)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		g = dlist_container(RlsGroup, node, it.cur);
		if (strcmp(g->role, c->id.role) == 0 && strcmp(g->claims, c->id.rls_claims) == 0)
			return g;
	}
	g = calloc(1, sizeof(RlsGroup));
	if (g == NULL || (g->claims = strdup(c->id.rls_claims)) == NULL)
	{
		free(g);
		return NULL;
	}
	strlcpy(g->role, c->id.role, sizeof(g->role));
	dlist_init(&g->subs);
	dlist_push_tail(&e->groups, &g->node);
	return g;
}

/* Subscribe c to topic from after on; a table topic takes *filter (moved). */
static Sub *
sub_add(Client *c, const char *topic, RtPos after, RtFilter *filter)
{
	char key[RT_TOPIC_MAX + 1] = {0};
	TopicEntry *e;
	bool found;
	Sub *s = calloc(1, sizeof(Sub));

	if (s == NULL)
		return NULL;
	strlcpy(key, topic, sizeof(key));
	e = hash_search(topics, key, HASH_ENTER, &found);
	if (!found)
	{
		dlist_init(&e->subs);
		dlist_init(&e->groups);
		e->nsubs = 0;
		e->is_table = strncmp(key, RT_TABLE_PREFIX, strlen(RT_TABLE_PREFIX)) == 0;
	}
	if (e->is_table && (s->group = group_for(e, c)) == NULL)
	{
		if (e->nsubs == 0)
			hash_search(topics, key, HASH_REMOVE, NULL);
		free(s);
		return NULL;
	}
	s->client = c;
	s->entry = e;
	s->after = after;
	if (s->group)
	{
		s->filter = *filter;
		memset(filter, 0, sizeof(*filter));
		dlist_push_tail(&s->group->subs, &s->topic_node);
		s->group->nsubs++;
	}
	else
		dlist_push_tail(&e->subs, &s->topic_node);
	dlist_push_tail(&c->subs, &s->client_node);
	e->nsubs++;
	c->nsubs++;
	pg_atomic_fetch_add_u32(&rt_shared->subscriptions, 1);
	return s;
}

/*
 * Join topic: authorize once under the client's role and subscribe from
 * the history's high mark on (what comes later is delivered live).  A
 * table topic ("table:<schema>.<name>") takes a filter and an operation
 * list and is authorized by the table (published, SELECT privilege), its
 * rows by RLS per batch.  Returns false with *reason when refused.
 */
static bool
join(Client *c, const char *topic, const char *filter, const char *events, char *reason,
	 size_t reasonlen)
{
	RtFilter f;

	if (!rt_name_is_valid(topic, strlen(topic), RT_TOPIC_MAX))
	{
		strlcpy(reason, "invalid topic name", reasonlen);
		return false;
	}
	if (find_sub(c, topic) != NULL)
		return true;
	if (c->nsubs >= rt_max_subscriptions)
	{
		strlcpy(reason, "too many subscriptions", reasonlen);
		return false;
	}
	memset(&f, 0, sizeof(f));
	if (strncmp(topic, RT_TABLE_PREFIX, strlen(RT_TABLE_PREFIX)) == 0)
	{
		if (!rt_filter_parse(filter, events, &f, reason, reasonlen))
			return false;
		if (!rt_table_authorize(&c->id, topic, &f, reason, reasonlen))
		{
			rt_filter_free(&f);
			rt_count(RT_C_JOINS_DENIED, 1);
			return false;
		}
	}
	else if (!rt_authorize(&c->id, topic, "subscribe", NULL, NULL, reason, reasonlen))
	{
		rt_count(RT_C_JOINS_DENIED, 1);
		return false;
	}
	if (sub_add(c, topic, rt_history_high(), &f) == NULL)
	{
		rt_filter_free(&f);
		strlcpy(reason, "out of memory", reasonlen);
		return false;
	}
	return true;
}

/*
 * Resume topics (just joined) after position last_id: one history read
 * over all of them, in position order (an SSE client has one
 * Last-Event-ID for its whole stream).  Returns the replay as RtMsgs, or
 * NIL with *resync set when the history cannot tell.
 */
static List *
resume(List *topics, const char *last_id, const char **resync)
{
	RtPos from;
	List *rows = NIL, *replay = NIL;
	RtResume r = RT_RESUME_MISS;
	ListCell *lc;

	*resync = NULL;
	if (topics == NIL || last_id == NULL || last_id[0] == '\0')
		return NIL;
	if (rt_pos_parse(last_id, &from))
		r = rt_history_read(topics, from, rt_client_queue, &rows);
	if (r != RT_RESUME_HIT)
	{
		rt_count(RT_C_RESUME_MISSES, 1);
		*resync = r == RT_RESUME_TOO_MANY ? "too many messages missed"
										  : "position not in the history";
		return NIL;
	}
	rt_count(RT_C_RESUME_HITS, 1);
	foreach (lc, rows)
	{
		RtMsg *m = msg_from_event(lfirst(lc));

		if (m != NULL)
			replay = lappend(replay, m);
	}
	return replay;
}

/* Queue a replay (after the reply to the join). */
static void
enqueue_replay(Client *c, List *replay)
{
	ListCell *lc;

	foreach (lc, replay)
	{
		RtMsg *m = lfirst(lc);

		enqueue(c, m, true);
		if (m->refcount == 0)
			msg_unref(m);
	}
}

/* ---- the connection's life ---- */

/* ---- client messages and presence ---- */

/* A message to every subscriber of a (broadcast) topic but except. */
static void
topic_send(const char *topic, RtMsg *m, Client *except)
{
	char key[RT_TOPIC_MAX + 1] = {0};
	TopicEntry *e;
	dlist_mutable_iter it;

	if (m == NULL)
		return;
	strlcpy(key, topic, sizeof(key));
	e = hash_search(topics, key, HASH_FIND, NULL);
	m->refcount++;
	if (e != NULL && !stopping)
		dlist_foreach_modify(it, &e->subs)
		{
			/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
			Sub *s = dlist_container(Sub, topic_node, it.cur);

			if (s->client != except)
				enqueue(s->client, m, true);
		}
	msg_unref(m);
}

/*
 * The presence key of a client: its token's sub, else (no sub claim) its
 * role.  A sub over RT_PRESENCE_KEY bytes has no key: presence refuses it
 * rather than file it under the role, shared with every other such client.
 */
static const char *
client_key(Client *c)
{
	return c->id.sub[0] ? c->id.sub : c->id.role;
}

/* Whether the client's sub claim is too long to be a presence key. */
static bool
client_sub_too_long(Client *c)
{
	return c->id.sub[0] == '\0' && c->id.subject != NULL;
}

/* Who a client message is from: the whole sub claim, else the role. */
static const char *
client_from(Client *c)
{
	return c->id.subject != NULL ? c->id.subject : c->id.role;
}

/*
 * May c do action (publish, presence) on topic?  Decided once per
 * connection (and, for publish, per event name: the policy sees it as
 * request.realtime.event) by bv_realtime.authorize() under its role, then
 * cached with, for publish, the topic's SQL handler (*handler; InvalidOid:
 * broadcast).  The cache key is "topic" or "topic event" (names have no
 * spaces).
 */
static bool
client_may(Client *c, const char *topic, const char *action, const char *event, Oid *handler,
		   char *reason, size_t reasonlen)
{
	Grant *g;
	bool ok;
	Oid h = InvalidOid;
	char key[RT_TOPIC_MAX + RT_EVENT_MAX + 2];

	snprintf(key, sizeof(key), "%s%s%s", topic, event ? " " : "", event ? event : "");
	for (g = c->grants; g; g = g->next)
		if (strcmp(g->action, action) == 0 && strcmp(g->topic, key) == 0)
		{
			if (!g->ok)
				strlcpy(reason, "not allowed", reasonlen);
			if (handler)
				*handler = g->handler;
			return g->ok;
		}
	ok = rt_authorize(&c->id, topic, action, event, handler ? &h : NULL, reason, reasonlen);
	if (handler)
		*handler = h;
	if (!ok)
		rt_count(RT_C_JOINS_DENIED, 1);
	if (c->ngrants < 2 * rt_max_subscriptions &&
		(g = malloc(offsetof(Grant, topic) + strlen(key) + 1)) != NULL)
	{
		strlcpy(g->action, action, sizeof(g->action));
		strcpy(g->topic, key);
		g->ok = ok;
		g->handler = h;
		g->next = c->grants;
		c->grants = g;
		c->ngrants++;
	}
	return ok;
}

/* The presence event of key on topic (join, update, leave). */
static RtMsg *
presence_event(const char *topic, const char *event, const char *key, const char *state)
{
	StringInfoData j;
	RtMsg *m;

	initStringInfo(&j);
	appendStringInfo(&j, "{\"type\":\"presence\",\"topic\":\"%s\",\"event\":\"%s\",\"key\":", topic,
					 event);
	escape_json(&j, key);
	if (state)
		appendStringInfo(&j, ",\"state\":%s", state);
	appendStringInfoChar(&j, '}');
	m = msg_control("presence", j.data);
	pfree(j.data);
	return m;
}

/* c's presence leaves every topic (connection closed). */
static void
presence_leave_all(Client *c)
{
	List *keys, *left;
	int i;

	if (!c->has_presence)
		return;
	c->has_presence = false;
	left = rt_presence_remove(c->conn_id, NULL, &keys);
	for (i = 0; i < list_length(left); i++)
	{
		const char *topic = list_nth(left, i);

		rt_count(RT_C_PRESENCE_LEAVES, 1);
		topic_send(topic, presence_event(topic, "leave", list_nth(keys, i), NULL), c);
	}
}

/* An error reply about topic. */
static void
reply_error(Client *c, const char *topic, const char *reason)
{
	char json[600];

	snprintf(json, sizeof(json), "{\"type\":\"error\",\"topic\":\"%s\",\"reason\":\"%s\"}",
			 json_safe(topic), json_safe(reason));
	send_control(c, NULL, json);
}

/* May topic carry client messages and presence?  (Not a table's.) */
static bool
client_topic_ok(Client *c, const char *topic)
{
	if (!rt_name_is_valid(topic, strlen(topic), RT_TOPIC_MAX))
	{
		reply_error(c, topic, "invalid topic name");
		return false;
	}
	if (strncmp(topic, RT_TABLE_PREFIX, strlen(RT_TABLE_PREFIX)) == 0)
	{
		reply_error(c, topic, "table topics carry table changes only");
		return false;
	}
	return true;
}

/*
 * The client's "ref" of a message, as raw JSON to echo in the reply: a
 * string or a number of at most 100 bytes; "null" otherwise.
 */
static const char *
client_ref(const char *text)
{
	char *ref = rt_json_raw_field(text, "ref");

	if (ref == NULL || strlen(ref) > 100 ||
		!(ref[0] == '"' || ref[0] == '-' || (ref[0] >= '0' && ref[0] <= '9')))
		return "null";
	return ref;
}

/*
 * A client message on a topic with an SQL handler: call it (handler.c) and
 * answer {"type":"reply","ref":..,"status":200,"result":..} or
 * {"type":"reply","ref":..,"status":4xx/5xx,"error":{"code","message","hint"}}.
 */
static void
handler_reply(Client *c, const char *topic, const char *event, const char *ref,
			  const RtHandlerResult *res)
{
	StringInfoData j;

	initStringInfo(&j);
	appendStringInfo(&j, "{\"type\":\"reply\",\"topic\":\"%s\",\"event\":\"%s\",\"ref\":%s,\"status\":%d,",
					 topic, event, ref, res->status);
	if (res->status == 200)
		appendStringInfo(&j, "\"result\":%s}", res->result ? res->result : "null");
	else
	{
		appendStringInfo(&j, "\"error\":{\"code\":\"%s\",\"message\":", res->sqlstate);
		escape_json(&j, res->message ? res->message : "request refused");
		if (res->hint)
		{
			appendStringInfoString(&j, ",\"hint\":");
			escape_json(&j, res->hint);
		}
		appendStringInfoString(&j, "}}");
	}
	send_control(c, NULL, j.data);
}

/*
 * rt_gateway_handler_reply
 *		The handler pool's answer to a call of owner (a Client that has not
 *		gone: the pool forgets a client's calls when it ends).
 */
void
rt_gateway_handler_reply(void *owner, const char *topic, const char *event, const char *ref,
						 const RtHandlerResult *res)
{
	Client *c = owner;

	if (c->counted && !c->closing)
		handler_reply(c, topic, event, ref, res);
}

static void
client_handle(Client *c, const char *text, const char *topic, const char *event, Oid handler)
{
	RtHandlerResult res;
	char *payload = rt_json_raw_field(text, "payload");
	const char *ref = client_ref(text);
	bool busy;

	/* off the loop when the pool can take it (handler_pool.c) */
	if (rt_pool_submit(c, &c->id, handler, topic, event, payload, ref, &busy))
		return;
	if (busy)
	{
		memset(&res, 0, sizeof(res));
		res.status = 503;
		strlcpy(res.sqlstate, "53000", sizeof(res.sqlstate));
		res.message = pstrdup("too many handler calls are waiting");
		res.hint = pstrdup("Try again later.");
		rt_count(RT_C_HANDLER_ERRORS, 1);
		handler_reply(c, topic, event, ref, &res);
		return;
	}
	rt_handler_call(&c->id, handler, topic, event, payload, &res);
	handler_reply(c, topic, event, ref, &res);
}

/*
 * {"type":"broadcast","topic":..,"event":..,"payload":..}: relayed to the
 * topic's other subscribers, not stored, no position; or, when the topic's
 * publish grant for the event names a handler, answered by the handler.
 */
static void
client_broadcast(Client *c, const char *text, const char *topic)
{
	char reason[RT_ERRLEN];
	char *event = NULL, *payload;
	JsonTokenType t;
	StringInfoData j;
	RtMsg *m;
	Oid handler = InvalidOid;

	if (!client_topic_ok(c, topic))
		return;
	if (bv_json_top_field(text, "event", &event, &t) != JSON_SUCCESS || event == NULL ||
		t != JSON_TOKEN_STRING || !rt_name_is_valid(event, strlen(event), RT_EVENT_MAX))
	{
		reply_error(c, topic, "event: 1-100 bytes of printable ASCII");
		return;
	}
	if (!client_may(c, topic, "publish", event, &handler, reason, sizeof(reason)))
	{
		if (rt_json_raw_field(text, "ref") != NULL)
		{
			/* a request (it has a ref): a reply the client can match */
			initStringInfo(&j);
			appendStringInfo(&j, "{\"type\":\"reply\",\"topic\":\"%s\",\"event\":\"%s\",\"ref\":%s,"
								 "\"status\":403,\"error\":{\"code\":\"42501\",\"message\":\"%s\","
								 "\"hint\":\"Join the topic first, or ask for access.\"}}",
							 topic, event, client_ref(text), json_safe(reason));
			send_control(c, NULL, j.data);
		}
		else
			reply_error(c, topic, reason);
		return;
	}
	if (OidIsValid(handler))
	{
		client_handle(c, text, topic, event, handler);
		return;
	}
	payload = rt_json_raw_field(text, "payload");
	initStringInfo(&j);
	appendStringInfo(&j, "{\"type\":\"message\",\"topic\":\"%s\",\"event\":\"%s\",\"from\":", topic,
					 event);
	escape_json(&j, client_from(c));
	appendStringInfo(&j, ",\"payload\":%s}", payload ? payload : "null");
	m = msg_control(event, j.data);
	pfree(j.data);
	rt_count(RT_C_CLIENT_BROADCASTS, 1);
	topic_send(topic, m, c);
}

/*
 * {"type":"presence","topic":..,"state":{..}}: join (or update) c's
 * presence; {"type":"untrack","topic":..}: leave.  Subscribers of the
 * topic get the events; the client gets the topic's presence.
 */
static void
client_presence(Client *c, const char *text, const char *topic, bool track)
{
	char reason[RT_ERRLEN];
	char *state;
	bool joined, conn_full;
	StringInfoData j;

	if (!client_topic_ok(c, topic))
		return;
	if (!track)
	{
		List *keys, *left = rt_presence_remove(c->conn_id, topic, &keys);

		if (left != NIL)
		{
			rt_count(RT_C_PRESENCE_LEAVES, 1);
			topic_send(topic, presence_event(topic, "leave", client_key(c), NULL), NULL);
		}
		return;
	}
	state = rt_json_raw_field(text, "state");
	if (state == NULL || state[0] != '{')
	{
		reply_error(c, topic, "state: a JSON object");
		return;
	}
	if (strlen(state) > RT_PRESENCE_STATE)
	{
		reply_error(c, topic, "state over 512 bytes");
		return;
	}
	if (!client_may(c, topic, "presence", NULL, NULL, reason, sizeof(reason)))
	{
		reply_error(c, topic, reason);
		return;
	}
	if (client_sub_too_long(c))
	{
		reply_error(c, topic, "presence needs a sub claim of at most 256 bytes");
		return;
	}
	if (!rt_presence_set(c->conn_id, topic, client_key(c), state, rt_max_subscriptions, &joined,
						 &conn_full))
	{
		reply_error(c, topic,
					conn_full ? "too many presence topics (bv_realtime.max_subscriptions)"
							  : "presence is full (bv_realtime.max_presence)");
		return;
	}
	c->has_presence = true;
	if (joined)
		rt_count(RT_C_PRESENCE_JOINS, 1);
	topic_send(topic, presence_event(topic, joined ? "join" : "update", client_key(c), state), NULL);
	initStringInfo(&j);
	appendStringInfo(&j, "{\"type\":\"presence_state\",\"topic\":\"%s\",\"members\":%s}", topic,
					 rt_presence_list(topic));
	send_control(c, NULL, j.data);
}

/* ---- limits: connections per address, client message rate ---- */

/* The client address of wsi as text ("" when unknown). */
static void
peer_of(struct lws *wsi, char *buf, size_t len)
{
	buf[0] = '\0';
	if (lws_get_peer_simple(wsi, buf, len) == NULL)
		buf[0] = '\0';
}

/*
 * Would one more connection from wsi's address pass
 * bv_realtime.max_connections_per_ip?  Counted as refused when not.
 */
static bool
peer_may_connect(struct lws *wsi)
{
	char peer[INET6_ADDRSTRLEN + 8];
	PeerEntry *e;

	if (rt_max_conns_per_ip <= 0 || peers == NULL)
		return true;
	peer_of(wsi, peer, sizeof(peer));
	e = hash_search(peers, peer, HASH_FIND, NULL);
	if (e == NULL || e->n < rt_max_conns_per_ip)
		return true;
	rt_count(RT_C_IP_REFUSED, 1);
	return false;
}

static void
peer_acquire(Client *c)
{
	PeerEntry *e;
	bool found;

	peer_of(c->wsi, c->peer, sizeof(c->peer));
	if (peers == NULL)
		return;
	e = hash_search(peers, c->peer, HASH_ENTER, &found);
	e->n = found ? e->n + 1 : 1;
}

static void
peer_release(Client *c)
{
	PeerEntry *e;

	if (peers == NULL)
		return;
	e = hash_search(peers, c->peer, HASH_FIND, NULL);
	if (e != NULL && --e->n <= 0)
		hash_search(peers, c->peer, HASH_REMOVE, NULL);
}

/* The users-table key of a sub claim (see UserEntry). */
static void
user_key(const char *subject, char *key)
{
	size_t len = strlen(subject);

	memset(key, 0, RT_USER_KEY_LEN);
	if (len <= RT_PRESENCE_KEY)
		snprintf(key, RT_USER_KEY_LEN, "=%s", subject);
	else
		snprintf(key, RT_USER_KEY_LEN, "#%016llx:%zu",
				 (unsigned long long) DatumGetUInt64(
					 hash_bytes_extended((const unsigned char *) subject, (int) len, 0)),
				 len);
}

/*
 * Count c as one more connection of its user (the sub of id), unless that
 * would pass bv_realtime.max_connections_per_user (then false, counted as
 * refused).  A token without a sub claim counts for no user (the per
 * address limit still applies).  Counted whatever the setting, so that
 * turning the limit on with a reload sees the connections already open.
 */
static bool
user_acquire(Client *c, const RtIdentity *id)
{
	char key[RT_USER_KEY_LEN];
	UserEntry *e;
	bool found;

	if (c->user != NULL || id->subject == NULL || users == NULL)
		return true;
	user_key(id->subject, key);
	e = hash_search(users, key, HASH_ENTER, &found);
	if (!found)
		e->n = 0;
	if (rt_max_conns_per_user > 0 && e->n >= rt_max_conns_per_user)
	{
		if (e->n == 0)
			hash_search(users, key, HASH_REMOVE, NULL);
		rt_count(RT_C_USER_REFUSED, 1);
		return false;
	}
	e->n++;
	c->user = e;
	return true;
}

static void
user_release(Client *c)
{
	if (c->user == NULL || users == NULL)
		return;
	if (--c->user->n <= 0)
		hash_search(users, c->user->key, HASH_REMOVE, NULL);
	c->user = NULL;
}

#define RT_USER_LIMIT_REASON "too many connections for this user (bv_realtime.max_connections_per_user)"

/*
 * May c send one more message (bv_realtime.client_messages_per_second,
 * a token bucket of bv_realtime.client_messages_burst)?  A refused message
 * gets an error reply; a client refused more than a burst in a row is
 * flooding and is closed (1008).
 */
static bool
client_rate_ok(Client *c)
{
	TimestampTz now;
	double burst = (double) rt_client_msgs_burst;

	if (rt_client_msgs_per_s <= 0)
		return true;
	now = GetCurrentTimestamp();
	if (c->rl_at == 0)
		c->rl_tokens = burst;
	else if (now > c->rl_at)
		c->rl_tokens += (double) (now - c->rl_at) * rt_client_msgs_per_s / USECS_PER_SEC;
	if (c->rl_tokens > burst)
		c->rl_tokens = burst;
	c->rl_at = now;
	if (c->rl_tokens >= 1.0)
	{
		c->rl_tokens -= 1.0;
		c->rl_strikes = 0;
		return true;
	}
	rt_count(RT_C_RATE_LIMITED, 1);
	if (++c->rl_strikes > rt_client_msgs_burst)
	{
		rt_count(RT_C_RATE_LIMIT_CLOSES, 1);
		client_close(c, 1008, "rate limit exceeded (bv_realtime.client_messages_per_second)");
	}
	else
		send_control(c, NULL,
					 "{\"type\":\"error\",\"reason\":\"rate limit: message dropped, slow down "
					 "(bv_realtime.client_messages_per_second)\"}");
	return false;
}

static void
client_start(Client *c, struct lws *wsi, ClientKind kind)
{
	c->wsi = wsi;
	c->kind = kind;
	c->connected_at = c->last_rx = c->last_tx = GetCurrentTimestamp();
	c->conn_id = next_conn_id++;
	dlist_init(&c->subs);
	dlist_push_tail(&all_clients, &c->all_node);
	c->counted = true;
	peer_acquire(c);
	pg_atomic_fetch_add_u32(&rt_shared->connections, 1);
	pg_atomic_fetch_add_u32(kind == CK_WS ? &rt_shared->ws_connections
										  : &rt_shared->sse_connections,
							1);
	rt_count(RT_C_CONNECTIONS_TOTAL, 1);
}

static void
client_end(Client *c)
{
	dlist_mutable_iter it;

	if (!c->counted)
		return;
	c->counted = false;
	rt_pool_forget(c);
	if (c->write_pending)
		dlist_delete(&c->write_node);
	c->write_pending = false;
	dlist_foreach_modify(it, &c->subs)
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		sub_remove(dlist_container(Sub, client_node, it.cur));
	queue_clear(c);
	free(c->q);
	c->q = NULL;
	presence_leave_all(c);
	while (c->grants)
	{
		Grant *g = c->grants;

		c->grants = g->next;
		free(g);
	}
	free(c->rx);
	c->rx = NULL;
	rt_identity_free(&c->id);
	peer_release(c);
	user_release(c);
	dlist_delete(&c->all_node);
	pg_atomic_fetch_sub_u32(&rt_shared->connections, 1);
	pg_atomic_fetch_sub_u32(c->kind == CK_WS ? &rt_shared->ws_connections
											 : &rt_shared->sse_connections,
							1);
}

/* The token of a request: Authorization: Bearer, else ?access_token=. */
static char *
request_token(struct lws *wsi)
{
	int len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
	char *buf;

	if (len > 0 && len <= RT_TOKEN_MAX + 16)
	{
		buf = palloc(len + 1);
		if (lws_hdr_copy(wsi, buf, len + 1, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
			pg_strncasecmp(buf, "Bearer ", 7) == 0)
			return buf + 7;
	}
	return url_arg(wsi, "access_token", RT_TOKEN_MAX);
}

/*
 * A URL argument (urldecoded), NULL when absent or longer than maxlen.
 * lws stops at the first argument that does not fit the buffer, so the
 * buffer holds the largest request.
 */
static char *
url_arg(struct lws *wsi, const char *name, int maxlen)
{
	char *buf = palloc(RT_MAX_HEADER_DATA + 1);
	char key[64];
	const char *v;

	snprintf(key, sizeof(key), "%s=", name);
	v = lws_get_urlarg_by_name(wsi, key, buf, RT_MAX_HEADER_DATA + 1);
	if (v == NULL || strlen(v) > (size_t) maxlen)
		return NULL;
	return (char *) v;
}

/* The Last-Event-ID header (SSE resume), else ?last_event_id=. */
static char *
last_event_id(struct lws *wsi)
{
	char *buf = palloc(RT_ID_LEN + 8);
	int n = lws_hdr_custom_copy(wsi, buf, RT_ID_LEN + 8, "last-event-id:",
								(int) strlen("last-event-id:"));

	if (n > 0)
		return buf;
	return url_arg(wsi, "last_event_id", RT_ID_LEN + 8);
}

/* Write an HTTP response with a body and end the transaction. */
static int
http_respond(struct lws *wsi, int status, const char *ctype, const char *body)
{
	unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
	size_t len = strlen(body);
	unsigned char *out = palloc(LWS_PRE + len + 1);

	if (lws_add_http_common_headers(wsi, status, ctype, len, &p, end) ||
		lws_add_http_header_by_name(wsi, (unsigned char *) "cache-control:",
									(unsigned char *) "no-store", 8, &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	memcpy(out + LWS_PRE, body, len);
	if (lws_write(wsi, out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) != (int) len)
		return -1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int
http_error(struct lws *wsi, int status, const char *reason)
{
	char body[200];

	snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", json_safe(reason));
	return http_respond(wsi, status, "application/json", body);
}

/* GET /events: authenticate, join the topics, start the event stream. */
static int
sse_start(struct lws *wsi, Client *c)
{
	char reason[RT_ERRLEN];
	char *topics_arg = url_arg(wsi, "topics", RT_TOPIC_MAX * 16);
	char *last = last_event_id(wsi);
	/* the filter and operations of the table topics among them */
	char *sse_filter = url_arg(wsi, "filter", RT_FILTER_MAX);
	char *sse_events = url_arg(wsi, "events", 64);
	unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
	List *joined = NIL, *replay;
	const char *resync;
	char *tok, *save;

	/* lws keeps the session data across requests of a keep-alive connection */
	if (c->counted)
		return http_error(wsi, 400, "one event stream per connection");
	if (c->write_pending)
		dlist_delete(&c->write_node);
	memset(c, 0, sizeof(*c));
	if (!peer_may_connect(wsi))
		return http_error(wsi, 429,
						  "too many connections from this address (bv_realtime.max_connections_per_ip)");
	if (!rt_authenticate(request_token(wsi), &c->id, reason, sizeof(reason)))
	{
		rt_count(RT_C_AUTH_FAILURES, 1);
		return http_error(wsi, 401, reason);
	}
	c->authed = true;
	if (topics_arg == NULL || topics_arg[0] == '\0')
	{
		rt_identity_free(&c->id);
		return http_error(wsi, 400, "topics=... is required");
	}
	if (!user_acquire(c, &c->id))
	{
		rt_identity_free(&c->id);
		return http_error(wsi, 429, RT_USER_LIMIT_REASON);
	}
	client_start(c, wsi, CK_SSE);
	for (tok = strtok_r(topics_arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		if (!join(c, tok, sse_filter, sse_events, reason, sizeof(reason)))
		{
			/* the refusal is the response */
			client_end(c);
			return http_error(wsi, strcmp(reason, "not allowed") == 0 ? 403 : 400, reason);
		}
		joined = lappend(joined, tok);
	}
	replay = resume(joined, last, &resync);
	if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/event-stream",
									LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
		lws_add_http_header_by_name(wsi, (unsigned char *) "cache-control:",
									(unsigned char *) "no-store", 8, &p, end) ||
		lws_add_http_header_by_name(wsi, (unsigned char *) "x-accel-buffering:",
									(unsigned char *) "no", 2, &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
	send_control(c, NULL, ": bv_realtime\nretry: 2000\n\n");
	if (resync)
		send_control(c, "resync", psprintf("{\"type\":\"resync\",\"reason\":\"%s\"}", resync));
	enqueue_replay(c, replay);
	want_write(c);
	return 0;
}

/* WebSocket: authenticate with a token (at connect or in an auth message). */
/* Both absent, or both present and equal. */
static bool
same_subject(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool
ws_auth(Client *c, const char *token)
{
	char reason[RT_ERRLEN];
	RtIdentity id;

	if (!rt_authenticate(token, &id, reason, sizeof(reason)))
	{
		rt_count(RT_C_AUTH_FAILURES, 1);
		client_close(c, 4001, reason);
		return false;
	}
	if (c->authed && strcmp(id.role, c->id.role) != 0)
	{
		rt_identity_free(&id);
		client_close(c, 4001, "a refreshed token must keep the role");
		return false;
	}
	/*
	 * ... and the sub: subscriptions, presence and RLS groups belong to the
	 * first user, and bv_realtime.revoke() names users by sub (switching to
	 * another account's token would escape a ban).
	 */
	if (c->authed && !same_subject(id.subject, c->id.subject))
	{
		rt_identity_free(&id);
		client_close(c, 4001, "a refreshed token must keep the sub");
		return false;
	}
	/* the first token counts the connection for its user; a refresh keeps the same */
	if (!c->authed && !user_acquire(c, &id))
	{
		rt_identity_free(&id);
		client_close(c, 1008, RT_USER_LIMIT_REASON);
		return false;
	}
	rt_identity_free(&c->id);
	c->id = id;
	c->authed = true;
	return true;
}

/*
 * Subscribe to topics (a client message: one; the connect URL: several),
 * answer each, then replay what the client missed after last_id.
 */
static void
ws_subscribe(Client *c, List *topics, const char *last_id, const char *filter, const char *events)
{
	char reason[RT_ERRLEN], json[512];
	List *joined = NIL, *replay;
	const char *resync;
	ListCell *lc;

	foreach (lc, topics)
	{
		const char *topic = lfirst(lc);

		if (!join(c, topic, filter, events, reason, sizeof(reason)))
		{
			snprintf(json, sizeof(json), "{\"type\":\"error\",\"topic\":\"%s\",\"reason\":\"%s\"}",
					 json_safe(topic), json_safe(reason));
			send_control(c, NULL, json);
			continue;
		}
		joined = lappend(joined, (char *) topic);
	}
	replay = resume(joined, last_id, &resync);
	foreach (lc, joined)
	{
		snprintf(json, sizeof(json), "{\"type\":\"subscribed\",\"topic\":\"%s\",\"resumed\":%s}",
				 (char *) lfirst(lc), (last_id && last_id[0] && resync == NULL) ? "true" : "false");
		send_control(c, NULL, json);
		if (resync)
		{
			snprintf(json, sizeof(json), "{\"type\":\"resync\",\"topic\":\"%s\",\"reason\":\"%s\"}",
					 (char *) lfirst(lc), resync);
			send_control(c, NULL, json);
		}
	}
	enqueue_replay(c, replay);
}

/* One complete text message from a WebSocket client. */
static void
ws_message(Client *c, char *text, size_t len)
{
	char *type = NULL, *topic = NULL, *arg = NULL;
	JsonTokenType t;

	rt_count(RT_C_CLIENT_MESSAGES, 1);
	if (!client_rate_ok(c))
		return;
	if (strlen(text) != len ||
		bv_json_top_field(text, "type", &type, &t) != JSON_SUCCESS || type == NULL ||
		t != JSON_TOKEN_STRING)
	{
		send_control(c, NULL, "{\"type\":\"error\",\"reason\":\"a message is a JSON object with a \\\"type\\\"\"}");
		return;
	}
	if (strcmp(type, "auth") == 0)
	{
		if (bv_json_top_field(text, "token", &arg, &t) != JSON_SUCCESS || arg == NULL ||
			t != JSON_TOKEN_STRING)
			arg = "";
		if (ws_auth(c, arg))
			send_control(c, NULL, "{\"type\":\"authenticated\"}");
		return;
	}
	if (!c->authed)
	{
		client_close(c, 4001, "authenticate first");
		return;
	}
	if (strcmp(type, "ping") == 0)
	{
		send_control(c, NULL, "{\"type\":\"pong\"}");
		return;
	}
	if (bv_json_top_field(text, "topic", &topic, &t) != JSON_SUCCESS || topic == NULL ||
		t != JSON_TOKEN_STRING)
	{
		send_control(c, NULL, "{\"type\":\"error\",\"reason\":\"topic is required\"}");
		return;
	}
	if (strcmp(type, "subscribe") == 0)
	{
		char *filter = NULL, *events = NULL;

		if (bv_json_top_field(text, "last_id", &arg, &t) != JSON_SUCCESS || t != JSON_TOKEN_STRING)
			arg = NULL;
		if (bv_json_top_field(text, "filter", &filter, &t) != JSON_SUCCESS || t != JSON_TOKEN_STRING)
			filter = NULL;
		if (bv_json_top_field(text, "events", &events, &t) != JSON_SUCCESS || t != JSON_TOKEN_STRING)
			events = NULL;
		ws_subscribe(c, list_make1(topic), arg, filter, events);
	}
	else if (strcmp(type, "broadcast") == 0)
		client_broadcast(c, text, topic);
	else if (strcmp(type, "presence") == 0 || strcmp(type, "untrack") == 0)
		client_presence(c, text, topic, type[0] == 'p');
	else if (strcmp(type, "unsubscribe") == 0)
	{
		Sub *s = find_sub(c, topic);
		char json[300];

		if (s)
			sub_remove(s);
		snprintf(json, sizeof(json), "{\"type\":\"unsubscribed\",\"topic\":\"%s\"}",
				 json_safe(topic));
		send_control(c, NULL, json);
	}
	else
		send_control(c, NULL, "{\"type\":\"error\",\"reason\":\"unknown message type\"}");
}

/* WebSocket established: authenticate from the request, join ?topics=. */
static void
ws_established(struct lws *wsi, Client *c)
{
	char *token = request_token(wsi);
	char *topics_arg, *last, *tok, *save;

	bool over = !peer_may_connect(wsi);

	client_start(c, wsi, CK_WS);
	if (over)
	{
		client_close(c, 1008, "too many connections from this address (bv_realtime.max_connections_per_ip)");
		return;
	}
	if (token == NULL)
		return; /* an auth message must come within auth_timeout */
	if (!ws_auth(c, token))
		return;
	topics_arg = url_arg(wsi, "topics", RT_TOPIC_MAX * 16);
	last = url_arg(wsi, "last_id", RT_ID_LEN + 8);
	if (topics_arg)
	{
		List *topics = NIL;

		for (tok = strtok_r(topics_arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			topics = lappend(topics, tok);
		ws_subscribe(c, topics, last, url_arg(wsi, "filter", RT_FILTER_MAX),
					 url_arg(wsi, "events", 64));
	}
}

/* Room for total bytes (after LWS_PRE) in the gather buffer. */
static bool
gather_reserve(size_t total)
{
	if (total > gather_cap)
	{
		unsigned char *nb = realloc(gather_buf, LWS_PRE + total);

		if (nb == NULL)
			return false;
		gather_buf = nb;
		gather_cap = total;
	}
	return true;
}

/* Write what is queued; -1 to close. */
static int
client_writable(Client *c)
{
	int budget = 64;
	TimestampTz now = GetCurrentTimestamp();

	if (c->kind == CK_WS && c->closing)
	{
		lws_close_reason(c->wsi, c->close_code, (unsigned char *) c->close_reason,
						 strlen(c->close_reason));
		return -1;
	}
	if (c->close_now)
		return -1;
	if (c->kind == CK_WS && c->ping_due)
	{
		/*
		 * A ping with a payload: libwebsockets 4.1 does not hand the
		 * gateway the pong of an empty ping (no LWS_CALLBACK_RECEIVE_PONG),
		 * so every live client was closed for a ping timeout.
		 */
		unsigned char buf[LWS_PRE + 4];

		memcpy(buf + LWS_PRE, "bvrt", 4);
		c->ping_due = false;
		c->ping_sent = true;
		c->ping_sent_at = now;
		if (lws_write(c->wsi, buf + LWS_PRE, 4, LWS_WRITE_PING) < 0)
			return -1;
	}
	/*
	 * Queued messages go out several to a send(): their frames (or SSE
	 * events) are already complete, so they are concatenated and written
	 * as raw bytes.  One system call per client and pass instead of one
	 * per message: under a burst the cost of a pass stays that of one
	 * send per client, so a backlog shrinks instead of growing.
	 */
	while (c->qcount > 0 && budget > 0 && !lws_send_pipe_choked(c->wsi))
	{
		int k = 0, i, n;
		size_t total = 0;
		unsigned char *buf;

		while (k < c->qcount && k < budget)
		{
			size_t sz = msg_size(c, c->q[(c->qhead + k) % c->qcap]);

			if (k > 0 && total + sz > RT_GATHER_BYTES)
				break;
			total += sz;
			k++;
		}
		if (k == 1)
		{
			RtMsg *m = c->q[c->qhead];

			buf = (c->kind == CK_SSE ? m->sse : m->ws) + LWS_PRE;
		}
		else
		{
			size_t off = 0;

			if (!gather_reserve(total))
				return -1;
			buf = gather_buf + LWS_PRE;
			for (i = 0; i < k; i++)
			{
				RtMsg *m = c->q[(c->qhead + i) % c->qcap];
				size_t sz = msg_size(c, m);

				memcpy(buf + off, (c->kind == CK_SSE ? m->sse : m->ws) + LWS_PRE, sz);
				off += sz;
			}
		}
		/* raw bytes: lws keeps what the socket does not take and sends it first */
		n = lws_write(c->wsi, buf, total, LWS_WRITE_HTTP);
		budget -= k;
		for (i = 0; i < k; i++)
		{
			RtMsg *m = c->q[c->qhead];

			c->qhead = (c->qhead + 1) % c->qcap;
			c->qcount--;
			c->qbytes -= msg_size(c, m);
			if (m->pos.lsn != 0)
			{
				rt_count(m->is_change ? RT_C_CHANGES_OUT : RT_C_MESSAGES_OUT, 1);
				rt_record_latency(m->commit_time, now);
			}
			msg_unref(m);
		}
		if (n < 0)
			return -1;
		c->last_tx = now;
	}
	if (c->kind == CK_SSE && c->closing && c->qcount == 0)
		c->close_now = true;
	if (c->qcount > 0 || c->close_now)
		lws_callback_on_writable(c->wsi);
	return 0;
}

/*
 * Add a socket to the epoll set that wakes the worker.  Client sockets are
 * edge-triggered (a wake-up when data arrives or when a full send buffer
 * drains, not while the socket merely stays writable); a closed socket
 * leaves the set by itself, and a reused descriptor number is re-added.
 */
static bool
watch_fd(int fd, uint32_t events)
{
	struct epoll_event ev = {0};

	ev.events = events;
	ev.data.fd = fd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return true;
	return errno == EEXIST && epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0;
}

/* A socket of the handler pool (level-triggered: readable wakes the worker). */
bool
rt_gateway_watch(int fd)
{
	return epfd >= 0 && fd >= 0 && watch_fd(fd, EPOLLIN);
}

/* The listening socket lws opened on our port (level-triggered). */
static bool
watch_listener(void)
{
	struct rlimit rl;
	int fd, found = 0;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return false;
	for (fd = 0; fd < (int) Min(rl.rlim_cur, 65536); fd++)
	{
		int on = 0;
		socklen_t len = sizeof(on);
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		int port = -1;

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 || !on)
			continue;
		if (getsockname(fd, (struct sockaddr *) &ss, &sslen) != 0)
			continue;
		if (ss.ss_family == AF_INET)
			port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
		if (port == rt_port && watch_fd(fd, EPOLLIN))
			found++;
	}
	return found > 0;
}

static int
gateway_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
				 size_t len)
{
	Client *c = (Client *) user;

	switch (reason)
	{
		case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
			/* refuse at accept when full; else watch the new socket */
			if (pg_atomic_read_u32(&rt_shared->connections) >= (uint32) rt_max_connections)
				return 1;
			return watch_fd((int) (intptr_t) in, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) ? 0 : 1;

		case LWS_CALLBACK_HTTP:
		{
			const char *path = in ? (const char *) in : "/";

			if (strcmp(path, "/events") == 0)
				return sse_start(wsi, c);
			if (strcmp(path, "/health") == 0)
				return http_respond(wsi, 200, "text/plain", "ok\n");
			if (strcmp(path, "/") == 0 || strcmp(path, "/demo") == 0)
				return http_respond(wsi, 200, "text/html; charset=utf-8", rt_demo_page);
			return http_error(wsi, 404, "not found");
		}
		case LWS_CALLBACK_HTTP_WRITEABLE:
			if (c == NULL || c->kind != CK_SSE)
				return 0;
			return client_writable(c);
		case LWS_CALLBACK_CLOSED_HTTP:
			if (c && c->kind == CK_SSE)
				client_end(c);
			return 0;

		case LWS_CALLBACK_ESTABLISHED:
			ws_established(wsi, c);
			return 0;
		case LWS_CALLBACK_SERVER_WRITEABLE:
			return client_writable(c);
		case LWS_CALLBACK_RECEIVE_PONG:
			c->last_rx = GetCurrentTimestamp();
			c->ping_sent = false;
			return 0;
		case LWS_CALLBACK_RECEIVE:
			c->last_rx = GetCurrentTimestamp();
			c->ping_sent = false;
			if (c->closing)
				return 0;
			if (lws_frame_is_binary(wsi))
			{
				client_close(c, 1003, "binary messages are not accepted");
				return 0;
			}
			if (c->rxlen + len > RT_CLIENT_MSG_MAX)
			{
				client_close(c, 1009, "message too big");
				return 0;
			}
			if (c->rx == NULL && (c->rx = malloc(RT_CLIENT_MSG_MAX + 1)) == NULL)
			{
				client_close(c, 1011, "out of memory");
				return 0;
			}
			memcpy(c->rx + c->rxlen, in, len);
			c->rxlen += len;
			if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
			{
				c->rx[c->rxlen] = '\0';
				ws_message(c, c->rx, c->rxlen);
				c->rxlen = 0;
			}
			return 0;
		case LWS_CALLBACK_CLOSED:
			if (c)
				client_end(c);
			return 0;
		case LWS_CALLBACK_WSI_DESTROY:
			/*
			 * The last word on every connection, also one lws kills on a
			 * timeout without LWS_CALLBACK_CLOSED: unlink it before lws
			 * frees the session data our lists point into.
			 */
			if (c && (c->counted || c->write_pending))
			{
				if (c->counted)
					client_end(c);
				else
				{
					dlist_delete(&c->write_node);
					c->write_pending = false;
				}
			}
			return 0;
		default:
			return 0;
	}
}

static const struct lws_protocols protocols[] = {
	/*
	 * rx: client messages arrive in pieces of at most 1 kB (ws_message
	 * joins them); tx: one send() may carry a whole frame, so lws splits
	 * nothing itself (0 would cap sends at the rx size).
	 */
	{"bv-realtime", gateway_callback, sizeof(Client), 1024, 0, NULL, 1 << 24},
	{NULL, NULL, 0, 0, 0, NULL, 0}};

static void
lws_log_to_postgres(int level, const char *line)
{
	int len = strlen(line);

	while (len > 0 && line[len - 1] == '\n')
		len--;
	ereport(LOG, (errmsg("bv_realtime: libwebsockets: %.*s", len, line)));
}

/*
 * rt_gateway_start
 *		Create the lws context listening on bv_realtime.listen_address:port.
 */
bool
rt_gateway_start(char **err)
{
	struct lws_context_creation_info info;
	HASHCTL hctl;
	const char *iface = rt_listen_address;

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_postgres);
	if (topics == NULL)
	{
		memset(&hctl, 0, sizeof(hctl));
		hctl.keysize = RT_TOPIC_MAX + 1;
		hctl.entrysize = sizeof(TopicEntry);
		hctl.hcxt = TopMemoryContext;
		topics = hash_create("bv_realtime topics", 1024, &hctl,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	if (peers == NULL)
	{
		memset(&hctl, 0, sizeof(hctl));
		hctl.keysize = INET6_ADDRSTRLEN + 8;
		hctl.entrysize = sizeof(PeerEntry);
		hctl.hcxt = TopMemoryContext;
		peers = hash_create("bv_realtime peers", 256, &hctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	if (users == NULL)
	{
		memset(&hctl, 0, sizeof(hctl));
		hctl.keysize = RT_USER_KEY_LEN;
		hctl.entrysize = sizeof(UserEntry);
		hctl.hcxt = TopMemoryContext;
		users = hash_create("bv_realtime users", 1024, &hctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
	{
		*err = psprintf("epoll_create1: %m");
		return false;
	}
	memset(&info, 0, sizeof(info));
	info.port = rt_port;
	info.iface = (iface == NULL || iface[0] == '\0' || strcmp(iface, "*") == 0) ? NULL : iface;
	info.protocols = protocols;
	info.gid = -1;
	info.uid = -1;
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
				   ((info.iface && strchr(info.iface, ':') == NULL) ? LWS_SERVER_OPTION_DISABLE_IPV6 : 0);
	info.max_http_header_data = RT_MAX_HEADER_DATA;
	info.timeout_secs = 10;
	info.fd_limit_per_thread = rt_max_connections + 64;
	info.count_threads = 1;
	info.pt_serv_buf_size = 16384;
	ctx = lws_create_context(&info);
	if (ctx == NULL)
	{
		close(epfd);
		epfd = -1;
		*err = psprintf("could not listen on %s:%d (see the libwebsockets lines above)",
						iface, rt_port);
		return false;
	}
	if (!watch_listener())
	{
		rt_gateway_stop();
		*err = psprintf("could not find the listening socket on port %d", rt_port);
		return false;
	}
	SpinLockAcquire(&rt_shared->mutex);
	snprintf(rt_shared->listen, sizeof(rt_shared->listen), "%s:%d", iface, rt_port);
	SpinLockRelease(&rt_shared->mutex);
	last_lws_timers = GetCurrentTimestamp();
	return true;
}

void
rt_gateway_stop(void)
{
	rt_pool_stop();
	stopping = true;
	if (ctx)
		lws_context_destroy(ctx);
	ctx = NULL;
	stopping = false;
	if (epfd >= 0)
		close(epfd);
	epfd = -1;
	dlist_init(&all_clients);
	dlist_init(&pending_writers);
	if (topics)
		hash_destroy(topics);
	topics = NULL;
	if (peers)
		hash_destroy(peers);
	peers = NULL;
	if (users)
		hash_destroy(users);
	users = NULL;
	if (rt_shared)
	{
		pg_atomic_write_u32(&rt_shared->connections, 0);
		pg_atomic_write_u32(&rt_shared->ws_connections, 0);
		pg_atomic_write_u32(&rt_shared->sse_connections, 0);
		pg_atomic_write_u32(&rt_shared->subscriptions, 0);
		SpinLockAcquire(&rt_shared->mutex);
		rt_shared->listen[0] = '\0';
		SpinLockRelease(&rt_shared->mutex);
	}
}

int
rt_gateway_epoll_fd(void)
{
	return epfd;
}

/* How long the worker may wait before lws needs service (ms). */
int
rt_gateway_timeout_ms(void)
{
	if (ctx && lws_service_adjust_timeout(ctx, 100, 0) == 0)
		return 0;
	return 100;
}

/*
 * rt_gateway_service
 *		Serve the lws sockets that are ready (ready: the epoll descriptor
 *		was readable), and lws's timers every 100 ms.
 */
void
rt_gateway_service(bool ready)
{
	TimestampTz now;

	if (ctx == NULL)
		return;
	if (ready)
	{
		struct epoll_event evs[256];
		int n = epoll_wait(epfd, evs, lengthof(evs), 0), i;

		for (i = 0; i < n; i++)
		{
			struct lws_pollfd pfd;

			if (rt_pool_is_fd(evs[i].data.fd))
				continue; /* rt_pool_service() below reads it */
			pfd.fd = evs[i].data.fd;
			pfd.events = POLLIN | POLLOUT;
			pfd.revents = ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? POLLIN : 0) |
						  ((evs[i].events & EPOLLOUT) ? POLLOUT : 0) |
						  ((evs[i].events & EPOLLHUP) ? POLLHUP : 0) |
						  ((evs[i].events & EPOLLERR) ? POLLERR : 0);
			lws_service_fd(ctx, &pfd);
		}
	}
	rt_pool_service();
	flush_writers();
	now = GetCurrentTimestamp();
	if (lws_service_adjust_timeout(ctx, 100, 0) == 0 ||
		TimestampDifferenceExceeds(last_lws_timers, now, 100))
	{
		dlist_iter it;

		last_lws_timers = now;
		lws_service_tsi(ctx, -1, 0);
		/* re-arm writers with queued data (cheap insurance after partial sends) */
		dlist_foreach(it, &all_clients)
		{
			/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
			Client *c = dlist_container(Client, all_node, it.cur);

			if (c->qcount > 0 || c->closing)
				want_write(c);
		}
		flush_writers();
	}
}

/* Table changes of one relation description in a batch (publish pass 1). */
typedef struct TableBatch
{
	RtRel *rel;
	TopicEntry *entry;
	int n;
	RtEvent **evs;
	int *at; /* each event's index in the batch */
} TableBatch;

/* Does some subscriber of g want (operation, filter) one of evs? */
static bool
group_wants_any(RlsGroup *g, RtEvent **evs, int n)
{
	dlist_iter it;
	int i;

	dlist_foreach(it, &g->subs)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		Sub *s = dlist_container(Sub, topic_node, it.cur);

		for (i = 0; i < n; i++)
			if (rt_filter_match(&s->filter, evs[i]))
				return true;
	}
	return false;
}

/*
 * For each table with subscribers among the batch's changes, and each of
 * its groups: which rows the group may see (one query per group and
 * table description).  Results in group->vis, indexed by batch position.
 */
static void
check_visibility(RtEvent **evs, int n, uint64 gen)
{
	List *tabs = NIL;
	ListCell *lc;
	int i;

	for (i = 0; i < n; i++)
	{
		TableBatch *tb = NULL;
		TopicEntry *e;

		if (evs[i]->op == 0 || evs[i]->op == 'R')
			continue;
		e = hash_search(topics, evs[i]->topic, HASH_FIND, NULL);
		if (e == NULL || !e->is_table)
			continue;
		foreach (lc, tabs)
			if (((TableBatch *) lfirst(lc))->rel == evs[i]->rel)
				tb = lfirst(lc);
		if (tb == NULL)
		{
			tb = palloc0(sizeof(TableBatch));
			tb->rel = evs[i]->rel;
			tb->entry = e;
			tb->evs = palloc(sizeof(RtEvent *) * n);
			tb->at = palloc(sizeof(int) * n);
			tabs = lappend(tabs, tb);
		}
		tb->evs[tb->n] = evs[i];
		tb->at[tb->n++] = i;
	}
	if (tabs != NIL)
		rt_wait_visible(evs, n);
	foreach (lc, tabs)
	{
		TableBatch *tb = lfirst(lc);
		bool *vis = palloc(sizeof(bool) * tb->n);
		dlist_iter it;

		dlist_foreach(it, &tb->entry->groups)
		{
			/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
			RlsGroup *g = dlist_container(RlsGroup, node, it.cur);

			if (g->vis_gen != gen)
			{
				g->vis_gen = gen;
				g->vis = palloc0(sizeof(bool) * n);
			}
			/* no query when no subscriber of the group wants any of them */
			if (!group_wants_any(g, tb->evs, tb->n))
				continue;
			rt_rls_visible(g->role, g->claims, tb->rel, tb->evs, tb->n, vis);
			for (i = 0; i < tb->n; i++)
				g->vis[tb->at[i]] = vis[i];
		}
	}
}

/*
 * rt_gateway_publish
 *		Deliver a committed batch, in order: one RtMsg per event, referenced
 *		by the queue of each subscriber of its topic; a table change only to
 *		the subscribers whose group may see the row and whose filter passes.
 */
void
rt_gateway_publish(List *batch)
{
	static uint64 gen = 0;
	int n = list_length(batch), i = 0;
	RtEvent **evs;
	ListCell *lc;

	if (ctx == NULL || n == 0)
		return;
	evs = palloc(sizeof(RtEvent *) * n);
	foreach (lc, batch)
		evs[i++] = lfirst(lc);
	check_visibility(evs, n, ++gen);
	for (i = 0; i < n; i++)
	{
		RtEvent *ev = evs[i];
		TopicEntry *e = hash_search(topics, ev->topic, HASH_FIND, NULL);
		dlist_mutable_iter it;
		dlist_iter git;
		RtMsg *m;

		if (ev->op == 'R')
		{
			rt_wait_visible(&evs[i], 1);
			rt_gateway_revoke_topic(ev->topic, ev->payload);
			continue;
		}
		if (e == NULL || (ev->op != 0) != e->is_table)
			continue;
		m = msg_from_event(ev);
		if (m == NULL)
			continue;
		m->is_change = ev->op != 0;
		m->refcount++; /* hold it while iterating */
		/* closing a slow client unlinks nothing here: lists stay valid */
		dlist_foreach_modify(it, &e->subs)
		{
			/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
			Sub *s = dlist_container(Sub, topic_node, it.cur);

			if (rt_pos_cmp(ev->pos, s->after) > 0)
				enqueue(s->client, m, true);
		}
		dlist_foreach(git, &e->groups)
		{
			/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
			RlsGroup *g = dlist_container(RlsGroup, node, git.cur);

			if (g->vis_gen != gen || !g->vis[i])
				continue;
			dlist_foreach_modify(it, &g->subs)
			{
				/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
				Sub *s = dlist_container(Sub, topic_node, it.cur);

				if (rt_pos_cmp(ev->pos, s->after) > 0 && rt_filter_match(&s->filter, ev))
					enqueue(s->client, m, true);
			}
		}
		msg_unref(m);
	}
}

/*
 * rt_gateway_tick
 *		Once a second: authentication deadlines, token expiry, keep-alives.
 */
void
rt_gateway_tick(TimestampTz now)
{
	dlist_mutable_iter it;
	int64 now_s = (int64) (now / USECS_PER_SEC) + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;

	if (ctx == NULL)
		return;
	dlist_foreach_modify(it, &all_clients)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		Client *c = dlist_container(Client, all_node, it.cur);

		if (c->closing)
			continue;
		if (!c->authed)
		{
			if (TimestampDifferenceExceeds(c->connected_at, now, rt_auth_timeout_s * 1000))
			{
				rt_count(RT_C_AUTH_FAILURES, 1);
				client_close(c, 4001, "authentication timeout");
			}
			continue;
		}
		if (c->id.exp != 0 && now_s >= c->id.exp)
		{
			rt_count(RT_C_EXPIRED_CLOSES, 1);
			client_close(c, 4001, "token expired");
			continue;
		}
		if (c->kind == CK_WS)
		{
			/*
			 * A client has a whole keepalive interval to answer a ping from
			 * the moment it was written: a ping queued behind a busy
			 * connection, or a client slowed by a loaded machine, is not
			 * a dead peer.
			 */
			if (c->ping_sent &&
				TimestampDifferenceExceeds(c->ping_sent_at, now, rt_keepalive_s * 1000))
				client_close(c, 1001, "ping timeout");
			else if (!c->ping_sent &&
					 TimestampDifferenceExceeds(c->last_rx, now, rt_keepalive_s * 1000))
			{
				c->ping_due = true;
				want_write(c);
			}
		}
		else if (c->kind == CK_SSE && c->qcount == 0 &&
				 TimestampDifferenceExceeds(c->last_tx, now, rt_keepalive_s * 1000))
		{
			send_control(c, NULL, ": keepalive\n\n");
			c->last_tx = now;
		}
	}
}

/* Close every connection authenticated with a revoked token. */
void
rt_gateway_revoke(const char *jti)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &all_clients)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		Client *c = dlist_container(Client, all_node, it.cur);

		if (c->authed && !c->closing && c->id.jti[0] && strcmp(c->id.jti, jti) == 0)
		{
			rt_count(RT_C_EXPIRED_CLOSES, 1);
			client_close(c, 4001, "token revoked");
		}
	}
}

/*
 * rt_gateway_revoke_topic
 *		bv_realtime.revoke(topic, sub), after its commit: every connection
 *		whose token's sub is sub loses its subscription to topic, its
 *		presence there and its cached publish/presence decisions for it (a
 *		later broadcast or presence asks authorize() again).  It is told
 *		with an error "access revoked"; an SSE stream left without topics
 *		ends.
 */
void
rt_gateway_revoke_topic(const char *topic, const char *sub)
{
	dlist_mutable_iter it;

	if (ctx == NULL || stopping)
		return;
	dlist_foreach_modify(it, &all_clients)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		Client *c = dlist_container(Client, all_node, it.cur);
		Grant **gp;
		Sub *s;
		bool had = false;

		if (!c->authed || c->closing || c->id.subject == NULL || strcmp(c->id.subject, sub) != 0)
			continue;
		for (gp = &c->grants; *gp;)
		{
			Grant *g = *gp;

			size_t tl = strlen(topic);

			/* "topic" or "topic event" (client_may's cache keys) */
			if (strncmp(g->topic, topic, tl) == 0 && (g->topic[tl] == '\0' || g->topic[tl] == ' '))
			{
				*gp = g->next;
				free(g);
				c->ngrants--;
			}
			else
				gp = &g->next;
		}
		if (c->has_presence)
		{
			List *keys, *left = rt_presence_remove(c->conn_id, topic, &keys);

			if (left != NIL)
			{
				rt_count(RT_C_PRESENCE_LEAVES, 1);
				topic_send(topic, presence_event(topic, "leave", client_key(c), NULL), c);
			}
		}
		if ((s = find_sub(c, topic)) != NULL)
		{
			sub_remove(s);
			had = true;
		}
		if (!had)
			continue;
		if (c->kind == CK_SSE && c->nsubs == 0)
			client_close(c, 4003, "access revoked");
		else
		{
			char json[600];

			snprintf(json, sizeof(json),
					 "{\"type\":\"error\",\"topic\":\"%s\",\"reason\":\"access revoked\"}",
					 json_safe(topic));
			send_control(c, c->kind == CK_SSE ? "error" : NULL, json);
		}
	}
}
