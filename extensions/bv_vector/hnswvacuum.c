/*
 * hnswvacuum.c: VACUUM of an hnsw index, in three passes over the pages.
 *
 * 1. Mark.  An element whose heap tuple VACUUM is removing is marked deleted
 *    and its heap TID cleared, in one generic WAL record per page.  Every
 *    deleted element, of this VACUUM or an earlier one, goes into a set.
 *    The heap TID is cleared before the heap's second pass frees the line
 *    pointer, so an element never points at a tuple that reuses the TID.
 *
 * 2. Repair.  A live element whose neighbor list at some level names a
 *    deleted element gets a new list at that level, chosen with the insert's
 *    heuristic (HnswSelectNeighbors) from its live neighbors and the
 *    "bridges" of the deleted ones (the live elements reached from a deleted
 *    neighbor over deleted elements), keeping at least one member of each
 *    bridge: the paths that ran through deleted elements now go around
 *    them, so searches stop spending their ef on rows they cannot return,
 *    and elements reachable only through deleted ones stay reachable.  The list is computed from a copy
 *    taken under a share lock and written under an exclusive lock; links a
 *    concurrent insert added meanwhile are kept while slots remain.
 *
 * 3. Entry point.  If the entry point is deleted, the live element of the
 *    highest level seen in pass 2 becomes the entry point (under the
 *    exclusive HNSW_UPDATE_LOCK that orders entry-point changes, see
 *    hnswinsert.c); with no live element left the index is empty again.
 *
 * 4. Reconnect.  What the entry point reaches over level-0 links between
 *    live elements is marked (in memory, within maintenance_work_mem), and
 *    each group of live elements it does not reach is linked both ways with
 *    the nearest reached element a level-0 search from the entry point
 *    finds.  (Scans return only what level 0 connects to where they land.)  Bridges are
 *    bounded (HNSW_BRIDGE_VISITS), so a cluster whose every path ran through
 *    a long stretch of deleted elements is found here.
 *
 * A deleted element keeps its own links (a scan that already holds its TID
 * still travels through it) and its space: the slot is not reused, REINDEX
 * compacts.  Inserts do not choose deleted elements as neighbors
 * (hnswinsert.c), so pass 2 has nothing left to repair after a VACUUM
 * unless an insert read an element just before pass 1 marked it.
 *
 * amvacuumcleanup counts the live elements and pages.
 * Locking: one buffer lock at a time.  Memory: a context reset per page.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"

/* a live element's neighbor list (one level) that names a deleted element */
typedef struct RepairItem
{
	ItemPointerData tid;
	int lc;
	Vector *vec;
	int nold;
	ItemPointerData old[2 * HNSW_MAX_M];
} RepairItem;

static inline bool
IsDead(HnswTidSet *dead, ItemPointer tid)
{
	return HnswTidSetContains(dead, HnswTidKey(tid));
}

/* pass 1: mark the removed rows' elements; collect every deleted element */
static void
HnswMarkDeleted(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				IndexBulkDeleteCallback callback, void *callback_state,
				HnswTidSet *dead, int64 *ndead)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);

	/* a VACUUM may call bulkdelete more than once: count this pass's elements */
	stats->num_index_tuples = 0;
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf;
		Page page;
		GenericXLogState *state = NULL;
		OffsetNumber maxoff;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		if (PageIsNew(page))
		{
			UnlockReleaseBuffer(buf);
			continue;
		}
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
			ItemPointerData tid;

			ItemPointerSet(&tid, blk, off);
			if (et->deleted)
			{
				HnswTidSetAdd(dead, HnswTidKey(&tid));
				(*ndead)++;
				continue;
			}
			if (!callback(&et->heaptid, callback_state))
			{
				stats->num_index_tuples++;
				continue;
			}
			if (state == NULL)
			{
				state = GenericXLogStart(index);
				page = GenericXLogRegisterBuffer(state, buf, 0);
				et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
			}
			et->deleted = 1;
			ItemPointerSetInvalid(&et->heaptid);
			stats->tuples_removed++;
			HnswTidSetAdd(dead, HnswTidKey(&tid));
			(*ndead)++;
		}
		if (state != NULL)
			GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
	}
	stats->num_pages = nblocks;
}

