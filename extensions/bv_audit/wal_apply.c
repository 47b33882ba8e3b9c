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
 *	2. bv_audit._wal_changes() peeks (never consumes) the slot's changes up
 *	   to L with wal2json, drops transactions whose commit LSN is below the
 *	   applied position (a replay after a crash: records are idempotent by
 *	   LSN), keeps the changes of WAL-mode tables committed after their
 *	   switch to WAL mode, and maps each column by attribute number to its
 *	   audit column.
 *	3. Records are written here, statement by statement (the "bv_audit"
 *	   messages of wal_context.c separate statements and carry their
 *	   context; messages without a valid MAC are ignored, see wal_key.c),
 *	   with the same meaning as the capture trigger's:
 *	   I = the new row; U = the new row and the names of the columns that
 *	   differ from the last recorded version; D = the last recorded version
 *	   (REPLICA IDENTITY DEFAULT logs only the key); a key change = D of the
 *	   old key (left out when another row of the same statement took that
 *	   key) and I of the new one; T = TRUNCATE.  A column missing from an
 *	   UPDATE (an unchanged TOASTed value) is taken from the last recorded
 *	   version.  All last versions of a statement are read before any of its
 *	   records is written, as AFTER triggers see the rows as they were.
 *	4. bv_audit._wal_end() stores the new applied position in
 *	   bv_audit.wal_progress, in the same transaction as the records: either
 *	   both commit or neither.  The worker advances the slot afterwards.
 *
 * Plans: three per table and call (last version, insert, changed
 * columns), prepared from SQL that bv_audit._wal_sql() generates and freed
 * with the SPI connection at the end of the call, so no cache needs
 * invalidating when a table's shape changes between batches.
 *
 * Memory: everything lives in the SPI procedure context of the call.
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
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "bv_audit.h"
#include "bv_common.h"

/* Columns of bv_audit._wal_changes(), in order. */
enum
{
	CH_KIND = 1,
	CH_COMMIT_LSN,
	CH_XID,
	CH_TRACKED,
	CH_IMG,
	CH_OLDKEY,
	CH_NEWKEY,
	CH_KEYCHG,
	CH_CONTENT,
	CH_COMMIT_TS
};

#define INS_NARGS 11

typedef struct WalTable
{
	int32 tracked_id;
	SPIPlanPtr lookup;  /* $1 key jsonb -> to_jsonb(last record) */
	SPIPlanPtr insert;  /* see bv_audit._wal_sql() */
	SPIPlanPtr changed; /* $1 prev jsonb, $2 image jsonb -> text[] */
} WalTable;

typedef struct WalContext
{
	bool known;
	Datum actor, trace, app, client, ts;
	bool trace_null, app_null, client_null;
} WalContext;

typedef struct WalApply
{
	SPITupleTable *tab;
	TupleDesc desc;
	WalTable *tables;
	int ntables;
	int maxtables;
	Datum xid8;
	TimestampTz commit_ts;
	WalContext ctx;
	uint64 *stmt; /* buffered change rows of the current statement */
	int nstmt;
	int maxstmt;
	int64 records;
	int64 forged; /* messages ignored: no valid MAC */
} WalApply;

/* The table's plans, prepared at its first change in this call. */
static WalTable *
wal_table(WalApply *wa, int32 tracked_id)
{
	Oid argtypes[INS_NARGS] = {TEXTOID, XID8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, INETOID,
							   TEXTOID, TEXTARRAYOID, JSONBOID, JSONBOID, BOOLOID};
	Oid two[2] = {JSONBOID, JSONBOID};
	Oid one[1] = {INT4OID};
	Datum arg[1];
	WalTable *t;
	int i, ret;
	char *lookup, *insert, *changed;

	for (i = 0; i < wa->ntables; i++)
		if (wa->tables[i].tracked_id == tracked_id)
			return &wa->tables[i];
	if (wa->ntables == wa->maxtables)
	{
		wa->maxtables = Max(8, wa->maxtables * 2);
		wa->tables = wa->tables ? repalloc(wa->tables, sizeof(WalTable) * wa->maxtables)
								: palloc(sizeof(WalTable) * wa->maxtables);
	}
	arg[0] = Int32GetDatum(tracked_id);
	ret = SPI_execute_with_args("SELECT l, i, c FROM bv_audit._wal_sql($1) AS s(l, i, c)", 1, one,
								arg, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "bv_audit._wal_sql(%d) failed: %s", tracked_id, SPI_result_code_string(ret));
	lookup = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	insert = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	changed = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (lookup == NULL || insert == NULL || changed == NULL)
		elog(ERROR, "bv_audit._wal_sql(%d) returned NULL", tracked_id);

	t = &wa->tables[wa->ntables];
	t->tracked_id = tracked_id;
	t->lookup = SPI_prepare(lookup, 1, two);
	t->insert = SPI_prepare(insert, INS_NARGS, argtypes);
	t->changed = SPI_prepare(changed, 2, two);
	if (t->lookup == NULL || t->insert == NULL || t->changed == NULL)
		elog(ERROR, "preparing the WAL-mode statements of tracked table %d failed: %s", tracked_id,
			 SPI_result_code_string(SPI_result));
	wa->ntables++;
	return t;
}

