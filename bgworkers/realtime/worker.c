/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The gateway worker's main loop: the one owner of the loop, calling
 *	  step functions of stream.c, history.c and gateway.c.
 *
 * Start-up: connect to bv_realtime.database, wait until the extension is
 * installed there, read the history's marks, open the listening socket,
 * start streaming the slot.  Any failure closes everything and retries
 * with exponential back-off; an ERROR (from SPI) ends the process and the
 * postmaster restarts it after 5 s.  Either way the slot has not moved
 * past what the history holds, so nothing is lost: the replayed batch is
 * stored again (ON CONFLICT DO NOTHING) and not re-delivered (positions up
 * to the history's high mark at start-up were delivered before).
 *
 * Each pass: wait (WaitEventSet: latch, postmaster death, replication
 * socket, the gateway's epoll descriptor; at most 100 ms), then
 *   1. read the stream; store a committed batch in the history and commit;
 *      deliver it; confirm the slot position;
 *   2. serve the network;
 *   3. once a second: deadlines, expiry, keep-alives; every
 *      revocation_check_interval: revoked tokens; every 10 s: pruning and
 *      the extension check.
 *
 * Memory: pass_cxt, reset every pass; worker_cxt for the wait set.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "bv_common.h"
#include "bv_realtime.h"

static MemoryContext worker_cxt = NULL;
static MemoryContext pass_cxt = NULL;

static void
rt_worker_exit(int code, Datum arg)
{
	rt_gateway_stop();
	rt_stream_stop();
	if (rt_shared != NULL)
	{
		SpinLockAcquire(&rt_shared->mutex);
		rt_shared->worker_pid = 0;
		rt_shared->worker_latch = NULL;
		strlcpy(rt_shared->state, "stopped", sizeof(rt_shared->state));
		SpinLockRelease(&rt_shared->mutex);
	}
}

/* Is the extension installed in our database? */
bool
rt_extension_exists(void)
{
	bool exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'bv_realtime'", true,
					1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_extension");
	exists = SPI_processed > 0;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return exists;
}

static void
serve_reload(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

static void
nap(long ms)
{
	int rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms,
					   PG_WAIT_EXTENSION);

	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	serve_reload();
}

/* Sockets beyond PostgreSQL's own: raise the descriptor limit to the hard one. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * One run: until the stream or the gateway fails (returns the reason) or
 * the extension disappears (returns NULL).
 */
static char *
run(void)
{
	WaitEventSet *set;
	WaitEvent events[4];
	RtPos published = rt_history_high();
	TimestampTz last_tick = 0, last_revocation = 0, last_prune = 0;
	TimestampTz revoked_since = GetCurrentTimestamp();
	int ep_pos;
	bool more = false;

	set = CreateWaitEventSet(worker_cxt, 4);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, rt_stream_socket(), NULL, NULL);
	ep_pos = AddWaitEventToSet(set, WL_SOCKET_READABLE, rt_gateway_epoll_fd(), NULL, NULL);
	rt_set_state("running");

	for (;;)
	{
		int n, i;
		bool lws_ready = false;
		List *batch = NIL;
		char *err = NULL;
		TimestampTz now;

		n = WaitEventSetWait(set, more ? 0 : rt_gateway_timeout_ms(), events, lengthof(events),
							 PG_WAIT_EXTENSION);
		for (i = 0; i < n; i++)
		{
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if (events[i].pos == ep_pos)
				lws_ready = true;
		}
		CHECK_FOR_INTERRUPTS();
		serve_reload();
		MemoryContextReset(pass_cxt);
		MemoryContextSwitchTo(pass_cxt);

		/* 1. the stream */
		if (!rt_stream_read(&batch, 5000, &err))
		{
			FreeWaitEventSet(set);
			return err ? err : "the replication stream failed";
		}
		more = list_length(batch) >= 5000;
		if (batch != NIL)
		{
			List *fresh = NIL;
			ListCell *lc;

			rt_history_insert(batch);
			MemoryContextSwitchTo(pass_cxt);
			foreach (lc, batch)
			{
				RtEvent *ev = lfirst(lc);

				if (ev->op != 'R')
					rt_count(ev->op ? RT_C_CHANGES_IN : RT_C_MESSAGES_IN, 1);

				if (rt_pos_cmp(ev->pos, published) > 0)
				{
					fresh = lappend(fresh, ev);
					published = ev->pos;
				}
			}
			rt_gateway_publish(fresh);
			rt_history_note(published);
		}
		if (!rt_stream_confirm(InvalidXLogRecPtr, false, &err))
		{
			FreeWaitEventSet(set);
			return err;
		}

		/* 2. the network */
		rt_gateway_service(lws_ready);

		/* 3. timers */
		now = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(last_tick, now, 1000))
		{
			last_tick = now;
			rt_gateway_tick(now);
		}
		if (TimestampDifferenceExceeds(last_revocation, now, rt_revocation_check_ms))
		{
			ListCell *lc;

			last_revocation = now;
			foreach (lc, rt_revoked_since(&revoked_since))
				rt_gateway_revoke(lfirst(lc));
		}
		if (TimestampDifferenceExceeds(last_prune, now, 10000))
		{
			last_prune = now;
			if (!rt_extension_exists())
			{
				FreeWaitEventSet(set);
				return NULL;
			}
			rt_history_prune();
		}
		MemoryContextSwitchTo(TopMemoryContext);
	}
}

