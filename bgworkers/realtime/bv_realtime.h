/*-------------------------------------------------------------------------
 *
 * bv_realtime.h
 *	  Declarations shared by the files of bv_realtime, the WebSocket and
 *	  Server-Sent Events gateway that runs as a background worker and is fed
 *	  by the WAL.
 *
 * Files, by concern:
 *   bv_realtime.c  _PG_init: settings, shared memory, the worker's
 *                  registration; statistics shared with SQL
 *   send.c         SQL-callable API: bv_realtime.send(), stats()
 *   worker.c       the worker's main loop (the one owner of the loop): one
 *                  wait on latch + replication socket + the gateway's epoll
 *                  descriptor, then step functions
 *   stream.c       the replication stream of the gateway's own pgoutput
 *                  slot: B/M/C messages -> committed batches of RtMsg
 *   history.c      the durable, bounded history table: batch insert,
 *                  resume queries, pruning (SPI)
 *   auth.c         JWT verification through bv_core (bv.jwt_verify), the
 *                  role rule, topic authorization under the client's role
 *   gateway.c      libwebsockets: context, external-poll bridge, HTTP
 *                  routing, WebSocket and SSE connections, per-client
 *                  bounded queues, topic registry and fan-out
 *   changes.c      table changes: pgoutput relations and tuples, filters,
 *                  the once-per-group RLS visibility query
 *   presence.c     presence: who is in a topic with what state, in shared
 *                  memory
 *   handler.c      client messages answered by SQL handlers: the call, and
 *                  bv_realtime.handler_call() that the pool's backends run
 *   handler_pool.c the handler calls off the loop: a few non-blocking libpq
 *                  connections, a bounded FIFO, one call per client at a time
 *
 * Only the worker process uses worker-side state (the lws context, the
 * clients, the stream).  Ordinary backends touch shared memory only (stats)
 * and write logical decoding messages (send()).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_REALTIME_H
#define BV_REALTIME_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "lib/ilist.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#define BV_REALTIME_VERSION "0.5.0"

/* Prefix of the logical decoding messages that bv_realtime.send() writes. */
#define RT_MSG_PREFIX "bv_realtime"
/* Prefix of bv_realtime.revoke()'s messages: "topic\0sub", applied after commit. */
#define RT_REVOKE_PREFIX "bv_realtime.revoke"
#define RT_SUB_MAX       1024 /* bytes of a sub claim bv_realtime.revoke() names */

/* Limits, declared once: SQL validation, the gateway and the docs use them. */
#define RT_TOPIC_MAX      200  /* bytes of a topic name */
#define RT_EVENT_MAX      100  /* bytes of an event name */
#define RT_TOKEN_MAX      8192 /* bytes of a token given by a client */
#define RT_CLIENT_MSG_MAX 4096 /* bytes of one WebSocket message from a client */
#define RT_ID_LEN         32   /* room for a position id "XXXXXXXX/XXXXXXXX-NNNNNNNNNN" */
#define RT_ERRLEN         256
#define RT_LAT_BUCKETS    256      /* latency histogram: 8 buckets per power of two (µs) */
#define RT_FILTER_MAX     512      /* bytes of a table subscription's filter */
#define RT_FILTER_CONDS   8        /* conditions in one filter (joined by &) */
#define RT_PRESENCE_STATE 512      /* bytes of one presence state (JSON) */
#define RT_PRESENCE_KEY   256      /* bytes of a presence key (the sub claim; chat ids: 200 characters) */
#define RT_TABLE_PREFIX   "table:" /* topic of a table's changes: table:<schema>.<name> */