/* A column of change row i. */
static Datum
col(WalApply *wa, uint64 i, int attno, bool *isnull)
{
	return SPI_getbinval(wa->tab->vals[i], wa->desc, attno, isnull);
}

/* The key (as jsonb text) of change row i, for the claimed-keys test. */
static char *
key_text(WalApply *wa, uint64 i, int attno)
{
	bool isnull;
	Datum d = col(wa, i, attno, &isnull);
	char *s;

	if (isnull)
		return NULL;
	s = JsonbToCString(NULL, &DatumGetJsonbP(d)->root, VARSIZE(DatumGetPointer(d)));
	return psprintf("%d:%s", DatumGetInt32(col(wa, i, CH_TRACKED, &isnull)), s);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The last recorded version of a key, as jsonb, or NULL. */
static Datum
last_version(WalTable *t, Datum key, bool *isnull)
{
	Datum args[1] = {key};
	int ret = SPI_execute_plan(t->lookup, args, NULL, false, 1);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the last audit record failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/* Write one record (see bv_audit._wal_sql() for the parameters). */
static void
write_record(WalApply *wa, WalTable *t, const char *op, Datum prev, bool prev_null, Datum img,
			 bool img_null, Datum changed, bool changed_null, bool compute)
{
	Datum v[INS_NARGS];
	char n[INS_NARGS];
	int ret;

	memset(n, ' ', sizeof(n));
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
	v[8] = prev;
	n[8] = prev_null ? 'n' : ' ';
	v[9] = img;
	n[9] = img_null ? 'n' : ' ';
	v[10] = BoolGetDatum(compute);
	ret = SPI_execute_plan(t->insert, v, n, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "writing a WAL-mode audit record failed: %s", SPI_result_code_string(ret));
	wa->records++;
}

/* Write the records of the buffered statement (see the file comment). */
static void
flush_statement(WalApply *wa)
{
	Datum *prev;
	bool *prev_null;
	char **claimed = NULL;
	int nclaimed = 0;
	bool any_move = false;
	int k;

	if (wa->nstmt == 0)
		return;
	prev = palloc0(sizeof(Datum) * wa->nstmt);
	prev_null = palloc(sizeof(bool) * wa->nstmt);

	/* 1. The last versions, as the statement found them. */
	for (k = 0; k < wa->nstmt; k++)
	{
		uint64 i = wa->stmt[k];
		bool isnull;
		char *kind = TextDatumGetCString(col(wa, i, CH_KIND, &isnull));
		Datum oldkey;

		prev_null[k] = true;
		if (kind[0] != 'U' && kind[0] != 'D')
			continue;
		oldkey = col(wa, i, CH_OLDKEY, &isnull);
		if (!isnull)
		{
			WalTable *t = wal_table(wa, DatumGetInt32(col(wa, i, CH_TRACKED, &isnull)));
			Datum d = last_version(t, oldkey, &prev_null[k]);

			if (!prev_null[k])
				prev[k] = SPI_datumTransfer(d, false, -1);
		}
		if (kind[0] == 'U' && DatumGetBool(col(wa, i, CH_KEYCHG, &isnull)) && !isnull)
			any_move = true;
	}

	/* Keys that rows of this statement hold afterwards (only for moves). */
	if (any_move)
	{
		claimed = palloc(sizeof(char *) * wa->nstmt);
		for (k = 0; k < wa->nstmt; k++)
		{
			char *s = key_text(wa, wa->stmt[k], CH_NEWKEY);

			if (s != NULL)
				claimed[nclaimed++] = s;
		}
		qsort(claimed, nclaimed, sizeof(char *), cmp_str);
	}

	/* 2. The records, in the statement's order. */
	for (k = 0; k < wa->nstmt; k++)
	{
		uint64 i = wa->stmt[k];
		bool isnull, img_null, key_null;
		char *kind = TextDatumGetCString(col(wa, i, CH_KIND, &isnull));
		WalTable *t = wal_table(wa, DatumGetInt32(col(wa, i, CH_TRACKED, &isnull)));
		Datum img = col(wa, i, CH_IMG, &img_null);
		Datum oldkey = col(wa, i, CH_OLDKEY, &key_null);

		switch (kind[0])
		{
			case 'I':
				write_record(wa, t, "I", (Datum) 0, true, img, img_null, (Datum) 0, true, false);
				break;
			case 'U':
				if (DatumGetBool(col(wa, i, CH_KEYCHG, &isnull)) && !isnull)
				{
					Datum args[2] = {prev[k], img};
					char nulls[2] = {prev_null[k] ? 'n' : ' ', img_null ? 'n' : ' '};
					Datum changed;
					bool changed_null = true;
					char *old = key_text(wa, i, CH_OLDKEY);
					int ret = SPI_execute_plan(t->changed, args, nulls, false, 1);

					if (ret != SPI_OK_SELECT || SPI_processed != 1)
						elog(ERROR, "comparing row versions failed: %s", SPI_result_code_string(ret));
					changed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &changed_null);
					if (!changed_null)
						changed = SPI_datumTransfer(changed, false, -1);
					if (old == NULL ||
						bsearch(&old, claimed, nclaimed, sizeof(char *), cmp_str) == NULL)
						write_record(wa, t, "D", prev[k], prev_null[k],
									 prev_null[k] ? oldkey : (Datum) 0, prev_null[k] ? key_null : true,
									 changed, changed_null, false);
					write_record(wa, t, "I", prev[k], prev_null[k], img, img_null, changed,
								 changed_null, false);
				}
				else
					write_record(wa, t, "U", prev[k], prev_null[k], img, img_null, (Datum) 0, true, true);
				break;
			case 'D':
				write_record(wa, t, "D", prev[k], prev_null[k], prev_null[k] ? oldkey : (Datum) 0,
							 prev_null[k] ? key_null : true, (Datum) 0, true, false);
				break;
			case 'T':
				write_record(wa, t, "T", (Datum) 0, true, (Datum) 0, true, (Datum) 0, true, false);
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
	wa->ctx.ts = TimestampTzGetDatum(start != NULL ? (TimestampTz) ts : wa->commit_ts);
}

/* The context of changes with no message before them in their transaction. */
static void
unknown_context(WalApply *wa)
{
	wa->ctx.known = false;
	wa->ctx.actor = CStringGetTextDatum("unknown");
	wa->ctx.trace_null = wa->ctx.app_null = wa->ctx.client_null = true;
	wa->ctx.ts = TimestampTzGetDatum(wa->commit_ts);
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
	Datum args[4];
	Oid argtypes[4] = {NAMEOID, PG_LSNOID, INT4OID, PG_LSNOID};
	XLogRecPtr applied, upto, last_commit = InvalidXLogRecPtr;
	TimestampTz last_commit_ts = 0;
	bool complete = true;
	uint64 nrows = 0, i;
	int ret, k;
	Datum result[3];
	bool rnull[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "bv_audit._wal_apply() must return a record");
	if (max_changes < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_changes must be at least 1"),
				 errhint("Pass the number of changes to read at most.")));
	memset(&wa, 0, sizeof(wa));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* 1. floor, xmin, applied position, L, any WAL-mode table */
	ret = SPI_execute_with_args("SELECT * FROM bv_audit._wal_begin($1)", 1, argtypes,
								(Datum[]){NameGetDatum(slot)}, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "bv_audit._wal_begin() failed: %s", SPI_result_code_string(ret));
	for (k = 0; k < 5; k++)
		begin[k] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, k + 1, &bnull[k]);
	applied = DatumGetLSN(begin[2]);
	upto = DatumGetLSN(begin[3]);

	/* 2. the changes */
	if (DatumGetBool(begin[4]))
	{
		args[0] = NameGetDatum(slot);
		args[1] = LSNGetDatum(upto);
		args[2] = Int32GetDatum(max_changes);
		args[3] = LSNGetDatum(applied);
		ret = SPI_execute_with_args("SELECT * FROM bv_audit._wal_changes($1, $2, $3, $4)", 4,
									argtypes, args, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "bv_audit._wal_changes() failed: %s", SPI_result_code_string(ret));
		wa.tab = SPI_tuptable;
		wa.desc = SPI_tuptable->tupdesc;
		nrows = SPI_processed;
		wa.maxstmt = 64;
		wa.stmt = palloc(sizeof(uint64) * wa.maxstmt);
	}

	/* 3. the records */
	for (i = 0; i < nrows; i++)
	{
		bool isnull;
		char *kind = TextDatumGetCString(col(&wa, i, CH_KIND, &isnull));

		switch (kind[0])
		{
			case 'B':
				wa.xid8 = xid8_of((TransactionId) DatumGetInt64(col(&wa, i, CH_XID, &isnull)));
				wa.commit_ts = DatumGetTimestampTz(col(&wa, i, CH_COMMIT_TS, &isnull));
				wa.nstmt = 0;
				unknown_context(&wa);
				break;
			case 'M':
			{
				Datum c = col(&wa, i, CH_CONTENT, &isnull);
				char *content = isnull ? NULL : TextDatumGetCString(c);
				size_t len;

				/*
					 * A message without the key's MAC (pg_logical_emit_message()
					 * by anyone) is ignored: the statement keeps the context
					 * of its genuine message, and is not split in two.
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
				flush_statement(&wa);
				last_commit = DatumGetLSN(col(&wa, i, CH_COMMIT_LSN, &isnull));
				last_commit_ts = wa.commit_ts;
				break;
			case 'Z':
				/* the peek stopped at max_changes: more may follow */
				complete = false;
				break;
			default:
				if (wa.nstmt == wa.maxstmt)
				{
					wa.maxstmt *= 2;
					wa.stmt = repalloc(wa.stmt, sizeof(uint64) * wa.maxstmt);
				}
				wa.stmt[wa.nstmt++] = i;
				break;
		}
	}

	/* 4. the applied position, with the records */
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
	SPI_finish();

	result[0] = Int64GetDatum(wa.records);
	result[2] = BoolGetDatum(complete);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(rdesc, result, rnull)));
}
