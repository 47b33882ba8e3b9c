/*-------------------------------------------------------------------------
 *
 * validate_merge.c
 *	  Field selection merging, section 5.3.2 of the October 2021
 *	  specification: fields with one response name in a selection set
 *	  (fragments expanded) must be the same field with the same arguments,
 *	  unless their parent object types differ, and must always have the
 *	  same response shape; their sub-selections are merged and checked
 *	  the same way.
 *
 * The specification's FieldsInSetCanMerge compares every pair; here each
 * field is compared with the first field of every distinct parent type in
 * its group (equality is transitive), so a group of n fields costs n times
 * the number of parent types.  Fragments are expanded regardless of
 * @skip / @include; the expansion counts against bv_graphql.max_fields
 * (twice it: sub-selections of different object types are checked twice,
 * once per type and once for their shape) and spreads nest at most
 * GQL_MAX_SPREAD_DEPTH deep, so fragment bombs stop early.  Messages are
 * graphql-js's: a conflict between two fields' sub-selections reads
 * "Fields "a" conflict because subfields "b" conflict because ...".
 *
 * Runs from validate.c once the document's other rules hold (a fragment
 * cycle would not end).  Memory: palloc in the request's context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "bv_graphql.h"

static bool
same_value(GqlValue *a, GqlValue *b)
{
	if (a->kind != b->kind || a->n != b->n)
		return false;
	switch (a->kind)
	{
		case GQL_V_BOOLEAN:
			return a->boolean == b->boolean;
		case GQL_V_NULL:
			return true;
		case GQL_V_LIST:
		case GQL_V_OBJECT:
			for (int i = 0; i < a->n; i++)
				if ((a->kind == GQL_V_OBJECT && strcmp(a->names[i], b->names[i]) != 0) || !same_value(a->items[i], b->items[i]))
					return false;
			return true;
		default:
			return strcmp(a->str, b->str) == 0;
	}
}

static bool
same_args(GqlSelection *a, GqlSelection *b)
{
	if (a->nargs != b->nargs)
		return false;
	for (int i = 0; i < a->nargs; i++)
	{
		bool found = false;

		for (int k = 0; k < b->nargs && !found; k++)
			if (strcmp(a->args[i].name, b->args[k].name) == 0)
			{
				if (!same_value(a->args[i].value, b->args[k].value))
					return false;
				found = true;
			}
		if (!found)
			return false;
	}
	return true;
}

/* SameResponseShape at this level: wrappers equal, leaves the same type. */
static bool
same_shape(GType *a, GType *b)
{
	for (;;)
	{
		if ((a->kind == GK_NON_NULL) != (b->kind == GK_NON_NULL) || (a->kind == GK_LIST) != (b->kind == GK_LIST))
			return false;
		if (a->kind != GK_NON_NULL && a->kind != GK_LIST)
			break;
		a = a->of;
		b = b->of;
	}
	if (!gql_v_is_composite(a) || !gql_v_is_composite(b))
		return a == b;
	return true;
}

static bool
merge_budget(GValidator *v, GqlLoc loc)
{
	if (v->merge_stop)
		return false;
	if (++v->merge_fields > 2 * bv_graphql_max_fields)
	{
		GQL_VERR1(v, loc, "the operation selects more than %d fields (bv_graphql.max_fields)", bv_graphql_max_fields);
		v->merge_stop = true;
		return false;
	}
	return true;
}

/* The fields of a selection set with fragments expanded (skip / include ignored). */
static void
collect_merge(GValidator *v, GType *parent, GqlSelectionSet *set, List **out, int depth)
{
	check_stack_depth();
	for (int i = 0; i < set->n && !v->merge_stop; i++)
	{
		GqlSelection *s = set->items[i];

		if (s->kind == GQL_SEL_FIELD)
		{
			MField *m;

			if (!merge_budget(v, s->loc))
				return;
			m = palloc(sizeof(MField));
			m->key = s->alias ? s->alias : s->name;
			m->sel = s;
			m->parent = parent;
			m->def = strcmp(s->name, "__typename") == 0 ? NULL : gql_v_field_def(v, parent, s->name);
			*out = lappend(*out, m);
		}
		else
		{
			GqlSelectionSet *sub = s->sel;
			GType *t = parent;
			const char *cond = s->type_cond;
			int sub_depth = depth; /* spreads nested in spreads, not side by side */

			if (s->kind == GQL_SEL_SPREAD)
			{
				GqlDefinition *f = gql_v_find_fragment(v, s->name);

				if (f == NULL)
					continue;
				if (depth >= GQL_MAX_SPREAD_DEPTH)
				{
					GQL_VERR1(v, s->loc, "fragment spreads nest deeper than %d levels", GQL_MAX_SPREAD_DEPTH);
					v->merge_stop = true;
					return;
				}
				sub = f->sel;
				cond = f->type_cond;
				sub_depth = depth + 1;
			}
			if (cond)
			{
				t = gql_type_by_name(v->s, cond);
				if (!gql_v_is_composite(t))
					continue;
			}
			collect_merge(v, t, sub, out, sub_depth);
		}
	}
}

