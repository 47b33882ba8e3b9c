/*-------------------------------------------------------------------------
 *
 * wal_stream.c
 *	  WAL mode, worker side: one logical decoding session kept open across
 *	  batches, as a walsender keeps one.
 *
 * Until 0.7.0 every batch peeked the slot (pg_logical_slot_peek_changes):
 * a new decoding context that re-read the WAL from the slot's restart_lsn,
 * re-decoded every transaction up to the batch's end and threw the
 * context away, and every 100 ms pg_replication_slot_advance() decoded the
 * same WAL once more.  Under a steady load most of the worker's time went
 * there, and the history lagged by it.  Now the worker acquires the slot
 * once and keeps its decoding context (the WAL reader, the reorder buffer
 * with the transactions still open, the snapshot builder) in a memory
 * context of its own: each batch decodes only the WAL written since the
 * last one, up to the batch's position L (or until max_changes documents
 * were written, at a transaction's end, as a peek stops).
 *
 * Nothing changes in what is lost or written twice:
 *	- the slot is confirmed (LogicalConfirmReceivedLocation, what a
 *	  walsender does on a standby's feedback) only after the batch's
 *	  records and applied position committed (wal_worker.c), and never
 *	  past that position; the restart position follows the candidates the
 *	  snapshot builder found, as for any logical slot;
 *	- the documents of a batch live in this session only until the batch
 *	  ends: an error anywhere (decoding, records, commit) closes the
 *	  session, and the next batch opens a new one at the slot's confirmed
 *	  position, where a peek would have started;
 *	- _wal_apply() still skips transactions below the applied position.
 *
 * Only the worker uses a session (wal_apply.c: bv_audit_wal_in_worker); a
 * call of _wal_apply() from SQL peeks, as before.  The session is closed
 * whenever no table is in WAL mode (the worker then advances the slot
 * with pg_replication_slot_advance(), or drops it), so that the slot is
 * never held while it may be dropped.
 *
 * Memory: "bv_audit WAL session" under TopMemoryContext holds the decoding
 * context (whose own contexts keep what outlives a batch: the reorder
 * buffer, the snapshot builder); "bv_audit WAL documents" under it holds
 * one batch's documents and is reset when the next batch starts.  Reads
 * run in the session's context: the WAL reader allocates its decode
 * buffer lazily in the current context and keeps it.  _wal_apply() calls
 * the read with no SPI connection of its own open.  Decoding runs inside the
 * worker's transaction, as pg_logical_slot_peek_changes() does (catalog
 * access of the reorder buffer uses subtransactions of it), and
 * invalidates the system caches before and after, as that function does.
 *
 * Concurrency: the slot is acquired by the worker (active_pid) while the
 * session is open; nobody else may use it then, as with any slot in use.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "bv_audit.h"

typedef struct WalStream
{
	LogicalDecodingContext *ctx;
	MemoryContext cxt;    /* the session */
	MemoryContext doccxt; /* the documents of the current batch */
	char **docs;
	int ndocs, maxdocs;
} WalStream;

static WalStream *stream = NULL;

/* wal2json's options: those of the peek that 0.6.0 ran. */
static List *
stream_options(void)
{
	static const char *const opts[][2] = {
		{"format-version", "2"},
		{"include-xids", "1"},
		{"include-timestamp", "1"},
		{"include-lsn", "1"},
		{"include-column-positions", "1"},
		{"include-types", "0"},
		{"include-transaction", "1"},
		{"filter-tables", "bv_audit.*"},
		{"add-msg-prefixes", "bv_audit"},
	};
	List *l = NIL;
	int i;

	for (i = 0; i < lengthof(opts); i++)
		l = lappend(l, makeDefElem(pstrdup(opts[i][0]), (Node *) makeString(pstrdup(opts[i][1])), -1));
	return l;
}

static void
stream_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid, bool last_write)
{
	resetStringInfo(ctx->out);
}

/* Keep one document of wal2json's output. */
static void
stream_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid, bool last_write)
{
	WalStream *s = (WalStream *) ctx->output_writer_private;

	if (s->ndocs == s->maxdocs)
	{
		s->maxdocs = Max(256, s->maxdocs * 2);
		s->docs = s->docs ? repalloc(s->docs, sizeof(char *) * s->maxdocs)
						  : MemoryContextAlloc(s->doccxt, sizeof(char *) * s->maxdocs);
	}
	s->docs[s->ndocs++] = MemoryContextStrdup(s->doccxt, ctx->out->data);
}

