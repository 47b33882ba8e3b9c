/*
 * hnsw.c: the hnsw index access method's handler, its reloptions (m,
 * ef_construction), the bv_vector.ef_search setting and the planner's cost
 * estimate.
 *
 * The AM supports ordering by a distance operator only (amcanorderbyop):
 * it has no search operators, returns no index tuples and does not index
 * nulls.  The work of each callback is in the file named after it
 * (hnswbuild.c, hnswinsert.c, hnswscan.c, hnswvacuum.c); hnswcheck.c holds
 * the verification function.
 *
 * Limits and defaults come from bv_vector.h, so the reloptions, the setting
 * and the checks agree.  No shared state; reloptions are parsed by the
 * server into the relcache.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "access/amapi.h"
#include "access/genam.h"
#include "access/reloptions.h"
#include "commands/vacuum.h"
#include "optimizer/paths.h"
#include "utils/guc.h"
#include "utils/selfuncs.h"
#include "utils/spccache.h"

int hnsw_ef_search = HNSW_DEFAULT_EF_SEARCH;
static relopt_kind hnsw_relopt_kind;

void
HnswInitGucs(void)
{
	hnsw_relopt_kind = add_reloption_kind();
	add_int_reloption(hnsw_relopt_kind, "m",
					  "Maximum number of neighbors of an element per layer (twice this at layer 0)",
					  HNSW_DEFAULT_M, HNSW_MIN_M, HNSW_MAX_M, AccessExclusiveLock);
	add_int_reloption(hnsw_relopt_kind, "ef_construction",
					  "Size of the candidate list while building the graph",
					  HNSW_DEFAULT_EF_CONSTRUCTION, HNSW_MIN_EF_CONSTRUCTION,
					  HNSW_MAX_EF_CONSTRUCTION, AccessExclusiveLock);

	DefineCustomIntVariable("bv_vector.ef_search",
							"Size of the candidate window of hnsw index scans.",
							"Larger values give better recall and slower scans; a scan goes on past it while rows are wanted.",
							&hnsw_ef_search, HNSW_DEFAULT_EF_SEARCH,
							HNSW_MIN_EF_SEARCH, HNSW_MAX_EF_SEARCH,
							PGC_USERSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("bv_vector");
}

static bytea *
hnswoptions(Datum reloptions, bool validate)
{
	static const relopt_parse_elt tab[] = {
		{"m", RELOPT_TYPE_INT, offsetof(HnswOptions, m)},
		{"ef_construction", RELOPT_TYPE_INT, offsetof(HnswOptions, ef_construction)},
	};

	HnswOptions *opts;

	opts = (HnswOptions *) build_reloptions(reloptions, validate, hnsw_relopt_kind,
											sizeof(HnswOptions), tab, lengthof(tab));

	/*
	 * CREATE INDEX and ALTER INDEX ... SET both validate the merged options
	 * here (ALTER passes the index's options with the new ones applied), so
	 * the build's rule ef_construction >= 2 * m is enforced before a later
	 * REINDEX could trip on it.  Options read back from the catalog
	 * (validate false) are never refused.
	 */
	if (validate && opts != NULL && opts->ef_construction < 2 * opts->m)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ef_construction must be at least 2 * m"),
				 errdetail("ef_construction is %d and m is %d.", opts->ef_construction, opts->m),
				 errhint("Raise ef_construction to %d or more, or lower m.", 2 * opts->m)));
	return (bytea *) opts;
}

int
HnswGetM(Relation index)
{
	HnswOptions *opts = (HnswOptions *) index->rd_options;

	return opts ? opts->m : HNSW_DEFAULT_M;
}

int
HnswGetEfConstruction(Relation index)
{
	HnswOptions *opts = (HnswOptions *) index->rd_options;

	return opts ? opts->ef_construction : HNSW_DEFAULT_EF_CONSTRUCTION;
}

/*
 * The cost of an ordered scan: the search reads about ef_search * 2m
 * elements at layer 0 plus a few per upper layer, all before the first row
 * (startup cost).  Without ORDER BY the index is useless: infinite cost.
 */
static void
hnswcostestimate(PlannerInfo *root, IndexPath *path, double loop_count,
				 Cost *indexStartupCost, Cost *indexTotalCost,
				 Selectivity *indexSelectivity, double *indexCorrelation,
				 double *indexPages)
{
	GenericCosts costs;
	double ntuples = path->indexinfo->tuples;
	int m = HNSW_DEFAULT_M;
	double visited;

	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}
	{
		Relation index = index_open(path->indexinfo->indexoid, NoLock);

		m = HnswGetM(index);
		index_close(index, NoLock);
	}
	visited = (double) hnsw_ef_search * 2 * m + log(Max(ntuples, 2)) * m;
	visited = Min(visited, Max(ntuples, 1));

	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = visited;
	genericcostestimate(root, path, loop_count, &costs);

	*indexStartupCost = costs.indexTotalCost;
	*indexTotalCost = costs.indexTotalCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}

static bool
hnswvalidate(Oid opclassoid)
{
	return true;
}

static char *
hnswbuildphasename(int64 phasenum)
{
	switch (phasenum)
	{
		case 2:
			return "building graph";
		case 3:
			return "writing graph";
		case 4:
			return "inserting on disk";
		default:
			return NULL;
	}
}

PG_FUNCTION_INFO_V1(hnsw_handler);
Datum
hnsw_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *am = makeNode(IndexAmRoutine);

	am->amstrategies = 0;
	am->amsupport = 1;
	am->amoptsprocnum = 0;
	am->amcanorder = false;
	am->amcanorderbyop = true;
	am->amcanbackward = false;
	am->amcanunique = false;
	am->amcanmulticol = false;
	am->amoptionalkey = true;
	am->amsearcharray = false;
	am->amsearchnulls = false;
	am->amstorage = false;
	am->amclusterable = false;
	am->ampredlocks = false;
	am->amcanparallel = false;
	am->amcaninclude = false;
	am->amusemaintenanceworkmem = false;
	am->amparallelvacuumoptions = VACUUM_OPTION_PARALLEL_BULKDEL;
	am->amkeytype = InvalidOid;

	am->ambuild = hnswbuild;
	am->ambuildempty = hnswbuildempty;
	am->aminsert = hnswinsert;
	am->ambulkdelete = hnswbulkdelete;
	am->amvacuumcleanup = hnswvacuumcleanup;
	am->amcanreturn = NULL;
	am->amcostestimate = hnswcostestimate;
	am->amoptions = hnswoptions;
	am->amproperty = NULL;
	am->ambuildphasename = hnswbuildphasename;
	am->amvalidate = hnswvalidate;
	am->amadjustmembers = NULL;
	am->ambeginscan = hnswbeginscan;
	am->amrescan = hnswrescan;
	am->amgettuple = hnswgettuple;
	am->amgetbitmap = NULL;
	am->amendscan = hnswendscan;
	am->ammarkpos = NULL;
	am->amrestrpos = NULL;
	am->amestimateparallelscan = NULL;
	am->aminitparallelscan = NULL;
	am->amparallelrescan = NULL;

	PG_RETURN_POINTER(am);
}
