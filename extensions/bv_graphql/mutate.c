/*-------------------------------------------------------------------------
 *
 * mutate.c
 *	  Mutation fields (insert, update, delete) and function fields, each
 *	  compiled to one SQL statement.
 *
 * A mutation field is one statement whose data-modifying CTE returns the
 * visible columns of the changed rows, from which the response object
 * (affectedCount, records with any nested selection) is built:
 *
 *	WITH __m AS (UPDATE t a SET ... WHERE <filter> RETURNING a.<visible>)
 *	SELECT json_build_object(...)::text
 *	  FROM (SELECT graphql._at_most((SELECT count(*) FROM __m), $n)) __chk
 *
 * graphql._at_most() raises GQ002 when more rows than atMost changed;
 * resolve.c runs every mutation field in its own subtransaction, so the
 * change is rolled back and the field becomes a GraphQL error.  The fields
 * of one mutation operation run one after the other, as the specification
 * requires.  Absent insert fields take the column default (DEFAULT),
 * explicit nulls are NULL.  Functions are called with named arguments
 * (omitted optional ones keep their SQL defaults); STABLE and IMMUTABLE
 * functions are Query fields, VOLATILE ones Mutation fields.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "bv_graphql.h"

static void
returning_list(StringInfo b, GTable *t, const char *alias)
{
	bool first = true;

	for (int i = 0; i < t->ncols; i++)
		if (t->cols[i].gtype)
		{
			appendStringInfo(b, "%s%s%s%s", first ? "" : ", ", alias ? alias : "", alias ? "." : "",
							 quote_identifier(t->cols[i].name));
			first = false;
		}
}

static GqlValue *
object_arg(GCompile *c, GqlValue *v, GType *t)
{
	v = gql_resolve_var(c, v);
	if (v == NULL || v->kind == GQL_V_NULL)
		return NULL;
	if (v->kind != GQL_V_OBJECT)
		gql_error(v->loc, "Expected a value of type \"%s\".", t->name);
	for (int i = 0; i < v->n; i++)
	{
		if (gql_input(t->ninputs, t->inputs, v->names[i]) == NULL)
			gql_error(v->loc, "Field \"%.64s\" is not defined by type \"%s\".", v->names[i], t->name);
		for (int k = 0; k < i; k++)
			if (strcmp(v->names[k], v->names[i]) == 0)
				gql_error(v->loc, "There can be only one input field named \"%.64s\".", v->names[i]);
	}
	return v;
}

static void
insert_cte(GCompile *c, GTable *t, const GSel *sel)
{
	StringInfo b = &c->sql;
	GqlValue *objs = gql_arg(c, sel, "objects");
	GqlValue **items;
	int n;
	int *cols;
	int ncols = 0;

	if (objs->kind == GQL_V_LIST)
	{
		items = objs->items;
		n = objs->n;
	}
	else
	{
		items = &objs;
		n = 1;
	}
	if (n > bv_graphql_max_rows)
		gql_error(objs->loc, "\"objects\" may hold at most %d records (bv_graphql.max_rows).", bv_graphql_max_rows);
	if (n == 0)
	{
		appendStringInfoString(b, "WITH __m AS (SELECT ");
		returning_list(b, t, NULL);
		appendStringInfo(b, " FROM %s WHERE false) ", t->qname);
		return;
	}
	cols = palloc(sizeof(int) * t->ncols);
	for (int r = 0; r < n; r++)
	{
		GqlValue *o = object_arg(c, items[r], t->insert_input);

		if (o == NULL)
			gql_error(objs->loc, "\"objects\" may not contain null.");
		items[r] = o;
		for (int k = 0; k < o->n; k++)
		{
			GColumn *col = gql_input(t->insert_input->ninputs, t->insert_input->inputs, o->names[k])->column;
			int idx = col - t->cols;
			bool seen = false;

			for (int j = 0; j < ncols; j++)
				seen |= cols[j] == idx;
			if (!seen)
				cols[ncols++] = idx;
		}
	}
	if (ncols == 0)
		for (int i = 0; i < t->ncols && ncols == 0; i++)
			if (t->cols[i].gtype && t->cols[i].can_insert)
				cols[ncols++] = i;
	appendStringInfo(b, "WITH __m AS (INSERT INTO %s (", t->qname);
	for (int j = 0; j < ncols; j++)
		appendStringInfo(b, "%s%s", j ? ", " : "", quote_identifier(t->cols[cols[j]].name));
	appendStringInfoString(b, ") VALUES ");
	for (int r = 0; r < n; r++)
	{
		appendStringInfoString(b, r ? ", (" : "(");
		for (int j = 0; j < ncols; j++)
		{
			GColumn *col = &t->cols[cols[j]];
			GqlValue *v = NULL;

			for (int k = 0; k < items[r]->n; k++)
				if (strcmp(items[r]->names[k], col->gname) == 0)
					v = items[r]->items[k];
			if (j)
				appendStringInfoString(b, ", ");
			if (v == NULL)
				appendStringInfoString(b, "DEFAULT");
			else
				appendStringInfo(b, "CAST($%d AS %s)",
								 gql_param(c, gql_scalar_text(c, v, col->gtype, psprintf("\"%s\"", col->gname))),
								 col->sqltype);
		}
		appendStringInfoChar(b, ')');
	}
	appendStringInfoString(b, " RETURNING ");
	returning_list(b, t, NULL);
	appendStringInfoString(b, ") ");
}

static void
update_cte(GCompile *c, GTable *t, const GSel *sel)
{
	StringInfo b = &c->sql;
	GqlValue *set = object_arg(c, gql_arg(c, sel, "set"), t->update_input);

	if (set == NULL || set->n == 0)
		gql_error(sel->first->loc, "\"set\" must name at least one field.");
	appendStringInfo(b, "WITH __m AS (UPDATE %s a SET ", t->qname);
	for (int k = 0; k < set->n; k++)
	{
		GColumn *col = gql_input(t->update_input->ninputs, t->update_input->inputs, set->names[k])->column;

		appendStringInfo(b, "%s%s = CAST($%d AS %s)", k ? ", " : "", quote_identifier(col->name),
						 gql_param(c, gql_scalar_text(c, set->items[k], col->gtype, psprintf("\"%s\"", col->gname))),
						 col->sqltype);
	}
	appendStringInfoString(b, " WHERE ");
	gql_where_filter(c, t, "a", gql_arg(c, sel, "filter"));
	appendStringInfoString(b, " RETURNING ");
	returning_list(b, t, "a");
	appendStringInfoString(b, ") ");
}

static void
delete_cte(GCompile *c, GTable *t, const GSel *sel)
{
	StringInfo b = &c->sql;

	appendStringInfo(b, "WITH __m AS (DELETE FROM %s a WHERE ", t->qname);
	gql_where_filter(c, t, "a", gql_arg(c, sel, "filter"));
	appendStringInfoString(b, " RETURNING ");
	returning_list(b, t, "a");
	appendStringInfoString(b, ") ");
}

void
gql_compile_mutation_field(GCompile *c, const GSel *sel)
{
	StringInfo b = &c->sql;
	GTable *t;
	GType *resp;
	List *sels;
	ListCell *lc;
	int at_most = 0;
	double rows = 0;

	if (sel->field == NULL)
		elog(ERROR, "bv_graphql: __typename is not compiled");
	t = sel->field->table;
	switch (sel->field->kind)
	{
		case FK_FUNCTION:
			appendStringInfoString(b, "SELECT (");
			gql_function_expr(c, sel);
			appendStringInfoString(b, ")::text");
			return;
		case FK_MUT_INSERT:
			resp = t->insert_resp;
			insert_cte(c, t, sel);
			break;
		case FK_MUT_UPDATE:
			resp = t->update_resp;
			update_cte(c, t, sel);
			break;
		case FK_MUT_DELETE:
			resp = t->delete_resp;
			delete_cte(c, t, sel);
			break;
		default:
			elog(ERROR, "bv_graphql: unexpected mutation field kind %d", sel->field->kind);
	}
	if (sel->field->kind != FK_MUT_INSERT)
	{
		char *n = gql_scalar_text(c, gql_arg(c, sel, "atMost"), c->schema->t_int, "\"atMost\"");

		if (atol(n) < 0)
			gql_error(sel->first->loc, "\"atMost\" must not be negative.");
		at_most = gql_param(c, n);
		rows = (double) atol(n);
	}
	else
	{
		GqlValue *objs = gql_arg(c, sel, "objects");

		rows = objs->kind == GQL_V_LIST ? objs->n : 1;
	}
	sels = gql_collect(c, resp, sel->sets);
	appendStringInfoString(b, "SELECT json_build_object(");
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);

		if (foreach_current_index(lc))
			appendStringInfoString(b, ", ");
		gql_append_literal(b, s->key);
		appendStringInfoString(b, ", ");
		if (s->field == NULL)
			gql_append_literal(b, resp->name);
		else if (s->field->kind == FK_RESP_COUNT)
			appendStringInfoString(b, "(SELECT count(*)::int FROM __m)");
		else
		{
			double save_scale = c->scale;

			/*
			 * The records are the rows changed, no more; what nests in them
			 * is read up to atMost (or the objects given) times.
			 */
			c->scale *= rows;
			appendStringInfoString(b, "(SELECT coalesce(json_agg(");
			gql_object_expr(c, t, "a", s->sets);
			c->scale = save_scale;
			appendStringInfoString(b, "), '[]'::json) FROM __m a)");
		}
	}
	appendStringInfoString(b, ")::text");
	if (at_most)
		appendStringInfo(b, " FROM (SELECT graphql._at_most((SELECT count(*)::int FROM __m), CAST($%d AS int))) __chk",
						 at_most);
}

