/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  The replication stream: wal2json changes in, events to the sinks out,
 *	  and the slot advanced only past what the sinks acknowledged.
 *
 * The worker streams its logical slot over a replication connection to its
 * own server (bv_repl.c, as pg_recvlogical does), with wal2json
 * format-version 2.  Each transaction ("B" ... "C") gets an entry in the
 * in-flight window (window.c), whose acknowledged prefix the slot may
 * confirm.
 *
 * This file does not loop: worker.c owns the worker's one loop (pg_cron's
 * PgCronLauncherMain shape) and calls the steps here:
 *   cdc_stream_start  connect, create the slot when missing, START_REPLICATION
 *   cdc_stream_read   read a batch of messages and hand their events to the
 *                     sinks (stops early while the window is full or a
 *                     routed sink is paused)
 *   cdc_stream_acks   serve the sinks' acknowledgements, advance the window,
 *                     confirm the slot, take snapshot steps, publish stats
 *   cdc_stream_wait   wait for the socket, the latch or the sinks
 * and, while a sink blocks in produce() (its own window full), the sinks
 * call cdc_stream_keepalive through sink.c's hook.
 *
 * Memory stays bounded whatever the transaction size: reading stops while
 * bv_cdc.max_inflight events await acknowledgement or the window ring is
 * full, and each sink bounds its own queue (a full queue blocks produce).
 * wal2json sends one message per row, and the server spills big
 * transactions to disk, so no transaction is ever held whole here.
 *
 * Idle slots still advance: with nothing in flight, a keepalive's WAL end is
 * confirmed, and every bv_cdc.heartbeat_interval the worker asks the server
 * for one (heartbeat).
 *
 * Concurrency: only the worker runs this, in its one thread; the sinks'
 * acknowledgements arrive through their poll() in the same thread.
 *
 * Memory contexts: "bv_cdc message" is reset after every message read;
 * "bv_cdc transaction" holds the current transaction's trace context and
 * column notes and is reset at each BEGIN.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq-fe.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "bv_common.h"
#include "cdc.h"

#define READ_BATCH   2000
#define POLL_EVERY   256 /* delivery reports are served every this many messages */
#define BATCH_NAP_US 1000

/* Fewer messages than this per window: a trickle (see the wait). */
#define TRICKLE_WINDOW_MS 20
#define TRICKLE_READS     400 /* 20,000 messages/s */

static PGconn *conn = NULL;
static int cur = -1; /* window entry of the open transaction, or -1 */
static int64 cur_seq = 0;
static char *cur_traceparent = NULL;
static XLogRecPtr received_lsn = InvalidXLogRecPtr;
static XLogRecPtr flushed_lsn = InvalidXLogRecPtr;
static XLogRecPtr sent_flush = InvalidXLogRecPtr;
static TimestampTz last_status = 0;
static TimestampTz last_heartbeat = 0;
static TimestampTz last_publish = 0;
static TimestampTz window_start = 0; /* the trickle window: since when */
static int window_reads = 0;         /* messages read in it */
static bool trickle = true;          /* the last window was a trickle */
static MemoryContext msg_cxt = NULL;
static MemoryContext txn_cxt = NULL;
static CdcTableRoutes *last_tr = NULL; /* table_routes(): its last answer, and the config */
static CdcConfig *last_tr_cfg = NULL;
static uint64 last_tr_generation = 0;
static CdcConfig *stream_cfg = NULL; /* for publishing while a sink blocks */
/* What the last read step saw, for the acknowledgement and wait steps. */
static bool read_paused = false; /* a routed sink is paused: nothing read */
static bool read_room = true;    /* the window had room when reading stopped */
static int read_count = 0;       /* messages read */

/* This transaction's bv.columns notes: "schema.table" -> its columns. */
typedef struct TxnColumns
{
	char *table;
	CdcColumnNames cols;
} TxnColumns;
static List *txn_columns = NIL;               /* in txn_cxt */
static const CdcColumnNames *cur_cols = NULL; /* of the change being emitted */

static CdcProduceResult emit_txn_event(CdcSink *sink, bool end, const char *lsn_text);

static void count_txn_event(CdcSink *sink, const char *table);

/* Latch, postmaster death and the replication socket: built once per connection. */
static WaitEventSet *wait_set = NULL;

static XLogRecPtr
parse_lsn(const char *s)
{
	uint32 hi, lo;

	if (s == NULL || sscanf(s, "%X/%X", &hi, &lo) != 2)
		return InvalidXLogRecPtr;
	return ((uint64) hi << 32) | lo;
}

static void
publish(CdcConfig *cfg, bool force)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!force && !TimestampDifferenceExceeds(last_publish, now, 100))
		return;
	last_publish = now;
	cdc_sinks_publish(cfg);
	SpinLockAcquire(&cdc_shared->mutex);
	cdc_shared->received_lsn = received_lsn;
	cdc_shared->confirmed_lsn = flushed_lsn;
	cdc_shared->inflight = (uint64) cdc_sinks_pending(cfg);
	cdc_shared->oldest_pending_commit = cdc_window_oldest_commit();
	cdc_shared->last_heartbeat = last_heartbeat;
	SpinLockRelease(&cdc_shared->mutex);
}

