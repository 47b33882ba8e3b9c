/*-------------------------------------------------------------------------
 *
 * bv_realtime.c
 *	  bv_realtime's entry point: settings, shared memory, the worker's
 *	  registration, and the small helpers every file shares (positions,
 *	  statistics).
 *
 * The library is preloaded (shared_preload_libraries).  In the postmaster,
 * _PG_init defines the bv_realtime.* settings, requests a small shared
 * memory area (statistics and the latency histogram, the worker's state)
 * and registers one static background worker (worker.c) unless
 * bv_realtime.port is 0.  In ordinary backends the library only provides
 * bv_realtime.send() and bv_realtime.stats() (send.c).
 *
 * Concurrency: RtShared's text fields are protected by its spinlock, held
 * only to copy them; counters, gauges and the histogram are atomics that
 * only the worker increments and SQL reads.
 *
 * Memory: the GUC strings and the shared memory area only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <stdarg.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"

#include "bv_realtime.h"

PG_MODULE_MAGIC;

void _PG_init(void);

RtShared *rt_shared = NULL;

char *rt_database = NULL;
char *rt_slot_name = NULL;
char *rt_listen_address = NULL;
int rt_port = 8090;
char *rt_conninfo = NULL;
char *rt_authenticator = NULL;
char *rt_anon_role = NULL;
int rt_client_queue = 1000;
int rt_client_queue_bytes = 1048576;
int rt_max_connections = 10000;
int rt_max_subscriptions = 100;
int rt_keepalive_s = 15;
int rt_auth_timeout_s = 10;
int rt_history_retention_s = 3600;
int rt_history_max_rows = 100000;
int rt_max_payload = 65536;
int rt_revocation_check_ms = 2000;
int rt_max_presence = 4096;
int rt_client_msgs_per_s = 20;
int rt_client_msgs_burst = 200;
int rt_max_conns_per_ip = 2000;
int rt_max_conns_per_user = 100;
int rt_handler_timeout_ms = 1000;
int rt_handler_connections = 2;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
rt_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RtShared)));
	rt_presence_shmem_request();
}

static void
rt_shmem_startup(void)
{
	bool found;
	int i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rt_shared = ShmemInitStruct("bv_realtime", sizeof(RtShared), &found);
	if (!found)
	{
		memset(rt_shared, 0, sizeof(RtShared));
		SpinLockInit(&rt_shared->mutex);
		strlcpy(rt_shared->state, "starting", sizeof(rt_shared->state));
		pg_atomic_init_u32(&rt_shared->connections, 0);
		pg_atomic_init_u32(&rt_shared->ws_connections, 0);
		pg_atomic_init_u32(&rt_shared->sse_connections, 0);
		pg_atomic_init_u32(&rt_shared->subscriptions, 0);
		for (i = 0; i < RT_NCOUNTERS; i++)
			pg_atomic_init_u64(&rt_shared->counters[i], 0);
		for (i = 0; i < RT_LAT_BUCKETS; i++)
			pg_atomic_init_u64(&rt_shared->latency[i], 0);
		pg_atomic_init_u32(&rt_shared->presence_count, 0);
	}
	rt_presence_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/* Publish the worker's state (bv_realtime.stats). */
void
rt_set_state(const char *state)
{
	if (rt_shared == NULL)
		return;
	SpinLockAcquire(&rt_shared->mutex);
	strlcpy(rt_shared->state, state, sizeof(rt_shared->state));
	SpinLockRelease(&rt_shared->mutex);
}

