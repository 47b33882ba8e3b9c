/*-------------------------------------------------------------------------
 *
 * bv_cdc.c
 *	  bv_cdc's entry point: settings, shared memory, the worker's
 *	  registration, and what bv_cdc does inside ordinary backends.
 *
 * The library is preloaded (shared_preload_libraries).  In the postmaster,
 * _PG_init defines the bv_cdc.* settings, requests a small shared memory
 * area (statistics, the config generation counter, the worker's latch) and
 * registers one static background worker, which streams the slot (worker.c).
 *
 * In every ordinary backend, two small things happen:
 *   - the transaction's trace context is written into the WAL, once per
 *     transaction, as a transactional logical decoding message with prefix
 *     "bv.traceparent", just before the transaction's first writing
 *     statement runs (ExecutorStart hook).  The worker sees it before the
 *     transaction's changes and puts it in their Kafka headers.
 *   - a commit that changed bv_cdc's configuration tables (their trigger
 *     sets a flag) bumps the config generation and wakes the worker
 *     (XactCallback, as pg_net does), so configuration applies on commit.
 *
 * Concurrency: CdcShared is protected by its spinlock, held only to copy a
 * few fields; the generation counter is atomic.  Backends never wait for
 * the worker.
 *
 * Memory: nothing is allocated here beyond the GUC strings and the shared
 * memory area; the trace hook allocates in the executor's current context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "replication/message.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "bv_cdc.h"
#include "bv_common.h"

PG_MODULE_MAGIC;

void _PG_init(void);

CdcShared *cdc_shared = NULL;

char *cdc_database = NULL;
char *cdc_slot_name = NULL;
char *cdc_conninfo = NULL;
int cdc_max_inflight = 100000;
int cdc_status_interval_ms = 1000;
int cdc_heartbeat_interval_ms = 10000;
int cdc_naptime_ms = 10000;
int cdc_retry_max_ms = 30000;
bool cdc_trace_messages = true;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;

/* Backend-local: set by the config trigger, acted on at commit. */
bool cdc_config_dirty = false;
bool cdc_spool_dirty = false;

/* Backend-local: the subtransaction that wrote this transaction's trace. */
static SubTransactionId trace_written_in = InvalidSubTransactionId;

static void
cdc_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(CdcShared)));
}

static void
cdc_shmem_startup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cdc_shared = ShmemInitStruct("bv_cdc", sizeof(CdcShared), &found);
	if (!found)
	{
		memset(cdc_shared, 0, sizeof(CdcShared));
		SpinLockInit(&cdc_shared->mutex);
		pg_atomic_init_u64(&cdc_shared->config_generation, 1);
		pg_atomic_init_u64(&cdc_shared->spool_generation, 1);
		strlcpy(cdc_shared->state, "starting", sizeof(cdc_shared->state));
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * cdc_set_state
 *		Publish the worker's state (shown by bv_cdc.stats).
 */
void
cdc_set_state(const char *state)
{
	if (cdc_shared == NULL)
		return;
	SpinLockAcquire(&cdc_shared->mutex);
	strlcpy(cdc_shared->state, state, sizeof(cdc_shared->state));
	SpinLockRelease(&cdc_shared->mutex);
}

/*
 * cdc_set_error
 *		Publish the worker's last error (shown by bv_cdc.stats).
 */
void
cdc_set_error(const char *fmt, ...)
{
	char buf[BV_CDC_ERRLEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (cdc_shared == NULL)
		return;
	SpinLockAcquire(&cdc_shared->mutex);
	strlcpy(cdc_shared->last_error, buf, sizeof(cdc_shared->last_error));
	SpinLockRelease(&cdc_shared->mutex);
}

/*
 * The valid traceparent of the current request, or NULL: the bv.traceparent
 * setting, else the "traceparent" request header (PostgREST), the same rule
 * as bv.trace_context().
 */
static const char *
current_traceparent(void)
{
	const char *value = bv_guc_get_nonempty("bv.traceparent");
	const char *headers;
	char *header;
	JsonTokenType type;

	if (value != NULL)
		return bv_traceparent_is_valid(value) ? value : NULL;
	headers = bv_guc_get_nonempty("request.headers");
	if (headers == NULL)
		return NULL;
	if (bv_json_top_field(headers, "traceparent", &header, &type) != JSON_SUCCESS ||
		type != JSON_TOKEN_STRING || !bv_traceparent_is_valid(header))
		return NULL;
	return header;
}

/*
 * Before the first writing statement of a transaction with a trace context,
 * write that context into the WAL as a transactional decoding message.
 * Runs after the standard ExecutorStart, so a statement refused there (a
 * write in a read-only transaction) writes nothing.
 */
static void
cdc_executor_start(QueryDesc *queryDesc, int eflags)
{
	const char *tp;

	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);

	if (!cdc_trace_messages || trace_written_in != InvalidSubTransactionId ||
		(eflags & EXEC_FLAG_EXPLAIN_ONLY) || !XLogLogicalInfoActive() || IsInParallelMode() ||
		RecoveryInProgress())
		return;
	if (queryDesc->operation == CMD_SELECT && !queryDesc->plannedstmt->hasModifyingCTE)
		return;
	tp = current_traceparent();
	if (tp == NULL)
		return;
	LogLogicalMessage(BV_CDC_TRACE_PREFIX, tp, strlen(tp), true);
	trace_written_in = GetCurrentSubTransactionId();
}

static void
cdc_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if ((cdc_config_dirty || cdc_spool_dirty) && cdc_shared != NULL)
			{
				if (cdc_config_dirty)
					pg_atomic_fetch_add_u64(&cdc_shared->config_generation, 1);
				if (cdc_spool_dirty)
					pg_atomic_fetch_add_u64(&cdc_shared->spool_generation, 1);
				SpinLockAcquire(&cdc_shared->mutex);
				if (cdc_shared->worker_latch)
					SetLatch(cdc_shared->worker_latch);
				SpinLockRelease(&cdc_shared->mutex);
			}
			cdc_config_dirty = false;
			cdc_spool_dirty = false;
			trace_written_in = InvalidSubTransactionId;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			cdc_config_dirty = false;
			cdc_spool_dirty = false;
			trace_written_in = InvalidSubTransactionId;
			break;
		default:
			break;
	}
}

