/*-------------------------------------------------------------------------
 *
 * wal_context.c
 *	  WAL mode, writer side: put the actor and trace context of each
 *	  statement that writes a WAL-mode table into the WAL.
 *
 * In WAL mode (ADR 0013) no row trigger runs: the WAL worker (wal_worker.c,
 * wal_apply.c) builds the audit records from the decoded changes.  The row
 * images are in the WAL already; who wrote them is not.  So, once per
 * statement that writes a WAL-mode table, the writer emits one
 * transactional logical decoding message (prefix "bv_audit") holding the
 * statement's context: actor, traceparent, application name, client
 * address and the transaction's start time (the worker stamps records with
 * the commit time wal2json reports; the start time only stands in when
 * that is missing, see ADR 0013 "Time").
 * The message is signed with a key only the server holds (wal_key.c).
 * Being transactional, the message is decoded in its transaction, in LSN
 * order before the statement's changes, and vanishes with a rolled-back
 * (sub)transaction, exactly like the changes it describes.  It costs one
 * small WAL record per statement and nothing per row.
 *
 * Which tables are in WAL mode is read from the relcache, never from a
 * catalog query: bv_audit.enable(..., mode => 'wal') gives the table a
 * BEFORE TRUNCATE statement trigger named bv_audit_wal (the "marker"),
 * which costs INSERT, UPDATE and DELETE nothing and is guarded like the
 * capture triggers.  A writer holds its lock on the table before
 * ExecutorStart, and invalidations are processed when a lock is taken, so
 * the trigger descriptor it sees is current.
 *
 * Where the message is emitted:
 *	- ExecutorStart (INSERT, UPDATE, DELETE, MERGE, data-modifying CTEs),
 *	  after the standard start-up has opened the result relations; a
 *	  partitioned result relation counts when any of its partitions is in
 *	  WAL mode (rows are routed to partitions after the start-up);
 *	- ProcessUtility for COPY FROM (which does not use the executor's
 *	  start-up);
 *	- the marker trigger itself for TRUNCATE.
 * ProcessUtility also lets the worker catch up before DDL on a WAL-mode
 * table (drain_before_ddl()).
 *
 * Statements that run inside others (functions, cascades) emit their own
 * message, which also marks the boundary between statements that the
 * worker needs for key moves (see wal_apply.c).
 *
 * At the commit of a transaction that emitted a message, the worker's latch
 * is set (wal_xact_callback), so that it records the change at once rather
 * than at its next poll.
 *
 * Backend-local apart from that latch; no locks beyond the writer's own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "commands/copy.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "replication/message.h"
#include "storage/lmgr.h"
#include "storage/standby.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "bv_audit.h"

static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* Whether a relation carries the WAL-mode marker trigger. */
static bool
rel_is_wal_mode(Relation rel)
{
	TriggerDesc *td = rel->trigdesc;
	int i;

	if (td == NULL || !td->trig_truncate_before_statement)
		return false;
	for (i = 0; i < td->numtriggers; i++)
	{
		Trigger *tg = &td->triggers[i];

		if (tg->tgtype == (TRIGGER_TYPE_BEFORE | TRIGGER_TYPE_TRUNCATE) &&
			tg->tgenabled != TRIGGER_DISABLED && strcmp(tg->tgname, BV_AUDIT_WAL_MARKER) == 0)
			return true;
	}
	return false;
}

/*
 * Whether a write into rel can reach a WAL-mode table: rel itself, or, for
 * a partitioned table, any of its partitions (0.7.0).  INSERT, COPY FROM
 * and INSERT ... ON CONFLICT into a partitioned table open a leaf only
 * while routing its first row, after ExecutorStart, and UPDATE may move a
 * row into a partition it did not open; so the partitions are looked at
 * here.  They are locked as the rows routed to them would lock them
 * (RowExclusiveLock, parent before children as everywhere), so that
 * invalidations are processed and no enable() or disable() of a
 * partition can commit between this test and the write.
 */
