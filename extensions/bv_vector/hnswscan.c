/*
 * hnswscan.c: ORDER BY vector <op> query over an hnsw index, as an
 * expanding search that never runs dry before the graph does.
 *
 * A plain HNSW scan searches layer 0 once with ef_search and returns those
 * ef_search elements; a query with a selective filter then gets fewer rows
 * than its LIMIT.  Here the layer-0 search is resumable.  The scan keeps
 *   C  the candidates still to expand (min-heap by distance),
 *   W  the best ef_search found and not yet returned (sorted array),
 *   D  everything else found and not yet returned (min-heap),
 * and the visited set.  Each amgettuple call first runs the search until
 * the paper's stopping rule holds for W (the nearest candidate is farther
 * than W's farthest), then returns W's nearest and refills W from D, which
 * loosens the rule, so the next call searches further.  As long as the
 * executor asks for tuples the window moves outwards: the first ef_search
 * results are exactly a plain HNSW search's, and a filter that rejects 99%
 * of them simply makes the scan go on.  It ends when every element reachable
 * from the entry point was returned.  Results come in ascending distance
 * except where a later expansion finds an element nearer than one already
 * returned (the search is approximate; such inversions are rare and small).
 *
 * Deleted elements (heap tuples removed by VACUUM) are traversed but not
 * returned; free ones (hnswvacuum.c) have no links.  An element slot read
 * again after an insert reused it is a new element: the scan keeps the heap
 * TID and distance it read the first time, and a TID it visited is not
 * visited again, so a reused slot is at worst a row the scan misses (a row
 * inserted after the scan began).  Under cosine distance a zero query
 * returns no rows: zero vectors are not indexed (bv_vector.h).  Scans take no heavyweight lock; each element is read under a
 * share lock on its page, one page at a time (hnswutils.c).
 *
 * Memory: the scan's state lives in a context of its own, reset on rescan.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "access/relscan.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"

typedef struct ScanCand
{
	float dist;
	ItemPointerData tid;
	ItemPointerData heaptid;
	bool expanded; /* in C or already expanded */
} ScanCand;

typedef struct HnswScanOpaqueData
{
	MemoryContext cxt;
	HnswDistance hd;
	Vector *q;
	bool started;
	int ef;
	HnswTidSet *visited;
	ScanCand *cands;
	int ncands;
	int capcands;
	HnswHeap C;
	HnswHeap D;
	HnswHeapItem *W; /* ascending, ef slots */
	int wn;
	ItemPointerData *nbrs;
} HnswScanOpaqueData;

typedef HnswScanOpaqueData *HnswScanOpaque;

IndexScanDesc
hnswbeginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	HnswScanOpaque so = palloc0(sizeof(HnswScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw scan", ALLOCSET_DEFAULT_SIZES);
	HnswInitDistance(&so->hd, index);
	scan->opaque = so;
	return scan;
}

void
hnswrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;

	MemoryContextReset(so->cxt);
	so->started = false;
	so->q = NULL;
	if (keys && scan->numberOfKeys > 0)
		memmove(scan->keyData, keys, scan->numberOfKeys * sizeof(ScanKeyData));
	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));
}

static int32
AddCand(HnswScanOpaque so, HnswCandidate *c)
{
	if (so->ncands == so->capcands)
	{
		so->capcands *= 2;
		so->cands = repalloc_huge(so->cands, sizeof(ScanCand) * so->capcands);
	}
	so->cands[so->ncands].dist = c->dist;
	so->cands[so->ncands].tid = c->tid;
	so->cands[so->ncands].heaptid = c->heaptid;
	so->cands[so->ncands].expanded = false;
	return so->ncands++;
}

/* insert into the sorted window W; an element pushed out goes to D */
static void
WindowAdd(HnswScanOpaque so, float dist, int32 idx)
{
	int i = so->wn;

	if (so->wn == so->ef)
	{
		HnswHeapPush(&so->D, so->W[so->wn - 1].key, so->W[so->wn - 1].idx);
		i = --so->wn;
	}
	while (i > 0 && so->W[i - 1].key > dist)
	{
		so->W[i] = so->W[i - 1];
		i--;
	}
	so->W[i].key = dist;
	so->W[i].idx = idx;
	so->wn++;
}

static void
PushCandidate(HnswScanOpaque so, int32 idx)
{
	if (!so->cands[idx].expanded)
	{
		so->cands[idx].expanded = true;
		HnswHeapPush(&so->C, so->cands[idx].dist, idx);
	}
}

/* the query vector: the ORDER BY argument, or zeros for NULL */
static Vector *
ScanQuery(IndexScanDesc scan, int dims)
{
	ScanKey ob = &scan->orderByData[0];
	Vector *q;

	if (ob->sk_flags & SK_ISNULL)
		return InitVector(Max(dims, 1));
	q = DatumGetVector(ob->sk_argument);
	if (dims != 0 && q->dim != dims)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_LENGTH_MISMATCH),
				 errmsg("expected %d dimensions, not %d", dims, q->dim),
				 errdetail("Index \"%s\" holds vectors of %d dimensions.",
						   RelationGetRelationName(scan->indexRelation), dims),
				 errhint("Query with a vector of %d dimensions.", dims)));
	return (Vector *) pg_detoast_datum_copy((struct varlena *) q);
}