/* Send a status update: now if asked to reply, else when due. */
static bool
send_status(bool force, bool reply)
{
	TimestampTz now = GetCurrentTimestamp();
	char *err;

	if (conn == NULL)
		return true;
	if (!force && !TimestampDifferenceExceeds(last_status, now, cdc_status_interval_ms))
		return true;
	if (!bv_repl_send_status(conn, Max(received_lsn, flushed_lsn), flushed_lsn, reply, &err))
	{
		cdc_set_error("could not send the slot position: %s", err);
		return false;
	}
	sent_flush = flushed_lsn;
	last_status = now;
	if (reply)
		last_heartbeat = now;
	return true;
}

/*
 * cdc_stream_keepalive
 *		While a sink waits in produce() for room (through sink.c's hook) or
 *		the worker drains before a reload: keep the walsender content.
 */
void
cdc_stream_keepalive(void)
{
	cdc_window_advance(&flushed_lsn);
	(void) send_status(false, false);
	/* A sink blocked in produce() may be stalled: keep the stats current. */
	if (stream_cfg != NULL)
		publish(stream_cfg, false);
}

/* The configuration the stream uses now (worker.c, after a reload). */
void
cdc_stream_set_config(CdcConfig *cfg)
{
	stream_cfg = cfg;
}

/*
 * The connection string of the replication connection: our own server
 * over its first unix socket (else 127.0.0.1), as the bootstrap superuser,
 * with bv_cdc.conninfo appended (its keywords win).
 */
static char *
replication_conninfo(const char *superuser)
{
	StringInfoData buf;
	char *sockdirs = pstrdup(GetConfigOption("unix_socket_directories", false, false));
	char *comma = strchr(sockdirs, ',');
	char *host = sockdirs;

	if (comma)
		*comma = '\0';
	while (*host == ' ')
		host++;
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "host='%s' port=%d user='%s' dbname='%s' replication=database "
					 "application_name=bv_cdc options='-c datestyle=ISO -c timezone=UTC' %s",
					 host[0] ? host : "127.0.0.1", PostPortNumber, superuser, cdc_database,
					 cdc_conninfo ? cdc_conninfo : "");
	return buf.data;
}

/*
 * Look the slot up; returns its plugin (NULL when missing) and the name of
 * the bootstrap superuser in *superuser.
 */
static char *
slot_plugin(char **superuser)
{
	Oid argtypes[1] = {TEXTOID};
	Datum args[1];
	char *plugin = NULL;
	MemoryContext outer = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	args[0] = CStringGetTextDatum(cdc_slot_name);
	if (SPI_execute_with_args("SELECT plugin::text FROM pg_catalog.pg_replication_slots "
							  "WHERE slot_name = $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_replication_slots");
	if (SPI_processed > 0)
		plugin = MemoryContextStrdup(outer,
									 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	*superuser = MemoryContextStrdup(outer, GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return plugin;
}

/*
 * Connect, create the slot when missing, and start streaming.  false on
 * failure, with the reason published.
 */
static bool
start_streaming(void)
{
	char *superuser;
	char *plugin = slot_plugin(&superuser);
	char *err, *sqlstate;
	PGresult *res;
	StringInfoData cmd;

	if (plugin != NULL && strcmp(plugin, "wal2json") != 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" uses plugin \"%s\", not wal2json", cdc_slot_name,
						plugin),
				 errhint("Drop that slot or set bv_cdc.slot_name to another name.")));
		cdc_set_error("slot %s uses plugin %s, not wal2json", cdc_slot_name, plugin);
		return false;
	}

	conn = bv_repl_connect(replication_conninfo(superuser), PG_WAIT_EXTENSION, &err);
	if (conn == NULL)
	{
		ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
						  errmsg("bv_cdc could not open its replication connection: %s", err),
						  errhint("Check pg_hba.conf allows a local replication connection for "
								  "the bootstrap superuser, or set bv_cdc.conninfo.")));
		cdc_set_error("replication connection: %s", err);
		return false;
	}

	if (plugin == NULL)
	{
		initStringInfo(&cmd);
		appendStringInfo(&cmd, "CREATE_REPLICATION_SLOT %s LOGICAL wal2json (SNAPSHOT 'nothing')",
						 quote_identifier(cdc_slot_name));
		res = bv_repl_command(conn, cmd.data, PGRES_TUPLES_OK, PG_WAIT_EXTENSION, &err, &sqlstate);
		if (res == NULL)
		{
			if (strstr(err, "may not be used as an output plugin") != NULL)
				ereport(WARNING,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("bv_cdc cannot create its slot: wal2json is not an allowed output "
								"plugin"),
						 errdetail("%s", err),
						 errhint("Add wal2json to output_plugin_libraries, e.g. "
								 "output_plugin_libraries = 'pgoutput, test_decoding, wal2json', "
								 "and reload.")));
			else
				ereport(WARNING, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								  errmsg("bv_cdc could not create replication slot \"%s\": %s",
										 cdc_slot_name, err),
								  errhint("Check max_replication_slots and wal_level = logical.")));
			cdc_set_error("creating slot %s: %s", cdc_slot_name, err);
			return false;
		}
		PQclear(res);
		ereport(LOG, (errmsg("bv_cdc created replication slot \"%s\" (wal2json)", cdc_slot_name)));
	}

	initStringInfo(&cmd);
	appendStringInfo(&cmd,
					 "START_REPLICATION SLOT %s LOGICAL 0/0 (\"format-version\" '2', "
					 "\"include-xids\" '1', \"include-timestamp\" '1', \"include-lsn\" '1', "
					 "\"include-pk\" '1', \"include-types\" '0', \"include-typmod\" '0', "
					 "\"include-transaction\" '1', \"add-msg-prefixes\" '%s,%s,%s,%s', "
					 "\"filter-tables\" 'bv_cdc.*')",
					 quote_identifier(cdc_slot_name), BV_CDC_TRACE_PREFIX, BV_CDC_WATERMARK_PREFIX,
					 BV_CDC_COLUMNS_PREFIX, BV_CDC_NOIDENT_PREFIX);
	res = bv_repl_command(conn, cmd.data, PGRES_COPY_BOTH, PG_WAIT_EXTENSION, &err, &sqlstate);
	if (res == NULL)
	{
		ereport(WARNING, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						  errmsg("bv_cdc could not start streaming slot \"%s\": %s", cdc_slot_name,
								 err),
						  errhint("Check that wal2json is installed and allowed by "
								  "output_plugin_libraries.")));
		cdc_set_error("START_REPLICATION: %s", err);
		return false;
	}
	PQclear(res);
	return true;
}