/* Counters in shared memory (stats view), indexes into RtShared.counters. */
typedef enum RtCounter
{
	RT_C_CONNECTIONS_TOTAL,
	RT_C_AUTH_FAILURES,
	RT_C_MESSAGES_IN,     /* decoded from the WAL */
	RT_C_MESSAGES_OUT,    /* written to clients */
	RT_C_CLIENT_MESSAGES, /* received from WebSocket clients */
	RT_C_DROPS,           /* slow clients disconnected */
	RT_C_RESUME_HITS,
	RT_C_RESUME_MISSES,
	RT_C_JOINS_DENIED,
	RT_C_EXPIRED_CLOSES, /* closed at token expiry or revocation */
	RT_C_HISTORY_PRUNED,
	RT_C_V1_COUNTERS,                   /* the counters of 0.1.0's stats(), above; 0.2.0's below */
	RT_C_CHANGES_IN = RT_C_V1_COUNTERS, /* table changes decoded from the WAL */
	RT_C_CHANGES_OUT,                   /* table changes written to clients */
	RT_C_RLS_QUERIES,                   /* visibility queries (one per group, table, batch) */
	RT_C_CLIENT_BROADCASTS,             /* client messages relayed on a topic */
	RT_C_PRESENCE_JOINS,
	RT_C_PRESENCE_LEAVES,
	RT_C_V2_COUNTERS,                     /* 0.2.0's end here (then its presence gauge); 0.3.0's below */
	RT_C_RATE_LIMITED = RT_C_V2_COUNTERS, /* client messages refused over the rate limit */
	RT_C_RATE_LIMIT_CLOSES,               /* connections closed for flooding */
	RT_C_IP_REFUSED,                      /* connections refused by max_connections_per_ip */
	RT_C_V3_COUNTERS,                     /* 0.3.0's end here; 0.4.0's below */
	RT_C_USER_REFUSED = RT_C_V3_COUNTERS, /* connections refused by max_connections_per_user */
	RT_C_HANDLER_CALLS,                   /* client messages handed to an SQL handler */
	RT_C_HANDLER_ERRORS,                  /* handler calls answered with an error status */
	RT_C_HANDLER_TIMEOUTS,                /* handler calls cancelled by handler_timeout */
	RT_NCOUNTERS
} RtCounter;

typedef struct RtShared
{
	slock_t mutex; /* protects the fields up to last_error */
	pid_t worker_pid;
	Latch *worker_latch;
	char state[32];
	char last_error[RT_ERRLEN];
	char listen[64];              /* address:port actually bound */
	pg_atomic_uint32 connections; /* current, WebSocket + SSE */
	pg_atomic_uint32 ws_connections;
	pg_atomic_uint32 sse_connections;
	pg_atomic_uint32 subscriptions;
	pg_atomic_uint64 counters[RT_NCOUNTERS];
	pg_atomic_uint64 latency[RT_LAT_BUCKETS]; /* commit -> written to a client */
	pg_atomic_uint32 presence_count;          /* entries in use (presence.c) */
} RtShared;

extern RtShared *rt_shared;

/* settings (bv_realtime.c) */
extern char *rt_database;
extern char *rt_slot_name;
extern char *rt_listen_address;
extern int rt_port;
extern char *rt_conninfo;
extern char *rt_authenticator;
extern char *rt_anon_role;
extern int rt_client_queue;
extern int rt_client_queue_bytes;
extern int rt_max_connections;
extern int rt_max_subscriptions;
extern int rt_keepalive_s;
extern int rt_auth_timeout_s;
extern int rt_history_retention_s;
extern int rt_history_max_rows;
extern int rt_max_payload;
extern int rt_revocation_check_ms;
extern int rt_max_presence;
extern int rt_client_msgs_per_s;
extern int rt_client_msgs_burst;
extern int rt_max_conns_per_ip;
extern int rt_max_conns_per_user;
extern int rt_handler_timeout_ms;
extern int rt_handler_connections;

extern void rt_set_state(const char *state);
extern void rt_set_error(const char *fmt, ...) pg_attribute_printf(1, 2);
static inline void
rt_count(RtCounter c, uint64 n)
{
	if (rt_shared)
		pg_atomic_fetch_add_u64(&rt_shared->counters[c], n);
}
extern void rt_record_latency(TimestampTz commit_time, TimestampTz now);

/* A position: the commit LSN of the sending transaction and the message's
 * index in it.  Totally ordered in commit order. */
typedef struct RtPos
{
	XLogRecPtr lsn;
	uint32 seq;
} RtPos;

static inline int
rt_pos_cmp(RtPos a, RtPos b)
{
	if (a.lsn != b.lsn)
		return a.lsn < b.lsn ? -1 : 1;
	if (a.seq != b.seq)
		return a.seq < b.seq ? -1 : 1;
	return 0;
}
extern void rt_pos_format(RtPos pos, char *buf); /* buf: RT_ID_LEN */
extern char *rt_json_raw_field(const char *json, const char *key);
extern bool rt_pos_parse(const char *text, RtPos *pos);

/* Topic and event names: printable ASCII without spaces, commas, quotes or
 * backslashes, 1..max bytes.  Shared by send() and the gateway. */
