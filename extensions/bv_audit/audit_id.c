/*-------------------------------------------------------------------------
 *
 * audit_id.c
 *	  audit_id: the ids of audit records, from blocks of the audit_id
 *	  sequence handed out through shared memory.
 *
 * Every audit record gets an audit_id, and the ids promise two things:
 * they are unique, and a later version of a row gets a larger id than an
 * earlier one (history() and as_of() order a row's versions by it; a
 * second writer of a row can only write after the first one's commit, so
 * any id taken later in real time will do).  nextval() on one shared
 * sequence keeps both promises but costs, per record, a lock on the
 * sequence, a buffer lock and a WAL record every 32 calls: about a fifth of
 * what the capture trigger spends.  A per-backend sequence cache would
 * break the second promise.
 *
 * So, when bv_audit is in shared_preload_libraries, each database gets a
 * slot in shared memory holding the rest of one block of ids:
 * bv_audit.audit_id_seq increases by a block (1,024) per nextval(), a
 * nextval() reserves the block [v, v + increment), and backends take ids
 * from the slot one at a time under its spinlock.  Taking from one shared
 * counter keeps the order across backends; a block is always reserved
 * through the sequence, so ids stay unique across restarts, crashes (the
 * sequence's WAL record precedes the commit of any record using its
 * block), dump and restore (pg_dump restores the sequence) and databases
 * (each database has its own sequence and slot).  The ids left in a block
 * at a restart are skipped: ids have gaps, never repeats.
 *
 * Refilling takes no lock of ours: a backend that finds the slot empty
 * reserves a block with nextval() (no spinlock held) and installs it only
 * if the slot is still empty and the block lies after the one it replaces
 * (blocks of one sequence only grow); otherwise it drops the block and
 * takes from the slot.  Several backends refilling at once waste a block
 * or two, nothing else.
 *
 * Without shared memory (bv_audit not preloaded), or when every slot is
 * taken by other databases, an id is one nextval(): correct, and as slow
 * as before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_sequence.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "bv_audit.h"

/* Databases served from shared memory at once; the others use nextval(). */
#define AUDIT_ID_SLOTS 64

typedef struct AuditIdSlot
{
	slock_t mutex;
	Oid dbid;     /* InvalidOid: free */
	Oid seqrelid; /* the sequence the block came from */
	int64 next;   /* next id to hand out */
	int64 limit;  /* first id past the block; next == limit: empty */
} AuditIdSlot;

typedef struct AuditIdShared
{
	slock_t mutex; /* guards the assignment of slots to databases */
	AuditIdSlot slots[AUDIT_ID_SLOTS];
} AuditIdShared;

static AuditIdShared *audit_ids = NULL;
static AuditIdSlot *my_slot = NULL;  /* this backend's database's slot */
static bool my_slot_missing = false; /* every slot was taken */

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
audit_ids_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditIdShared)));
}

static void
audit_ids_shmem_startup(void)
{
	bool found;
	int i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	audit_ids = ShmemInitStruct("bv_audit ids", sizeof(AuditIdShared), &found);
	if (!found)
	{
		SpinLockInit(&audit_ids->mutex);
		for (i = 0; i < AUDIT_ID_SLOTS; i++)
		{
			SpinLockInit(&audit_ids->slots[i].mutex);
			audit_ids->slots[i].dbid = InvalidOid;
			audit_ids->slots[i].seqrelid = InvalidOid;
			audit_ids->slots[i].next = audit_ids->slots[i].limit = 0;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * bv_audit_ids_init
 *		Install the shared-memory hooks; called from _PG_init only while
 *		shared_preload_libraries is being processed.
 */
void
bv_audit_ids_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = audit_ids_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = audit_ids_shmem_startup;
}

/* This database's slot, claimed on first use; NULL when none is free. */
static AuditIdSlot *
database_slot(void)
{
	int i, free_slot = -1;

	if (my_slot != NULL || my_slot_missing || audit_ids == NULL)
		return my_slot;
	SpinLockAcquire(&audit_ids->mutex);
	for (i = 0; i < AUDIT_ID_SLOTS && my_slot == NULL; i++)
	{
		if (audit_ids->slots[i].dbid == MyDatabaseId)
			my_slot = &audit_ids->slots[i];
		else if (free_slot < 0 && audit_ids->slots[i].dbid == InvalidOid)
			free_slot = i;
	}
	if (my_slot == NULL && free_slot >= 0)
	{
		my_slot = &audit_ids->slots[free_slot];
		my_slot->dbid = MyDatabaseId; /* next == limit: empty */
	}
	SpinLockRelease(&audit_ids->mutex);
	my_slot_missing = (my_slot == NULL);
	return my_slot;
}

/* The increment of the sequence: the size of the blocks it reserves. */
static int64
sequence_increment(Oid seqrelid)
{
	HeapTuple tuple = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seqrelid));
	int64 increment;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for sequence %u", seqrelid);
	increment = ((Form_pg_sequence) GETSTRUCT(tuple))->seqincrement;
	ReleaseSysCache(tuple);
	if (increment <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequence bv_audit.audit_id_seq must increase"),
				 errdetail("Audit records are ordered by their ids; its increment is " INT64_FORMAT ".",
						   increment),
				 errhint("ALTER SEQUENCE bv_audit.audit_id_seq INCREMENT BY 1024;")));
	return increment;
}

/*
 * bv_audit_next_id
 *		A new audit_id from sequence seqrelid (see the file comment).
 */
int64
bv_audit_next_id(Oid seqrelid)
{
	AuditIdSlot *slot = database_slot();

	if (slot == NULL)
		return nextval_internal(seqrelid, false);

	for (;;)
	{
		int64 id, start, increment;

		SpinLockAcquire(&slot->mutex);
		if (slot->seqrelid == seqrelid && slot->next < slot->limit)
		{
			id = slot->next++;
			SpinLockRelease(&slot->mutex);
			return id;
		}
		SpinLockRelease(&slot->mutex);

		/* Empty: reserve a block, then install it unless someone was first. */
		start = nextval_internal(seqrelid, false);
		increment = sequence_increment(seqrelid);
		SpinLockAcquire(&slot->mutex);
		if (slot->seqrelid != seqrelid ||
			(slot->next >= slot->limit && start >= slot->limit))
		{
			slot->seqrelid = seqrelid;
			slot->next = start;
			slot->limit = start + increment;
		}
		SpinLockRelease(&slot->mutex);
	}
}

PG_FUNCTION_INFO_V1(bv_audit_next_audit_id);

/*
 * bv_audit.next_audit_id(): the default of every audit table's audit_id.
 */
Datum
bv_audit_next_audit_id(PG_FUNCTION_ARGS)
{
	Oid seqrelid = get_relname_relid("audit_id_seq", get_namespace_oid("bv_audit", false));

	if (!OidIsValid(seqrelid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence bv_audit.audit_id_seq does not exist"),
				 errhint("Reinstall the bv_audit extension.")));
	PG_RETURN_INT64(bv_audit_next_id(seqrelid));
}
