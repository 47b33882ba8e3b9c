/*
 * hnswreconnect.c: the fourth pass of an hnsw VACUUM (hnswvacuum.c), which
 * links back the groups of live elements that the entry point no longer
 * reaches over level-0 links.
 *
 * Links to deleted elements can have been the only way into a group (a
 * cluster whose neighbors were all deleted); the repair pass routes around
 * deleted elements through bounded "bridges", which can miss such a group.
 * Here the level-0 graph of live elements is read into memory (ids for
 * TIDs, a hash map between them), a breadth-first search marks what the
 * entry point reaches, and each group it does not reach is linked both
 * ways with the nearest reached element that a level-0 search from the
 * entry point finds, as an insert links a new element.
 *
 * Memory: the graph is charged against maintenance_work_mem; over it the
 * pass is skipped (DEBUG1 message).  Everything lives in the caller's
 * context (hnswbulkdelete's, deleted at its end).
 * Locking: pages are share-locked one at a time while reading; each added
 * link is one generic WAL record under an exclusive lock on its page.
 * Concurrent inserts may add elements meanwhile: they are not in the map
 * and are left alone (they link themselves in).
 */
#include "postgres.h"

#include "bv_vector.h"

#include "commands/vacuum.h"
#include "miscadmin.h"
#include "utils/hsearch.h"

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
int
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
	HnswInitGraphDistance(&hd, index, meta.ip_max_norm2);
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