/* how many deleted elements a bridge search visits per deleted neighbor */
#define HNSW_BRIDGE_VISITS 64

/* the candidates for one item's new list */
typedef struct RepairCands
{
	HnswCandidate *c;
	int n;
	int cap;
	HnswTidSet *seen;
} RepairCands;

/* tid as a candidate (if live, of the item's level and new); its index or -1 */
static int
AddCandidate(Relation index, const HnswDistance *hd, RepairItem *item, RepairCands *rc,
			 ItemPointer tid)
{
	HnswCandidate *c;

	if (ItemPointerEquals(tid, &item->tid))
		return -1;
	if (!HnswTidSetAdd(rc->seen, HnswTidKey(tid)))
	{
		for (int i = 0; i < rc->n; i++)
			if (ItemPointerEquals(&rc->c[i].tid, tid))
				return i;
		return -1;
	}
	if (rc->n == rc->cap)
		rc->c = repalloc(rc->c, sizeof(HnswCandidate) * (rc->cap *= 2));
	c = &rc->c[rc->n];
	HnswLoadElement(index, tid, hd, item->vec, c, true, NULL, NULL, item->lc);
	if (!ItemPointerIsValid(&c->heaptid) || c->level < item->lc)
		return -1;
	return rc->n++;
}

/*
 * The bridge of a deleted neighbor: the live elements reached from it over
 * links between deleted elements (a bounded breadth-first search), added as
 * candidates.  Returns the nearest of them to the item (an index into the
 * candidates), or -1 when the deleted neighbor led nowhere live.
 */
static int
AddBridge(Relation index, const HnswDistance *hd, HnswTidSet *dead, RepairItem *item,
		  RepairCands *rc, ItemPointer from)
{
	ItemPointerData queue[HNSW_BRIDGE_VISITS];
	HnswTidSet *visited = HnswTidSetCreate(CurrentMemoryContext, HNSW_BRIDGE_VISITS * 2);
	ItemPointerData *nbrs = palloc(sizeof(ItemPointerData) * 2 * HNSW_MAX_M);
	int qh = 0,
		qt = 0;
	int nearest = -1;

	queue[qt++] = *from;
	HnswTidSetAdd(visited, HnswTidKey(from));
	while (qh < qt)
	{
		HnswCandidate tmp;
		int nn;

		HnswLoadElement(index, &queue[qh++], hd, NULL, &tmp, false, nbrs, &nn, item->lc);
		for (int j = 0; j < nn; j++)
		{
			if (IsDead(dead, &nbrs[j]))
			{
				if (qt < HNSW_BRIDGE_VISITS && HnswTidSetAdd(visited, HnswTidKey(&nbrs[j])))
					queue[qt++] = nbrs[j];
			}
			else
			{
				int i = AddCandidate(index, hd, item, rc, &nbrs[j]);

				if (i >= 0 && (nearest < 0 || rc->c[i].dist < rc->c[nearest].dist))
					nearest = i;
			}
		}
	}
	return nearest;
}

static int
CandidateIndexCmp(const void *a, const void *b, void *arg)
{
	const HnswCandidate *c = arg;
	float da = c[*(const int *) a].dist;
	float db = c[*(const int *) b].dist;

	return da < db ? -1 : (da > db ? 1 : 0);
}

/*
 * The new list of one item, written if the element still needs it.
 *
 * Candidates: the live neighbors, and the bridges of the deleted ones.  The
 * insert's heuristic chooses among them; then every deleted neighbor whose
 * bridge lost all its members gets its bridge's nearest member back (in a
 * free slot, or in place of the farthest chosen element that is not such a
 * representative): the heuristic alone drops the long links between
 * clusters that ran through deleted elements, and with them whole clusters'
 * reachability.  A list has as many slots as it had neighbors, so every
 * deleted neighbor can keep one representative.
 */
