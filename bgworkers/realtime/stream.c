/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  The gateway's replication stream: its own logical slot, decoded by
 *	  pgoutput with messages on, streamed over the replication protocol.
 *
 * The worker opens a "replication=database" connection to its own server
 * (bv_repl.c, shared with bv_cdc), creates the slot on first start
 * (pgoutput, SNAPSHOT 'nothing') and streams it with
 *   proto_version '1', publication_names 'bv_realtime', messages 'true'.
 * The publication has no tables, so pgoutput sends nothing for ordinary
 * changes and skips empty transactions (PostgreSQL 15): what arrives is
 * BEGIN / MESSAGE ... / COMMIT for transactions that called
 * bv_realtime.send(), in commit order, after their commit.  Tables added
 * to the publication (bv_realtime.enable_table) add RELATION messages
 * (kept in rel_cxt for the stream's life) and INSERT / UPDATE / DELETE
 * rows, decoded by changes.c into events of topic "table:<schema>.<name>"
 * that share the transaction's positions with its messages.  Messages of
 * other prefixes (bv_cdc's traceparent) and non-transactional ones are
 * skipped.
 *
 * A message's position is (commit LSN of its transaction, index within
 * the transaction): the commit LSN comes with BEGIN (final_lsn), so
 * positions increase in delivery order, which a message's own LSN would
 * not (two transactions can commit in the other order than they wrote).
 *
 * rt_stream_read() never blocks: it takes what libpq has, returns the
 * committed transactions' events in *batch, and keeps a transaction that
 * is still arriving for the next call.  The slot's confirmed position is
 * moved (rt_stream_confirm) only after the worker has written the batch to
 * the history table and committed, so a crash replays, never loses.
 *
 * Memory: events live in stream_cxt, reset by rt_stream_read when no
 * transaction is open across calls; the worker is done with the previous
 * batch by then.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/postmaster.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "libpq-fe.h"

#include "bv_common.h"
#include "bv_realtime.h"

static PGconn *conn = NULL;
static MemoryContext stream_cxt = NULL;
static MemoryContext rel_cxt = NULL; /* relation descriptions, for the stream's life */
static HTAB *rels = NULL;            /* relid -> RtRel * */

typedef struct RelEntry
{
	Oid relid;
	RtRel *rel;
} RelEntry;

static RtRel *
rel_lookup(Oid relid)
{
	RelEntry *e = rels ? hash_search(rels, &relid, HASH_FIND, NULL) : NULL;

	return e ? e->rel : NULL;
}

/* The transaction being received (between BEGIN and COMMIT). */
static bool in_txn = false;
static XLogRecPtr txn_commit_lsn = InvalidXLogRecPtr;
static TimestampTz txn_commit_time = 0;
static uint32 txn_seq = 0;
static TransactionId txn_xid = InvalidTransactionId;
static List *txn_events = NIL;

/* Positions: received, durably handled (confirmed to the server). */
static XLogRecPtr received_end = InvalidXLogRecPtr; /* end of the last whole txn */
static XLogRecPtr idle_walend = InvalidXLogRecPtr;  /* server position while idle */
static XLogRecPtr confirmed = InvalidXLogRecPtr;
static TimestampTz last_status = 0;
static bool reply_requested = false;

static uint64
get_u64(const char *p)
{
	uint64 v;

	memcpy(&v, p, 8);
	return pg_ntoh64(v);
}

static uint32
get_u32(const char *p)
{
	uint32 v;

	memcpy(&v, p, 4);
	return pg_ntoh32(v);
}

/* The bootstrap superuser's name (set by rt_stream_start; "" before). */
char rt_superuser[NAMEDATALEN] = "";

/*
 * rt_local_conninfo
 *		The connection string to our own server and database, as user:
 *		the replication connection, and the handler pool's connections.
 */
char *
rt_local_conninfo(const char *superuser, bool replication)
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
					 "host='%s' port=%d user='%s' dbname='%s' %s application_name=%s %s",
					 host[0] ? host : "127.0.0.1", PostPortNumber, superuser, rt_database,
					 replication ? "replication=database" : "",
					 replication ? "bv_realtime" : "bv_realtime_handler",
					 rt_conninfo ? rt_conninfo : "");
	return buf.data;
}

