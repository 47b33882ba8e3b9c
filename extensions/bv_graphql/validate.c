/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  Validation of a whole GraphQL document against the caller's schema,
 *	  section 5 of the October 2021 specification, before any operation is
 *	  chosen or compiled.
 *
 * The rules, by the specification's numbering: 5.2 operation names
 * unique, lone anonymous operation, the operation's root type exists;
 * 5.3.1 fields exist on their type; 5.3.2 fields with one response name
 * can merge (same field and arguments unless their parent object types
 * differ, and always the same response shape); 5.3.3 leaf selections;
 * 5.4 argument names known and unique, required arguments given; 5.5
 * fragment names unique, spread targets defined, type conditions known and
 * composite, fragments used, no cycles, spreads possible; 5.6 literal
 * values of the right type, input object fields known, unique and
 * required ones given; 5.7 directives known, in a valid location, unique
 * per location; 5.8 variable names unique, of input types, every used
 * variable defined and every defined one used (fragments followed), and
 * used only where their type fits (5.8.5: nullability, lists, a default
 * value of the variable or of the position).
 *
 * Validation does not depend on the variables' values nor on @skip /
 * @include: every operation and fragment of the document is checked, as
 * graphql-js does.  Errors are collected (at most MAX_ERRORS), each with
 * the locations it concerns, and messages follow graphql-js's wording so
 * that clients see the same text from both.  compile.c keeps its own checks
 * as a second line; what depends on variable values (coercion) is only
 * there.
 *
 * Values (5.6) are checked by validate_values.c, field merging (5.3.2)
 * by validate_merge.c.  Cost: one walk of each definition, then the merge
 * check over the operations with fragments expanded, bounded by
 * bv_graphql.max_fields (a fragment "bomb" stops there) and by
 * GQL_MAX_SPREAD_DEPTH nested spreads.
 * Memory: palloc in the caller's per-request context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "bv_graphql.h"

#define MAX_ERRORS 100

void
gql_verr(GValidator *v, int nlocs, const GqlLoc *locs, const char *fmt, ...)
{
	GqlError *e;
	char buf[512];
	va_list ap;

	if (v->nerrors >= MAX_ERRORS)
	{
		if (v->nerrors++ == MAX_ERRORS)
		{
			e = palloc0(sizeof(GqlError));
			e->message = pstrdup("Too many validation errors, error limit reached. Validation aborted.");
			v->errors = lappend(v->errors, e);
		}
		return;
	}
	v->nerrors++;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	e = palloc0(sizeof(GqlError));
	e->message = pstrdup(buf);
	e->nlocs = nlocs;
	e->locs = palloc(sizeof(GqlLoc) * Max(nlocs, 1));
	memcpy(e->locs, locs, sizeof(GqlLoc) * nlocs);
	v->errors = lappend(v->errors, e);
}

/* ---------- types ---------- */

bool
gql_v_is_composite(GType *t)
{
	return t && (t->kind == GK_OBJECT || t->kind == GK_INTERFACE || t->kind == GK_UNION);
}

static bool
is_input(GType *t)
{
	t = gql_named(t);
	return t->kind == GK_SCALAR || t->kind == GK_ENUM || t->kind == GK_INPUT;
}

static void
append_type(StringInfo b, GType *t)
{
	if (t->kind == GK_NON_NULL)
	{
		append_type(b, t->of);
		appendStringInfoChar(b, '!');
	}
	else if (t->kind == GK_LIST)
	{
		appendStringInfoChar(b, '[');
		append_type(b, t->of);
		appendStringInfoChar(b, ']');
	}
	else
		appendStringInfoString(b, t->name);
}

char *
gql_v_type_str(GType *t)
{
	StringInfoData b;

	initStringInfo(&b);
	append_type(&b, t);
	return b.data;
}

/* The type a variable definition names; NULL (no error here) when unknown. */
static GType *
typeref(GValidator *v, GqlTypeRef *r)
{
	GType *t;

	if (r->kind == GQL_T_NON_NULL)
		return (t = typeref(v, r->of)) ? gql_nn(v->s, t) : NULL;
	if (r->kind == GQL_T_LIST)
		return (t = typeref(v, r->of)) ? gql_list(v->s, t) : NULL;
	return gql_type_by_name(v->s, r->name);
}