static bool
exclusive(MField *a, MField *b)
{
	return a->parent != b->parent && a->parent && b->parent && a->parent->kind == GK_OBJECT &&
		   b->parent->kind == GK_OBJECT;
}

static void merge_check(GValidator *v, List *fields, int depth, bool shape_only, const char *prefix);

/* The fields selected under the members of group that match parent (any when NULL). */
static List *
sub_fields(GValidator *v, List *group, GType *cls, int depth)
{
	List *out = NIL;
	ListCell *lc;

	foreach (lc, group)
	{
		MField *m = lfirst(lc);

		if (m->sel->sel == NULL || m->def == NULL)
			continue;
		if (cls && m->parent != cls && m->parent && m->parent->kind == GK_OBJECT)
			continue;
		collect_merge(v, gql_named(m->def->type), m->sel->sel, &out, depth);
	}
	return out;
}

/*
 * FieldsInSetCanMerge (shape_only: SameResponseShape) over one set of
 * fields: grouped by response key, each field compared with the first
 * field of every distinct parent type in its group, then the merged
 * sub-selections checked the same way.
 */
static void
merge_check(GValidator *v, List *fields, int depth, bool shape_only, const char *prefix)
{
	List *keys = NIL;   /* const char * */
	List *groups = NIL; /* List * of MField * */
	ListCell *lc, *gc;

	check_stack_depth();
	if (v->merge_stop)
		return;
	foreach (lc, fields)
	{
		MField *m = lfirst(lc);
		ListCell *kc;
		List **g = NULL;
		bool dup = false;

		foreach (kc, keys)
			if (strcmp(lfirst(kc), m->key) == 0)
			{
				g = (List **) &list_nth_cell(groups, foreach_current_index(kc))->ptr_value;
				break;
			}
		if (g == NULL)
		{
			keys = lappend(keys, (void *) m->key);
			groups = lappend(groups, list_make1(m));
			continue;
		}
		foreach (gc, *g)
			dup |= ((MField *) lfirst(gc))->sel == m->sel; /* one fragment spread twice */
		if (!dup)
			*g = lappend(*g, m);
	}
	foreach (gc, groups)
	{
		List *group = lfirst(gc);
		List *reps = NIL, *classes = NIL;
		bool conflict = false;
		char *sub_prefix;

		foreach (lc, group)
		{
			MField *m = lfirst(lc);
			ListCell *rc;
			bool new_parent = true;

			foreach (rc, reps)
			{
				MField *r = lfirst(rc);
				const char *reason = NULL;

				new_parent &= r->parent != m->parent;
				if (!shape_only && !exclusive(r, m))
				{
					if (strcmp(r->sel->name, m->sel->name) != 0)
						reason = psprintf("\"%.64s\" and \"%.64s\" are different fields", r->sel->name, m->sel->name);
					else if (!same_args(r->sel, m->sel))
						reason = "they have differing arguments";
				}
				if (reason == NULL && r->def && m->def && !same_shape(r->def->type, m->def->type))
					reason = psprintf("they return conflicting types \"%s\" and \"%s\"", gql_v_type_str(r->def->type),
									  gql_v_type_str(m->def->type));
				if (reason)
				{
					GQL_VERR2(v, r->sel->loc, m->sel->loc,
							  "%s%s \"%.64s\" conflict because %s. Use different aliases on the fields to fetch both if this was intentional.",
							  prefix ? prefix : "", prefix ? "subfields" : "Fields", m->key, reason);
					conflict = true;
					break;
				}
			}
			if (conflict)
				break;
			if (new_parent)
			{
				reps = lappend(reps, m);
				if (m->parent && m->parent->kind == GK_OBJECT)
					classes = lappend(classes, m->parent);
			}
		}
		if (conflict || depth > 4 * bv_graphql_max_depth)
			continue;
		/*
		 * A conflict between the sub-selections of two fields reads as
		 * graphql-js's: Fields "a" conflict because subfields "b" conflict
		 * because ...; one within a single field's selection set is that
		 * set's own.
		 */
		sub_prefix = list_length(group) < 2 ? NULL : psprintf("%s%s \"%.64s\" conflict because ", prefix ? prefix : "", prefix ? "subfields" : "Fields", ((MField *) linitial(group))->key);
		if (shape_only || list_length(classes) <= 1)
			merge_check(v, sub_fields(v, group, NULL, depth), depth + 1, shape_only, sub_prefix);
		else
		{
			/* fields of different object types merge per type, and all have one shape */
			foreach (lc, classes)
				merge_check(v, sub_fields(v, group, lfirst(lc), depth), depth + 1, false, sub_prefix);
			merge_check(v, sub_fields(v, group, NULL, depth), depth + 1, true, sub_prefix);
		}
	}
}

/* 5.3.2 over the selection set of one operation, typed root. */
void
gql_validate_merge(GValidator *v, GType *root, GqlSelectionSet *set)
{
	List *fields = NIL;

	collect_merge(v, root, set, &fields, 0);
	merge_check(v, fields, 0, false, NULL);
}