/* Publish the worker's last error (bv_realtime.stats). */
void
rt_set_error(const char *fmt, ...)
{
	char buf[RT_ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (rt_shared == NULL)
		return;
	SpinLockAcquire(&rt_shared->mutex);
	strlcpy(rt_shared->last_error, buf, sizeof(rt_shared->last_error));
	SpinLockRelease(&rt_shared->mutex);
}

/*
 * Record one delivery's latency, from the sender's commit to the write to
 * the client's socket, in a log-scale histogram: bucket b holds latencies
 * in [2^(b/8), 2^((b+1)/8)) microseconds (about 9% wide).
 */
void
rt_record_latency(TimestampTz commit_time, TimestampTz now)
{
	int64 us = now - commit_time;
	int b = 0;

	if (rt_shared == NULL || commit_time == 0)
		return;
	if (us > 1)
	{
		double l = log2((double) us) * 8.0;

		b = (int) l;
		if (b >= RT_LAT_BUCKETS)
			b = RT_LAT_BUCKETS - 1;
	}
	pg_atomic_fetch_add_u64(&rt_shared->latency[b], 1);
}

/* A position as "XXXXXXXX/XXXXXXXX-N" (the LSN's text form, then the index). */
void
rt_pos_format(RtPos pos, char *buf)
{
	snprintf(buf, RT_ID_LEN, "%X/%X-%u", LSN_FORMAT_ARGS(pos.lsn), pos.seq);
}

/* Parse rt_pos_format's output strictly; false for anything else. */
bool
rt_pos_parse(const char *text, RtPos *pos)
{
	uint64 hi = 0, lo = 0, seq = 0;
	const char *p = text;
	int n;

	for (n = 0; n < 9 && isxdigit((unsigned char) *p); n++, p++)
		hi = hi * 16 + (isdigit((unsigned char) *p) ? *p - '0' : (toupper((unsigned char) *p) - 'A' + 10));
	if (n == 0 || n > 8 || *p++ != '/')
		return false;
	for (n = 0; n < 9 && isxdigit((unsigned char) *p); n++, p++)
		lo = lo * 16 + (isdigit((unsigned char) *p) ? *p - '0' : (toupper((unsigned char) *p) - 'A' + 10));
	if (n == 0 || n > 8 || *p++ != '-')
		return false;
	for (n = 0; n < 11 && isdigit((unsigned char) *p); n++, p++)
		seq = seq * 10 + (*p - '0');
	if (n == 0 || n > 10 || *p != '\0' || seq > PG_UINT32_MAX)
		return false;
	pos->lsn = (hi << 32) | lo;
	pos->seq = (uint32) seq;
	return true;
}

typedef struct RawFieldState
{
	JsonLexContext *lex;
	const char *key;
	int depth;
	bool in_key;
	const char *start, *end;
} RawFieldState;

static void
raw_object_start(void *arg)
{
	((RawFieldState *) arg)->depth++;
}

static void
raw_object_end(void *arg)
{
	((RawFieldState *) arg)->depth--;
}

static void
raw_array_start(void *arg)
{
	((RawFieldState *) arg)->depth++;
}

static void
raw_array_end(void *arg)
{
	((RawFieldState *) arg)->depth--;
}

static void
raw_field_start(void *arg, char *fname, bool isnull)
{
	RawFieldState *st = arg;

	/* the lexer stands on the value's first token */
	if (st->depth == 1 && st->start == NULL && strcmp(fname, st->key) == 0)
	{
		st->in_key = true;
		st->start = st->lex->token_start;
	}
}

static void
raw_field_end(void *arg, char *fname, bool isnull)
{
	RawFieldState *st = arg;

	if (st->in_key && st->depth == 1)
	{
		st->end = st->lex->prev_token_terminator;
		st->in_key = false;
	}
}

/*
 * rt_json_raw_field
 *		The text of member key of the top-level object of json (any JSON
 *		value, as written, line breaks made spaces), palloc'd; NULL when
 *		json is not an object, is invalid, or has no such member.
 */
char *
rt_json_raw_field(const char *json, const char *key)
{
	RawFieldState st = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;
	char *v, *p;

	lex = makeJsonLexContextCstringLen((char *) json, strlen(json), PG_UTF8, true);
	st.lex = lex;
	st.key = key;
	sem.semstate = &st;
	sem.object_start = raw_object_start;
	sem.object_end = raw_object_end;
	sem.array_start = raw_array_start;
	sem.array_end = raw_array_end;
	sem.object_field_start = raw_field_start;
	sem.object_field_end = raw_field_end;
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || st.start == NULL || st.end == NULL ||
		st.end <= st.start)
		return NULL;
	v = pnstrdup(st.start, st.end - st.start);
	/*
	 * Raw line breaks can only be whitespace between tokens (inside strings
	 * they are escaped): make them spaces, so that the value stays on one
	 * SSE "data:" line and cannot forge SSE fields.
	 */
	for (p = v; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return v;
}

static void
define_settings(void)
{
	DefineCustomStringVariable("bv_realtime.database", "Database the gateway serves.",
							   "The worker connects to it, streams its WAL and keeps the history there.",
							   &rt_database, "bitvelocity", PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("bv_realtime.slot_name", "Logical replication slot of the gateway.",
							   "Created with the pgoutput plugin on first start.", &rt_slot_name,
							   "bv_realtime", PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("bv_realtime.listen_address",
							   "Address the gateway listens on for WebSocket and SSE clients.",
							   "An IPv4 or IPv6 address, or a host name; * for every interface.",
							   &rt_listen_address, "127.0.0.1", PGC_POSTMASTER, 0, NULL, NULL,
							   NULL);
	DefineCustomIntVariable("bv_realtime.port", "TCP port of the gateway; 0 disables it.",
							"With 0 no worker starts and bv_realtime.send() still writes messages.",
							&rt_port, 8090, 0, 65535, PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable(
		"bv_realtime.conninfo", "Extra libpq connection options for the replication connection.",
		"By default the worker connects over the server's first unix socket as the bootstrap "
		"superuser; set host, port, user or sslmode here to change that.",
		&rt_conninfo, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("bv_realtime.authenticator",
							   "Role whose memberships decide which role claims are accepted.",
							   "As in PostgREST: a token's role must be one this role may switch to.",
							   &rt_authenticator, "bv_authenticator", PGC_SIGHUP, 0, NULL, NULL,
							   NULL);
	DefineCustomStringVariable("bv_realtime.anon_role",
							   "Role of a valid token that has no role claim.", NULL,
							   &rt_anon_role, "bv_anon", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_realtime.client_queue",
							"Messages queued for one client before it is disconnected as slow.",
							NULL, &rt_client_queue, 1000, 1, 1000000, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.client_queue_bytes",
							"Bytes queued for one client before it is disconnected as slow.",
							NULL, &rt_client_queue_bytes, 1048576, 1024, INT_MAX, PGC_SIGHUP,
							GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_realtime.max_connections",
							"Most WebSocket and SSE connections the gateway holds.", NULL,
							&rt_max_connections, 10000, 1, 1000000, PGC_POSTMASTER, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.max_subscriptions",
							"Most topics one connection may subscribe to.", NULL,
							&rt_max_subscriptions, 100, 1, 10000, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.keepalive",
							"Idle time before a WebSocket ping or an SSE keep-alive comment.",
							"A WebSocket client silent for twice this time is disconnected.",
							&rt_keepalive_s, 15, 1, 3600, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.auth_timeout",
							"Time a WebSocket client has to send its token when it gave none at connect.",
							NULL, &rt_auth_timeout_s, 10, 1, 3600, PGC_SIGHUP, GUC_UNIT_S, NULL,
							NULL, NULL);
	DefineCustomIntVariable("bv_realtime.history_retention",
							"How long messages stay in the history for resuming clients.", NULL,
							&rt_history_retention_s, 3600, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("bv_realtime.history_max_rows",
							"Most messages kept in the history for resuming clients.", NULL,
							&rt_history_max_rows, 100000, 0, INT_MAX, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.max_payload", "Largest payload bv_realtime.send() accepts.",
							NULL, &rt_max_payload, 65536, 16, 16777216, PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("bv_realtime.revocation_check_interval",
							"Time between checks of bv.jwt_revocations for revoked tokens.", NULL,
							&rt_revocation_check_ms, 2000, 100, 3600000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("bv_realtime.max_presence",
							"Presence entries (connection x topic) the gateway can hold.",
							"Kept in shared memory; a presence join beyond it is refused.",
							&rt_max_presence, 4096, 16, 1000000, PGC_POSTMASTER, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.client_messages_per_second",
							"Messages per second one WebSocket client may send (token bucket); 0: no limit.",
							"A message over the limit gets an error reply; a client that keeps "
							"sending past its burst of refusals is closed with code 1008.",
							&rt_client_msgs_per_s, 20, 0, 100000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_realtime.client_messages_burst",
							"Messages a WebSocket client may send at once before the rate applies.",
							NULL, &rt_client_msgs_burst, 200, 1, 100000, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.max_connections_per_ip",
							"Most WebSocket and SSE connections from one client address; 0: no limit.",
							"More are refused: SSE with HTTP 429, WebSocket with close code 1008.",
							&rt_max_conns_per_ip, 2000, 0, 1000000, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.max_connections_per_user",
							"Most WebSocket and SSE connections of one user (the token's sub claim); 0: no limit.",
							"More are refused: SSE with HTTP 429, WebSocket with close code 1008. "
							"Tokens without a sub claim count for no user.",
							&rt_max_conns_per_user, 100, 0, 1000000, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_realtime.handler_timeout",
							"Statement timeout of one SQL handler call (client messages on a topic with a handler).",
							"Handlers run on bv_realtime.handler_connections connections, off the gateway's loop.",
							&rt_handler_timeout_ms, 1000, 1, 60000, PGC_SIGHUP, GUC_UNIT_MS, NULL,
							NULL, NULL);
	DefineCustomIntVariable("bv_realtime.handler_connections",
							"Connections that run SQL handlers off the gateway's event loop.",
							"0 runs handlers in the gateway's loop, which delays every delivery for their duration.",
							&rt_handler_connections, 2, 0, 16, PGC_SIGHUP, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("bv_realtime");
}

static void
register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bv_realtime");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bv_realtime_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bv_realtime gateway");
	snprintf(worker.bgw_type, BGW_MAXLEN, "bv_realtime");
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	define_settings();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rt_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rt_shmem_startup;
	if (rt_port != 0)
		register_worker();
}