static bool
rel_writes_wal_mode(Relation rel)
{
	List *parts;
	ListCell *lc;
	bool wal = false;

	if (rel_is_wal_mode(rel))
		return true;
	if (rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		return false;
	parts = find_all_inheritors(RelationGetRelid(rel), RowExclusiveLock, NULL);
	foreach (lc, parts)
	{
		Relation part;

		if (lfirst_oid(lc) == RelationGetRelid(rel))
			continue;
		part = RelationIdGetRelation(lfirst_oid(lc));
		if (part == NULL)
			continue;
		wal = part->rd_rel->relkind == RELKIND_RELATION && rel_is_wal_mode(part);
		RelationClose(part);
		if (wal)
			break;
	}
	list_free(parts);
	return wal;
}

/*
 * The signed message costs a writer one WAL record per statement; building
 * it should cost little next to that.  The message is
 *	{"a":<actor>,"t":<trace>,"p":<application>,"c":<client>,"s":<start>}\n<MAC>
 * and only "s" (the transaction's start) changes from one transaction to
 * the next while the context stays the same.  So the JSON up to "s" is kept
 * with the context it was built from (msg_prefix), and so is the SipHash
 * state after its whole 8-byte blocks (msg_mac): a statement whose context
 * did not change copies the prefix, appends the start time and hashes only
 * the last few bytes.  The message is the same byte for byte as one built
 * from scratch (the worker cannot tell).  The buffers live in
 * TopMemoryContext, so a statement allocates nothing.
 */
typedef struct MsgCache
{
	bool valid;
	StringInfoData actor; /* the context the prefix was built from */
	StringInfoData trace;
	bool trace_null;
	StringInfoData app;
	bool app_null;
	bool client_null;
	Datum client;
	StringInfoData prefix; /* {"a":...,"s": */
	BvAuditMacState mac;   /* after the prefix's whole blocks */
	size_t mac_done;       /* bytes the state absorbed */
	StringInfoData msg;    /* the message being built */
} MsgCache;

static MsgCache msg_cache;

/* Whether a text Datum (or NULL) equals a cached copy. */
static inline bool
same_text(StringInfo cached, bool cached_null, Datum value, bool isnull)
{
	text *t;

	if (cached_null || isnull)
		return cached_null == isnull;
	t = DatumGetTextPP(value);
	return VARSIZE_ANY_EXHDR(t) == cached->len &&
		   memcmp(VARDATA_ANY(t), cached->data, cached->len) == 0;
}

/* Keep a copy of a text Datum (or nothing for NULL). */
static void
keep_text(StringInfo cached, Datum value, bool isnull)
{
	text *t;

	resetStringInfo(cached);
	if (isnull)
		return;
	t = DatumGetTextPP(value);
	appendBinaryStringInfo(cached, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/* Append ,"key":<JSON string or null> (no comma for the first field). */
static void
append_field(StringInfo buf, const char *key, StringInfo value, bool isnull)
{
	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	appendStringInfoChar(buf, '"');
	appendStringInfoString(buf, key);
	appendStringInfoString(buf, "\":");
	if (isnull)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, value->data);
}

/* Rebuild the cached prefix and MAC state for a new context. */
static void
rebuild_prefix(const BvAuditContext *ctx)
{
	MsgCache *mc = &msg_cache;

	if (mc->prefix.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&mc->actor);
		initStringInfo(&mc->trace);
		initStringInfo(&mc->app);
		initStringInfo(&mc->prefix);
		initStringInfo(&mc->msg);
		MemoryContextSwitchTo(old);
	}
	mc->valid = false;
	keep_text(&mc->actor, ctx->actor, false);
	keep_text(&mc->trace, ctx->trace, ctx->trace_null);
	mc->trace_null = ctx->trace_null;
	keep_text(&mc->app, ctx->app, ctx->app_null);
	mc->app_null = ctx->app_null;
	mc->client_null = ctx->client_null;
	mc->client = ctx->client;

	resetStringInfo(&mc->prefix);
	appendStringInfoChar(&mc->prefix, '{');
	append_field(&mc->prefix, "a", &mc->actor, false);
	append_field(&mc->prefix, "t", &mc->trace, mc->trace_null);
	append_field(&mc->prefix, "p", &mc->app, mc->app_null);
	appendStringInfoString(&mc->prefix, ",\"c\":");
	if (ctx->client_null)
		appendStringInfoString(&mc->prefix, "null");
	else
		escape_json(&mc->prefix, DatumGetCString(DirectFunctionCall1(inet_out, ctx->client)));
	/*
	 * Pad with JSON whitespace so that the MAC state covers the whole
	 * prefix: a statement then hashes only its start time.
	 */
	while ((mc->prefix.len + 5) % 8 != 0)
		appendStringInfoChar(&mc->prefix, ' ');
	appendStringInfoString(&mc->prefix, ",\"s\":");
	mc->mac_done = bv_audit_wal_mac_start(&mc->mac, mc->prefix.data, mc->prefix.len);
	mc->valid = true;
}

/*
 * Emit the context of the current statement as a transactional "bv_audit"
 * message.  Skipped where nothing can be written (recovery, parallel mode,
 * read-only transactions): the statement then fails or writes nothing.
 */
/* This transaction emitted a context message: wake the worker at commit. */
static bool wake_at_commit = false;

void
bv_audit_wal_emit_context(void)
{
	const BvAuditContext *ctx;
	MsgCache *mc = &msg_cache;
	char num[MAXINT8LEN + 1];
	char mac[BV_AUDIT_WAL_MAC_HEX + 1];
	int n;
	size_t json_len;

	if (RecoveryInProgress() || IsInParallelMode() || XactReadOnly)
		return;
	ctx = bv_audit_context();
	/* The client address is the session's: the same Datum every time. */
	if (!mc->valid || !same_text(&mc->actor, false, ctx->actor, false) ||
		!same_text(&mc->trace, mc->trace_null, ctx->trace, ctx->trace_null) ||
		!same_text(&mc->app, mc->app_null, ctx->app, ctx->app_null) ||
		mc->client_null != ctx->client_null || mc->client != ctx->client)
		rebuild_prefix(ctx);

	resetStringInfo(&mc->msg);
	appendBinaryStringInfo(&mc->msg, mc->prefix.data, mc->prefix.len);
	/* The transaction's start, in microseconds since 2000-01-01 UTC. */
	n = pg_lltoa((int64) GetCurrentTransactionStartTimestamp(), num);
	appendBinaryStringInfo(&mc->msg, num, n);
	appendStringInfoChar(&mc->msg, '}');
	json_len = mc->msg.len;
	/* Signed (wal_key.c): "<json>\n<mac>". */
	bv_audit_wal_mac_finish(&mc->mac, mc->mac_done, mc->msg.data, json_len, mac);
	appendStringInfoChar(&mc->msg, '\n');
	appendBinaryStringInfo(&mc->msg, mac, BV_AUDIT_WAL_MAC_HEX);
	LogLogicalMessage(BV_AUDIT_WAL_PREFIX, mc->msg.data, mc->msg.len, true);
	wake_at_commit = true;
}

/*
 * At the commit of a transaction that wrote a WAL-mode table, wake the
 * worker (wal_worker.c) instead of leaving the change to its next poll.
 * The commit record is flushed before XACT_EVENT_COMMIT (synchronous
 * commit) or soon after; the worker reads up to the flushed position, so a
 * wake-up that comes a moment early only costs one more pass.
 */
static void
wal_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				bv_audit_wal_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Does the starting statement write a WAL-mode table? */
static bool
writes_wal_table(QueryDesc *qd)
{
	ListCell *lc;

	if (qd->estate == NULL)
		return false;
	foreach (lc, qd->estate->es_opened_result_relations)
	{
		ResultRelInfo *rri = (ResultRelInfo *) lfirst(lc);

		if (rri->ri_RelationDesc != NULL && rel_writes_wal_mode(rri->ri_RelationDesc))
			return true;
	}
	return false;
}

static void
bv_audit_executor_start(QueryDesc *qd, int eflags)
{
	if (prev_executor_start)
		prev_executor_start(qd, eflags);
	else
		standard_ExecutorStart(qd, eflags);

	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0 &&
		(qd->operation == CMD_INSERT || qd->operation == CMD_UPDATE ||
		 qd->operation == CMD_DELETE || qd->operation == CMD_MERGE ||
		 qd->plannedstmt->hasModifyingCTE) &&
		writes_wal_table(qd))
		bv_audit_wal_emit_context();
}