void
gql_function_expr(GCompile *c, const GSel *sel)
{
	StringInfo b = &c->sql;
	GFunc *fn = sel->field->func;
	StringInfoData call;
	bool first = true;

	initStringInfo(&call);
	appendStringInfo(&call, "%s(", fn->qname);
	for (int k = 0; k < fn->nargs; k++)
	{
		GqlValue *v = gql_arg(c, sel, fn->argnames[k]);
		bool given = false;

		for (int j = 0; j < sel->first->nargs; j++)
			given |= strcmp(sel->first->args[j].name, fn->argnames[k]) == 0;
		if (!given)
			continue;
		appendStringInfo(&call, "%s%s => CAST($%d AS %s)", first ? "" : ", ", quote_identifier(fn->argnames[k]),
						 gql_param(c, gql_scalar_text(c, v, gql_named(fn->arggtypes[k]), psprintf("\"%s\"", fn->argnames[k]))),
						 fn->argtypes[k]);
		first = false;
	}
	appendStringInfoChar(&call, ')');
	if (fn->ret_table)
	{
		char *a = gql_new_alias(c);
		double save_scale = c->scale;

		/* what nests in a set-returning function's rows counts max_rows times */
		if (fn->retset)
			c->scale *= bv_graphql_max_rows;
		appendStringInfoString(b, fn->retset ? "(SELECT coalesce(json_agg(" : "(SELECT ");
		gql_object_expr(c, fn->ret_table, a, sel->sets);
		c->scale = save_scale;
		appendStringInfo(b, "%s FROM %s %s)", fn->retset ? "), '[]'::json)" : "", call.data, a);
	}
	else
	{
		GScalar k = fn->ret_scalar->kind == GK_SCALAR ? fn->ret_scalar->scalar : GS_STRING;
		bool as_text = k == GS_BIGINT || k == GS_BIGFLOAT;

		if (fn->retset)
			appendStringInfo(b, "(SELECT json_agg(x%s) FROM %s x)", as_text ? "::text" : "", call.data);
		else
			appendStringInfo(b, "to_json((%s)%s)", call.data, as_text ? "::text" : "");
	}
}
