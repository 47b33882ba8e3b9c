/*-------------------------------------------------------------------------
 *
 * bv_guc.c
 *	  Reading configuration settings the way BitVelocity means them.
 *
 * Custom settings such as "request.jwt.claims" or "bv.actor" read back as an
 * empty string once a transaction-local value has been reset at the end of
 * the transaction, and as NULL when they were never set in the session.  For
 * every BitVelocity reader both mean "not given", so one helper folds them.
 *
 * The readers run for every audited or captured statement, and a lookup by
 * name in PostgreSQL 15 is a binary search over the ~400 settings with a
 * case-folding comparison (about 600 instructions).  The settings read here
 * are PostgREST's placeholders ("request.jwt.claims", "request.headers"),
 * which have no C variable to read instead, so the helper remembers, per
 * name, where the setting sits in the server's sorted array of settings
 * and checks that memory with one or two name comparisons before trusting
 * it:
 *
 *	present	 the setting at the remembered position still has this name.
 *			 Names are unique, so whatever structure holds that slot now
 *			 (the placeholder, or the real setting an extension defined in
 *			 its place) is the setting asked for.
 *	absent	 the settings on either side of the remembered gap still have
 *			 the names they had.  The array is kept sorted by name, so
 *			 two neighbours that are still adjacent leave no room for the
 *			 name between them: it has not been created since.
 *
 * Any other outcome (settings added or removed around it, the array
 * reallocated) falls back to the server's own lookup and remembers anew.
 * The memory is per backend, in TopMemoryContext, a few names at most.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"

#include "bv_common.h"

/* Remembered positions; callers ask for a handful of fixed names. */
#define BV_GUC_SLOTS 8

typedef struct BvGucSlot
{
	const char *asked; /* the caller's pointer, for a quick match */
	char *name;        /* the name asked for */
	bool present;
	int position; /* present: its index; absent: where it would go */
	char *found;  /* present: its name as the array spells it */
	char *left;   /* absent: the names around the gap, or NULL at an end */
	char *right;
} BvGucSlot;

static BvGucSlot guc_slots[BV_GUC_SLOTS];
static int guc_nslots = 0;

/*
 * The order of the server's settings array: names compared with ASCII
 * letters folded to lower case, as guc.c's guc_name_compare() does.  Used
 * to search; checking a remembered position compares exact copies of the
 * names found there (strcmp), where any difference just means "search
 * again".
 */
static int
guc_order(const char *a, const char *b)
{
	while (*a && *b)
	{
		char ca = *a++;
		char cb = *b++;

		if (ca >= 'A' && ca <= 'Z')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'Z')
			cb += 'a' - 'A';
		if (ca != cb)
			return ca - cb;
	}
	if (*a)
		return 1;
	if (*b)
		return -1;
	return 0;
}

static bool
slot_still_valid(const BvGucSlot *slot, struct config_generic **vars, int nvars)
{
	if (slot->present)
		return slot->position < nvars && strcmp(vars[slot->position]->name, slot->found) == 0;
	if (slot->position > nvars)
		return false;
	if ((slot->position == 0) != (slot->left == NULL) ||
		(slot->position == nvars) != (slot->right == NULL))
		return false;
	return (slot->left == NULL || strcmp(vars[slot->position - 1]->name, slot->left) == 0) &&
		   (slot->right == NULL || strcmp(vars[slot->position]->name, slot->right) == 0);
}

static void
free_name(char **name)
{
	if (*name)
		pfree(*name);
	*name = NULL;
}

/* Find name in the sorted array and record where it is, or would be. */
static void
slot_locate(BvGucSlot *slot, struct config_generic **vars, int nvars)
{
	int lo = 0, hi = nvars;

	while (lo < hi)
	{
		int mid = lo + (hi - lo) / 2;
		int c = guc_order(vars[mid]->name, slot->name);

		if (c == 0)
		{
			lo = mid;
			break;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	free_name(&slot->found);
	free_name(&slot->left);
	free_name(&slot->right);
	slot->position = lo;
	slot->present = lo < nvars && guc_order(vars[lo]->name, slot->name) == 0;
	if (slot->present)
		slot->found = MemoryContextStrdup(TopMemoryContext, vars[lo]->name);
	else
	{
		if (lo > 0)
			slot->left = MemoryContextStrdup(TopMemoryContext, vars[lo - 1]->name);
		if (lo < nvars)
			slot->right = MemoryContextStrdup(TopMemoryContext, vars[lo]->name);
	}
}

/* The remembered slot of a name, made on first use; NULL when full. */
static BvGucSlot *
slot_for(const char *name)
{
	int i;

	for (i = 0; i < guc_nslots; i++)
		if (guc_slots[i].asked == name || strcmp(guc_slots[i].name, name) == 0)
			return &guc_slots[i];
	if (guc_nslots == BV_GUC_SLOTS)
		return NULL;
	guc_slots[guc_nslots].asked = name;
	guc_slots[guc_nslots].name = MemoryContextStrdup(TopMemoryContext, name);
	guc_slots[guc_nslots].position = -1; /* never valid: locate first */
	guc_slots[guc_nslots].present = true;
	return &guc_slots[guc_nslots++];
}

/*
 * bv_guc_get_nonempty
 *		The current value of setting "name", or NULL when it is unknown, unset
 *		or empty.  The result points into GUC storage: copy it before running
 *		anything that could change the setting.  Same answer as
 *		GetConfigOption(name, true, false), found faster (file comment).
 */
const char *
bv_guc_get_nonempty(const char *name)
{
	struct config_generic **vars = get_guc_variables();
	int nvars = GetNumConfigOptions();
	BvGucSlot *slot;
	const char *value;

	/* Only custom ("prefix.name") settings: no old names map to them. */
	slot = strchr(name, '.') != NULL ? slot_for(name) : NULL;

	if (slot != NULL && (slot->position < 0 || !slot_still_valid(slot, vars, nvars)))
		slot_locate(slot, vars, nvars);

	if (slot == NULL || (slot->present && vars[slot->position]->vartype != PGC_STRING))
		value = GetConfigOption(name, true, false);
	else if (slot->present)
		value = *((struct config_string *) vars[slot->position])->variable;
	else
		value = NULL;

	if (value == NULL || value[0] == '\0')
		return NULL;
	return value;
}
