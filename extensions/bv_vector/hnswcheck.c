/*
 * hnswcheck.c: bv_vector.hnsw_check(index), an amcheck-style verification
 * of an hnsw index's structure.
 *
 * Two passes over the pages.  The first checks every element tuple on its
 * own: its size matches its level, m and the index's dimensions, its
 * neighbor counts fit their lists, its vector is finite, and a deleted
 * element has no heap TID while a live one has, and a free one (a slot
 * VACUUM released for reuse, hnswvacuum.c) has no links.  The second checks
 * every link: it points to an element tuple of the index, not to itself,
 * and the element it points to has the link's level (read again when the
 * first pass saw a lower one: an insert may have reused the slot since).  The metapage's entry point
 * must be an element of the entry level.  Any failure raises
 * ERRCODE_INDEX_CORRUPTED naming the element.
 *
 * It also counts what is not an error: live elements that cannot be reached
 * from the entry point over layer-0 links, which scans therefore never return
 * (the neighbor heuristic can drop every link to an element; after a crash in the middle of an insert, an element may
 * be written without its reverse links yet; see hnswinsert.c) and elements
 * above the entry level (a crash before the entry point moved), and links from
 * live elements to deleted ones, which VACUUM repairs (hnswvacuum.c).
 *
 * Locking: AccessShareLock on the table and the index, as amcheck's
 * bt_index_check; pages are share-locked one at a time, so concurrent
 * inserts may add links during the check: links are only checked against
 * elements seen in the first pass, and a new element reached only by a
 * new link is skipped, not reported.
 * Memory: the map of elements lives in the function's memory context.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "access/table.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "commands/defrem.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

typedef struct CheckEntry
{
	uint64 key;
	int32 id;
	int16 level;
	bool deleted;
} CheckEntry;

static CheckEntry *
MapFind(HTAB *map, ItemPointer tid, HASHACTION action, bool *found)
{
	uint64 key = HnswTidKey(tid);

	return hash_search(map, &key, action, found);
}

static void *
palloc_copy(const void *p, Size n)
{
	void *r = palloc(n);

	memcpy(r, p, n);
	return r;
}

static void
Corrupt(Relation index, BlockNumber blk, OffsetNumber off, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INDEX_CORRUPTED),
			 errmsg("hnsw index \"%s\" is corrupt at element (%u,%u)",
					RelationGetRelationName(index), blk, off),
			 errdetail("%s", what),
			 errhint("REINDEX the index.")));
}

/*
 * The element at tid has level lc or more now: an insert may have reused a
 * free slot (hnswvacuum.c) for an element of a higher level after the
 * first pass read it, and linked to it.
 */
static bool
LevelNow(Relation index, ItemPointer tid, int lc)
{
	Buffer buf = ReadBuffer(index, ItemPointerGetBlockNumber(tid));
	HnswElementTuple et;
	bool ok;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	et = (HnswElementTuple) PageGetItem(BufferGetPage(buf),
										PageGetItemId(BufferGetPage(buf), ItemPointerGetOffsetNumber(tid)));
	ok = et->level >= lc;
	UnlockReleaseBuffer(buf);
	return ok;
}

