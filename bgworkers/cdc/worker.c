/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The bv_cdc background worker: its one loop.
 *
 * One static worker per server (registered by bv_cdc.c), connected to
 * bv_cdc.database.  It follows worker_spi: SIGHUP sets ConfigReloadPending
 * (SignalHandlerForConfigReload), SIGTERM is die(); it waits on the process
 * latch with WL_EXIT_ON_PM_DEATH and runs CHECK_FOR_INTERRUPTS.
 *
 * The loop is this file's alone (pg_cron's PgCronLauncherMain shape): each
 * pass calls step functions, and nothing below calls back up into it.
 *   not streaming     load the configuration (or wait while the bv_cdc
 *                     extension is not installed, saying so once; if it was
 *                     dropped, drop the worker's slot so that it does not
 *                     hold WAL), start the stream (stream.c), then the sinks,
 *                     each isolated (sink.c, ADR 0032)
 *   maintenance step  reload settings, apply a configuration change, retry
 *                     sinks that could not start, check now and then that
 *                     the extension still exists
 *   stream step       read a batch from the slot, events to the sinks
 *   ack step          acknowledgements, window, slot confirmation, stats
 *   wait step         wait for the stream, the latch or the sinks
 * A step that fails (connection lost, a sink failed, the extension gone)
 * ends the run: the producers are destroyed without waiting (the slot still
 * has all that was not acknowledged), the worker backs off with jitter and
 * starts again.
 *
 * Exit cleanup (before_shmem_exit) is registered before any library or
 * libpq state exists: it closes the stream and stops the sinks.
 *
 * Configuration changes (generation counter in shared memory, bumped on
 * commit) are applied between two batches: in-flight messages are drained
 * first, sinks whose configuration is unchanged are kept, the others
 * replaced.
 *
 * Memory: "bv_cdc worker" is the long-lived context (configurations are
 * children of it); per-message memory is stream.c's, reset every message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "bv_common.h"
#include "cdc.h"

static CdcConfig *worker_cfg = NULL; /* NULL: not streaming */
static MemoryContext worker_cxt = NULL;
static TimestampTz last_extension_check = 0;
static BvBackoff backoff;
static TimestampTz run_started = 0;

static void
stop_sinks(CdcConfig *cfg)
{
	int i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nsinks; i++)
		cdc_sink_stop(&cfg->sinks[i]);
}

/* A sink whose delivery failed caused this restart: count it. */
static void
count_retries(CdcConfig *cfg)
{
	int i;

	SpinLockAcquire(&cdc_shared->mutex);
	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].failed)
			cdc_shared->sinks[cfg->sinks[i].stats_slot].retries++;
	SpinLockRelease(&cdc_shared->mutex);
}

/* Exit callback: close the stream, destroy the producers. */
static void
cdc_worker_exit(int code, Datum arg)
{
	cdc_stream_cleanup();
	stop_sinks(worker_cfg);
	if (cdc_shared != NULL)
	{
		SpinLockAcquire(&cdc_shared->mutex);
		cdc_shared->worker_pid = 0;
		cdc_shared->worker_latch = NULL;
		strlcpy(cdc_shared->state, "stopped", sizeof(cdc_shared->state));
		SpinLockRelease(&cdc_shared->mutex);
	}
}

/* Drop our slot once the extension is gone, unless something uses it. */
static void
drop_orphan_slot(void)
{
	Oid argtypes[1] = {TEXTOID};
	Datum args[1];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	args[0] = CStringGetTextDatum(cdc_slot_name);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_drop_replication_slot(slot_name) "
							  "FROM pg_catalog.pg_replication_slots "
							  "WHERE slot_name = $1 AND NOT active AND plugin = 'wal2json' "
							  "AND database = pg_catalog.current_database()",
							  1, argtypes, args, NULL, false, 0) == SPI_OK_SELECT &&
		SPI_processed > 0)
		ereport(LOG, (errmsg("bv_cdc dropped replication slot \"%s\": the extension is no longer "
							 "installed",
							 cdc_slot_name)));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Wait on the latch, serving reloads and interrupts. */