static inline bool
rt_name_is_valid(const char *s, size_t len, size_t max)
{
	size_t i;

	if (len == 0 || len > max)
		return false;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c <= 0x20 || c >= 0x7f || c == ',' || c == '"' || c == '\\')
			return false;
	}
	return true;
}

/*
 * One message ready for delivery, shared by every client queue that holds
 * it (reference counted; malloc'd so that no PostgreSQL error can arise in
 * libwebsockets callbacks).  Both wire forms are built once: the complete
 * WebSocket text frame (header and payload, written as raw bytes) and the
 * SSE event, each after LWS_PRE bytes of headroom.
 */
typedef struct RtMsg
{
	int refcount;
	RtPos pos;
	TimestampTz commit_time; /* 0: a control message (no latency sample) */
	char topic[RT_TOPIC_MAX + 1];
	size_t ws_len;
	unsigned char *ws; /* ws + LWS_PRE: the whole frame, ws_len bytes with its header */
	size_t sse_len;
	unsigned char *sse; /* sse + LWS_PRE: the event */
	bool close_after;   /* control: close the connection once written */
	bool is_change;     /* a table change (counted apart) */
} RtMsg;

/*
 * A table as pgoutput describes it (relation message): kept by stream.c
 * for the life of the stream (a newer description replaces it).
 */
typedef struct RtRel
{
	Oid relid;
	char nspname[NAMEDATALEN];
	char relname[NAMEDATALEN];
	char topic[RT_TOPIC_MAX + 1]; /* "table:<schema>.<name>"; "" when not a valid topic */
	int natts;
	char **attnames;
	Oid *atttypes;
	int32 *atttypmods;
	bool *attkey; /* part of the replica identity (the primary key) */
} RtRel;

/* One decoded row: text values (NULL: SQL null), unchanged TOAST flags. */
typedef struct RtTuple
{
	int natts;
	char **vals;
	bool *unchanged;
} RtTuple;

/* A decoded, committed message from the WAL (stream.c -> history/gateway). */
typedef struct RtEvent
{
	RtPos pos;
	TimestampTz commit_time;
	TransactionId xid; /* the sending transaction */
	char *topic;
	char *event;
	char *payload; /* JSON text */
	/* table changes (op 'I', 'U', 'D'), or a revocation (op 'R': topic,
	 * payload = the sub claim whose subscriptions to topic end) */
	char op;
	RtRel *rel;
	RtTuple *newtup; /* insert, update */
	RtTuple *oldtup; /* delete (key or full), update that changed the key */
} RtEvent;

/* A table subscription's filter: conditions joined by AND. */
typedef enum RtFilterOp
{
	RT_F_EQ,
	RT_F_NEQ,
	RT_F_IN,
	RT_F_IS_NULL,
	RT_F_NOT_NULL
} RtFilterOp;

typedef struct RtFilterCond
{
	char column[NAMEDATALEN];
	RtFilterOp op;
	int nvals;
	char **vals; /* malloc'd */
} RtFilterCond;

typedef struct RtFilter
{
	int nconds;
	RtFilterCond conds[RT_FILTER_CONDS];
	uint8 ops; /* RT_OP_* bits the subscriber wants */
} RtFilter;

#define RT_OP_INSERT 1
#define RT_OP_UPDATE 2
#define RT_OP_DELETE 4
#define RT_OP_ALL    7

/* stream.c */
extern bool rt_stream_start(char **err);
extern void rt_stream_stop(void);
extern int rt_stream_socket(void);
extern bool rt_stream_read(List **batch, int max, char **err);
extern bool rt_stream_confirm(XLogRecPtr upto, bool force, char **err);
extern void rt_stream_drop_orphan_slot(void);
extern char rt_superuser[NAMEDATALEN];
extern char *rt_local_conninfo(const char *superuser, bool replication);

/* history.c */
extern void rt_history_init(void);
extern void rt_history_insert(List *batch);
extern RtPos rt_history_high(void);
extern void rt_history_note(RtPos pos);
typedef enum RtResume
{
	RT_RESUME_HIT,
	RT_RESUME_MISS,
	RT_RESUME_TOO_MANY
} RtResume;
extern RtResume rt_history_read(List *topics, RtPos after, int limit, List **rows);
extern void rt_history_prune(void);