PG_FUNCTION_INFO_V1(hnsw_check);
Datum
hnsw_check(PG_FUNCTION_ARGS)
{
	Oid indexoid = PG_GETARG_OID(0);
	Oid heapoid = IndexGetRelation(indexoid, true);
	Relation heap = NULL;
	Relation index;
	HnswMetaPageData meta;
	BlockNumber nblocks;
	HASHCTL ctl;
	HTAB *map;
	int64 elements = 0;
	int64 deleted = 0;
	int64 above = 0;
	int64 unreachable = 0;
	int64 dead_links = 0;
	List *deadids = NIL;
	int32 **adj;
	int *nadj;
	bool *seen;
	List *pending = NIL;
	ListCell *cell;
	int32 *queue;
	int qh = 0,
		qt = 0;
	TupleDesc tupdesc;
	Datum values[6];
	bool nulls[6] = {0};

	if (OidIsValid(heapoid))
		heap = table_open(heapoid, AccessShareLock);
	index = index_open(indexoid, AccessShareLock);
	if (index->rd_rel->relam != get_index_am_oid("hnsw", false))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an hnsw index", RelationGetRelationName(index)),
				 errhint("Pass an index created with USING hnsw.")));
	HnswReadMeta(index, &meta);
	nblocks = RelationGetNumberOfBlocks(index);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(CheckEntry);
	ctl.hcxt = CurrentMemoryContext;
	map = hash_create("hnsw check", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* 1. each element on its own */
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf = ReadBuffer(index, blk);
		Page page;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
		{
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				ItemId iid = PageGetItemId(page, off);
				HnswElementTuple et = (HnswElementTuple) PageGetItem(page, iid);
				Vector *v;
				ItemPointerData tid;
				CheckEntry *ce;
				bool found;

				if (!ItemIdIsNormal(iid) || ItemIdGetLength(iid) < sizeof(HnswElementTupleData))
					Corrupt(index, blk, off, "The item is not an element tuple.");
				if (et->level > HNSW_MAX_LEVEL || et->m < HNSW_MIN_M || et->m > HNSW_MAX_M)
					Corrupt(index, blk, off, psprintf("Level %d or m %d is out of range.", et->level, et->m));
				if (ItemIdGetLength(iid) != HnswElementTupleSize(meta.dims, et->m, et->level))
					Corrupt(index, blk, off,
							psprintf("The tuple has %u bytes; level %d, m %d and %d dimensions need %zu.",
									 ItemIdGetLength(iid), et->level, et->m, meta.dims,
									 HnswElementTupleSize(meta.dims, et->m, et->level)));
				v = HnswTupleVector(et);
				if (v->dim != meta.dims || VARSIZE(v) != VECTOR_SIZE(meta.dims))
					Corrupt(index, blk, off, psprintf("The vector has %d dimensions, the index %d.", v->dim, meta.dims));
				for (int i = 0; i < v->dim; i++)
					if (isnan(v->x[i]) || isinf(v->x[i]))
						Corrupt(index, blk, off, "The vector holds NaN or infinity.");
				for (int lc = 0; lc <= et->level; lc++)
					if (HnswTupleCounts(et)[lc] > HnswLevelSlots(et->m, lc))
						Corrupt(index, blk, off,
								psprintf("Level %d has %d neighbors in %d slots.", lc,
										 HnswTupleCounts(et)[lc], HnswLevelSlots(et->m, lc)));
				if (et->deleted > HNSW_FREE)
					Corrupt(index, blk, off, psprintf("The deleted flag is %d.", et->deleted));
				for (int lc = 0; et->deleted == HNSW_FREE && lc <= et->level; lc++)
					if (HnswTupleCounts(et)[lc] != 0)
						Corrupt(index, blk, off, "A free element keeps links.");
				if (et->deleted ? ItemPointerIsValid(&et->heaptid) : !ItemPointerIsValid(&et->heaptid))
					Corrupt(index, blk, off, et->deleted ? "A deleted element keeps its heap TID." : "A live element has no heap TID.");
				ItemPointerSet(&tid, blk, off);
				ce = MapFind(map, &tid, HASH_ENTER, &found);
				ce->id = elements++;
				if (et->deleted)
					deadids = lappend_int(deadids, ce->id);
				ce->level = et->level;
				ce->deleted = et->deleted != 0;
				if (et->deleted)
					deleted++;
				else if (et->level > meta.entry_level)
					above++;
			}
		}
		UnlockReleaseBuffer(buf);
	}

	/* the entry point */
	if (meta.entry_level >= 0)
	{
		CheckEntry *ce = MapFind(map, &meta.entry, HASH_FIND, NULL);

		if (ce == NULL || ce->level != meta.entry_level)
			Corrupt(index, ItemPointerGetBlockNumberNoCheck(&meta.entry),
					ItemPointerGetOffsetNumberNoCheck(&meta.entry),
					"The metapage's entry point is not an element of the entry level.");
	}

	/* 2. every link */
	adj = palloc0(sizeof(int32 *) * Max(elements, 1));
	nadj = palloc0(sizeof(int) * Max(elements, 1));
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf = ReadBuffer(index, blk);
		Page page;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
		{
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
				ItemPointerData tid;
				CheckEntry *self;
				int n = 0;

				ItemPointerSet(&tid, blk, off);
				self = MapFind(map, &tid, HASH_FIND, NULL);
				if (self == NULL)
					continue; /* added after the first pass */
				adj[self->id] = palloc(sizeof(int32) * HnswTotalSlots(et->m, et->level));
				for (int lc = 0; lc <= et->level; lc++)
				{
					HnswNeighbor *ns = HnswTupleNeighbors(et, lc);

					for (int i = 0; i < HnswTupleCounts(et)[lc]; i++)
					{
						CheckEntry *ne;

						if (ItemPointerEquals(&ns[i].tid, &tid))
							Corrupt(index, blk, off, psprintf("Level %d links the element to itself.", lc));
						if (ItemPointerGetBlockNumberNoCheck(&ns[i].tid) >= nblocks)
							Corrupt(index, blk, off,
									psprintf("Level %d links to block %u, past the end of the index.",
											 lc, ItemPointerGetBlockNumberNoCheck(&ns[i].tid)));
						ne = MapFind(map, &ns[i].tid, HASH_FIND, NULL);
						if (ne == NULL)
						{
							/* added after the first pass, or dangling: look later */
							void *from = palloc_copy(&tid, sizeof(tid));
							void *to = palloc_copy(&ns[i].tid, sizeof(tid));

							pending = lappend(pending, lappend(list_make1(from), to));
							continue;
						}
						if (ne->level < lc && !LevelNow(index, &ns[i].tid, lc))
							Corrupt(index, blk, off,
									psprintf("Level %d links to (%u,%u), an element of level %d.", lc,
											 ItemPointerGetBlockNumberNoCheck(&ns[i].tid),
											 ItemPointerGetOffsetNumberNoCheck(&ns[i].tid), ne->level));
						if (ne->deleted && !self->deleted)
							dead_links++;
						if (lc == 0)
							adj[self->id][n++] = ne->id;
					}
				}
				nadj[self->id] = n;
			}
		}
		UnlockReleaseBuffer(buf);
	}

	/* links to elements the first pass did not see must lead to elements now */
	foreach (cell, pending)
	{
		List *link = lfirst(cell);
		ItemPointer from = linitial(link);
		ItemPointer to = lsecond(link);
		Buffer buf = ReadBuffer(index, ItemPointerGetBlockNumber(to));
		Page page;
		bool ok;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		ok = !PageIsNew(page) && ItemPointerGetOffsetNumber(to) <= PageGetMaxOffsetNumber(page);
		UnlockReleaseBuffer(buf);
		if (!ok)
			Corrupt(index, ItemPointerGetBlockNumber(from), ItemPointerGetOffsetNumber(from),
					psprintf("A link leads to (%u,%u), which is not an element.",
							 ItemPointerGetBlockNumberNoCheck(to), ItemPointerGetOffsetNumberNoCheck(to)));
	}

	/*
	 * Reachability from the entry point over layer-0 links: what a scan,
	 * which runs its search at layer 0, can return.
	 */
	seen = palloc0(sizeof(bool) * Max(elements, 1));
	queue = palloc(sizeof(int32) * Max(elements, 1));
	if (meta.entry_level >= 0)
	{
		CheckEntry *ce = MapFind(map, &meta.entry, HASH_FIND, NULL);

		seen[ce->id] = true;
		queue[qt++] = ce->id;
	}
	while (qh < qt)
	{
		int32 e = queue[qh++];

		for (int i = 0; i < nadj[e]; i++)
			if (!seen[adj[e][i]])
			{
				seen[adj[e][i]] = true;
				queue[qt++] = adj[e][i];
			}
	}

	/* deleted elements are never returned: only live ones count */
	foreach (cell, deadids)
		seen[lfirst_int(cell)] = true;
	for (int64 i = 0; i < elements; i++)
		if (!seen[i])
			unreachable++;

	index_close(index, AccessShareLock);
	if (heap)
		table_close(heap, AccessShareLock);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(elements);
	values[1] = Int64GetDatum(deleted);
	values[2] = Int32GetDatum(meta.entry_level);
	values[3] = Int64GetDatum(unreachable);
	values[4] = Int64GetDatum(above);
	values[5] = Int64GetDatum(dead_links);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