void
bv_realtime_worker_main(Datum arg)
{
	BvBackoff backoff;
	bool logged_waiting = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "bv_realtime worker",
									   ALLOCSET_DEFAULT_SIZES);
	pass_cxt = AllocSetContextCreate(worker_cxt, "bv_realtime pass", ALLOCSET_DEFAULT_SIZES);
	/* Before any lws or libpq state exists. */
	before_shmem_exit(rt_worker_exit, (Datum) 0);

	BackgroundWorkerInitializeConnection(rt_database, NULL, 0);
	pgstat_report_appname("bv_realtime");
	/*
	 * The worker's own queries run as the superuser: only pg_catalog's
	 * operators and functions, whatever a database or role default says.
	 * Client-run code cannot change it past its transaction (rt_role_lock).
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	raise_fd_limit();

	SpinLockAcquire(&rt_shared->mutex);
	rt_shared->worker_pid = MyProcPid;
	rt_shared->worker_latch = MyLatch;
	rt_shared->last_error[0] = '\0';
	SpinLockRelease(&rt_shared->mutex);

	bv_backoff_init(&backoff, 200, 30000);
	for (;;)
	{
		char *err = NULL;

		CHECK_FOR_INTERRUPTS();
		if (!rt_extension_exists())
		{
			rt_set_state("waiting for extension");
			if (!logged_waiting)
				ereport(LOG, (errmsg("bv_realtime is waiting: extension \"bv_realtime\" is not "
									 "installed in database \"%s\"",
									 rt_database)));
			logged_waiting = true;
			rt_stream_drop_orphan_slot();
			nap(5000);
			continue;
		}
		logged_waiting = false;
		rt_history_init();
		rt_presence_reset();
		if (!rt_gateway_start(&err))
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("bv_realtime could not start its gateway: %s", err),
					 errhint("Set bv_realtime.listen_address and bv_realtime.port to a free "
							 "address, or bv_realtime.port = 0 to disable the gateway.")));
			rt_set_error("gateway: %s", err);
		}
		else if (!rt_stream_start(&err))
		{
			ereport(WARNING,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("bv_realtime could not stream its replication slot: %s", err),
					 errhint("Check wal_level = logical, max_replication_slots, and that "
							 "pg_hba.conf allows a local replication connection for the "
							 "bootstrap superuser (or set bv_realtime.conninfo).")));
			rt_set_error("stream: %s", err);
		}
		else
		{
			err = run();
			if (err != NULL)
			{
				ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
								  errmsg("bv_realtime restarts: %s", err)));
				rt_set_error("%s", err);
			}
			else
				bv_backoff_reset(&backoff);
		}
		rt_gateway_stop();
		rt_stream_stop();
		if (err != NULL)
		{
			rt_set_state("retrying");
			nap(bv_backoff_next(&backoff));
		}
	}
}