static void
cdc_subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
					 void *arg)
{
	if (trace_written_in != mySubid)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		trace_written_in = InvalidSubTransactionId; /* the message is gone */
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		trace_written_in = parentSubid;
}

static void
define_settings(void)
{
	DefineCustomStringVariable("bv_cdc.database", "Database whose changes bv_cdc streams.",
							   "The worker connects to it and reads its configuration there.",
							   &cdc_database, "bitvelocity", PGC_POSTMASTER, 0, NULL, NULL,
							   NULL);
	DefineCustomStringVariable("bv_cdc.slot_name", "Logical replication slot bv_cdc streams.",
							   "Created with the wal2json plugin on first start.", &cdc_slot_name,
							   "bv_cdc", PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable(
		"bv_cdc.conninfo", "Extra libpq connection options for the replication connection.",
		"By default the worker connects over the server's first unix socket as the bootstrap "
		"superuser; set host, port, user or sslmode here to change that.",
		&cdc_conninfo, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_cdc.max_inflight",
							"Messages produced but not yet acknowledged before reading pauses.",
							"Bounds the worker's memory for any transaction size.",
							&cdc_max_inflight, 100000, 100, 10000000, PGC_SIGHUP, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("bv_cdc.status_interval", "Time between slot position updates.",
							NULL, &cdc_status_interval_ms, 1000, 10, 60000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_cdc.heartbeat_interval",
							"Time between heartbeats that advance an idle slot.", NULL,
							&cdc_heartbeat_interval_ms, 10000, 100, 3600000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_cdc.naptime",
							"Time between checks while the bv_cdc extension is not installed.",
							NULL, &cdc_naptime_ms, 10000, 100, 3600000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("bv_cdc.retry_max", "Longest back-off between restarts after errors.",
							NULL, &cdc_retry_max_ms, 30000, 100, 3600000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("bv_cdc.trace_messages",
							 "Write each writing transaction's traceparent into the WAL.",
							 "bv_cdc puts it in the Kafka headers of the transaction's changes.",
							 &cdc_trace_messages, true, PGC_SUSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("bv_cdc");
}

static void
register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bv_cdc");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bv_cdc_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bv_cdc worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "bv_cdc");
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	define_settings();

	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = cdc_executor_start;
	RegisterXactCallback(cdc_xact_callback, NULL);
	RegisterSubXactCallback(cdc_subxact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cdc_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cdc_shmem_startup;
	register_worker();
}