/* auth.c: who a client is */
typedef struct RtIdentity
{
	char role[NAMEDATALEN];
	char *claims;                  /* JSON text, malloc'd */
	char *rls_claims;              /* claims without exp, iat, nbf, jti: the RLS group key; malloc'd */
	char sub[RT_PRESENCE_KEY + 1]; /* the sub claim (presence key); empty: none or too long */
	char *subject;                 /* the whole sub claim (revoke()); NULL: none; malloc'd */
	char jti[128];                 /* empty: none */
	int64 exp;                     /* unix seconds; 0: none */
} RtIdentity;

/* changes.c */
extern bool rt_take_relation(const char *p, int len, MemoryContext cxt, RtRel **rel);
extern bool rt_take_change(const char *p, int len, RtRel *(*lookup)(Oid), RtEvent *ev);
extern char *rt_change_payload(const RtEvent *ev);
extern bool rt_filter_parse(const char *filter, const char *events, RtFilter *f, char *reason,
							size_t reasonlen);
extern void rt_filter_free(RtFilter *f);
extern bool rt_filter_match(const RtFilter *f, const RtEvent *ev);
extern bool rt_table_topic_parse(const char *topic, char *nspname, char *relname);
extern bool rt_table_authorize(const RtIdentity *id, const char *topic, const RtFilter *f,
							   char *reason, size_t reasonlen);
extern void rt_wait_visible(RtEvent **evs, int n);
extern void rt_rls_visible(const char *role, const char *claims, RtRel *rel, RtEvent **evs, int n,
						   bool *visible);

/* auth.c */
extern void rt_identity_free(RtIdentity *id);
extern bool rt_authenticate(const char *token, RtIdentity *id, char *reason, size_t reasonlen);
extern bool rt_authorize(const RtIdentity *id, const char *topic, const char *action,
						 const char *event, Oid *handler, char *reason, size_t reasonlen);
extern List *rt_revoked_since(TimestampTz *since);
extern void rt_role_lock(void);
extern void rt_role_unlock(void);
extern bool rt_run_guarded(void (*fn)(void *), void *arg, char *detail, size_t detaillen,
						   int *sqlerrcode);

/* handler.c: client messages answered by an SQL handler */
typedef struct RtHandlerResult
{
	int status;   /* HTTP-like: 200, 4xx, 500, 504 */
	char *result; /* 200: the handler's jsonb as text (palloc'd); NULL: SQL null */
	char sqlstate[6];
	char *message; /* errors: fit for the client (palloc'd) */
	char *hint;    /* errors: NULL when none (palloc'd) */
} RtHandlerResult;
extern void rt_handler_call(const RtIdentity *id, Oid handler, const char *topic,
							const char *event, const char *payload, RtHandlerResult *res);
extern int rt_handler_status(int sqlerrcode);

/* handler_pool.c: handler calls off the loop, on a few libpq connections */
extern bool rt_pool_submit(void *owner, const RtIdentity *id, Oid handler, const char *topic,
						   const char *event, const char *payload, const char *ref, bool *busy);
extern void rt_pool_forget(void *owner);
extern void rt_pool_service(void);
extern bool rt_pool_is_fd(int fd);
extern void rt_pool_stop(void);

/* gateway.c */
extern bool rt_gateway_start(char **err);
extern void rt_gateway_stop(void);
extern int rt_gateway_epoll_fd(void);
extern void rt_gateway_service(bool ready);
extern int rt_gateway_timeout_ms(void);
extern void rt_gateway_publish(List *batch);
extern void rt_gateway_tick(TimestampTz now);
extern void rt_gateway_revoke(const char *jti);
extern void rt_gateway_revoke_topic(const char *topic, const char *sub);
extern bool rt_gateway_watch(int fd);
extern void rt_gateway_handler_reply(void *owner, const char *topic, const char *event,
									 const char *ref, const RtHandlerResult *res);

/* presence.c */
extern Size rt_presence_shmem_size(void);
extern void rt_presence_shmem_request(void);
extern void rt_presence_shmem_init(void);
extern void rt_presence_reset(void);
extern bool rt_presence_set(uint64 conn, const char *topic, const char *key, const char *state,
							int per_conn_max, bool *joined, bool *conn_full);
extern List *rt_presence_remove(uint64 conn, const char *topic, List **keys);
extern char *rt_presence_list(const char *topic);

/* worker.c */
extern bool rt_extension_exists(void);
extern PGDLLEXPORT void bv_realtime_worker_main(Datum arg);

#endif /* BV_REALTIME_H */