/* Can a value of composite type a also be of composite type b? */
static bool
overlap(GType *a, GType *b)
{
	if (a == b)
		return true;
	if (a->kind == GK_INTERFACE && b->kind == GK_INTERFACE)
	{
		for (int i = 0; i < a->npossible; i++)
			for (int k = 0; k < b->npossible; k++)
				if (a->possible[i] == b->possible[k])
					return true;
		return false;
	}
	if (a->kind == GK_INTERFACE)
	{
		GType *t = a;

		a = b;
		b = t;
	}
	/* a is an object type here */
	if (b->kind == GK_INTERFACE)
		for (int i = 0; i < b->npossible; i++)
			if (b->possible[i] == a)
				return true;
	return false;
}

/* 5.8.5's IsTypeSubTypeOf for input types. */
static bool
subtype(GType *sub, GType *super)
{
	if (sub == super)
		return true;
	if (super->kind == GK_NON_NULL)
		return sub->kind == GK_NON_NULL && subtype(sub->of, super->of);
	if (sub->kind == GK_NON_NULL)
		return subtype(sub->of, super);
	if (super->kind == GK_LIST)
		return sub->kind == GK_LIST && subtype(sub->of, super->of);
	if (sub->kind == GK_LIST)
		return false;
	return sub == super;
}

/* ---------- directives ---------- */

static const struct
{
	const char *name;
	bool executable; /* @skip and @include; the others are type-system directives */
} known_directives[] = {{"include", true}, {"skip", true}, {"deprecated", false}, {"specifiedBy", false}};

/* 5.7: directives of one location (FIELD, QUERY, FRAGMENT_SPREAD...). */
static void
check_directives(GValidator *v, int n, GqlDirective *dirs, const char *location, bool executable_location)
{
	for (int i = 0; i < n; i++)
	{
		GqlDirective *d = &dirs[i];
		int known = -1;

		for (int k = 0; k < lengthof(known_directives); k++)
			if (strcmp(known_directives[k].name, d->name) == 0)
				known = k;
		for (int k = 0; k < i; k++)
			if (strcmp(dirs[k].name, d->name) == 0 && known >= 0)
			{
				GQL_VERR2(v, dirs[k].loc, d->loc, "The directive \"@%.64s\" can only be used once at this location.", d->name);
				break;
			}
		if (known < 0)
		{
			GQL_VERR1(v, d->loc, "Unknown directive \"@%.64s\".", d->name);
			for (int k = 0; k < d->nargs; k++)
				gql_v_check_value(v, d->args[k].value, NULL, false);
			continue;
		}
		if (!known_directives[known].executable || !executable_location)
		{
			GQL_VERR1(v, d->loc, "Directive \"@%s\" may not be used on %s.", d->name, location);
			for (int k = 0; k < d->nargs; k++)
				gql_v_check_value(v, d->args[k].value, NULL, false);
			continue;
		}
		{
			bool has_if = false;

			for (int k = 0; k < d->nargs; k++)
			{
				GqlArgument *a = &d->args[k];
				bool is_if = strcmp(a->name, "if") == 0;

				for (int j = 0; j < k; j++)
					if (strcmp(d->args[j].name, a->name) == 0)
					{
						GQL_VERR2(v, d->args[j].loc, a->loc, "There can be only one argument named \"%.64s\".", a->name);
						break;
					}
				if (!is_if)
					GQL_VERR1(v, a->loc, "Unknown argument \"%.64s\" on directive \"@%s\".", a->name, d->name);
				has_if |= is_if;
				gql_v_check_value(v, a->value, is_if ? gql_nn(v->s, v->s->t_boolean) : NULL, false);
			}
			if (!has_if)
				GQL_VERR1(v, d->loc, "Directive \"@%s\" argument \"if\" of type \"Boolean!\" is required, but it was not provided.",
						  d->name);
		}
	}
}

/* ---------- the walk of one definition ---------- */