/* Open a window entry for a BEGIN. */
static bool
open_txn(const W2jMessage *m)
{
	int64 commit_us;
	int idx;

	if (!cdc_parse_timestamp(m->timestamp, &commit_us))
		commit_us = 0;
	idx = cdc_window_open(parse_lsn(m->nextlsn), m->xid, commit_us);
	if (idx < 0)
		return false;
	cur = idx;
	cur_seq = 0;
	MemoryContextReset(txn_cxt);
	cur_traceparent = NULL;
	txn_columns = NIL;
	return true;
}

/*
 * Hand one event of the open window entry to its sink, counting it as
 * pending first (a sink may acknowledge within produce()).  A message the
 * sink can never take is quarantined (what says what it was); a failed
 * sink is reported.
 */
static CdcProduceResult
produce_event(CdcSink *sink, CdcEvent *ev, XLogRecPtr lsn, const char *what)
{
	char *err = NULL;
	CdcProduceResult rc;

	CdcTxn *txn = cdc_window_entry(cur);

	ev->opaque = cdc_window_opaque(cur);
	txn->pending++;
	sink->pending++;
	rc = cdc_sink_produce(sink, ev, &err);
	if (rc != CDC_PRODUCE_OK)
	{
		txn->pending--;
		sink->pending--;
	}
	if (rc == CDC_PRODUCE_REJECTED)
	{
		cdc_quarantine(lsn, psprintf("sink %s refused %s: %s", sink->name, what, err),
					   ev->payload, (int) ev->len);
		rc = CDC_PRODUCE_OK;
	}
	else if (rc == CDC_PRODUCE_RESTART)
		cdc_set_error("sink %s: %s", sink->name, err ? err : "delivery failed");
	return rc;
}

/*
 * The {key} of a topic template: the key's values joined with "/", with
 * the characters MQTT topics reserve ('/', '+', '#', '%' and NUL) and
 * control characters percent-encoded.
 */
static void
append_key_path(StringInfo out, const W2jMessage *m, const W2jColumn *cols, int ncols)
{
	int i, j;

	for (i = 0; i < m->npk; i++)
	{
		const char *v = NULL;

		for (j = 0; j < ncols && v == NULL; j++)
			if (m->pk[i].name && cols[j].name && strcmp(cols[j].name, m->pk[i].name) == 0)
				v = cols[j].vtype == JSON_TOKEN_NULL ? "null" : cols[j].value;
		if (i > 0)
			appendStringInfoChar(out, '/');
		for (; v && *v; v++)
		{
			unsigned char c = (unsigned char) *v;

			if (c == '/' || c == '+' || c == '#' || c == '%' || c < 0x20 || c == 0x7f)
				appendStringInfo(out, "%%%02X", c);
			else
				appendStringInfoChar(out, (char) c);
		}
	}
}

/* A template's {key} placeholder replaced (the rest was expanded at load). */
static char *
topic_with_key(const char *topic, const W2jMessage *m, const W2jColumn *cols, int ncols)
{
	StringInfoData buf;
	const char *p;

	initStringInfo(&buf);
	for (p = topic; *p; p++)
	{
		if (strncmp(p, "{key}", 5) == 0)
		{
			append_key_path(&buf, m, cols, ncols);
			p += 4;
		}
		else
			appendStringInfoChar(&buf, *p);
	}
	return buf.data;
}