static void
RepairList(Relation index, const HnswDistance *hd, HnswTidSet *dead, RepairItem *item)
{
	RepairCands rc;
	int nbridge = 0;
	ItemPointerData *bridge = palloc(sizeof(ItemPointerData) * Max(item->nold, 1));
	int *order;
	HnswCandidate *sorted;
	int *chosen;
	bool *rep;
	int nchosen;
	int slots;
	Buffer buf;
	Page page;
	GenericXLogState *state;
	HnswElementTuple et;
	HnswNeighbor *ns;
	HnswNeighbor *fresh;
	int nfresh = 0;
	uint16 *counts;

	rc.cap = 64;
	rc.n = 0;
	rc.c = palloc(sizeof(HnswCandidate) * rc.cap);
	rc.seen = HnswTidSetCreate(CurrentMemoryContext, 64);
	for (int i = 0; i < item->nold; i++)
		if (!IsDead(dead, &item->old[i]))
			AddCandidate(index, hd, item, &rc, &item->old[i]);
	for (int i = 0; i < item->nold; i++)
	{
		int near;

		if (!IsDead(dead, &item->old[i]))
			continue;
		near = AddBridge(index, hd, dead, item, &rc, &item->old[i]);
		if (near >= 0)
			bridge[nbridge++] = rc.c[near].tid;
	}

	/* sorted by distance, as the heuristic wants */
	order = palloc(sizeof(int) * Max(rc.n, 1));
	for (int i = 0; i < rc.n; i++)
		order[i] = i;
	qsort_arg(order, rc.n, sizeof(int), CandidateIndexCmp, rc.c);
	sorted = palloc(sizeof(HnswCandidate) * Max(rc.n, 1));
	for (int i = 0; i < rc.n; i++)
		sorted[i] = rc.c[order[i]];

	buf = ReadBuffer(index, ItemPointerGetBlockNumber(&item->tid));
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(&item->tid)));
	if (et->deleted || item->lc > et->level)
	{
		GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
		return;
	}
	slots = HnswLevelSlots(et->m, item->lc);
	chosen = palloc(sizeof(int) * slots);
	rep = palloc0(sizeof(bool) * slots);
	nchosen = HnswSelectNeighbors(hd, sorted, rc.n, slots, chosen);

	/* one representative per deleted neighbor whose bridge was dropped */
	for (int b = 0; b < nbridge; b++)
	{
		int idx = -1;
		int far = -1;

		for (int i = 0; i < nchosen && idx < 0; i++)
			if (ItemPointerEquals(&sorted[chosen[i]].tid, &bridge[b]))
				idx = i;
		if (idx >= 0)
		{
			rep[idx] = true;
			continue;
		}
		for (int i = 0; i < rc.n && idx < 0; i++)
			if (ItemPointerEquals(&sorted[i].tid, &bridge[b]))
				idx = i;
		if (nchosen < slots)
		{
			rep[nchosen] = true;
			chosen[nchosen++] = idx;
			continue;
		}
		for (int i = 0; i < nchosen; i++)
			if (!rep[i] && (far < 0 || sorted[chosen[i]].dist > sorted[chosen[far]].dist))
				far = i;
		if (far >= 0)
		{
			chosen[far] = idx;
			rep[far] = true;
		}
	}

	/* links added since the copy was taken, by a concurrent insert */
	ns = HnswTupleNeighbors(et, item->lc);
	counts = HnswTupleCounts(et);
	fresh = palloc(sizeof(HnswNeighbor) * slots);
	for (int i = 0; i < Min(counts[item->lc], slots); i++)
	{
		bool known = IsDead(dead, &ns[i].tid);

		for (int j = 0; j < item->nold && !known; j++)
			known = ItemPointerEquals(&ns[i].tid, &item->old[j]);
		for (int j = 0; j < nchosen && !known; j++)
			known = ItemPointerEquals(&ns[i].tid, &sorted[chosen[j]].tid);
		if (!known)
			fresh[nfresh++] = ns[i];
	}

	for (int i = 0; i < nchosen; i++)
	{
		ns[i].tid = sorted[chosen[i]].tid;
		ns[i].dist = sorted[chosen[i]].dist;
	}
	for (int i = 0; i < nfresh && nchosen < slots; i++)
		ns[nchosen++] = fresh[i];
	counts[item->lc] = nchosen;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/* pass 2: repair the lists naming deleted elements; returns the best live entry */