GqlDefinition *
gql_v_find_fragment(GValidator *v, const char *name)
{
	for (int i = 0; i < v->doc->n; i++)
		if (v->doc->defs[i]->is_fragment && strcmp(v->doc->defs[i]->name, name) == 0)
			return v->doc->defs[i];
	return NULL;
}

static GValDef *
info_of(GValidator *v, GqlDefinition *d)
{
	for (int i = 0; i < v->doc->n; i++)
		if (v->doc->defs[i] == d)
			return &v->infos[i];
	return NULL;
}

/* The field a selection names on parent (meta-fields included); NULL when none. */
GField *
gql_v_field_def(GValidator *v, GType *parent, const char *name)
{
	if (parent == NULL)
		return NULL;
	if (parent == v->s->query && strcmp(name, "__schema") == 0)
		return v->s->f_schema;
	if (parent == v->s->query && strcmp(name, "__type") == 0)
		return v->s->f_type;
	return gql_field(parent, name);
}

static void walk_set(GValidator *v, GType *parent, GqlSelectionSet *set);

static void
walk_field(GValidator *v, GType *parent, GqlSelection *s)
{
	bool typename = strcmp(s->name, "__typename") == 0;
	GField *f = typename ? NULL : gql_v_field_def(v, parent, s->name);
	GType *named = NULL;

	if (parent && !typename && f == NULL)
		GQL_VERR1(v, s->loc, "Cannot query field \"%.64s\" on type \"%s\".", s->name, parent->name);
	for (int k = 0; k < s->nargs; k++)
	{
		GqlArgument *a = &s->args[k];
		GInput *in = f ? gql_input(f->nargs, f->args, a->name) : NULL;

		for (int j = 0; j < k; j++)
			if (strcmp(s->args[j].name, a->name) == 0)
			{
				GQL_VERR2(v, s->args[j].loc, a->loc, "There can be only one argument named \"%.64s\".", a->name);
				break;
			}
		if (parent && (f || typename) && in == NULL)
			GQL_VERR1(v, a->loc, "Unknown argument \"%.64s\" on field \"%s.%s\".", a->name, parent->name, s->name);
		gql_v_check_value(v, a->value, in ? in->type : NULL, in && in->default_value);
	}
	if (f)
	{
		for (int i = 0; i < f->nargs; i++)
		{
			bool given = false;

			if (f->args[i].type->kind != GK_NON_NULL || f->args[i].default_value)
				continue;
			for (int k = 0; k < s->nargs && !given; k++)
				given = strcmp(s->args[k].name, f->args[i].name) == 0;
			if (!given)
				GQL_VERR1(v, s->loc, "Field \"%s\" argument \"%s\" of type \"%s\" is required, but it was not provided.",
						  s->name, f->args[i].name, gql_v_type_str(f->args[i].type));
		}
		named = gql_named(f->type);
		if (gql_v_is_composite(named) && s->sel == NULL)
			GQL_VERR1(v, s->loc, "Field \"%s\" of type \"%s\" must have a selection of subfields. Did you mean \"%s { ... }\"?",
					  s->name, gql_v_type_str(f->type), s->name);
		if (!gql_v_is_composite(named) && s->sel != NULL)
			GQL_VERR1(v, s->loc, "Field \"%s\" must not have a selection since type \"%s\" has no subfields.", s->name,
					  gql_v_type_str(f->type));
	}
	else if (typename && s->sel != NULL)
		GQL_VERR1(v, s->loc, "Field \"__typename\" must not have a selection since type \"String!\" has no subfields.");
	if (s->sel)
		walk_set(v, gql_v_is_composite(named) ? named : NULL, s->sel);
}