static CdcProduceResult
emit(CdcConfig *cfg, CdcTableRoutes *tr, int r, char op, const W2jMessage *m,
	 const W2jColumn *before, int nbefore, const W2jColumn *after, int nafter,
	 XLogRecPtr lsn, const char *lsn_text)
{
	const CdcRoute *route = &cfg->routes[tr->routes[r]];
	CdcSink *sink = &cfg->sinks[route->sink];
	StringInfoData payload, key;
	CdcEventSource src;
	CdcHeaders h;
	CdcEvent ev;
	char opstr[2] = {op, '\0'};
	char event_id[64];
	bool have_key;
	CdcProduceResult rc;
	int bit = op == 'c'   ? CDC_OP_C
			  : op == 'u' ? CDC_OP_U
			  : op == 'd' ? CDC_OP_D
			  : op == 'r' ? CDC_OP_R
						  : CDC_OP_T;

	if (!(route->ops & bit))
		return CDC_PRODUCE_OK;
	if (sink->impl == NULL)
	{
		/* A sink that could not start: hold the slot before this change. */
		if (sink->start_failed)
			cdc_window_entry(cur)->held = true;
		return CDC_PRODUCE_OK;
	}

	src.database = cdc_database;
	src.lsn = lsn_text;
	src.xid = cdc_window_entry(cur)->xid;
	src.ts_us = cdc_window_entry(cur)->commit_us;
	src.seq = cur_seq;

	/* The key goes both into the envelope and into the message. */
	initStringInfo(&key);
	have_key = op != 't' && cdc_build_key(&key, m, op == 'd' ? before : after,
										  op == 'd' ? nbefore : nafter);
	initStringInfo(&payload);
	cdc_build_envelope(&payload, op, &src, m, before, nbefore, after, nafter, route, cur_cols,
					   have_key ? key.data : NULL, key.len);

	/* tr->key is "schema.table", as the table header wants it. */
	h.op = opstr;
	h.table = tr->key;
	h.lsn = lsn_text;
	h.xid = cdc_window_entry(cur)->xid;
	h.traceparent = cur_traceparent;

	/*
	 * Stable across replays: the change's position, its operation, the
	 * route.  Kafka has no use for it (its consumers deduplicate by
	 * source.lsn, source.seq and op), so it is not formatted for Kafka.
	 */
	if (sink->ops->event_ids)
		snprintf(event_id, sizeof(event_id), "%X%08X-" INT64_FORMAT "-%c-" INT64_FORMAT,
				 LSN_FORMAT_ARGS(lsn), cur_seq, op, route->id);
	else
		event_id[0] = '\0';

	ev.topic = route->key_topic ? topic_with_key(tr->topics[r], m, op == 'd' ? before : after,
												 op == 'd' ? nbefore : nafter)
								: tr->topics[r];
	ev.key = have_key ? key.data : NULL;
	ev.keylen = have_key ? key.len : 0;
	ev.payload = payload.data;
	ev.len = payload.len;
	ev.h = &h;
	ev.route = route;
	ev.event_id = event_id;

	/* A transaction's first event for a sink with a transaction topic: BEGIN. */
	if (sink->txn_topic != NULL && cdc_window_entry(cur)->xid != 0)
	{
		if (sink->txn_events == 0 && (rc = emit_txn_event(sink, false, lsn_text)) != CDC_PRODUCE_OK)
			return rc;
		count_txn_event(sink, tr->key);
	}

	return produce_event(sink, &ev, lsn, "the message");
}

/*
 * Transaction-boundary events (Debezium's shape), for sinks with a
 * transaction topic: BEGIN before a transaction's first event for the sink,
 * END at its commit with the number of events per table.  Key: the xid.
 */
static CdcProduceResult
emit_txn_event(CdcSink *sink, bool end, const char *lsn_text)
{
	StringInfoData payload;
	CdcHeaders h;
	CdcEvent ev;
	CdcRoute route;
	char xid[24], event_id[64];
	ListCell *lc;
	const CdcTxn *txn = cdc_window_entry(cur);

	snprintf(xid, sizeof(xid), INT64_FORMAT, txn->xid);
	initStringInfo(&payload);
	appendStringInfo(&payload,
					 "{\"status\":\"%s\",\"id\":\"%s\",\"lsn\":\"%s\",\"ts_us\":" INT64_FORMAT
					 ",\"ts_ms\":" INT64_FORMAT,
					 end ? "END" : "BEGIN", xid, lsn_text, txn->commit_us, txn->commit_us / 1000);
	if (end)
	{
		appendStringInfo(&payload, ",\"event_count\":" INT64_FORMAT ",\"data_collections\":[",
						 sink->txn_events);
		foreach (lc, sink->txn_tables)
		{
			CdcTxnTable *t = lfirst(lc);

			if (lc != list_head(sink->txn_tables))
				appendStringInfoChar(&payload, ',');
			appendStringInfoString(&payload, "{\"data_collection\":");
			escape_json(&payload, t->table);
			appendStringInfo(&payload, ",\"event_count\":" INT64_FORMAT "}", t->events);
		}
		appendStringInfoChar(&payload, ']');
	}
	else
		appendStringInfoString(&payload, ",\"event_count\":null,\"data_collections\":null");
	appendStringInfoChar(&payload, '}');

	memset(&route, 0, sizeof(route));
	route.qos = 1;
	h.op = end ? "END" : "BEGIN";
	h.table = "";
	h.lsn = lsn_text;
	h.xid = cdc_window_entry(cur)->xid;
	h.traceparent = cur_traceparent;
	snprintf(event_id, sizeof(event_id), "txn-%s-%s", xid, end ? "end" : "begin");
	ev.topic = sink->txn_topic;
	ev.key = xid;
	ev.keylen = strlen(xid);
	ev.payload = payload.data;
	ev.len = payload.len;
	ev.h = &h;
	ev.route = &route;
	ev.event_id = event_id;
	return produce_event(sink, &ev, InvalidXLogRecPtr, "a transaction event");
}