static void
HnswRepairGraph(IndexVacuumInfo *info, HnswTidSet *dead,
				ItemPointer best, int *bestlevel)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	HnswDistance hd;
	MemoryContext pagecxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw vacuum page",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;

	HnswInitDistance(&hd, index);
	*bestlevel = -1;
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf;
		Page page;
		List *items = NIL;
		ListCell *cell;

		vacuum_delay_point();
		old = MemoryContextSwitchTo(pagecxt);
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
		{
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));

				if (et->deleted)
					continue;
				if (et->level > *bestlevel)
				{
					*bestlevel = et->level;
					ItemPointerSet(best, blk, off);
				}
				for (int lc = 0; lc <= et->level; lc++)
				{
					HnswNeighbor *ns = HnswTupleNeighbors(et, lc);
					int cnt = Min(HnswTupleCounts(et)[lc], HnswLevelSlots(et->m, lc));
					bool needs = false;
					RepairItem *item;
					Vector *v;

					for (int i = 0; i < cnt && !needs; i++)
						needs = IsDead(dead, &ns[i].tid);
					if (!needs)
						continue;
					item = palloc(sizeof(RepairItem));
					ItemPointerSet(&item->tid, blk, off);
					item->lc = lc;
					v = HnswTupleVector(et);
					item->vec = palloc(VECTOR_SIZE(v->dim));
					memcpy(item->vec, v, VECTOR_SIZE(v->dim));
					item->nold = cnt;
					for (int i = 0; i < cnt; i++)
						item->old[i] = ns[i].tid;
					items = lappend(items, item);
				}
			}
		}
		UnlockReleaseBuffer(buf);

		foreach (cell, items)
		{
			CHECK_FOR_INTERRUPTS();
			RepairList(index, &hd, dead, lfirst(cell));
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(pagecxt);
	}
	MemoryContextDelete(pagecxt);
}