static void
walk_set(GValidator *v, GType *parent, GqlSelectionSet *set)
{
	check_stack_depth();
	for (int i = 0; i < set->n; i++)
	{
		GqlSelection *s = set->items[i];

		switch (s->kind)
		{
			case GQL_SEL_FIELD:
				check_directives(v, s->ndirs, s->dirs, "FIELD", true);
				walk_field(v, parent, s);
				break;
			case GQL_SEL_SPREAD:
			{
				GqlDefinition *f = gql_v_find_fragment(v, s->name);
				Spread *sp = palloc(sizeof(Spread));

				check_directives(v, s->ndirs, s->dirs, "FRAGMENT_SPREAD", true);
				sp->name = s->name;
				sp->loc = s->loc;
				v->cur->spreads = lappend(v->cur->spreads, sp);
				if (f == NULL)
					GQL_VERR1(v, s->loc, "Unknown fragment \"%.64s\".", s->name);
				else
				{
					GType *ft = info_of(v, f)->type;

					if (parent && ft && !overlap(parent, ft))
						GQL_VERR1(v, s->loc,
								  "Fragment \"%.64s\" cannot be spread here as objects of type \"%s\" can never be of type \"%s\".",
								  s->name, parent->name, ft->name);
				}
				break;
			}
			case GQL_SEL_INLINE:
			{
				GType *t = parent;

				check_directives(v, s->ndirs, s->dirs, "INLINE_FRAGMENT", true);
				if (s->type_cond)
				{
					t = gql_type_by_name(v->s, s->type_cond);
					if (t == NULL)
						GQL_VERR1(v, s->loc, "Unknown type \"%.64s\".", s->type_cond);
					else if (!gql_v_is_composite(t))
					{
						GQL_VERR1(v, s->loc, "Fragment cannot condition on non composite type \"%s\".", t->name);
						t = NULL;
					}
					else if (parent && !overlap(parent, t))
						GQL_VERR1(v, s->loc,
								  "Fragment cannot be spread here as objects of type \"%s\" can never be of type \"%s\".",
								  parent->name, t->name);
				}
				walk_set(v, t, s->sel);
				break;
			}
		}
	}
}

/* ---------- the document ---------- */

/* The definitions reachable from d by fragment spreads, d first. */
static List *
reachable(GValidator *v, GValDef *d)
{
	List *out = list_make1(d);
	ListCell *lc;

	foreach (lc, out) /* out grows while it is walked */
	{
		GValDef *x = lfirst(lc);
		ListCell *sc;

		foreach (sc, x->spreads)
		{
			GqlDefinition *f = gql_v_find_fragment(v, ((Spread *) lfirst(sc))->name);
			GValDef *fi = f ? info_of(v, f) : NULL;

			if (fi && !list_member_ptr(out, fi))
				out = lappend(out, fi);
		}
	}
	return out;
}

/* 5.5.2.2: cycles of fragment spreads, each reported once (graphql-js's walk). */
static void
detect_cycles(GValidator *v, GValDef *d, bool *visited, List **path, int *path_index)
{
	int self = d - v->infos;
	ListCell *lc;

	check_stack_depth();
	if (visited[self])
		return;
	visited[self] = true;
	path_index[self] = list_length(*path);
	foreach (lc, d->spreads)
	{
		Spread *sp = lfirst(lc);
		GqlDefinition *f = gql_v_find_fragment(v, sp->name);
		int target = f ? info_of(v, f) - v->infos : -1;

		if (target < 0)
			continue;
		*path = lappend(*path, sp);
		if (path_index[target] < 0)
			detect_cycles(v, &v->infos[target], visited, path, path_index);
		else
		{
			int from = path_index[target], n = list_length(*path) - from;
			GqlLoc *locs = palloc(sizeof(GqlLoc) * n);
			StringInfoData via;

			initStringInfo(&via);
			for (int i = 0; i < n; i++)
			{
				Spread *p = list_nth(*path, from + i);

				locs[i] = p->loc;
				if (i < n - 1 && via.len < 200)
					appendStringInfo(&via, "%s\"%.64s\"", i ? ", " : "", p->name);
			}
			if (n > 1)
				gql_verr(v, n, locs, "Cannot spread fragment \"%.64s\" within itself via %s.", sp->name, via.data);
			else
				gql_verr(v, n, locs, "Cannot spread fragment \"%.64s\" within itself.", sp->name);
		}
		*path = list_delete_last(*path);
	}
	path_index[self] = -1;
}