/* Open the session: acquire the slot and create its decoding context. */
static void
stream_open(const char *slot)
{
	MemoryContext cxt, old;
	WalStream *s;

	cxt = AllocSetContextCreate(TopMemoryContext, "bv_audit WAL session", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	s = palloc0(sizeof(WalStream));
	s->cxt = cxt;
	s->doccxt = AllocSetContextCreate(cxt, "bv_audit WAL documents", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		CheckLogicalDecodingRequirements();
		ReplicationSlotAcquire(slot, true);
		s->ctx = CreateDecodingContext(InvalidXLogRecPtr, stream_options(), false,
									   XL_ROUTINE(.page_read = read_local_xlog_page,
												  .segment_open = wal_segment_open,
												  .segment_close = wal_segment_close),
									   stream_prepare_write, stream_write, NULL);
		s->ctx->output_writer_private = s;
		XLogBeginRead(s->ctx->reader, MyReplicationSlot->data.restart_lsn);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	stream = s;
}

/*
 * Decode up to upto (or max_changes documents, at a transaction's end)
 * and return the batch's documents; *complete when upto was reached.
 * Opens the session when none is open.  Runs in the worker's transaction.
 */
char **
bv_audit_wal_stream_read(const char *slot, XLogRecPtr upto, int max_changes, int *ndocs,
						 bool *complete)
{
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext caller = CurrentMemoryContext;

	if (stream == NULL)
		stream_open(slot);
	MemoryContextReset(stream->doccxt);
	stream->docs = NULL;
	stream->ndocs = stream->maxdocs = 0;
	*complete = true;

	InvalidateSystemCaches();
	/*
	 * The WAL reader allocates its decode buffer (and oversized records) in
	 * the current context on first use and keeps it: decode in the session's
	 * context, as a walsender decodes in a context that lives as long as it.
	 */
	MemoryContextSwitchTo(stream->cxt);
	while (stream->ctx->reader->EndRecPtr < upto)
	{
		XLogRecord *record;
		char *errm = NULL;

		record = XLogReadRecord(stream->ctx->reader, &errm);
		if (errm)
			elog(ERROR, "could not read the WAL for bv_audit's slot: %s", errm);
		if (record != NULL)
			LogicalDecodingProcessRecord(stream->ctx, stream->ctx->reader);
		if (stream->ndocs >= max_changes)
		{
			*complete = stream->ctx->reader->EndRecPtr >= upto;
			break;
		}
		CHECK_FOR_INTERRUPTS();
	}
	/*
	 * Decoding may have clobbered both (its subtransactions end in the
	 * transaction's context; pg_logical_slot_get_changes() says the same of
	 * the resource owner).
	 */
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	InvalidateSystemCaches();
	*ndocs = stream->ndocs;
	return stream->docs;
}

/* Whether a session is open (the worker confirms through it then). */
bool
bv_audit_wal_stream_open(void)
{
	return stream != NULL;
}

/*
 * After the batch's records committed: the slot may forget the WAL up to
 * the applied position.  The slot is written to disk when its restart
 * position or catalog xmin moves, as for a walsender's feedback.
 */
void
bv_audit_wal_stream_confirm(XLogRecPtr applied)
{
	if (stream == NULL || MyReplicationSlot == NULL)
		return;
	if (applied > MyReplicationSlot->data.confirmed_flush)
		LogicalConfirmReceivedLocation(applied);
}

/*
 * Close the session and release the slot.  After an error the decoding
 * context may be half-built; if freeing it fails, its memory goes anyway.
 */
void
bv_audit_wal_stream_close(void)
{
	WalStream *s = stream;

	if (s == NULL)
		return;
	stream = NULL;
	PG_TRY();
	{
		if (s->ctx != NULL)
			FreeDecodingContext(s->ctx);
	}
	PG_CATCH();
	{
		FlushErrorState();
	}
	PG_END_TRY();
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	MemoryContextDelete(s->cxt);
	InvalidateSystemCaches();
}