/*
 * The table an ALTER TABLE, RENAME or SET SCHEMA command names, if it is a
 * table (else NULL).
 */
static RangeVar *
altered_table(Node *parsetree)
{
	if (IsA(parsetree, AlterTableStmt) && ((AlterTableStmt *) parsetree)->objtype == OBJECT_TABLE)
		return ((AlterTableStmt *) parsetree)->relation;
	if (IsA(parsetree, RenameStmt) &&
		(((RenameStmt *) parsetree)->renameType == OBJECT_TABLE ||
		 ((RenameStmt *) parsetree)->renameType == OBJECT_COLUMN) &&
		((RenameStmt *) parsetree)->relationType == OBJECT_TABLE)
		return ((RenameStmt *) parsetree)->relation;
	if (IsA(parsetree, AlterObjectSchemaStmt) &&
		((AlterObjectSchemaStmt *) parsetree)->objectType == OBJECT_TABLE)
		return ((AlterObjectSchemaStmt *) parsetree)->relation;
	return NULL;
}

/*
 * Is relid a WAL-mode table?
 */
static bool
relid_is_wal_mode(Oid relid)
{
	Relation rel = RelationIdGetRelation(relid);
	bool wal;

	if (rel == NULL)
		return false;
	wal = rel->rd_rel->relkind == RELKIND_RELATION && rel_is_wal_mode(rel);
	RelationClose(rel);
	return wal;
}