/* The slot's plugin (NULL when it does not exist) and the superuser's name. */
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
	args[0] = CStringGetTextDatum(rt_slot_name);
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
 * rt_stream_start
 *		Connect, create the slot when missing, start streaming.  false and
 *		*err on failure (the caller backs off and retries).
 */
bool
rt_stream_start(char **err)
{
	char *superuser;
	char *plugin;
	char *sqlstate;
	PGresult *res;
	StringInfoData cmd;

	if (stream_cxt == NULL)
		stream_cxt = AllocSetContextCreate(TopMemoryContext, "bv_realtime stream",
										   ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(stream_cxt);
	if (rel_cxt == NULL)
		rel_cxt = AllocSetContextCreate(TopMemoryContext, "bv_realtime relations",
										ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(rel_cxt);
	{
		HASHCTL hctl;

		memset(&hctl, 0, sizeof(hctl));
		hctl.keysize = sizeof(Oid);
		hctl.entrysize = sizeof(RelEntry);
		hctl.hcxt = rel_cxt;
		rels = hash_create("bv_realtime relations", 64, &hctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	in_txn = false;
	txn_events = NIL;
	received_end = idle_walend = confirmed = InvalidXLogRecPtr;

	plugin = slot_plugin(&superuser);
	if (plugin != NULL && strcmp(plugin, "pgoutput") != 0)
	{
		*err = psprintf("replication slot \"%s\" uses plugin \"%s\", not pgoutput; drop it or "
						"set bv_realtime.slot_name",
						rt_slot_name, plugin);
		return false;
	}
	strlcpy(rt_superuser, superuser, sizeof(rt_superuser));
	conn = bv_repl_connect(rt_local_conninfo(superuser, true), PG_WAIT_EXTENSION, err);
	if (conn == NULL)
		return false;
	if (plugin == NULL)
	{
		initStringInfo(&cmd);
		appendStringInfo(&cmd, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'nothing')",
						 quote_identifier(rt_slot_name));
		res = bv_repl_command(conn, cmd.data, PGRES_TUPLES_OK, PG_WAIT_EXTENSION, err, &sqlstate);
		if (res == NULL)
		{
			rt_stream_stop();
			return false;
		}
		PQclear(res);
		ereport(LOG, (errmsg("bv_realtime created replication slot \"%s\" (pgoutput)",
							 rt_slot_name)));
	}
	initStringInfo(&cmd);
	appendStringInfo(&cmd,
					 "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', "
					 "publication_names '\"bv_realtime\"', messages 'true')",
					 quote_identifier(rt_slot_name));
	res = bv_repl_command(conn, cmd.data, PGRES_COPY_BOTH, PG_WAIT_EXTENSION, err, &sqlstate);
	if (res == NULL)
	{
		rt_stream_stop();
		return false;
	}
	PQclear(res);
	last_status = GetCurrentTimestamp();
	return true;
}

void
rt_stream_stop(void)
{
	if (conn)
		PQfinish(conn);
	conn = NULL;
}

int
rt_stream_socket(void)
{
	return conn ? PQsocket(conn) : -1;
}

/* Is this JSON text well formed?  (A forged message must not break clients.) */
static bool
json_is_valid(char *text, int len)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen(text, len, GetDatabaseEncoding(), false);
	JsonSemAction sem = {0};
	bool ok = pg_parse_json(lex, &sem) == JSON_SUCCESS;

	pfree(lex);
	return ok;
}

/*
 * One MESSAGE of the current transaction: "topic\0event\0payload".  Others
 * than ours, and malformed ones (only a superuser can forge them with
 * pg_logical_emit_message), are skipped with a log line.
 */
static void
take_message(const char *content, int len)
{
	const char *topic = content, *event, *payload;
	int tlen, elen, plen;
	RtEvent *ev;

	tlen = strnlen(topic, len);
	if (tlen >= len)
		goto malformed;
	event = topic + tlen + 1;
	elen = strnlen(event, len - tlen - 1);
	if (tlen + 1 + elen >= len)
		goto malformed;
	payload = event + elen + 1;
	plen = len - tlen - elen - 2;
	if (!rt_name_is_valid(topic, tlen, RT_TOPIC_MAX) || !rt_name_is_valid(event, elen, RT_EVENT_MAX) ||
		memchr(payload, '\n', plen) || memchr(payload, '\r', plen) || memchr(payload, '\0', plen))
		goto malformed;

	ev = palloc0(sizeof(RtEvent));
	ev->pos.lsn = txn_commit_lsn;
	ev->pos.seq = txn_seq++;
	ev->commit_time = txn_commit_time;
	ev->topic = pnstrdup(topic, tlen);
	ev->event = pnstrdup(event, elen);
	ev->payload = pnstrdup(payload, plen);
	if (!json_is_valid(ev->payload, plen))
		goto malformed;
	txn_events = lappend(txn_events, ev);
	return;

malformed:
	ereport(LOG, (errmsg("bv_realtime skipped a malformed \"%s\" message in the transaction "
						 "committed at %X/%X",
						 RT_MSG_PREFIX, LSN_FORMAT_ARGS(txn_commit_lsn))));
}

/*
 * One revocation of the current transaction (bv_realtime.revoke()):
 * "topic\0sub".  An RtEvent of op 'R' in the batch, in commit order: not
 * stored in the history, applied by the gateway when it is published.
 */
static void
take_revoke(const char *content, int len)
{
	int tlen = strnlen(content, len), slen;
	RtEvent *ev;

	if (tlen >= len || !rt_name_is_valid(content, tlen, RT_TOPIC_MAX))
		goto malformed;
	slen = len - tlen - 1;
	if (slen < 1 || slen > RT_SUB_MAX || memchr(content + tlen + 1, '\0', slen))
		goto malformed;
	ev = palloc0(sizeof(RtEvent));
	ev->pos.lsn = txn_commit_lsn;
	ev->pos.seq = txn_seq++;
	ev->commit_time = txn_commit_time;
	ev->xid = txn_xid;
	ev->op = 'R';
	ev->topic = pnstrdup(content, tlen);
	ev->event = pstrdup("revoke");
	ev->payload = pnstrdup(content + tlen + 1, slen);
	txn_events = lappend(txn_events, ev);
	return;

malformed:
	ereport(LOG, (errmsg("bv_realtime skipped a malformed \"%s\" message in the transaction "
						 "committed at %X/%X",
						 RT_REVOKE_PREFIX, LSN_FORMAT_ARGS(txn_commit_lsn))));
}

/* One pgoutput message; false when it is malformed (the stream restarts). */
static bool
take_pgoutput(const char *p, int len, List **batch)
{
	switch (p[0])
	{
		case 'B':
			/* final_lsn, commit_time, xid */
			if (len < 1 + 8 + 8 + 4)
				return false;
			in_txn = true;
			txn_commit_lsn = get_u64(p + 1);
			txn_commit_time = (TimestampTz) get_u64(p + 9);
			txn_xid = get_u32(p + 17);
			txn_seq = 0;
			txn_events = NIL;
			return true;
		case 'M':
		{
			/* flags, lsn, prefix\0, length, content */
			const char *prefix = p + 10;
			int plen;
			uint32 clen;

			if (len < 1 + 1 + 8 + 1 + 4)
				return false;
			plen = strnlen(prefix, len - 10);
			if (10 + plen + 1 + 4 > len)
				return false;
			clen = get_u32(prefix + plen + 1);
			if ((uint64) 10 + plen + 1 + 4 + clen != (uint64) len)
				return false;
			if ((p[1] & 1) && in_txn && strcmp(prefix, RT_MSG_PREFIX) == 0)
				take_message(prefix + plen + 1 + 4, (int) clen);
			else if ((p[1] & 1) && in_txn && strcmp(prefix, RT_REVOKE_PREFIX) == 0)
				take_revoke(prefix + plen + 1 + 4, (int) clen);
			return true;
		}
		case 'C':
			/* flags, commit_lsn, end_lsn, commit_time */
			if (len < 1 + 1 + 8 + 8 + 8 || !in_txn)
				return false;
			received_end = get_u64(p + 10);
			*batch = list_concat(*batch, txn_events);
			txn_events = NIL;
			in_txn = false;
			return true;
		case 'R':
		{
			RtRel *rel;
			RelEntry *e;
			bool found;

			if (!rt_take_relation(p + 1, len - 1, rel_cxt, &rel))
				return false;
			e = hash_search(rels, &rel->relid, HASH_ENTER, &found);
			e->rel = rel; /* an older description stays allocated: events may use it */
			return true;
		}
		case 'I':
		case 'U':
		case 'D':
		{
			RtEvent *ev;

			if (!in_txn)
				return false;
			ev = palloc0(sizeof(RtEvent));
			if (!rt_take_change(p, len, rel_lookup, ev))
				return false;
			if (ev->rel == NULL)
				return true; /* unknown table, or a name that is not a topic */
			ev->pos.lsn = txn_commit_lsn;
			ev->pos.seq = txn_seq++;
			ev->commit_time = txn_commit_time;
			ev->xid = txn_xid;
			txn_events = lappend(txn_events, ev);
			return true;
		}
		default:
			/* types, origins, truncates: ignored */
			return true;
	}
}

/*
 * rt_stream_read
 *		Take what has arrived, without blocking: committed transactions'
 *		events are appended to *batch (up to about max events, whole
 *		transactions).  false and *err when the stream failed.
 */
bool
rt_stream_read(List **batch, int max, char **err)
{
	MemoryContext old;
	bool ok = true;

	if (!in_txn)
		MemoryContextReset(stream_cxt);
	old = MemoryContextSwitchTo(stream_cxt);
	*batch = NIL;
	while (list_length(*batch) < max || in_txn)
	{
		char *buf;
		int len = bv_repl_receive(conn, &buf, err);
		XLogRecPtr start, walend;
		bool reply = false;
		const char *data;
		int datalen;

		if (len == 0)
			break;
		if (len < 0)
		{
			ok = false;
			break;
		}
		switch (bv_repl_parse(buf, len, &start, &walend, &reply, &data, &datalen))
		{
			case 'w':
				if (datalen < 1 || !take_pgoutput(data, datalen, batch))
				{
					*err = pstrdup("malformed pgoutput message");
					ok = false;
				}
				break;
			case 'k':
				if (!in_txn && walend > idle_walend)
					idle_walend = walend;
				reply_requested |= reply;
				break;
			default:
				*err = pstrdup("malformed replication message");
				ok = false;
		}
		bv_repl_free(buf);
		if (!ok)
			break;
	}
	MemoryContextSwitchTo(old);
	if (*err)
		*err = MemoryContextStrdup(TopMemoryContext, *err);
	return ok;
}

/*
 * rt_stream_confirm
 *		Everything read so far is durably handled: report it to the server
 *		(at most every second unless forced or asked for).
 */
bool
rt_stream_confirm(XLogRecPtr upto, bool force, char **err)
{
	TimestampTz now = GetCurrentTimestamp();
	XLogRecPtr pos = Max(upto, received_end);

	if (!in_txn && idle_walend > pos)
		pos = idle_walend;
	if (pos > confirmed)
		confirmed = pos;
	if (!force && !reply_requested && !TimestampDifferenceExceeds(last_status, now, 1000))
		return true;
	reply_requested = false;
	last_status = now;
	return bv_repl_send_status(conn, confirmed, confirmed, false, err);
}

/* Drop our slot once the extension is gone, unless it is in use. */
void
rt_stream_drop_orphan_slot(void)
{
	Oid argtypes[1] = {TEXTOID};
	Datum args[1];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	args[0] = CStringGetTextDatum(rt_slot_name);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
							  "FROM pg_catalog.pg_replication_slots "
							  "WHERE slot_name = $1 AND NOT active AND plugin = 'pgoutput' "
							  "AND database = pg_catalog.current_database()",
							  1, argtypes, args, NULL, false, 0) == SPI_OK_SELECT &&
		SPI_processed > 0)
		ereport(LOG, (errmsg("bv_realtime dropped replication slot \"%s\": the extension is no "
							 "longer installed",
							 rt_slot_name)));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}
