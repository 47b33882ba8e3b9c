/*-------------------------------------------------------------------------
 *
 * wal_worker.c
 *	  WAL mode: the background worker that writes the audit records of
 *	  WAL-mode tables from the WAL.
 *
 * Registered by _PG_init when bv_audit is preloaded; connects to
 * bv_audit.database (one database per cluster, as pg_cron and bv_cdc) and
 * follows worker_spi: SIGHUP reloads the settings, SIGTERM ends it, and the
 * loop waits on its latch (WL_EXIT_ON_PM_DEATH).  Each pass:
 *
 *	1. While bv_audit 0.4.0 is not installed, wait bv_audit.wal_idle_ms.
 *	2. Make sure the slot bv_audit_wal (wal2json) exists while WAL mode is
 *	   on (bv_audit.wal_mode) or a table is still in WAL mode, so that
 *	   bv_audit.enable(..., mode => 'wal') never waits for it; while no
 *	   table is in WAL mode the slot only follows the WAL.  With WAL mode off
 *	   and no WAL-mode table there is no slot: a cluster that does not use
 *	   WAL mode decodes nothing and retains no WAL for it.
 *	3. One batch: bv_audit._wal_apply() (wal_apply.c) in a transaction of
 *	   its own writes the records and the applied position together.
 *	4. After that commit, the applied position is confirmed to the slot:
 *	   through the decoding session that step 3 keeps open (wal_stream.c,
 *	   0.7.0), or, when no table is in WAL mode and no session is open, by
 *	   pg_replication_slot_advance() in a second transaction.  Any error
 *	   closes the session.  A crash between 3 and 4 leaves the
 *	   slot behind: the next peek sees the batch again and _wal_changes()
 *	   skips every transaction below the applied position.  Nothing is lost
 *	   (the slot is never ahead of committed records) and nothing is written
 *	   twice.
 *
 * Errors: a batch that fails is retried once transaction by transaction;
 * a transaction that still fails is quarantined (bv_audit._wal_quarantine:
 * its decoded changes and the error are kept in bv_audit.wal_quarantine,
 * counted in bv_audit.wal_status()) and the worker goes on.  Errors are
 * caught here (PG_TRY), the transaction aborted and the slot released, as
 * PostgresMain does for a backend.
 *
 * Every WAL_SNAPSHOT_MS (100 ms) while the WAL moves, the worker logs a
 * running-transactions record (LogStandbySnapshot), so that advancing the
 * slot also moves its restart_lsn and every peek starts decoding close to
 * where it left off.
 *
 * Wake-ups: the worker polls the WAL insert position every
 * bv_audit.wal_naptime_ms and runs a batch only when it moved, so an idle
 * cluster costs one pointer read per pass.
 *
 * Memory: a loop context reset every pass; transactions clean up the rest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/latch.h"
#include "storage/standby.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bv_audit.h"

char *bv_audit_database = NULL;
static bool wal_mode = false;
static int wal_naptime_ms = 10;
static int wal_idle_ms = 1000;
static int wal_batch = 5000;
static bool wal_wakeup = true;

/*
 * How often, while the WAL moves, the worker logs a running-transactions
 * record (see the file comment): one small WAL record per period.
 */
#define WAL_SNAPSHOT_MS 100

/*
 * How often, while batches write records, the worker advances the slot
 * (apply_batch()); a batch that writes nothing advances it at once.
 */
#define WAL_ADVANCE_MS 100
static TimestampTz last_advance = 0;

/*
 * Shared memory: the worker's pgprocno + 1 (0: no worker), so that writers
 * can set its latch at commit (bv_audit_wal_wake_worker()).
 */
typedef struct WalWorkerShared
{
	pg_atomic_uint32 procno;
} WalWorkerShared;

static WalWorkerShared *wal_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
wal_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(WalWorkerShared)));
}

static void
wal_shmem_startup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wal_shared = ShmemInitStruct("bv_audit wal worker", sizeof(WalWorkerShared), &found);
	if (!found)
		pg_atomic_init_u32(&wal_shared->procno, 0);
	LWLockRelease(AddinShmemInitLock);
}

/* Forget the worker's latch when it exits. */
static void
wal_worker_detach(int code, Datum arg)
{
	if (wal_shared != NULL)
		pg_atomic_write_u32(&wal_shared->procno, 0);
}