/* pass 3: a deleted entry point gives way to the best live element */
static void
HnswReplaceEntryPoint(Relation index, HnswTidSet *dead, ItemPointer best, int bestlevel)
{
	Buffer buf;
	GenericXLogState *state;
	HnswMetaPage meta;

	LockPage(index, HNSW_UPDATE_LOCK, ExclusiveLock);
	buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = HnswPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	if (meta->entry_level >= 0 && IsDead(dead, &meta->entry))
	{
		meta->entry_level = bestlevel;
		if (bestlevel >= 0)
			meta->entry = *best;
		else
			ItemPointerSetInvalid(&meta->entry);
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
	UnlockPage(index, HNSW_UPDATE_LOCK, ExclusiveLock);
}

/* ---- pass 4: reconnect what the repair cut off ---- */

typedef struct ReachEntry
{
	uint64 key;
	int32 id;
} ReachEntry;

typedef struct ReachGraph
{
	int n;
	ItemPointerData *tids;
	bool *live;
	int32 **adj; /* level-0 links to live elements, as ids */
	int *nadj;
	bool *seen;
} ReachGraph;

static void
Reach(ReachGraph *g, int32 from, int32 *queue)
{
	int qh = 0,
		qt = 0;

	if (g->seen[from])
		return;
	g->seen[from] = true;
	queue[qt++] = from;
	while (qh < qt)
	{
		int32 e = queue[qh++];

		for (int i = 0; i < g->nadj[e]; i++)
			if (!g->seen[g->adj[e][i]])
			{
				g->seen[g->adj[e][i]] = true;
				queue[qt++] = g->adj[e][i];
			}
	}
}

/* the level-0 list of the element at from gets to (in a free slot, or in place of its farthest) */
static void
ForceLink(Relation index, ItemPointer from, ItemPointer to, float dist)
{
	Buffer buf = ReadBuffer(index, ItemPointerGetBlockNumber(from));
	GenericXLogState *state;
	Page page;
	HnswElementTuple et;
	HnswNeighbor *ns;
	uint16 *counts;
	int slots;
	int at;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(from)));
	ns = HnswTupleNeighbors(et, 0);
	counts = HnswTupleCounts(et);
	slots = HnswLevelSlots(et->m, 0);
	if (counts[0] < slots)
		at = counts[0]++;
	else
	{
		at = 0;
		for (int i = 1; i < slots; i++)
			if (ns[i].dist > ns[at].dist)
				at = i;
	}
	ns[at].tid = *to;
	ns[at].dist = dist;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/*
 * Links to deleted elements can have been the only way into a group of live
 * elements (a cluster whose neighbors were all deleted).  Read the level-0
 * graph into memory (unless it would exceed maintenance_work_mem), mark what
 * the entry point reaches, and link each group it does not reach from the
 * nearest reached element a search finds, the way an insert links a new
 * element.  Returns the number of links added.
 */
