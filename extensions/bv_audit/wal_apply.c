/*-------------------------------------------------------------------------
 *
 * wal_apply.c
 *	  WAL mode, worker side: turn one batch of decoded changes into audit
 *	  records, in commit order, in the worker's transaction.
 *
 * bv_audit._wal_apply(max_changes) is called by the WAL worker
 * (wal_worker.c) in a transaction of its own; see ADR 0013 for the whole
 * design.  One call:
 *
 *	1. bv_audit._wal_begin() reads, in this order, the oldest start time of
 *	   the running transactions, the xmin of a fresh snapshot, and the WAL
 *	   insert position L (flushed), and whether any table is in WAL mode.
 *	2. The tables in (or leaving) WAL mode are loaded once
 *	   (wal_decode.c): their window [wal_lsn, wal_until), key, and mirrored
 *	   columns with their audit column's type and input function.  They
 *	   are read with a snapshot taken after L (the call must run read
 *	   committed): a table whose switch committed before a change up to L
 *	   is in the list.
 *	3. The slot's changes up to L are read (never consumed) with wal2json,
 *	   one JSON document per change: in the worker through its decoding
 *	   session (wal_stream.c, kept open across batches; decoded after this
 *	   call's SPI connection is closed, then the tables of step 2 are read),
 *	   from SQL by a peek.  They are read here in C: transactions whose
 *	   commit LSN is below the applied position are skipped (a replay after
 *	   a crash: records are idempotent by LSN), and so are changes of tables
 *	   outside their window; wal_decode.c turns each remaining change into
 *	   typed values, converted once by the audit column's input function.
 *	4. Records are written statement by statement (the "bv_audit" messages
 *	   of wal_context.c separate statements and carry their context;
 *	   messages without a valid MAC are ignored, see wal_key.c), with the
 *	   same meaning as the capture trigger's:
 *	   I = the new row; U = the new row and the names of the columns that
 *	   differ from the last recorded version; D = the last recorded version
 *	   (REPLICA IDENTITY DEFAULT logs only the key); a key change = D of the
 *	   old key (left out when another row of the same statement took that
 *	   key) and I of the new one; T = TRUNCATE.  A column missing from an
 *	   UPDATE (an unchanged TOASTed value) is taken from the last recorded
 *	   version.  All last versions of a statement are read before any of its
 *	   records is written, as AFTER triggers see the rows as they were.
 *	   Columns are compared as the capture trigger compares them: by their
 *	   stored image (datum_image_eq).
 *	5. bv_audit._wal_end() stores the new applied position in
 *	   bv_audit.wal_progress, in the same transaction as the records: either
 *	   both commit or neither.  The worker advances the slot afterwards.
 *
 * Round trips: per change at most one prepared index lookup (UPDATE and
 * DELETE) and one prepared INSERT with typed parameters; no JSON is built
 * and no SQL function runs per change.  Plans are prepared per table and
 * call and freed with the SPI connection at the end of the call, so no
 * cache needs invalidating when a table's shape changes between batches.
 *
 * Settings: the peek and the conversions run under TimeZone UTC, ISO
 * dates, extra_float_digits 3 and hex bytea (a GUC nest level of the call),
 * so that wal2json writes values the input functions read back exactly.
 *
 * Memory: the call's SPI procedure context; a context per decoded
 * transaction, reset at its commit, holds its converted values.
 * Runs only in the worker; no shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "bv_audit.h"
#include "bv_common.h"

/* Parameters of the audit INSERT before the mirrored columns. */
#define INS_NMETA 8

typedef struct WalContext
{
	bool known;
	Datum actor, trace, app, client, ts;
	bool trace_null, app_null, client_null;
} WalContext;

typedef struct WalApply
{
	WalTable *tables;
	int ntables;
	Datum xid8;
	TimestampTz commit_ts;
	WalContext ctx;
	WalChange *stmt; /* buffered changes of the current statement */
	int nstmt;
	int maxstmt;
	int64 records;
	int64 forged; /* messages ignored: no valid MAC */
} WalApply;