/*
 * Set the worker's latch (from a writer's commit, wal_context.c).  Without
 * the worker, or when bv_audit was not preloaded, nothing happens.
 */
void
bv_audit_wal_wake_worker(void)
{
	uint32 procno;

	if (wal_shared == NULL || !wal_wakeup)
		return;
	procno = pg_atomic_read_u32(&wal_shared->procno);
	if (procno != 0 && procno <= ProcGlobal->allProcCount)
		SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
}

/* What one pass found. */
typedef enum WalPass
{
	WAL_NOT_READY, /* no extension (or no slot yet): wait long */
	WAL_IDLE,      /* caught up: poll again after the naptime */
	WAL_MORE       /* the batch was cut at wal_batch: go on at once */
} WalPass;

static void
begin_tx(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

/* Run a query expected to return one value; *isnull when no row. */
static Datum
query1(const char *sql, int nargs, Oid *types, Datum *args, bool *isnull)
{
	int ret = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 1);

	if (ret < 0)
		elog(ERROR, "query failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0 || SPI_tuptable == NULL)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/* Steps 1 and 2: the extension and the slot. */
static bool
ready(void)
{
	Oid types[1] = {TEXTOID};
	Datum args[1] = {CStringGetTextDatum(BV_AUDIT_WAL_SLOT)};
	bool isnull;
	bool have_slot;
	Datum installed;

	begin_tx();
	installed = query1("SELECT pg_catalog.to_regprocedure('bv_audit._wal_apply(name,integer,boolean)') IS NOT NULL",
					   0, NULL, NULL, &isnull);
	if (isnull || !DatumGetBool(installed))
	{
		/* Dropped (or never there): a slot left behind would keep WAL forever. */
		bv_audit_wal_stream_close();
		query1("SELECT pg_catalog.pg_drop_replication_slot(s.slot_name) "
			   "FROM pg_catalog.pg_replication_slots s "
			   "WHERE s.slot_name = $1 AND s.database = pg_catalog.current_database() AND NOT s.active",
			   1, types, args, &isnull);
		end_tx();
		pgstat_report_activity(STATE_IDLE, "waiting for CREATE EXTENSION bv_audit (0.4.0)");
		return false;
	}
	if (!wal_mode &&
		!DatumGetBool(query1("SELECT EXISTS (SELECT FROM bv_audit.tracked t "
							 "WHERE t.wal_lsn IS NOT NULL AND (t.wal_until IS NULL OR "
							 "t.wal_until > bv_audit._wal_applied()))",
							 0, NULL, NULL, &isnull)))
	{
		/*
		 * WAL mode off, no table in it and every closed window recorded: no
		 * slot (it would decode all WAL for nothing).  Only under the lock
		 * that enable() holds from its check of the slot to its commit,
		 * and only if no table entered WAL mode before the lock was taken
		 * (the last statement runs with a snapshot taken after it).
		 */
		bv_audit_wal_stream_close();
		if (DatumGetBool(query1("SELECT pg_catalog.pg_try_advisory_xact_lock(" BV_AUDIT_WAL_SLOT_LOCK ")",
								0, NULL, NULL, &isnull)))
			query1("SELECT pg_catalog.pg_drop_replication_slot(s.slot_name) "
				   "FROM pg_catalog.pg_replication_slots s "
				   "WHERE s.slot_name = $1 AND s.database = pg_catalog.current_database() AND NOT s.active "
				   "AND NOT EXISTS (SELECT FROM bv_audit.tracked t WHERE t.wal_lsn IS NOT NULL AND "
				   "(t.wal_until IS NULL OR t.wal_until > bv_audit._wal_applied()))",
				   1, types, args, &isnull);
		end_tx();
		pgstat_report_activity(STATE_IDLE, "WAL mode is off (bv_audit.wal_mode)");
		return false;
	}
	have_slot = DatumGetBool(query1("SELECT EXISTS (SELECT FROM pg_catalog.pg_replication_slots "
									"WHERE slot_name = $1)",
									1, types, args, &isnull));
	end_tx();
	if (!have_slot)
	{
		pgstat_report_activity(STATE_RUNNING, "creating the replication slot " BV_AUDIT_WAL_SLOT);
		begin_tx();
		query1("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'wal2json')", 1, types,
			   args, &isnull);
		end_tx();
		elog(LOG, "bv_audit: created the replication slot \"%s\" for WAL-mode auditing",
			 BV_AUDIT_WAL_SLOT);
	}
	return true;
}

/* Steps 3 and 4: one batch, then the slot. */
static WalPass
apply_batch(int max_changes, bool force)
{
	Oid types[3] = {NAMEOID, INT4OID, BOOLOID};
	Datum args[3];
	Oid advtypes[2] = {TEXTOID, PG_LSNOID};
	Datum advargs[2];
	NameData slot;
	XLogRecPtr applied;
	bool complete, isnull;
	int64 records;
	int ret;
	TimestampTz clock;

	namestrcpy(&slot, BV_AUDIT_WAL_SLOT);
	args[0] = NameGetDatum(&slot);
	args[1] = Int32GetDatum(max_changes);
	args[2] = BoolGetDatum(force);
	pgstat_report_activity(STATE_RUNNING, "applying WAL changes");
	begin_tx();
	ret = SPI_execute_with_args("SELECT applied, complete, records FROM bv_audit._wal_apply($1, $2, $3)",
								3, types, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "bv_audit._wal_apply() failed: %s", SPI_result_code_string(ret));
	applied = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	complete = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	records = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	end_tx();

	/*
	 * The records committed: with a decoding session open (wal_stream.c),
	 * confirm the position through it, which decodes nothing again and
	 * costs no transaction, after every batch.
	 */
	if (bv_audit_wal_stream_open())
	{
		bv_audit_wal_stream_confirm(applied);
		pgstat_report_activity(STATE_IDLE, NULL);
		return complete ? WAL_IDLE : WAL_MORE;
	}

	/*
	 * Without a session (no table in WAL mode): a batch that wrote records stored its position with them (wait_for()
	 * reads it there), and the next peek skips what it recorded: the slot
	 * then only needs to follow every WAL_ADVANCE_MS, which saves a
	 * transaction and a decoding pass per batch under a steady load.  A
	 * batch that wrote nothing stored nothing, so the slot says how far it
	 * got.
	 */
	clock = GetCurrentTimestamp();
	if (records > 0 && complete && !TimestampDifferenceExceeds(last_advance, clock, WAL_ADVANCE_MS))
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		return WAL_IDLE;
	}
	last_advance = clock;

	advargs[0] = CStringGetTextDatum(BV_AUDIT_WAL_SLOT);
	advargs[1] = LSNGetDatum(applied);
	begin_tx();
	query1("SELECT pg_catalog.pg_replication_slot_advance(s.slot_name, $2) "
		   "FROM pg_catalog.pg_replication_slots s "
		   "WHERE s.slot_name = $1 AND s.confirmed_flush_lsn < $2",
		   2, advtypes, advargs, &isnull);
	end_tx();
	pgstat_report_activity(STATE_IDLE, NULL);
	return complete ? WAL_IDLE : WAL_MORE;
}

/* Quarantine the oldest unapplied transaction (see the file comment). */
static void
quarantine(const char *error)
{
	Oid types[2] = {TEXTOID, TEXTOID};
	Datum args[2] = {CStringGetTextDatum(BV_AUDIT_WAL_SLOT), CStringGetTextDatum(error)};
	bool isnull;

	begin_tx();
	query1("SELECT bv_audit._wal_quarantine($1::name, $2)", 2, types, args, &isnull);
	end_tx();
}

/* Clean up after an error caught in the loop, as PostgresMain does. */
static char *
recover(MemoryContext loop_cxt)
{
	ErrorData *edata;
	char *msg;

	MemoryContextSwitchTo(loop_cxt);
	edata = CopyErrorData();
	FlushErrorState();
	msg = pstrdup(edata->message ? edata->message : "unknown error");
	elog(WARNING, "bv_audit WAL worker: %s", msg);
	/* the session's documents may not have been recorded: start again at the slot */
	bv_audit_wal_stream_close();
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	ReplicationSlotCleanup();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(loop_cxt);
	return msg;
}

void
bv_audit_wal_worker_main(Datum main_arg)
{
	MemoryContext loop_cxt;
	volatile XLogRecPtr seen = InvalidXLogRecPtr;
	volatile int failures = 0;
	volatile TimestampTz stored = 0;
	volatile TimestampTz snapped = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(bv_audit_database, NULL, 0);
	bv_audit_wal_in_worker = true;
	/*
	 * Read committed whatever the cluster's default: each batch reads the
	 * WAL-mode tables with a snapshot newer than its WAL position
	 * (wal_decode.c), which a transaction snapshot would not be.
	 */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	if (wal_shared != NULL)
	{
		on_shmem_exit(wal_worker_detach, (Datum) 0);
		pg_atomic_write_u32(&wal_shared->procno, (uint32) MyProc->pgprocno + 1);
	}
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "bv_audit WAL worker loop",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		volatile WalPass pass = WAL_IDLE;
		long wait_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		PG_TRY();
		{
			XLogRecPtr now = GetXLogInsertRecPtr();
			TimestampTz clock = GetCurrentTimestamp();
			/* Store the position at least once a second (seal() reads it). */
			bool force = TimestampDifferenceExceeds(stored, clock, 1000);

			if (!ready())
				pass = WAL_NOT_READY;
			else if (now != seen || failures > 0 || force)
			{
				/*
				 * A running-transactions record lets the next advance move
				 * the slot's restart_lsn too (the bgwriter logs one only
				 * every 15 s): each peek then decodes from a recent point
				 * instead of re-reading the WAL since the last one, which
				 * under a steady load cost more than the records (every
				 * WAL_SNAPSHOT_MS, not once a second as in 0.4.0).
				 */
				if (now != seen && TimestampDifferenceExceeds(snapped, clock, WAL_SNAPSHOT_MS))
				{
					(void) LogStandbySnapshot();
					snapped = clock;
				}
				/* After a failure, one transaction at a time. */
				pass = apply_batch(failures > 0 ? 1 : wal_batch, force);
				seen = now;
				failures = 0;
				if (force)
					stored = clock;
			}
		}
		PG_CATCH();
		{
			char *msg = recover(loop_cxt);

			failures++;
			pass = WAL_NOT_READY;
			if (failures > 2)
			{
				PG_TRY();
				{
					quarantine(msg);
					failures = 0;
				}
				PG_CATCH();
				{
					recover(loop_cxt);
				}
				PG_END_TRY();
			}
		}
		PG_END_TRY();

		if (pass == WAL_MORE)
			continue;
		wait_ms = pass == WAL_NOT_READY ? wal_idle_ms : wal_naptime_ms;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Settings and the worker's registration (from _PG_init, preloaded only). */
void
bv_audit_wal_worker_init(void)
{
	BackgroundWorker worker;

	DefineCustomStringVariable("bv_audit.database", "Database whose WAL-mode tables the bv_audit WAL worker records.",
							   NULL, &bv_audit_database, "bitvelocity", PGC_POSTMASTER, 0, NULL,
							   NULL, NULL);
	DefineCustomBoolVariable("bv_audit.wal_mode", "Whether tables may be audited in WAL mode.",
							 "On, the bv_audit WAL worker keeps the replication slot bv_audit_wal, which decodes all of the database's WAL; off (the default), bv_audit.enable(..., mode => 'wal') is refused and there is no slot once no table is in WAL mode.",
							 &wal_mode, false, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_audit.wal_naptime_ms", "How often the bv_audit WAL worker looks for new WAL.",
							NULL, &wal_naptime_ms, 10, 1, 60000, PGC_SIGHUP, GUC_UNIT_MS, NULL,
							NULL, NULL);
	DefineCustomIntVariable("bv_audit.wal_idle_ms", "How often the bv_audit WAL worker checks for the extension while it is not installed.",
							NULL, &wal_idle_ms, 1000, 10, 600000, PGC_SIGHUP, GUC_UNIT_MS, NULL,
							NULL, NULL);
	DefineCustomIntVariable("bv_audit.wal_batch", "Changes the bv_audit WAL worker reads per transaction at most.",
							NULL, &wal_batch, 5000, 1, 1000000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("bv_audit.wal_wakeup", "Whether writers of WAL-mode tables wake the bv_audit WAL worker at commit.",
							 "On (the default), a change is recorded by the worker's next batch; off, at its next poll (bv_audit.wal_naptime_ms).",
							 &wal_wakeup, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("bv_audit");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wal_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wal_shmem_startup;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bv_audit");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bv_audit_wal_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bv_audit WAL worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "bv_audit wal");
	RegisterBackgroundWorker(&worker);
}