static void
nap(long ms)
{
	int rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms,
					   PG_WAIT_EXTENSION);

	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* Move an unchanged sink's producer from the old config to the new one. */
static void
adopt_sinks(CdcConfig *oldcfg, CdcConfig *newcfg)
{
	int i, j;

	cdc_sinks_publish(oldcfg);
	for (i = 0; i < newcfg->nsinks; i++)
		for (j = 0; j < oldcfg->nsinks; j++)
		{
			CdcSink *n = &newcfg->sinks[i];
			CdcSink *o = &oldcfg->sinks[j];

			if (o->impl != NULL && strcmp(n->name, o->name) == 0 &&
				strcmp(n->kind, o->kind) == 0 && strcmp(n->config_json, o->config_json) == 0 &&
				n->stats_slot == o->stats_slot)
			{
				n->impl = o->impl;
				n->ops = o->ops;
				n->pending = o->pending;
				o->impl = NULL;
				cdc_sink_rebind(n);
			}
		}
	stop_sinks(oldcfg);
}

/*
 * maintenance_step
 *		Between batches: reload settings, apply a configuration change,
 *		retry the sinks that could not start, check now and then that the
 *		extension still exists.  false when the stream must start over.
 */
static bool
maintenance_step(void)
{
	CdcConfig *cfg = worker_cfg;
	TimestampTz now;

	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}

	if (pg_atomic_read_u64(&cdc_shared->config_generation) != cfg->generation)
	{
		CdcConfig *newcfg;
		TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
		int i;

		/* Drain: let the sinks acknowledge what is in flight (bounded wait). */
		cdc_set_state("reloading");
		while (cdc_sinks_pending(cfg) > 0 && GetCurrentTimestamp() < deadline &&
			   !cdc_sinks_failed(cfg))
		{
			cdc_sinks_poll(cfg, 50);
			cdc_stream_keepalive();
			CHECK_FOR_INTERRUPTS();
		}
		newcfg = cdc_config_load(worker_cxt);
		if (newcfg == NULL)
			return false;
		if (cdc_sinks_pending(cfg) > 0 || cdc_sinks_failed(cfg))
		{
			/* Could not drain: start over from the slot with the new config. */
			stop_sinks(cfg);
			cdc_stream_set_config(NULL);
			cdc_config_free(cfg);
			worker_cfg = newcfg;
			return false;
		}
		adopt_sinks(cfg, newcfg);
		cdc_stream_set_config(newcfg);
		cdc_config_free(cfg);
		worker_cfg = cfg = newcfg;
		ereport(LOG, (errmsg("bv_cdc applied a configuration change: %d sink(s), %d route(s)",
							 cfg->nsinks, cfg->nroutes)));
		/* A sink that cannot start fails alone (ADR 0032). */
		for (i = 0; i < cfg->nsinks; i++)
			if (cfg->sinks[i].impl == NULL)
				(void) cdc_sink_start_isolated(&cfg->sinks[i]);
		/*
		 * Held changes (a sink could not start) are replayed from the slot
		 * under the new configuration: a repaired sink gets them.
		 */
		if (cdc_window_held())
			return false;
	}

	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(last_extension_check, now, cdc_heartbeat_interval_ms))
	{
		last_extension_check = now;
		if (!cdc_extension_exists())
			return false;
	}

	if (cdc_sinks_retry_failed(cfg) && cdc_window_held())
	{
		ereport(LOG, (errmsg("bv_cdc: a sink that could not start is up again; replaying "
							 "the held changes from the slot")));
		return false;
	}
	return true;
}

/*
 * start_step
 *		Not streaming: load the configuration, start the stream, then the
 *		sinks.  false when there is nothing to stream (no extension: after
 *		a nap) or the stream could not start (then stop_step backs off).
 */