static int
HnswReconnect(IndexVacuumInfo *info)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	HnswMetaPageData meta;
	HnswDistance hd;
	HASHCTL ctl;
	HTAB *map;
	ReachGraph g;
	int cap = 1024;
	Size used = 0;
	Size limit = (Size) maintenance_work_mem * 1024;
	int32 *queue;
	int links = 0;

	HnswReadMeta(index, &meta);
	if (meta.entry_level < 0)
		return 0;
	HnswInitDistance(&hd, index);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(ReachEntry);
	ctl.hcxt = CurrentMemoryContext;
	map = hash_create("hnsw vacuum reach", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	memset(&g, 0, sizeof(g));
	g.tids = palloc(sizeof(ItemPointerData) * cap);
	g.live = palloc(sizeof(bool) * cap);

	/* every element gets an id */
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		Page page;

		vacuum_delay_point();
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
				ItemPointerData tid;
				uint64 key;
				ReachEntry *re;

				ItemPointerSet(&tid, blk, off);
				key = HnswTidKey(&tid);
				if (g.n == cap)
				{
					cap *= 2;
					g.tids = repalloc(g.tids, sizeof(ItemPointerData) * cap);
					g.live = repalloc(g.live, sizeof(bool) * cap);
				}
				re = hash_search(map, &key, HASH_ENTER, NULL);
				re->id = g.n;
				g.tids[g.n] = tid;
				g.live[g.n] = !et->deleted;
				g.n++;
				used += sizeof(ReachEntry) * 2 + sizeof(ItemPointerData) + sizeof(bool) +
						sizeof(int32) * 2 * et->m + sizeof(int32 *) + sizeof(int) * 2 + 1;
			}
		UnlockReleaseBuffer(buf);
		if (used > limit)
		{
			ereport(DEBUG1,
					(errmsg("hnsw index \"%s\": the reachability check of VACUUM needs more than maintenance_work_mem; skipped",
							RelationGetRelationName(index))));
			return 0;
		}
	}

	/* the level-0 links between live elements */
	g.adj = palloc0(sizeof(int32 *) * Max(g.n, 1));
	g.nadj = palloc0(sizeof(int) * Max(g.n, 1));
	g.seen = palloc0(sizeof(bool) * Max(g.n, 1));
	for (int32 id = 0; id < g.n; id++)
	{
		HnswCandidate tmp;
		ItemPointerData nbrs[2 * HNSW_MAX_M];
		int nn;

		if (!g.live[id])
			continue;
		HnswLoadElement(index, &g.tids[id], &hd, NULL, &tmp, false, nbrs, &nn, 0);
		g.adj[id] = palloc(sizeof(int32) * Max(nn, 1));
		for (int i = 0; i < nn; i++)
		{
			uint64 key = HnswTidKey(&nbrs[i]);
			ReachEntry *re = hash_search(map, &key, HASH_FIND, NULL);

			if (re != NULL && g.live[re->id])
				g.adj[id][g.nadj[id]++] = re->id;
		}
	}

	queue = palloc(sizeof(int32) * Max(g.n, 1));
	{
		uint64 key = HnswTidKey(&meta.entry);
		ReachEntry *re = hash_search(map, &key, HASH_FIND, NULL);

		if (re == NULL)
			return 0; /* an entry point added meanwhile */
		Reach(&g, re->id, queue);
	}

	for (int32 id = 0; id < g.n; id++)
	{
		HnswCandidate ep;
		HnswCandidate *eps = &ep;
		HnswCandidate *found;
		int neps = 1;
		int nfound;
		Vector *vec;
		int best = -1;

		if (!g.live[id] || g.seen[id])
			continue;
		CHECK_FOR_INTERRUPTS();
		/*
		 * Its nearest reached elements: a level-0 search from the entry point
		 * visits only what level-0 links reach from there (a descent through
		 * the upper levels could land in the element's own group).
		 */
		HnswLoadElement(index, &g.tids[id], &hd, NULL, &ep, true, NULL, NULL, 0);
		vec = ep.vec;
		HnswLoadElement(index, &meta.entry, &hd, vec, &ep, false, NULL, NULL, 0);
		nfound = HnswSearchLayer(index, &hd, vec, eps, neps, HnswGetEfConstruction(index), 0,
								 false, &found);
		for (int i = 0; i < nfound && best < 0; i++)
			if (ItemPointerIsValid(&found[i].heaptid) && !ItemPointerEquals(&found[i].tid, &g.tids[id]))
				best = i;
		if (best < 0)
			continue;
		ForceLink(index, &found[best].tid, &g.tids[id], found[best].dist);
		ForceLink(index, &g.tids[id], &found[best].tid, found[best].dist);
		links += 2;
		Reach(&g, id, queue);
	}
	return links;
}

IndexBulkDeleteResult *
hnswbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
			   IndexBulkDeleteCallback callback, void *callback_state)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw vacuum",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	HnswTidSet *dead = HnswTidSetCreate(cxt, 1024);
	int64 ndead = 0;
	ItemPointerData best;
	int bestlevel = -1;

	MemoryContextSwitchTo(old);
	if (stats == NULL)
		stats = palloc0(sizeof(IndexBulkDeleteResult));

	old = MemoryContextSwitchTo(cxt);
	HnswMarkDeleted(info, stats, callback, callback_state, dead, &ndead);
	if (ndead > 0)
	{
		ItemPointerSetInvalid(&best);
		HnswRepairGraph(info, dead, &best, &bestlevel);
		HnswReplaceEntryPoint(info->index, dead, &best, bestlevel);
		HnswReconnect(info);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return stats;
}

IndexBulkDeleteResult *
hnswvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	Relation index = info->index;
	BlockNumber nblocks;

	if (info->analyze_only)
		return stats;
	if (stats != NULL)
		return stats;

	/* no bulkdelete ran: count the live elements */
	stats = palloc0(sizeof(IndexBulkDeleteResult));
	nblocks = RelationGetNumberOfBlocks(index);
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf;
		Page page;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
				if (!((HnswElementTuple) PageGetItem(page, PageGetItemId(page, off)))->deleted)
					stats->num_index_tuples++;
		UnlockReleaseBuffer(buf);
	}
	stats->num_pages = nblocks;
	return stats;
}