/* Count an event of the open transaction for the sink's END event. */
static void
count_txn_event(CdcSink *sink, const char *table)
{
	MemoryContext old = MemoryContextSwitchTo(txn_cxt);
	ListCell *lc;

	sink->txn_events++;
	foreach (lc, sink->txn_tables)
	{
		CdcTxnTable *t = lfirst(lc);

		if (strcmp(t->table, table) == 0)
		{
			t->events++;
			MemoryContextSwitchTo(old);
			return;
		}
	}
	{
		CdcTxnTable *t = palloc(sizeof(CdcTxnTable));

		t->table = pstrdup(table);
		t->events = 1;
		sink->txn_tables = lappend(sink->txn_tables, t);
	}
	MemoryContextSwitchTo(old);
}

/* At a commit: the END event of every sink the transaction reached. */
static CdcProduceResult
end_txn_events(CdcConfig *cfg, const char *lsn_text)
{
	int i;
	CdcProduceResult rc = CDC_PRODUCE_OK;

	for (i = 0; i < cfg->nsinks && rc == CDC_PRODUCE_OK; i++)
		if (cfg->sinks[i].txn_events > 0 && cfg->sinks[i].impl != NULL)
			rc = emit_txn_event(&cfg->sinks[i], true, lsn_text);
	return rc;
}

static void
reset_txn_events(CdcConfig *cfg)
{
	int i;

	for (i = 0; i < cfg->nsinks; i++)
	{
		cfg->sinks[i].txn_events = 0;
		cfg->sinks[i].txn_tables = NIL;
	}
}

/*
 * The routes of a change's table: cdc_config_table, with the last answer
 * kept, as consecutive changes are mostly to one table.  What it keeps is
 * forgotten with the configuration and on relcache invalidation (then
 * cdc_config_table forgets the table's columns).
 */
static CdcTableRoutes *
table_routes(CdcConfig *cfg, const char *schema, const char *table)
{
	size_t slen = strlen(schema);

	if (last_tr == NULL || last_tr_cfg != cfg || last_tr_generation != cfg->generation ||
		strncmp(last_tr->key, schema, slen) != 0 || last_tr->key[slen] != '.' ||
		strcmp(last_tr->key + slen + 1, table) != 0)
	{
		last_tr = cdc_config_table(cfg, schema, table);
		last_tr_cfg = cfg;
		last_tr_generation = cfg->generation;
	}
	return last_tr;
}

static void
forget_table_routes(Datum arg, Oid relid)
{
	last_tr = NULL;
}

/* Two key images equal? (A primary key change turns into d + c.) */
static bool
key_changed(const W2jMessage *m)
{
	StringInfoData a, b;
	bool changed;

	if (m->identity == NULL || m->npk == 0)
		return false;
	initStringInfo(&a);
	initStringInfo(&b);
	if (!cdc_build_key(&a, m, m->identity, m->nidentity) ||
		!cdc_build_key(&b, m, m->columns, m->ncolumns))
		return false;
	changed = strcmp(a.data, b.data) != 0;
	pfree(a.data);
	pfree(b.data);
	return changed;
}

/*
 * The columns an update's table had when it was written, from which its
 * "unchanged" list is derived: the transaction's bv.columns note for the
 * table (written by the updating backend before its first update of a
 * table with a TOAST table); else, with REPLICA IDENTITY FULL, the old
 * row's columns (wal2json sends them all); else the table had no TOAST
 * table and nothing can be unchanged.  The catalog is never asked: it
 * describes the table as it is now, not as the change saw it.
 */
static const CdcColumnNames *
change_columns(CdcConfig *cfg, CdcTableRoutes *tr, const W2jMessage *m)
{
	static CdcColumnNames from_identity;
	ListCell *lc;
	int i;

	foreach (lc, txn_columns)
	{
		TxnColumns *tc = lfirst(lc);

		if (strcmp(tc->table, tr->key) == 0)
			return &tc->cols;
	}
	if (m->identity != NULL && m->nidentity > 0)
	{
		from_identity.n = m->nidentity;
		from_identity.names = palloc(sizeof(char *) * m->nidentity);
		for (i = 0; i < m->nidentity; i++)
			from_identity.names[i] = m->identity[i].name;
		return &from_identity;
	}
	return NULL;
}

/*
 * A note's content: a JSON array of strings (bv_cdc.c writes it).  NIL when
 * it is not one.
 */
static void
note_scalar(void *state, char *token, JsonTokenType type)
{
	List **items = state;

	*items = lappend(*items, type == JSON_TOKEN_STRING ? token : NULL);
}

static List *
parse_note(const char *content)
{
	List *items = NIL;
	JsonLexContext *lex;
	JsonSemAction sem;

	if (content == NULL)
		return NIL;
	lex = makeJsonLexContextCstringLen((char *) content, strlen(content), PG_UTF8, true);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &items;
	sem.scalar = note_scalar;
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || list_length(items) < 2 ||
		list_member_ptr(items, NULL))
		return NIL;
	return items;
}

/* A bv.columns note: the columns of a table as this transaction writes it. */
static void
note_columns(const char *content)
{
	List *items = parse_note(content);
	MemoryContext old;
	TxnColumns *tc = NULL;
	ListCell *lc;
	char *table;
	int i;

	if (items == NIL)
		return;
	old = MemoryContextSwitchTo(txn_cxt);
	table = psprintf("%s.%s", (char *) linitial(items), (char *) lsecond(items));
	foreach (lc, txn_columns)
		if (strcmp(((TxnColumns *) lfirst(lc))->table, table) == 0)
			tc = lfirst(lc);
	if (tc == NULL)
	{
		tc = palloc0(sizeof(TxnColumns));
		tc->table = table;
		txn_columns = lappend(txn_columns, tc);
	}
	tc->cols.n = list_length(items) - 2;
	tc->cols.names = palloc(sizeof(char *) * Max(tc->cols.n, 1));
	for (i = 0; i < tc->cols.n; i++)
		tc->cols.names[i] = pstrdup(list_nth(items, i + 2));
	MemoryContextSwitchTo(old);
}