static bool
start_step(void)
{
	int i;

	worker_cfg = cdc_config_load(worker_cxt);
	if (worker_cfg == NULL)
	{
		bool log_it;

		cdc_set_state("waiting for extension");
		SpinLockAcquire(&cdc_shared->mutex);
		log_it = !cdc_shared->logged_no_extension;
		cdc_shared->logged_no_extension = true;
		SpinLockRelease(&cdc_shared->mutex);
		if (log_it)
			ereport(LOG,
					(errmsg("bv_cdc is waiting: extension \"bv_cdc\" is not installed in "
							"database \"%s\"",
							cdc_database),
					 errhint("Run CREATE EXTENSION bv_cdc in database \"%s\".", cdc_database)));
		drop_orphan_slot();
		nap(cdc_naptime_ms);
		return false;
	}
	SpinLockAcquire(&cdc_shared->mutex);
	cdc_shared->logged_no_extension = false;
	SpinLockRelease(&cdc_shared->mutex);
	last_extension_check = GetCurrentTimestamp();
	run_started = GetCurrentTimestamp();

	if (!cdc_stream_start(worker_cfg))
		return false;
	/* A sink that cannot start is failed alone, with its own back-off (ADR 0032). */
	for (i = 0; i < worker_cfg->nsinks; i++)
		if (worker_cfg->sinks[i].impl == NULL)
			(void) cdc_sink_start_isolated(&worker_cfg->sinks[i]);
	cdc_set_state("streaming");
	ereport(LOG, (errmsg("bv_cdc is streaming slot \"%s\" to %d sink(s) with %d route(s)",
						 cdc_slot_name, worker_cfg->nsinks, worker_cfg->nroutes)));
	return true;
}

/*
 * stop_step
 *		Streaming stopped: drop what is in flight (it will be replayed from
 *		the slot), forget the configuration, back off.
 */
static void
stop_step(void)
{
	if (worker_cfg != NULL)
	{
		count_retries(worker_cfg);
		cdc_stream_cleanup();
		stop_sinks(worker_cfg);
		cdc_sinks_publish(worker_cfg);
		cdc_config_free(worker_cfg);
		worker_cfg = NULL;
	}
	else
		cdc_stream_cleanup();

	SpinLockAcquire(&cdc_shared->mutex);
	cdc_shared->restarts++;
	SpinLockRelease(&cdc_shared->mutex);

	/* A long healthy run resets the back-off. */
	if (TimestampDifferenceExceeds(run_started, GetCurrentTimestamp(), 60000))
		bv_backoff_reset(&backoff);
	backoff.max_ms = cdc_retry_max_ms;
	cdc_set_state("backing off");
	nap(bv_backoff_next(&backoff));
}

void
bv_cdc_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc worker", ALLOCSET_DEFAULT_SIZES);
	/* Before any library or libpq state exists. */
	before_shmem_exit(cdc_worker_exit, (Datum) 0);

	BackgroundWorkerInitializeConnection(cdc_database, NULL, 0);
	pgstat_report_appname("bv_cdc");

	SpinLockAcquire(&cdc_shared->mutex);
	cdc_shared->worker_pid = MyProcPid;
	cdc_shared->worker_latch = MyLatch;
	SpinLockRelease(&cdc_shared->mutex);

	bv_backoff_init(&backoff, 200, cdc_retry_max_ms);

	for (;;)
	{
		CdcStepResult read;

		CHECK_FOR_INTERRUPTS();
		if (worker_cfg == NULL)
		{
			if (!start_step())
			{
				if (worker_cfg != NULL)
					stop_step(); /* the stream could not start */
				continue;
			}
		}
		if (!maintenance_step())
		{
			stop_step();
			continue;
		}
		read = cdc_stream_read(worker_cfg);
		if (read == CDC_STEP_RESTART || !cdc_stream_acks(worker_cfg) ||
			!cdc_stream_wait(worker_cfg, read))
			stop_step();
	}
}
