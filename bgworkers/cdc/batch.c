/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The worker's SPI batches, and the quarantine every layer writes to.
 *
 * Every SPI batch of the worker follows pg_cron's job_metadata.c:
 * SetCurrentStatementStartTimestamp, StartTransactionCommand, SPI_connect,
 * PushActiveSnapshot ... SPI_finish, PopActiveSnapshot,
 * CommitTransactionCommand.  The configuration loader (config.c), the
 * sinks (sink.c, spool.c), the snapshotter and the stream use these, so
 * they live below all of them, in a file that depends on nothing else of
 * bv_cdc (ADR 0033).
 *
 * Memory: a batch's allocations are in its transaction's contexts; callers
 * copy what they keep into their own context before cdc_end_batch().
 * Only the worker runs this.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch.h"

/*
 * cdc_begin_batch / cdc_end_batch
 *		One SPI batch of the worker in its own transaction (pg_cron's
 *		pattern); shared by the configuration loader and the snapshotter.
 */
void
cdc_begin_batch(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
cdc_end_batch(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(true);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * cdc_batch_failed
 *		In the PG_CATCH of a batch: the error's message (in outer), the
 *		error state flushed and the batch's transaction rolled back, so that
 *		the worker goes on (its callers log the message and try later).
 */
char *
cdc_batch_failed(MemoryContext outer)
{
	ErrorData *edata;
	char *message;

	MemoryContextSwitchTo(outer);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(outer);
	message = pstrdup(edata->message);
	FreeErrorData(edata);
	return message;
}

/*
 * cdc_text_array_to_list
 *		A text[] as a List of C strings (NIL for NULL).  NULL elements are
 *		kept as NULL pointers when keep_nulls (positional values such as a
 *		primary key), else skipped (lists of names).
 */
List *
cdc_text_array_to_list(Datum d, bool isnull, bool keep_nulls)
{
	ArrayType *arr;
	Datum *elems;
	bool *nulls;
	int n, i;
	List *out = NIL;

	if (isnull)
		return NIL;
	arr = DatumGetArrayTypeP(d);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		if (!nulls[i])
			out = lappend(out, TextDatumGetCString(elems[i]));
		else if (keep_nulls)
			out = lappend(out, NULL);
	}
	return out;
}

/*
 * cdc_quarantine
 *		Keep a message that cannot be turned into an event, with the reason,
 *		in bv_cdc.quarantine, and go on: bad data never stops the stream.
 */
void
cdc_quarantine(XLogRecPtr lsn, const char *reason, const char *payload, int len)
{
	Oid argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum args[3];
	char lsnbuf[32];

	ereport(WARNING, (errcode(ERRCODE_DATA_EXCEPTION),
					  errmsg("bv_cdc quarantined a change at %X/%X: %s", LSN_FORMAT_ARGS(lsn),
							 reason),
					  errhint("See table bv_cdc.quarantine.")));
	snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(lsn));
	cdc_begin_batch("bv_cdc: quarantining a change");
	args[0] = CStringGetTextDatum(lsnbuf);
	args[1] = CStringGetTextDatum(reason);
	args[2] = PointerGetDatum(cstring_to_text_with_len(payload, len));
	if (SPI_execute_with_args("INSERT INTO bv_cdc.quarantine (lsn, reason, payload) "
							  "VALUES ($1::pg_lsn, $2, $3)",
							  3, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into bv_cdc.quarantine");
	cdc_end_batch();
	SpinLockAcquire(&cdc_shared->mutex);
	cdc_shared->quarantined++;
	SpinLockRelease(&cdc_shared->mutex);
}