/*
 * A bv.noidentity note: an UPDATE or DELETE of a table without replica
 * identity, whose row changes wal2json could not decode (it only logs a
 * warning).  If the table is routed for that operation, the loss is
 * recorded in bv_cdc.quarantine: never silent.
 */
static void
note_no_identity(CdcConfig *cfg, XLogRecPtr lsn, const char *content)
{
	List *items = parse_note(content);
	CdcTableRoutes *tr;
	const char *op;
	int r, bits = 0;

	if (list_length(items) < 4)
		return;
	op = list_nth(items, 2);
	tr = cdc_config_table(cfg, linitial(items), lsecond(items));
	for (r = 0; r < tr->nroutes; r++)
		bits |= cfg->routes[tr->routes[r]].ops;
	if (tr->nroutes == 0 || !(bits & (op[0] == 'D' ? CDC_OP_D : CDC_OP_U | CDC_OP_D)))
		return;
	cdc_quarantine(lsn,
				   psprintf("%s of %s row(s) of %s not published: the table has no replica "
							"identity (primary key, replica identity index or REPLICA IDENTITY "
							"FULL), so its row changes cannot be decoded",
							op[0] == 'D'   ? "DELETE"
							: op[0] == 'M' ? "MERGE"
										   : "UPDATE",
							(char *) lfourth(items), tr->key),
				   content, strlen(content));
}

/* One change: every route of its table gets its envelope. */
static CdcProduceResult
handle_change(CdcConfig *cfg, W2jMessage *m, XLogRecPtr lsn, const char *raw, int rawlen)
{
	CdcTableRoutes *tr;
	const char *lsn_text = m->lsn ? m->lsn : "0/0";
	int r;

	if (cur < 0)
	{
		cdc_quarantine(lsn, "change outside a transaction", raw, rawlen);
		return CDC_PRODUCE_OK;
	}
	cur_seq++;
	if (m->action != 'T')
		cdc_snapshot_on_change(m);
	tr = table_routes(cfg, m->schema, m->table);
	if (tr->nroutes == 0)
		return CDC_PRODUCE_OK;
	cur_cols = m->action == 'U' ? change_columns(cfg, tr, m) : NULL;

	for (r = 0; r < tr->nroutes; r++)
	{
		CdcProduceResult rc = CDC_PRODUCE_OK;

		switch (m->action)
		{
			case 'I':
				rc = emit(cfg, tr, r, 'c', m, NULL, 0, m->columns, m->ncolumns, lsn, lsn_text);
				break;
			case 'U':
				if (key_changed(m))
				{
					rc = emit(cfg, tr, r, 'd', m, m->identity, m->nidentity, NULL, 0, lsn,
							  lsn_text);
					if (rc == CDC_PRODUCE_OK)
						rc = emit(cfg, tr, r, 'c', m, NULL, 0, m->columns, m->ncolumns, lsn,
								  lsn_text);
				}
				else if (m->nidentity > m->npk || m->npk == 0)
					rc = emit(cfg, tr, r, 'u', m, m->identity, m->nidentity, m->columns,
							  m->ncolumns, lsn, lsn_text);
				else
				{
					/* Only the key, taken from the new row: no before image. */
					rc = emit(cfg, tr, r, 'u', m, NULL, 0, m->columns, m->ncolumns, lsn,
							  lsn_text);
				}
				break;
			case 'D':
				rc = emit(cfg, tr, r, 'd', m, m->identity, m->nidentity, NULL, 0, lsn, lsn_text);
				break;
			case 'T':
				rc = emit(cfg, tr, r, 't', m, NULL, 0, NULL, 0, lsn, lsn_text);
				break;
		}
		if (rc != CDC_PRODUCE_OK)
			return rc;
	}
	return CDC_PRODUCE_OK;
}

/*
 * At a snapshot chunk's high watermark: its rows that no streamed change
 * superseded, as "r" events, in a window entry of their own.
 */