/*
 * Before DDL on a WAL-mode table: keep its writers out (SHARE ROW
 * EXCLUSIVE, which the command then strengthens), and let the WAL worker
 * record every change committed so far, under the table's old shape.  This
 * must happen before the command takes its own locks: decoding a change
 * may need to open the table's indexes, which the command then holds
 * exclusively.  Only the table's owner gets this far (anyone else's
 * command fails anyway, and must not block the table's writers).
 *
 * ALTER TABLE on a partitioned table or an inheritance parent recurses
 * into its partitions and children: the WAL-mode ones among them are
 * locked and drained the same way (0.5.0).
 */
static void
drain_before_ddl(RangeVar *rv)
{
	Oid relid = RangeVarGetRelid(rv, NoLock, true);
	Relation rel;
	List *wal_rels = NIL;
	bool has_children;
	ListCell *lc;
	int ret;
	Oid save_userid;
	int save_sec;

	if (!OidIsValid(relid) || !pg_class_ownercheck(relid, GetUserId()))
		return;
	rel = RelationIdGetRelation(relid);
	if (rel == NULL)
		return;
	has_children = rel->rd_rel->relhassubclass;
	RelationClose(rel);
	if (relid_is_wal_mode(relid))
		wal_rels = lappend_oid(wal_rels, relid);
	if (has_children)
	{
		List *children = find_all_inheritors(relid, NoLock, NULL);

		foreach (lc, children)
		{
			Oid child = lfirst_oid(lc);

			if (child != relid && relid_is_wal_mode(child))
				wal_rels = lappend_oid(wal_rels, child);
		}
	}
	if (wal_rels == NIL)
		return;
	foreach (lc, wal_rels)
		LockRelationOid(lfirst_oid(lc), ShareRowExclusiveLock);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* bv_audit's internals are nobody's to call: run as the bootstrap superuser. */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	ret = SPI_execute("SELECT bv_audit._wal_drain('ALTER TABLE')", false, 0);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "bv_audit._wal_drain() failed: %s", SPI_result_code_string(ret));
	SPI_finish();
}

static void
bv_audit_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						 ProcessUtilityContext context, ParamListInfo params,
						 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, CopyStmt) && ((CopyStmt *) parsetree)->is_from &&
		((CopyStmt *) parsetree)->relation != NULL && IsTransactionState() &&
		!RecoveryInProgress() && !XactReadOnly)
	{
		/* COPY FROM takes this lock itself right after. */
		Relation rel = table_openrv_extended(((CopyStmt *) parsetree)->relation,
											 RowExclusiveLock, true);

		if (rel != NULL)
		{
			bool wal = rel_writes_wal_mode(rel);

			table_close(rel, NoLock);
			if (wal)
				bv_audit_wal_emit_context();
		}
	}
	if (IsTransactionState() && !RecoveryInProgress())
	{
		RangeVar *rv = altered_table(parsetree);

		if (rv != NULL)
			drain_before_ddl(rv);
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

/* Install the hooks (from _PG_init, preloaded or not). */
void
bv_audit_wal_hooks_init(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = bv_audit_executor_start;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = bv_audit_process_utility;
	RegisterXactCallback(wal_xact_callback, NULL);
}

PG_FUNCTION_INFO_V1(bv_audit_wal_marker_trigger);

/*
 * bv_audit.wal_marker_trigger(): the BEFORE TRUNCATE statement trigger that
 * marks a table as WAL-mode and gives its TRUNCATEs their context.
 */
Datum
bv_audit_wal_marker_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv_audit.wal_marker_trigger() must be a BEFORE TRUNCATE trigger"),
				 errhint("Install it with bv_audit.enable(..., mode => 'wal').")));
	bv_audit_wal_emit_context();
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(bv_audit_wal_flush);

/*
 * bv_audit._wal_flush(): the current WAL insert position, flushed.  Every
 * commit record inserted before the call lies before it and can be decoded.
 */
Datum
bv_audit_wal_flush(PG_FUNCTION_ARGS)
{
	XLogRecPtr lsn = GetXLogInsertRecPtr();

	XLogFlush(lsn);
	PG_RETURN_LSN(lsn);
}

PG_FUNCTION_INFO_V1(bv_audit_wal_log_running_xacts);

/*
 * bv_audit._wal_log_running_xacts(): log a running-transactions record now
 * and return its position.  A logical slot being created reaches its
 * consistent point only at such records (the bgwriter writes one every 15
 * s); enable() calls this while it waits for the worker's new slot, so that
 * the slot is ready as soon as the transactions it waits for have ended.
 */
Datum
bv_audit_wal_log_running_xacts(PG_FUNCTION_ARGS)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("recovery is in progress"),
				 errhint("WAL mode records changes on the primary only.")));
	PG_RETURN_LSN(LogStandbySnapshot());
}
