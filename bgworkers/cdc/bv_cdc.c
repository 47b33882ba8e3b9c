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
 * In every ordinary backend, a few small things happen:
 *   - the transaction's trace context is written into the WAL, once per
 *     transaction, as a transactional logical decoding message with prefix
 *     "bv.traceparent", just before the transaction's first writing
 *     statement runs (ExecutorStart hook).  The worker sees it before the
 *     transaction's changes and puts it in their Kafka headers.
 *   - writer notes (issue #27), transactional decoding messages the worker
 *     reads in commit order: before a transaction's first UPDATE of a table
 *     with a TOAST table, "bv.columns" with the table's columns as this
 *     transaction sees them (the worker derives "unchanged" from them, not
 *     from the catalog of a later time); after an UPDATE or DELETE that
 *     changed rows of a table without replica identity, "bv.noidentity"
 *     with the table and the row count (wal2json cannot decode such rows;
 *     the worker quarantines the loss if the table is routed).  Tables of
 *     bv_cdc's internal schemas are skipped.
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
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "replication/message.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"

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
int cdc_stall_timeout_ms = 10000;
static bool cdc_trace_messages = true;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;
static ExecutorEnd_hook_type prev_executor_end = NULL;

/*
 * Backend-local: the tables whose bv.columns note this transaction wrote,
 * with the subtransaction that wrote it (an aborted subtransaction takes
 * its notes along).  Any relcache invalidation forgets them all, so that a
 * table altered within the transaction is noted again.
 */
#define MAX_NOTED 64
typedef struct NotedTable
{
	Oid relid;
	SubTransactionId subid;
} NotedTable;
static NotedTable noted[MAX_NOTED];
static int nnoted = 0;

static bool notes_possible(QueryDesc *queryDesc, int eflags);
static void note_columns(QueryDesc *queryDesc);

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

	if (notes_possible(queryDesc, eflags))
		note_columns(queryDesc);

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

/*
 * What a ModifyTable node does to the rows of one of its result relations:
 * 'U' update (also INSERT ... ON CONFLICT DO UPDATE), 'D' delete, 'M' merge,
 * 0 nothing that needs a note.
 */
static char
modify_kind(ModifyTableState *mt, ResultRelInfo *rri)
{
	switch (mt->operation)
	{
		case CMD_UPDATE:
			return 'U';
		case CMD_DELETE:
			return 'D';
		case CMD_MERGE:
			return 'M';
		case CMD_INSERT:
			return rri->ri_onConflict != NULL ? 'U' : 0; /* ON CONFLICT DO UPDATE */
		default:
			return 0;
	}
}

/*
 * The statement's ModifyTable nodes: the top one (plain INSERT, UPDATE,
 * DELETE, MERGE) and those of data-modifying CTEs (es_auxmodifytables).
 */
static List *
modify_nodes(QueryDesc *queryDesc)
{
	List *nodes = NIL;
	ListCell *lc;

	if (queryDesc->planstate != NULL && IsA(queryDesc->planstate, ModifyTableState))
		nodes = lappend(nodes, queryDesc->planstate);
	foreach (lc, queryDesc->estate->es_auxmodifytables)
		if (IsA(lfirst(lc), ModifyTableState))
			nodes = lappend(nodes, lfirst(lc));
	return nodes;
}

/* A note: a JSON array of strings, the table's schema and name first. */
static void
write_note(const char *prefix, Relation rel, List *more)
{
	StringInfoData buf;
	char *nsp = get_namespace_name(RelationGetNamespace(rel));
	ListCell *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	escape_json(&buf, nsp);
	appendStringInfoChar(&buf, ',');
	escape_json(&buf, RelationGetRelationName(rel));
	foreach (lc, more)
	{
		appendStringInfoChar(&buf, ',');
		escape_json(&buf, (const char *) lfirst(lc));
	}
	appendStringInfoChar(&buf, ']');
	LogLogicalMessage(prefix, buf.data, buf.len, true);
	pfree(buf.data);
}

/*
 * Notes matter only in bv_cdc.database (the slot decodes that database
 * alone) while the extension exists there (the worker says so in shared
 * memory); elsewhere they would be WAL for nobody.
 */
static bool
notes_wanted(void)
{
	static int in_cdc_database = -1;

	if (in_cdc_database < 0)
	{
		char *name = get_database_name(MyDatabaseId);

		in_cdc_database = name != NULL && cdc_database != NULL && strcmp(name, cdc_database) == 0;
	}
	return in_cdc_database && cdc_shared != NULL && !cdc_shared->logged_no_extension;
}

static bool
notes_possible(QueryDesc *queryDesc, int eflags)
{
	return !(eflags & EXEC_FLAG_EXPLAIN_ONLY) && queryDesc->estate != NULL &&
		   (queryDesc->operation != CMD_SELECT || queryDesc->plannedstmt->hasModifyingCTE) &&
		   XLogLogicalInfoActive() && !IsInParallelMode() && !RecoveryInProgress() &&
		   notes_wanted();
}

static bool
table_noted(Oid relid)
{
	int i;

	for (i = 0; i < nnoted; i++)
		if (noted[i].relid == relid)
			return true;
	return false;
}

/*
 * cdc_internal_schema
 *		Schemas bv_cdc never publishes, whatever the routes say (issue #17
 *		item 14): system catalogs and the suite's internals.  The same list
 *		as bv_cdc.is_internal_schema() in SQL.
 */
bool
cdc_internal_schema(const char *schema)
{
	static const char *const internal[] = {"pg_catalog", "information_schema", "pg_toast", "bv",
										   "bv_audit", "bv_cdc", "cron"};
	int i;

	for (i = 0; i < lengthof(internal); i++)
		if (strcmp(schema, internal[i]) == 0)
			return true;
	return strncmp(schema, "pg_temp_", 8) == 0 || strncmp(schema, "pg_toast_temp_", 14) == 0;
}

/* A table whose changes the worker never publishes, or a view, or ... */
static bool
not_a_cdc_table(Relation rel)
{
	return rel->rd_rel->relkind != RELKIND_RELATION ||
		   cdc_internal_schema(get_namespace_name(RelationGetNamespace(rel)));
}

/*
 * bv.columns: before the transaction's first update of a table that can
 * hold out-of-line (TOAST) values, unless its replica identity is FULL
 * (then the old row carries every column).
 */
static void
note_columns(QueryDesc *queryDesc)
{
	List *nodes = modify_nodes(queryDesc);
	ListCell *lc;

	foreach (lc, nodes)
	{
		ModifyTableState *mt = lfirst(lc);
		int r;

		for (r = 0; r < mt->mt_nrels; r++)
		{
			ResultRelInfo *rri = &mt->resultRelInfo[r];
			Relation rel = rri->ri_RelationDesc;
			TupleDesc td = RelationGetDescr(rel);
			char kind = modify_kind(mt, rri);
			List *names = NIL;
			int i;

			if ((kind != 'U' && kind != 'M') || !OidIsValid(rel->rd_rel->reltoastrelid) ||
				rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL ||
				table_noted(RelationGetRelid(rel)) || not_a_cdc_table(rel))
				continue;
			for (i = 0; i < td->natts; i++)
			{
				Form_pg_attribute att = TupleDescAttr(td, i);

				if (!att->attisdropped)
					names = lappend(names, NameStr(att->attname));
			}
			write_note(BV_CDC_COLUMNS_PREFIX, rel, names);
			list_free(names);
			if (nnoted < MAX_NOTED)
			{
				noted[nnoted].relid = RelationGetRelid(rel);
				noted[nnoted].subid = GetCurrentSubTransactionId();
				nnoted++;
			}
		}
	}
	list_free(nodes);
}

/*
 * Before a statement ends (its plan and result relations still open): a
 * bv.noidentity note for each table without replica identity whose rows it
 * updated, deleted or merged.  The row count is the statement's for the top
 * node; a data-modifying CTE's own count is not kept by the executor, so its
 * note says "an unknown number of" (and is written even if it changed none).
 */
static void
cdc_executor_end(QueryDesc *queryDesc)
{
	if (queryDesc->estate != NULL &&
		notes_possible(queryDesc, queryDesc->estate->es_top_eflags))
	{
		List *nodes = modify_nodes(queryDesc);
		ListCell *lc;

		foreach (lc, nodes)
		{
			ModifyTableState *mt = lfirst(lc);
			bool top = (PlanState *) mt == queryDesc->planstate;
			int r;

			if (top && queryDesc->estate->es_processed == 0)
				continue;
			for (r = 0; r < mt->mt_nrels; r++)
			{
				ResultRelInfo *rri = &mt->resultRelInfo[r];
				Relation rel = rri->ri_RelationDesc;
				char kind = modify_kind(mt, rri);
				char op[2] = {kind, '\0'};
				char rows[32];
				List *more;

				if (kind == 0 || rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL ||
					OidIsValid(RelationGetReplicaIndex(rel)) || not_a_cdc_table(rel))
					continue;
				if (top)
					snprintf(rows, sizeof(rows), UINT64_FORMAT, queryDesc->estate->es_processed);
				else
					strlcpy(rows, "an unknown number of", sizeof(rows));
				more = lappend(lappend(NIL, op), rows);
				write_note(BV_CDC_NOIDENT_PREFIX, rel, more);
				list_free(more);
			}
		}
		list_free(nodes);
	}
	if (prev_executor_end)
		prev_executor_end(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

static void
forget_notes(Datum arg, Oid relid)
{
	nnoted = 0;
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
			nnoted = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			cdc_config_dirty = false;
			cdc_spool_dirty = false;
			trace_written_in = InvalidSubTransactionId;
			nnoted = 0;
			break;
		default:
			break;
	}
}

static void
cdc_subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
					 void *arg)
{
	int i, j = 0;

	/* Notes of an aborted subtransaction are gone; a committed one's are its parent's. */
	for (i = 0; i < nnoted; i++)
	{
		if (noted[i].subid == mySubid && event == SUBXACT_EVENT_ABORT_SUB)
			continue;
		if (noted[i].subid == mySubid && event == SUBXACT_EVENT_COMMIT_SUB)
			noted[i].subid = parentSubid;
		noted[j++] = noted[i];
	}
	nnoted = j;
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
	DefineCustomIntVariable(
		"bv_cdc.stall_timeout",
		"Time without any acknowledgement, with messages in flight, after which a sink is "
		"reported as stalled.",
		"A hung broker or receiver accepts connections but acknowledges nothing; "
		"bv_cdc.stats shows it as 'stalled' until acknowledgements resume.  0 disables.",
		&cdc_stall_timeout_ms, 10000, 0, 3600000, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("bv_cdc.trace_messages",
							 "Write each writing transaction's traceparent into the WAL.",
							 "bv_cdc puts it in the Kafka headers of the transaction's changes.",
							 &cdc_trace_messages, true, PGC_SUSET, 0, NULL, NULL, NULL);
	cdc_define_destination_settings();
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
	prev_executor_end = ExecutorEnd_hook;
	ExecutorEnd_hook = cdc_executor_end;
	CacheRegisterRelcacheCallback(forget_notes, (Datum) 0);
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