static CdcProduceResult
emit_snapshot(CdcConfig *cfg, XLogRecPtr lsn, const char *lsn_text)
{
	W2jColumn **rows;
	bool *dropped;
	int ncols, n, i, r, idx;
	W2jMessage m;
	CdcTableRoutes *tr;
	CdcProduceResult rc = CDC_PRODUCE_OK;
	int saved_cur = cur;

	n = cdc_snapshot_rows(&rows, &dropped, &ncols, &m);
	idx = cdc_window_open(lsn, 0,
						  (int64) GetCurrentTimestamp() +
							  (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY *
								  USECS_PER_SEC);
	if (idx < 0)
		return CDC_PRODUCE_RESTART;
	cur = idx;
	cur_seq = 0;
	cur_cols = NULL;
	tr = cdc_config_table(cfg, m.schema, m.table);
	for (i = 0; i < n && rc == CDC_PRODUCE_OK; i++)
	{
		if (dropped[i])
			continue;
		cur_seq++;
		for (r = 0; r < tr->nroutes && rc == CDC_PRODUCE_OK; r++)
			rc = emit(cfg, tr, r, 'r', &m, NULL, 0, rows[i], ncols, lsn, lsn_text);
	}
	cdc_window_entry(idx)->committed = true;
	cur = saved_cur;
	return rc;
}

/* One XLogData payload (a wal2json object). */
static CdcProduceResult
handle_data(CdcConfig *cfg, XLogRecPtr lsn, const char *data, int len)
{
	W2jMessage m;
	char *err;

	if (!w2j_parse(data, len, &m, &err))
	{
		cdc_quarantine(lsn, err, data, len);
		return CDC_PRODUCE_OK;
	}
	switch (m.action)
	{
		case 'B':
			if (cur >= 0)
				cdc_window_entry(cur)->committed = true; /* never happens: BEGIN inside BEGIN */
			reset_txn_events(cfg);
			(void) open_txn(&m);
			return CDC_PRODUCE_OK;
		case 'C':
		{
			CdcProduceResult rc = CDC_PRODUCE_OK;

			if (cur >= 0)
			{
				CdcTxn *txn;

				rc = end_txn_events(cfg, m.lsn ? m.lsn : "0/0");
				txn = cdc_window_entry(cur);
				txn->committed = true;
				if (txn->end_lsn == InvalidXLogRecPtr)
					txn->end_lsn = parse_lsn(m.nextlsn);
			}
			reset_txn_events(cfg);
			cur = -1;
			return rc;
		}
		case 'M':
			if (!m.transactional && m.prefix && strcmp(m.prefix, BV_CDC_WATERMARK_PREFIX) == 0 &&
				cdc_snapshot_watermark(m.content, lsn))
				return emit_snapshot(cfg, lsn, m.lsn ? m.lsn : "0/0");
			if (cur >= 0 && m.transactional && m.prefix &&
				strcmp(m.prefix, BV_CDC_TRACE_PREFIX) == 0 && m.content &&
				bv_traceparent_is_valid(m.content))
				cur_traceparent = MemoryContextStrdup(txn_cxt, m.content);
			else if (cur >= 0 && m.transactional && m.prefix &&
					 strcmp(m.prefix, BV_CDC_COLUMNS_PREFIX) == 0)
				note_columns(m.content);
			else if (cur >= 0 && m.transactional && m.prefix &&
					 strcmp(m.prefix, BV_CDC_NOIDENT_PREFIX) == 0 && m.content)
				note_no_identity(cfg, lsn, m.content);
			return CDC_PRODUCE_OK;
		default:
			return handle_change(cfg, &m, lsn, data, len);
	}
}

static bool
any_routed_sink_paused(CdcConfig *cfg)
{
	int i;

	for (i = 0; i < cfg->nroutes; i++)
		if (cfg->sinks[cfg->routes[i].sink].paused)
			return true;
	return false;
}

/*
 * cdc_stream_cleanup
 *		Close the stream and forget the window (the slot keeps everything
 *		that was not confirmed).  Safe to call at any time, also at exit.
 */
void
cdc_stream_cleanup(void)
{
	if (wait_set != NULL)
	{
		FreeWaitEventSet(wait_set);
		wait_set = NULL;
	}
	if (conn != NULL)
	{
		PQfinish(conn);
		conn = NULL;
	}
	cdc_window_reset();
	cur = -1;
	stream_cfg = NULL;
}

/* Room in the window for more events? */
static bool
window_has_room(CdcConfig *cfg)
{
	return cdc_sinks_pending(cfg) < cdc_max_inflight && cdc_window_room();
}

/*
 * cdc_stream_start
 *		Connect, create the slot when missing and START_REPLICATION, with
 *		an empty window.  false on failure (the reason published): the
 *		worker backs off and tries again.  The slot comes first: it exists,
 *		and keeps every change, as soon as the extension does, even while
 *		a sink cannot start.
 */
bool
cdc_stream_start(CdcConfig *cfg)
{
	if (msg_cxt == NULL)
	{
		msg_cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc message", ALLOCSET_DEFAULT_SIZES);
		txn_cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc transaction",
										ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(forget_table_routes, (Datum) 0);
	}
	last_tr = NULL;
	cdc_stream_cleanup();
	cdc_snapshot_reset();
	received_lsn = flushed_lsn = sent_flush = InvalidXLogRecPtr;
	read_paused = false;
	read_room = true;
	read_count = 0;

	cdc_set_state("connecting");
	if (!start_streaming())
		return false;
	stream_cfg = cfg;
	cdc_sink_set_keepalive(cdc_stream_keepalive);
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, PQsocket(conn), NULL, NULL);
	return true;
}

/*
 * cdc_stream_read
 *		The stream step: read what the walsender sent, up to a batch, and
 *		hand each change's events to the sinks.  Reads nothing while a
 *		routed sink is paused or the window is full.
 */