static const char *
op_location(GqlOpKind k)
{
	return k == GQL_OP_MUTATION ? "MUTATION" : k == GQL_OP_SUBSCRIPTION ? "SUBSCRIPTION"
																		: "QUERY";
}

/* 5.8.3 - 5.8.5 for one operation. */
static void
check_variables(GValidator *v, GValDef *oi)
{
	GqlDefinition *op = oi->def;
	List *defs = reachable(v, oi);
	bool *used = palloc0(sizeof(bool) * Max(op->nvars, 1));
	GType **vtypes = palloc0(sizeof(GType *) * Max(op->nvars, 1));
	ListCell *lc, *uc;

	for (int i = 0; i < op->nvars; i++)
		vtypes[i] = typeref(v, op->vars[i].type);
	foreach (lc, defs)
		foreach (uc, ((GValDef *) lfirst(lc))->uses)
		{
			VarUse *u = lfirst(uc);
			int i;

			for (i = 0; i < op->nvars; i++)
				if (strcmp(op->vars[i].name, u->name) == 0)
					break;
			if (i == op->nvars)
			{
				if (op->name)
					GQL_VERR2(v, u->loc, op->loc, "Variable \"$%.64s\" is not defined by operation \"%.64s\".", u->name, op->name);
				else
					GQL_VERR2(v, u->loc, op->loc, "Variable \"$%.64s\" is not defined.", u->name);
				continue;
			}
			used[i] = true;
			if (u->type && vtypes[i] && is_input(vtypes[i]))
			{
				GType *vt = vtypes[i], *lt = u->type;
				GqlValue *def = op->vars[i].def;

				/* a nullable variable fits a non-null position when it or the position has a default */
				if (lt->kind == GK_NON_NULL && vt->kind != GK_NON_NULL &&
					((def && def->kind != GQL_V_NULL) || u->loc_default))
					lt = lt->of;
				if (!subtype(vt, lt))
					GQL_VERR2(v, op->vars[i].loc, u->loc, "Variable \"$%.64s\" of type \"%s\" used in position expecting type \"%s\".",
							  u->name, gql_v_type_str(vtypes[i]), gql_v_type_str(u->type));
			}
		}
	for (int i = 0; i < op->nvars; i++)
		if (!used[i])
		{
			if (op->name)
				GQL_VERR1(v, op->vars[i].loc, "Variable \"$%.64s\" is never used in operation \"%.64s\".", op->vars[i].name,
						  op->name);
			else
				GQL_VERR1(v, op->vars[i].loc, "Variable \"$%.64s\" is never used.", op->vars[i].name);
		}
}

/* One operation's header: name, variables, directives; returns its root type. */
static GType *
check_operation(GValidator *v, GqlDefinition *op, int nops)
{
	GType *root = op->op == GQL_OP_MUTATION ? v->s->mutation : op->op == GQL_OP_QUERY ? v->s->query
																					  : NULL;

	if (op->name == NULL && nops > 1)
		GQL_VERR1(v, op->loc, "This anonymous operation must be the only defined operation.");
	if (op->op == GQL_OP_SUBSCRIPTION)
		GQL_VERR1(v, op->loc, "Subscriptions are not supported; use bv_realtime for live updates.");
	else if (root == NULL)
		GQL_VERR1(v, op->loc, "Schema is not configured for mutations: the role may change nothing here.");
	for (int i = 0; i < op->nvars; i++)
	{
		GqlVarDef *vd = &op->vars[i];
		GType *t = typeref(v, vd->type);
		GqlTypeRef *r = vd->type;

		for (int k = 0; k < i; k++)
			if (strcmp(op->vars[k].name, vd->name) == 0)
			{
				GQL_VERR2(v, op->vars[k].loc, vd->loc, "There can be only one variable named \"$%.64s\".", vd->name);
				break;
			}
		while (r->kind != GQL_T_NAMED)
			r = r->of;
		if (t == NULL)
			GQL_VERR1(v, r->loc, "Unknown type \"%.64s\".", r->name);
		else if (!is_input(t))
			GQL_VERR1(v, vd->loc, "Variable \"$%.64s\" cannot be non-input type \"%s\".", vd->name, gql_v_type_str(t));
		if (vd->def)
			gql_v_check_value(v, vd->def, t && is_input(t) ? t : NULL, false);
		check_directives(v, vd->ndirs, vd->dirs, "VARIABLE_DEFINITION", false);
	}
	check_directives(v, op->ndirs, op->dirs, op_location(op->op), false);
	return root;
}