static void
prepare_plans(WalTable *t)
{
	StringInfoData sql;
	Oid *types;
	int k, j, n;

	if (t->insert != NULL)
		return;
	/* lookup: the live columns of the key's last record */
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (j = 0; j < t->nlive; j++)
		appendStringInfo(&sql, "%sa.%s", j ? ", " : "", quote_identifier(t->cols[t->live[j]].name));
	if (t->nlive == 0)
		appendStringInfoString(&sql, "1");
	appendStringInfo(&sql, " FROM bv_audit.%s a WHERE ", quote_identifier(t->audit_table));
	types = palloc(sizeof(Oid) * (Max(t->nkey, 1) + INS_NMETA + t->nlive));
	n = 0;
	for (k = 0; k < t->nkey; k++)
	{
		if (t->key[k] < 0)
			continue;
		appendStringInfo(&sql, "%sa.%s = $%d", n ? " AND " : "",
						 quote_identifier(t->cols[t->key[k]].name), n + 1);
		types[n++] = t->cols[t->key[k]].typid;
	}
	if (n == 0 || n < t->nkey)
	{
		/* a key column is gone: no last record can be found */
		resetStringInfo(&sql);
		appendStringInfoString(&sql, "SELECT 1 WHERE false");
		n = 0;
	}
	else
	{
		/*
		 * No record is newer than now: the bound lets the executor skip
		 * the partitions of future months (enable() creates some ahead),
		 * each of which would otherwise cost an index descent per lookup.
		 */
		appendStringInfo(&sql, " AND a.audit_ts <= $%d ORDER BY a.audit_id DESC LIMIT 1", n + 1);
		types[n++] = TIMESTAMPTZOID;
	}
	t->lookup = SPI_prepare(sql.data, n, types);
	t->nlookup = n;
	if (t->lookup == NULL)
		elog(ERROR, "preparing the last-record lookup of tracked table %d failed: %s",
			 t->tracked_id, SPI_result_code_string(SPI_result));

	/* insert: the meta columns, then the live ones */
	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO bv_audit.%s (audit_op, audit_xid, audit_actor, audit_ts, audit_app, "
					 "audit_client, audit_trace, audit_changed",
					 quote_identifier(t->audit_table));
	for (j = 0; j < t->nlive; j++)
		appendStringInfo(&sql, ", %s", quote_identifier(t->cols[t->live[j]].name));
	appendStringInfoString(&sql, ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8");
	for (j = 0; j < t->nlive; j++)
		appendStringInfo(&sql, ", $%d", INS_NMETA + j + 1);
	appendStringInfoChar(&sql, ')');
	types[0] = TEXTOID;
	types[1] = XID8OID;
	types[2] = TEXTOID;
	types[3] = TIMESTAMPTZOID;
	types[4] = TEXTOID;
	types[5] = INETOID;
	types[6] = TEXTOID;
	types[7] = TEXTARRAYOID;
	for (j = 0; j < t->nlive; j++)
		types[INS_NMETA + j] = t->cols[t->live[j]].typid;
	t->insert = SPI_prepare(sql.data, INS_NMETA + t->nlive, types);
	if (t->insert == NULL)
		elog(ERROR, "preparing the audit insert of tracked table %d failed: %s", t->tracked_id,
			 SPI_result_code_string(SPI_result));
	pfree(sql.data);
	pfree(types);
}

/*
 * A wal2json value as the column's datum: what jsonb_populate_record()
 * makes of it (strings as their text, other scalars and containers as their
 * JSON text; json and jsonb columns take the JSON text of the value).
 */
static void
read_prev(WalChange *ch)
{
	WalTable *t = ch->t;
	Datum *args = palloc(sizeof(Datum) * (t->nkey + 1));
	int k, n = 0, j, ret;

	ch->has_prev = false;
	if (!ch->has_old)
		return;
	for (k = 0; k < t->nkey; k++)
	{
		if (t->key[k] < 0)
			continue;
		if (ch->oldkey_null[k])
			return; /* a = NULL finds nothing */
		args[n++] = ch->oldkey[k];
	}
	prepare_plans(t);
	if (n < t->nlookup)
		/* a day of slack for a clock set back since the record was written */
		args[n++] = TimestampTzGetDatum(GetCurrentTimestamp() + USECS_PER_DAY);
	ret = SPI_execute_plan(t->lookup, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the last audit record failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		HeapTuple tup = SPI_tuptable->vals[0];
		TupleDesc d = SPI_tuptable->tupdesc;

		ch->has_prev = true;
		ch->prev = palloc0(sizeof(Datum) * Max(t->ncols, 1));
		ch->prev_null = palloc(sizeof(bool) * Max(t->ncols, 1));
		for (j = 0; j < t->ncols; j++)
			ch->prev_null[j] = true;
		for (j = 0; j < t->nlive; j++)
		{
			WalCol *c = &t->cols[t->live[j]];
			bool isnull;
			Datum v = SPI_getbinval(tup, d, j + 1, &isnull);

			ch->prev_null[t->live[j]] = isnull;
			if (!isnull)
				ch->prev[t->live[j]] = datumCopy(v, c->typbyval, c->typlen);
		}
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * The record's values: the image where the change has the column, else
 * the last record's (ch->prev), else NULL; or (key_only) just the old key.
 */
static void
record_values(WalChange *ch, bool use_image, bool key_only, Datum *v, bool *n)
{
	WalTable *t = ch->t;
	int j, k;

	for (j = 0; j < t->nlive; j++)
	{
		int c = t->live[j];

		n[j] = true;
		v[j] = (Datum) 0;
		if (use_image && ch->present != NULL && ch->present[c])
		{
			v[j] = ch->val[c];
			n[j] = ch->null[c];
		}
		else if (!key_only && ch->has_prev)
		{
			v[j] = ch->prev[c];
			n[j] = ch->prev_null[c];
		}
	}
	if (key_only && ch->has_old)
		for (k = 0; k < t->nkey; k++)
			for (j = 0; j < t->nlive; j++)
				if (t->live[j] == t->key[k])
				{
					v[j] = ch->oldkey[k];
					n[j] = ch->oldkey_null[k];
				}
}

/*
 * audit_changed of a record with values v/n: the live columns whose value
 * differs from the last record's (every one when there is none).
 */
static Datum
changed_names(WalChange *ch, Datum *v, bool *n)
{
	WalTable *t = ch->t;
	Datum *names = palloc(sizeof(Datum) * Max(t->nlive, 1));
	int j, m = 0;

	for (j = 0; j < t->nlive; j++)
	{
		WalCol *c = &t->cols[t->live[j]];
		int a = t->live[j];

		if (ch->has_prev && n[j] && ch->prev_null[a])
			continue;
		if (ch->has_prev && n[j] == ch->prev_null[a] &&
			datum_image_eq(v[j], ch->prev[a], c->typbyval, c->typlen))
			continue;
		names[m++] = t->live_names[j];
	}
	return PointerGetDatum(construct_array(names, m, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Write one record. */
static void
write_record(WalApply *wa, WalTable *t, const char *op, Datum *vals, bool *vnulls, Datum changed,
			 bool changed_null)
{
	Datum *v = palloc(sizeof(Datum) * (INS_NMETA + t->nlive));
	char *n = palloc(INS_NMETA + t->nlive);
	int j, ret;

	memset(n, ' ', INS_NMETA + t->nlive);
	v[0] = CStringGetTextDatum(op);
	v[1] = wa->xid8;
	v[2] = wa->ctx.actor;
	v[3] = wa->ctx.ts;
	v[4] = wa->ctx.app;
	n[4] = wa->ctx.app_null ? 'n' : ' ';
	v[5] = wa->ctx.client;
	n[5] = wa->ctx.client_null ? 'n' : ' ';
	v[6] = wa->ctx.trace;
	n[6] = wa->ctx.trace_null ? 'n' : ' ';
	v[7] = changed;
	n[7] = changed_null ? 'n' : ' ';
	for (j = 0; j < t->nlive; j++)
	{
		v[INS_NMETA + j] = vals != NULL ? vals[j] : (Datum) 0;
		n[INS_NMETA + j] = vals == NULL || vnulls[j] ? 'n' : ' ';
	}
	prepare_plans(t);
	ret = SPI_execute_plan(t->insert, v, n, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "writing a WAL-mode audit record failed: %s", SPI_result_code_string(ret));
	wa->records++;
	pfree(v);
	pfree(n);
}

/* The key of a change as one string, for the claimed-keys test. */
static char *
key_string(WalTable *t, Datum *key, bool *isnull)
{
	StringInfoData s;
	int k;

	initStringInfo(&s);
	appendStringInfo(&s, "%d", t->tracked_id);
	for (k = 0; k < t->nkey; k++)
	{
		char *out;
		Oid outfn;
		bool varlena;

		if (isnull[k] || t->key[k] < 0)
		{
			appendStringInfoString(&s, "|n");
			continue;
		}
		getTypeOutputInfo(t->cols[t->key[k]].typid, &outfn, &varlena);
		out = OidOutputFunctionCall(outfn, key[k]);
		appendStringInfo(&s, "|%zu:%s", strlen(out), out);
	}
	return s.data;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Write the records of the buffered statement (see the file comment). */
static void
flush_statement(WalApply *wa)
{
	char **claimed = NULL;
	int nclaimed = 0;
	bool any_move = false;
	int k;

	if (wa->nstmt == 0)
		return;

	/* 1. The last versions, as the statement found them. */
	for (k = 0; k < wa->nstmt; k++)
	{
		WalChange *ch = &wa->stmt[k];

		if (ch->kind == 'U' || ch->kind == 'D')
			read_prev(ch);
		if (ch->kind == 'U' && ch->keychg)
			any_move = true;
	}

	/* Keys that rows of this statement hold afterwards (only for moves). */
	if (any_move)
	{
		claimed = palloc(sizeof(char *) * wa->nstmt);
		for (k = 0; k < wa->nstmt; k++)
		{
			WalChange *ch = &wa->stmt[k];

			if (ch->has_new)
				claimed[nclaimed++] = key_string(ch->t, ch->newkey, ch->newkey_null);
		}
		qsort(claimed, nclaimed, sizeof(char *), cmp_str);
	}

	/* 2. The records, in the statement's order. */
	for (k = 0; k < wa->nstmt; k++)
	{
		WalChange *ch = &wa->stmt[k];
		WalTable *t = ch->t;
		Datum *v = palloc(sizeof(Datum) * Max(t->nlive, 1));
		bool *n = palloc(sizeof(bool) * Max(t->nlive, 1));

		switch (ch->kind)
		{
			case 'I':
				record_values(ch, true, false, v, n);
				write_record(wa, t, "I", v, n, (Datum) 0, true);
				break;
			case 'U':
				record_values(ch, true, false, v, n);
				if (ch->keychg)
				{
					Datum changed = changed_names(ch, v, n);
					char *old = ch->has_old ? key_string(t, ch->oldkey, ch->oldkey_null) : NULL;

					if (old == NULL ||
						bsearch(&old, claimed, nclaimed, sizeof(char *), cmp_str) == NULL)
					{
						Datum *dv = palloc(sizeof(Datum) * Max(t->nlive, 1));
						bool *dn = palloc(sizeof(bool) * Max(t->nlive, 1));

						record_values(ch, false, !ch->has_prev, dv, dn);
						write_record(wa, t, "D", dv, dn, changed, false);
					}
					write_record(wa, t, "I", v, n, changed, false);
				}
				else
					write_record(wa, t, "U", v, n, changed_names(ch, v, n), false);
				break;
			case 'D':
				record_values(ch, false, !ch->has_prev, v, n);
				write_record(wa, t, "D", v, n, (Datum) 0, true);
				break;
			case 'T':
				write_record(wa, t, "T", NULL, NULL, (Datum) 0, true);
				break;
			default:
				break;
		}
	}
	wa->nstmt = 0;
}

/* A field of a context message, as text, or NULL when absent or null. */
static char *
message_field(const char *json, const char *key)
{
	char *value = NULL;
	JsonTokenType type;

	if (bv_json_top_field(json, key, &value, &type) != JSON_SUCCESS || value == NULL)
		return NULL;
	if (type != JSON_TOKEN_STRING && type != JSON_TOKEN_NUMBER)
		return NULL;
	return value;
}

/* Whether a string can only be an address: digits, hex, '.', ':' and '/'. */
static bool
looks_like_inet(const char *s)
{
	int n = 0;

	for (; *s; s++, n++)
		if (!(isxdigit((unsigned char) *s) || *s == '.' || *s == ':' || *s == '/') || n > 64)
			return false;
	return n > 0;
}

/*
 * Take the context of the statements that follow from a "bv_audit"
 * message.  Malformed fields are dropped (the actor then reads 'unknown'):
 * a message cannot make the worker fail.
 */
static void
read_context(WalApply *wa, const char *content)
{
	char *actor = message_field(content, "a");
	char *trace = message_field(content, "t");
	char *app = message_field(content, "p");
	char *client = message_field(content, "c");
	char *start = message_field(content, "s");
	int64 ts = 0;

	wa->ctx.known = actor != NULL && actor[0] != '\0' && strlen(actor) <= 1024;
	wa->ctx.actor = CStringGetTextDatum(wa->ctx.known ? actor : "unknown");
	wa->ctx.trace_null = trace == NULL || !bv_traceparent_is_valid(trace);
	wa->ctx.trace = wa->ctx.trace_null ? (Datum) 0 : CStringGetTextDatum(trace);
	wa->ctx.app_null = app == NULL || strlen(app) > 1024;
	wa->ctx.app = wa->ctx.app_null ? (Datum) 0 : CStringGetTextDatum(app);
	wa->ctx.client_null = client == NULL || !looks_like_inet(client);
	if (!wa->ctx.client_null)
	{
		/* inet_in still refuses e.g. "1.2.3.4.5": keep the worker going. */
		MemoryContext cxt = CurrentMemoryContext;

		PG_TRY();
		{
			wa->ctx.client = DirectFunctionCall1(inet_in, CStringGetDatum(client));
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			FlushErrorState();
			wa->ctx.client_null = true;
		}
		PG_END_TRY();
	}
	if (start != NULL)
	{
		char *end;

		errno = 0;
		ts = strtoll(start, &end, 10);
		if (errno != 0 || *end != '\0' || end == start)
			start = NULL;
	}
	/*
	 * The record's time is its transaction's commit time (ADR 0013, "Time");
	 * the writer's start time in the message only stands in when wal2json
	 * gave none.
	 */
	wa->ctx.ts = TimestampTzGetDatum(wa->commit_ts != 0 ? wa->commit_ts
									 : start != NULL    ? (TimestampTz) ts
														: GetCurrentTimestamp());
}

/* The context of changes with no message before them in their transaction. */
static void
unknown_context(WalApply *wa)
{
	wa->ctx.known = false;
	wa->ctx.actor = CStringGetTextDatum("unknown");
	wa->ctx.trace_null = wa->ctx.app_null = wa->ctx.client_null = true;
	wa->ctx.ts = TimestampTzGetDatum(wa->commit_ts != 0 ? wa->commit_ts : GetCurrentTimestamp());
}

/* A 32-bit xid of a transaction that committed, as its xid8. */
static Datum
xid8_of(TransactionId xid)
{
	FullTransactionId next = ReadNextFullTransactionId();
	uint32 epoch = EpochFromFullTransactionId(next);

	if (xid > XidFromFullTransactionId(next) && epoch > 0)
		epoch--;
	return FullTransactionIdGetDatum(FullTransactionIdFromEpochAndXid(epoch, xid));
}

/* Apply one GUC for the rest of the call (see the file comment). */
static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Append the change of one wal2json document to the statement buffer, if
 * it is a change of a WAL-mode table inside its window.
 */
static void
buffer_change(WalApply *wa, char kind, const WalDoc *doc, XLogRecPtr clsn)
{
	const char *schema = doc->schema;
	const char *table = doc->table;
	WalTable *t;

	if (schema == NULL || table == NULL)
		return;
	t = bv_audit_wal_find_table(wa->tables, wa->ntables, schema, table, clsn);
	if (t == NULL)
		return;
	if (wa->nstmt == wa->maxstmt)
	{
		wa->maxstmt = Max(64, wa->maxstmt * 2);
		wa->stmt = wa->stmt ? repalloc(wa->stmt, sizeof(WalChange) * wa->maxstmt)
							: palloc(sizeof(WalChange) * wa->maxstmt);
	}
	bv_audit_wal_parse_change(&wa->stmt[wa->nstmt++], t, kind, doc);
}

/* Set by the WAL worker: _wal_apply() reads through its session. */
bool bv_audit_wal_in_worker = false;

PG_FUNCTION_INFO_V1(bv_audit_wal_apply);

/*
 * bv_audit._wal_apply(slot name, max_changes integer, force boolean,
 * OUT records bigint, OUT applied pg_lsn, OUT complete boolean): one batch
 * (see the file comment).  complete: the batch reached the WAL position
 * read at its start.  The applied position is stored only when records were
 * written or force is set: a batch that found nothing writes no WAL, so
 * that it does not wake the worker again (the slot's confirmed position,
 * advanced by the worker, says how far it got; see bv_audit.wait_for()).
 */
Datum
bv_audit_wal_apply(PG_FUNCTION_ARGS)
{
	Name slot = PG_GETARG_NAME(0);
	int32 max_changes = PG_GETARG_INT32(1);
	bool force = PG_GETARG_BOOL(2);
	TupleDesc rdesc;
	WalApply wa;
	Datum begin[5];
	bool bnull[5];
	Datum args[3];
	Oid argtypes[3] = {NAMEOID, PG_LSNOID, INT4OID};
	XLogRecPtr applied, upto, clsn = InvalidXLogRecPtr, last_commit = InvalidXLogRecPtr;
	TimestampTz last_commit_ts = 0;
	bool complete = true, skip = true;
	uint64 i;
	int ret, k, nestlevel, ndocs = 0;
	char **docs = NULL;
	MemoryContext callcxt, txcxt, rowcxt;
	Datum result[3];
	bool rnull[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "bv_audit._wal_apply() must return a record");
	if (max_changes < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_changes must be at least 1"),
				 errhint("Pass the number of changes to read at most.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("bv_audit._wal_apply() must run in a read committed transaction"),
				 errdetail("It reads the WAL-mode tables with a snapshot newer than the WAL position it decodes up to."),
				 errhint("Leave it to the bv_audit WAL worker.")));
	memset(&wa, 0, sizeof(wa));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	callcxt = CurrentMemoryContext;
	nestlevel = NewGUCNestLevel();
	set_local("TimeZone", "UTC");
	set_local("DateStyle", "ISO, YMD");
	set_local("IntervalStyle", "postgres");
	set_local("extra_float_digits", "3");
	set_local("bytea_output", "hex");

	/* 1. floor, xmin, applied position, L, any WAL-mode table */
	ret = SPI_execute_with_args("SELECT * FROM bv_audit._wal_begin($1)", 1, argtypes,
								(Datum[]){NameGetDatum(slot)}, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "bv_audit._wal_begin() failed: %s", SPI_result_code_string(ret));
	for (k = 0; k < 5; k++)
		begin[k] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, k + 1, &bnull[k]);
	applied = DatumGetLSN(begin[2]);
	upto = DatumGetLSN(begin[3]);

	if (DatumGetBool(begin[4]) && bv_audit_wal_in_worker)
	{
		/*
		 * 3. the changes, from the worker's session (wal_stream.c), decoded
		 * with no SPI connection of this call open (as a peek runs, as a
		 * plain SQL function): decoding runs subtransactions of the worker's
		 * transaction.  begin[] holds values passed by value only.
		 */
		SPI_finish();
		docs = bv_audit_wal_stream_read(NameStr(*slot), upto, max_changes, &ndocs, &complete);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		callcxt = CurrentMemoryContext;
		/* 2. the tables (read after L, which is all the rule asks) */
		wa.tables = bv_audit_wal_load_tables(applied, &wa.ntables);
	}
	else if (DatumGetBool(begin[4]))
	{
		/* 2. the tables */
		wa.tables = bv_audit_wal_load_tables(applied, &wa.ntables);

		/* 3. the changes: a peek (a call from SQL, outside the worker) */
		{
			args[0] = NameGetDatum(slot);
			args[1] = LSNGetDatum(upto);
			args[2] = Int32GetDatum(max_changes);
			ret = SPI_execute_with_args(
				"SELECT c.data FROM pg_catalog.pg_logical_slot_peek_changes($1, $2, $3, "
				"'format-version', '2', 'include-xids', '1', 'include-timestamp', '1', "
				"'include-lsn', '1', 'include-column-positions', '1', 'include-types', '0', "
				"'include-transaction', '1', 'filter-tables', 'bv_audit.*', "
				"'add-msg-prefixes', 'bv_audit') c",
				3, argtypes, args, NULL, false, 0);
			if (ret != SPI_OK_SELECT)
				elog(ERROR, "peeking the slot failed: %s", SPI_result_code_string(ret));
			ndocs = (int) SPI_processed;
			docs = palloc(sizeof(char *) * Max(ndocs, 1));
			for (i = 0; i < (uint64) ndocs; i++)
			{
				bool isnull;
				Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

				docs[i] = isnull ? NULL : TextDatumGetCString(d);
			}
			SPI_freetuptable(SPI_tuptable);
			if (ndocs >= max_changes)
				complete = false; /* the peek stopped at max_changes: more may follow */
		}
	}
	else if (bv_audit_wal_in_worker)
		/* no table in WAL mode: the worker advances or drops the slot by SQL */
		bv_audit_wal_stream_close();

	/* 4. the records */
	txcxt = AllocSetContextCreate(callcxt, "bv_audit WAL transaction", ALLOCSET_DEFAULT_SIZES);
	rowcxt = AllocSetContextCreate(callcxt, "bv_audit WAL change", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(txcxt);
	for (i = 0; i < (uint64) ndocs; i++)
	{
		WalDoc doc;
		char *action;

		if (docs[i] == NULL)
			continue;
		/* the parsed document lives for this row only; what a change keeps is copied */
		MemoryContextReset(rowcxt);
		MemoryContextSwitchTo(rowcxt);
		bv_audit_wal_parse_doc(docs[i], &doc);
		MemoryContextSwitchTo(txcxt);
		action = doc.action;
		if (action == NULL)
			continue;
		switch (action[0])
		{
			case 'B':
			{
				char *lsn, *ts, *end;
				uint64 xid;

				/* a new transaction: the last one's values are done with */
				MemoryContextReset(txcxt);
				wa.stmt = NULL;
				wa.nstmt = wa.maxstmt = 0;
				lsn = doc.lsn;
				ts = doc.timestamp;
				errno = 0;
				xid = doc.xid == NULL ? 0 : strtoull(doc.xid, &end, 10);
				if (lsn == NULL || doc.xid == NULL || errno != 0 || *end != '\0')
					elog(ERROR, "wal2json wrote a transaction without its lsn or xid");
				clsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(lsn)));
				skip = clsn < applied;
				if (skip)
					break;
				wa.xid8 = xid8_of((TransactionId) xid);
				wa.commit_ts = ts == NULL ? 0
										  : DatumGetTimestampTz(DirectFunctionCall3(
												timestamptz_in, CStringGetDatum(ts),
												ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
				unknown_context(&wa);
			}
			break;
			case 'M':
			{
				char *content = doc.content;
				size_t len;

				if (skip)
					break;

				/*
				 * A message without the key's MAC (pg_logical_emit_message()
				 * by anyone) is ignored: the statement keeps the context of
				 * its genuine message, and is not split in two.
				 */
				if (content == NULL || !bv_audit_wal_verify(content, &len))
				{
					wa.forged++;
					break;
				}
				content[len] = '\0';
				flush_statement(&wa);
				read_context(&wa, content);
			}
			break;
			case 'C':
				if (skip)
					break;
				flush_statement(&wa);
				last_commit = clsn;
				last_commit_ts = wa.commit_ts;
				break;
			case 'I':
			case 'U':
			case 'D':
			case 'T':
				if (!skip)
					buffer_change(&wa, action[0], &doc, clsn);
				break;
			default:
				break;
		}
	}
	MemoryContextSwitchTo(callcxt);

	/* 5. the applied position, with the records */
	result[1] = LSNGetDatum(complete ? upto : (last_commit != InvalidXLogRecPtr ? last_commit + 1 : applied));
	if (DatumGetLSN(result[1]) < applied)
		result[1] = LSNGetDatum(applied);
	if (wa.records > 0 || (force && DatumGetBool(begin[4])))
	{
		Oid endtypes[7] = {NAMEOID, PG_LSNOID, BOOLOID, XID8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID};
		Datum endargs[7];
		char endnulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
		XLogRecPtr newpos = DatumGetLSN(result[1]);

		endargs[0] = NameGetDatum(slot);
		endargs[1] = LSNGetDatum(newpos);
		endargs[2] = BoolGetDatum(complete);
		endargs[3] = begin[1];
		endnulls[3] = bnull[1] ? 'n' : ' ';
		endargs[4] = begin[0];
		endnulls[4] = bnull[0] ? 'n' : ' ';
		endargs[5] = TimestampTzGetDatum(last_commit_ts);
		endnulls[5] = last_commit_ts == 0 ? 'n' : ' ';
		endargs[6] = Int64GetDatum(wa.records);
		ret = SPI_execute_with_args("SELECT bv_audit._wal_end($1, $2, $3, $4, $5, $6, $7)", 7,
									endtypes, endargs, endnulls, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "bv_audit._wal_end() failed: %s", SPI_result_code_string(ret));
	}
	AtEOXact_GUC(true, nestlevel);
	SPI_finish();

	result[0] = Int64GetDatum(wa.records);
	result[2] = BoolGetDatum(complete);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(rdesc, result, rnull)));
}