CdcStepResult
cdc_stream_read(CdcConfig *cfg)
{
	int nread = 0;

	stream_cfg = cfg;
	read_paused = any_routed_sink_paused(cfg);
	read_room = window_has_room(cfg);
	cdc_set_state(read_paused ? "paused" : read_room ? "streaming"
													 : "window full");

	while (!read_paused && read_room && nread < READ_BATCH)
	{
		char *buf, *err;
		int len = bv_repl_receive(conn, &buf, &err);
		XLogRecPtr start, walend;
		bool reply = false;
		const char *data;
		int datalen;
		char kind;
		CdcProduceResult prc = CDC_PRODUCE_OK;

		if (len == 0)
			break;
		if (len < 0)
		{
			ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
							  errmsg("bv_cdc lost its replication stream: %s", err),
							  errhint("The worker reconnects and resumes from the slot.")));
			cdc_set_error("stream: %s", err);
			return CDC_STEP_RESTART;
		}
		nread++;
		kind = bv_repl_parse(buf, len, &start, &walend, &reply, &data, &datalen);
		if (kind == 'w')
		{
			MemoryContext old = MemoryContextSwitchTo(msg_cxt);

			if (start > received_lsn)
				received_lsn = start;
			prc = handle_data(cfg, start, data, datalen);
			MemoryContextSwitchTo(old);
			MemoryContextReset(msg_cxt);
		}
		else if (kind == 'k')
		{
			if (walend > received_lsn)
				received_lsn = walend;
			cdc_window_advance(&flushed_lsn);
			if (cdc_window_count() == 0 && !cdc_window_held() && walend > flushed_lsn)
				flushed_lsn = walend; /* nothing in flight: idle slot advances */
			if (reply && !send_status(true, false))
			{
				bv_repl_free(buf);
				return CDC_STEP_RESTART;
			}
		}
		bv_repl_free(buf);
		if (prc == CDC_PRODUCE_RESTART)
			return CDC_STEP_RESTART;
		if (nread % POLL_EVERY == 0)
			cdc_sinks_poll(cfg, 0);
		read_room = window_has_room(cfg);
	}
	read_count = nread;
	return nread >= READ_BATCH ? CDC_STEP_BUSY : CDC_STEP_IDLE;
}

/*
 * cdc_stream_acks
 *		The acknowledgement step: serve the sinks' acknowledgements, move
 *		the window and confirm the slot, take a snapshot step, publish the
 *		statistics.  false when a sink failed to deliver or the status
 *		could not be sent: the stream must start over from the slot.
 */
bool
cdc_stream_acks(CdcConfig *cfg)
{
	cdc_sinks_poll(cfg, 0);
	if (cdc_sinks_failed(cfg))
	{
		ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
						  errmsg("bv_cdc: a sink failed to deliver; replaying from the slot"),
						  errhint("See bv_cdc.stats for the sink's last error.")));
		return false;
	}
	cdc_window_advance(&flushed_lsn);
	if (!read_paused)
		cdc_snapshot_step(flushed_lsn);
	if (!send_status(flushed_lsn != sent_flush &&
						 TimestampDifferenceExceeds(last_status, GetCurrentTimestamp(),
													cdc_status_interval_ms / 10),
					 false))
		return false;
	publish(cfg, false);
	return true;
}

/*
 * cdc_stream_wait
 *		The wait step: for the replication socket if the stream may read,
 *		else for the sinks' acknowledgements; not at all after a full batch.
 *		Sends the heartbeat when due.  false when the stream must start over.
 */
bool
cdc_stream_wait(CdcConfig *cfg, CdcStepResult read)
{
	long timeout;
	int rc;

	/*
	 * A thin trickle of messages: let the walsender fill the socket for a
	 * moment rather than waking up for every message it sends (saves a
	 * wake-up and a context switch per change; costs at most this delay in
	 * latency).  Not while the stream is busy: the socket holds only a few
	 * hundred messages, which the walsender writes in well under this
	 * delay, and it would wait for us.
	 */
	window_reads += read_count;
	if (TimestampDifferenceExceeds(window_start, GetCurrentTimestamp(), TRICKLE_WINDOW_MS))
	{
		trickle = window_reads < TRICKLE_READS;
		window_start = GetCurrentTimestamp();
		window_reads = 0;
	}
	if (read == CDC_STEP_BUSY)
		return true;
	if (read_count > 0 && trickle && !read_paused && read_room)
	{
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		pg_usleep(BATCH_NAP_US);
		pgstat_report_wait_end();
		return true;
	}

	timeout = cdc_sinks_wait_ms(cfg);
	if (timeout < 0)
		timeout = Min(cdc_status_interval_ms, 1000);
	if (timeout > 5)
	{
		/*
		 * Going idle: publish the last acknowledgements and confirm the slot
		 * now, not a whole idle wait later.
		 */
		publish(cfg, true);
		if (flushed_lsn != sent_flush && !send_status(true, false))
			return false;
	}
	if (!read_paused && read_room)
	{
		WaitEvent ev;

		/* A persistent set: no epoll set to build for every wait. */
		rc = WaitEventSetWait(wait_set, timeout, &ev, 1, PG_WAIT_EXTENSION) == 1 ? ev.events : 0;
	}
	else if (cdc_sinks_pending(cfg) > 0)
	{
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		cdc_sinks_poll(cfg, 50);
		pgstat_report_wait_end();
		rc = 0;
	}
	else
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout,
					   PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);

	/* Heartbeat: ask the server where it is, to advance an idle slot. */
	if (TimestampDifferenceExceeds(last_heartbeat, GetCurrentTimestamp(),
								   cdc_heartbeat_interval_ms) &&
		!send_status(true, true))
		return false;
	return true;
}