List *
gql_validate(GSchema *s, GqlDocument *doc)
{
	GValidator v;
	int nops = 0;
	bool *visited;
	int *path_index;
	bool *frag_used;
	List *path = NIL;

	memset(&v, 0, sizeof(v));
	v.s = s;
	v.doc = doc;
	v.infos = palloc0(sizeof(GValDef) * Max(doc->n, 1));
	for (int i = 0; i < doc->n; i++)
		nops += !doc->defs[i]->is_fragment;

	/* names and type conditions first: spreads look at their fragment's type */
	for (int i = 0; i < doc->n; i++)
	{
		GqlDefinition *d = doc->defs[i];

		v.infos[i].def = d;
		for (int k = 0; k < i; k++)
		{
			GqlDefinition *o = doc->defs[k];

			if (d->name && o->name && o->is_fragment == d->is_fragment && strcmp(o->name, d->name) == 0)
			{
				if (d->is_fragment)
					GQL_VERR2(&v, o->loc, d->loc, "There can be only one fragment named \"%.64s\".", d->name);
				else
					GQL_VERR2(&v, o->loc, d->loc, "There can be only one operation named \"%.64s\".", d->name);
				break;
			}
		}
		if (!d->is_fragment)
			continue;
		v.infos[i].type = gql_type_by_name(s, d->type_cond);
		if (v.infos[i].type == NULL)
			GQL_VERR1(&v, d->loc, "Unknown type \"%.64s\".", d->type_cond);
		else if (!gql_v_is_composite(v.infos[i].type))
		{
			GQL_VERR1(&v, d->loc, "Fragment \"%.64s\" cannot condition on non composite type \"%s\".", d->name,
					  v.infos[i].type->name);
			v.infos[i].type = NULL;
		}
	}
	for (int i = 0; i < doc->n; i++)
	{
		GqlDefinition *d = doc->defs[i];

		v.cur = &v.infos[i];
		if (!d->is_fragment)
			v.infos[i].type = check_operation(&v, d, nops);
		else
			check_directives(&v, d->ndirs, d->dirs, "FRAGMENT_DEFINITION", false);
		walk_set(&v, v.infos[i].type, d->sel);
	}

	/* fragments: used, acyclic */
	visited = palloc0(sizeof(bool) * Max(doc->n, 1));
	path_index = palloc(sizeof(int) * Max(doc->n, 1));
	frag_used = palloc0(sizeof(bool) * Max(doc->n, 1));
	for (int i = 0; i < doc->n; i++)
		path_index[i] = -1;
	for (int i = 0; i < doc->n; i++)
		if (doc->defs[i]->is_fragment)
			detect_cycles(&v, &v.infos[i], visited, &path, path_index);
	for (int i = 0; i < doc->n; i++)
	{
		ListCell *lc;

		if (doc->defs[i]->is_fragment)
			continue;
		foreach (lc, reachable(&v, &v.infos[i]))
			frag_used[(GValDef *) lfirst(lc) - v.infos] = true;
		check_variables(&v, &v.infos[i]);
	}
	for (int i = 0; i < doc->n; i++)
		if (doc->defs[i]->is_fragment && !frag_used[i])
			GQL_VERR1(&v, doc->defs[i]->loc, "Fragment \"%.64s\" is never used.", doc->defs[i]->name);

	/* 5.3.2, with fragments expanded: once the rest holds (cycles would not end) */
	if (v.errors == NIL)
		for (int i = 0; i < doc->n && !v.merge_stop; i++)
		{
			if (doc->defs[i]->is_fragment || v.infos[i].type == NULL)
				continue;
			gql_validate_merge(&v, v.infos[i].type, doc->defs[i]->sel);
		}
	return v.errors;
}