/* the descent to layer 0 and the start of the layer-0 search */
static bool
ScanStart(IndexScanDesc scan)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;
	Relation index = scan->indexRelation;
	HnswMetaPageData meta;
	HnswCandidate *ep;
	int nep = 1;
	int32 idx;

	if (scan->numberOfOrderBys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("an hnsw index can only be scanned in ORDER BY distance order"),
				 errhint("Add ORDER BY column <-> value (or <#>, <=>) to the query.")));
	HnswReadMeta(index, &meta);
	so->q = ScanQuery(scan, meta.dims);
	so->ef = hnsw_ef_search;
	so->visited = HnswTidSetCreate(so->cxt, 1024);
	so->capcands = 1024;
	so->cands = palloc(sizeof(ScanCand) * so->capcands);
	so->ncands = 0;
	HnswHeapInit(&so->C, 256);
	HnswHeapInit(&so->D, 256);
	so->W = palloc(sizeof(HnswHeapItem) * (so->ef + 1));
	so->wn = 0;
	so->nbrs = palloc(sizeof(ItemPointerData) * 2 * HNSW_MAX_M);
	so->started = true;
	if (meta.entry_level < 0)
		return false;
	/* a zero query under cosine distance is at no distance from anything (bv_vector.h) */
	if (HnswSkipValue(&so->hd, so->q))
		return false;

	/*
	 * The descent keeps min(ef_search, HNSW_EF_UPPER) candidates per upper
	 * layer rather than the
	 * paper's single one: upper layers are small, and on clustered data a
	 * single greedy path can end in the wrong cluster, from which layer 0
	 * has few links out.  All of them seed layer 0.
	 */
	ep = palloc(sizeof(HnswCandidate));
	HnswLoadElement(index, &meta.entry, &so->hd, so->q, ep, false, NULL, NULL, 0);
	for (int lc = meta.entry_level; lc > 0; lc--)
		nep = HnswSearchLayer(index, &so->hd, so->q, ep, nep, Min(so->ef, HNSW_EF_UPPER), lc, false, &ep);
	for (int i = 0; i < nep; i++)
	{
		HnswTidSetAdd(so->visited, HnswTidKey(&ep[i].tid));
		idx = AddCand(so, &ep[i]);
		WindowAdd(so, ep[i].dist, idx);
		PushCandidate(so, idx);
	}
	return true;
}

/* run the layer-0 search until the stopping rule holds for W */
static void
ScanExpand(IndexScanDesc scan)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;
	Relation index = scan->indexRelation;

	while (so->C.n > 0)
	{
		HnswHeapItem c = *HnswHeapTop(&so->C);
		HnswCandidate tmp;
		int nn;

		if (so->wn >= so->ef && c.key > so->W[so->wn - 1].key)
			break;
		HnswHeapPop(&so->C);
		CHECK_FOR_INTERRUPTS();
		HnswLoadElement(index, &so->cands[c.idx].tid, &so->hd, NULL, &tmp, false,
						so->nbrs, &nn, 0);
		for (int i = 0; i < nn; i++)
		{
			HnswCandidate e;
			int32 idx;

			if (!HnswTidSetAdd(so->visited, HnswTidKey(&so->nbrs[i])))
				continue;
			HnswLoadElement(index, &so->nbrs[i], &so->hd, so->q, &e, false, NULL, NULL, 0);
			idx = AddCand(so, &e);
			if (so->wn < so->ef || e.dist < so->W[so->wn - 1].key)
			{
				WindowAdd(so, e.dist, idx);
				PushCandidate(so, idx);
			}
			else
				HnswHeapPush(&so->D, e.dist, idx);
		}
	}
}

bool
hnswgettuple(IndexScanDesc scan, ScanDirection dir)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;
	MemoryContext old = MemoryContextSwitchTo(so->cxt);

	if (!so->started)
	{
		pgstat_count_index_scan(scan->indexRelation);
		if (!ScanStart(scan))
		{
			MemoryContextSwitchTo(old);
			return false;
		}
	}

	for (;;)
	{
		ScanCand *c;

		ScanExpand(scan);
		if (so->wn == 0)
			break;
		c = &so->cands[so->W[0].idx];
		memmove(so->W, so->W + 1, sizeof(HnswHeapItem) * (so->wn - 1));
		so->wn--;
		/* refill: D's nearest is no nearer than anything left in W */
		if (so->D.n > 0)
		{
			HnswHeapItem d = HnswHeapPop(&so->D);

			so->W[so->wn++] = d;
			PushCandidate(so, d.idx);
		}
		if (!ItemPointerIsValid(&c->heaptid))
			continue; /* deleted by VACUUM */
		scan->xs_heaptid = c->heaptid;
		scan->xs_recheck = false;
		scan->xs_recheckorderby = false;
		MemoryContextSwitchTo(old);
		return true;
	}
	MemoryContextSwitchTo(old);
	return false;
}

void
hnswendscan(IndexScanDesc scan)
{
	HnswScanOpaque so = (HnswScanOpaque) scan->opaque;

	MemoryContextDelete(so->cxt);
	pfree(so);
	scan->opaque = NULL;
}
