/*-------------------------------------------------------------------------
 *
 * changes.c
 *	  Table changes: decoding pgoutput's relation and row messages,
 *	  subscription filters, and the row-level-security visibility check
 *	  that runs once per group of subscribers, table and batch.
 *
 * Decoding.  A table in publication "bv_realtime" makes pgoutput send, in
 * the gateway's stream, a relation message (R: relid, names, columns with
 * their key flag and type) before the first change that uses it, and row
 * messages (I, U, D) with text values.  rt_take_relation() keeps the
 * description; rt_take_change() turns a row message into an RtEvent of
 * topic "table:<schema>.<name>" whose payload is built once here:
 *   {"schema":..,"table":..,"type":"INSERT|UPDATE|DELETE",
 *    "record":{..},"old_record":{..}}
 * Integers, floats, numeric and booleans become JSON numbers and
 * booleans, json/jsonb stay JSON, everything else a string; a column
 * whose TOASTed value did not change is left out of "record".
 *
 * Filters.  A subscription has at most RT_FILTER_CONDS conditions joined by
 * "&", PostgREST style: column=eq.v, column=neq.v, column=in.(a,b,"c,d"),
 * column=is.null, column=not.null; plus the operations it wants.  They
 * compare the text form of the decoded value (what pgoutput sends, the
 * type's output function), in C, per subscriber: no SQL.
 *
 * Visibility.  rt_rls_visible() decides, for one group of subscribers (same
 * role, same claims apart from exp/iat/nbf/jti) and a list of changes of
 * one table, which rows the group may SELECT: ONE query, run as the
 * group's role with request.jwt.claims set (PostgREST's prelude), that
 * looks up every changed row by its key AND checks that the row the table
 * shows now has the decoded values (text forms from the type's output
 * function, as pgoutput's; columns left out when TOASTed and unchanged).  So a row is delivered only when the role can
 * SELECT that very row under RLS at the time of the check: a row changed
 * again since is not delivered in its old form (its newer change is
 * checked in its own batch).  Deletes: the row is gone, RLS cannot say;
 * a delete is delivered only for tables without row level security, as
 * the key only.  A table without row level security needs no row query:
 * the group's SELECT privilege (checked again per batch) shows every row.
 *
 * The query must see the changes it checks: pgoutput may send a commit
 * before the committing backend has left the proc array, so the caller
 * first waits until the batch's transactions are no longer in progress
 * (rt_wait_visible; bounded, then the rows stay hidden: never a leak).
 *
 * Errors: the visibility query runs in rt_run_guarded (its own
 * transaction, errors caught and logged): an error hides the rows.
 * Memory: relation descriptions in the caller's long-lived context; row
 * values in the stream's per-batch context; filters malloc'd (they live in
 * libwebsockets' session data).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "port/pg_bswap.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "bv_realtime.h"

static uint32
get_u32(const char *p)
{
	uint32 v;

	memcpy(&v, p, 4);
	return pg_ntoh32(v);
}

static uint16
get_u16(const char *p)
{
	uint16 v;

	memcpy(&v, p, 2);
	return pg_ntoh16(v);
}

/* A NUL-terminated string at *p within end; advances *p.  NULL if malformed. */
static const char *
get_str(const char **p, const char *end)
{
	const char *s = *p;
	size_t n = strnlen(s, end - s);

	if (s + n >= end)
		return NULL;
	*p = s + n + 1;
	return s;
}

/*
 * rt_take_relation
 *		Decode a relation message (after its 'R'); *rel allocated in cxt.
 */
bool
rt_take_relation(const char *p, int len, MemoryContext cxt, RtRel **relp)
{
	const char *end = p + len, *nsp, *name;
	MemoryContext old;
	RtRel *rel;
	int i, natts;

	if (len < 4)
		return false;
	old = MemoryContextSwitchTo(cxt);
	rel = palloc0(sizeof(RtRel));
	rel->relid = get_u32(p);
	p += 4;
	if ((nsp = get_str(&p, end)) == NULL || (name = get_str(&p, end)) == NULL || end - p < 3)
		goto bad;
	strlcpy(rel->nspname, nsp[0] ? nsp : "pg_catalog", NAMEDATALEN);
	strlcpy(rel->relname, name, NAMEDATALEN);
	p += 1; /* replica identity */
	natts = get_u16(p);
	p += 2;
	rel->natts = natts;
	rel->attnames = palloc0(sizeof(char *) * (natts + 1));
	rel->atttypes = palloc0(sizeof(Oid) * (natts + 1));
	rel->atttypmods = palloc0(sizeof(int32) * (natts + 1));
	rel->attkey = palloc0(sizeof(bool) * (natts + 1));
	for (i = 0; i < natts; i++)
	{
		const char *att;

		if (end - p < 1)
			goto bad;
		rel->attkey[i] = (p[0] & 1) != 0;
		p++;
		if ((att = get_str(&p, end)) == NULL || end - p < 8)
			goto bad;
		rel->attnames[i] = pstrdup(att);
		rel->atttypes[i] = get_u32(p);
		rel->atttypmods[i] = (int32) get_u32(p + 4);
		p += 8;
	}
	snprintf(rel->topic, sizeof(rel->topic), "%s%s.%s", RT_TABLE_PREFIX, rel->nspname,
			 rel->relname);
	if (!rt_name_is_valid(rel->topic, strlen(rel->topic), RT_TOPIC_MAX))
		rel->topic[0] = '\0';
	MemoryContextSwitchTo(old);
	*relp = rel;
	return true;
bad:
	MemoryContextSwitchTo(old);
	return false;
}

/* TupleData at *p: 'n' null, 'u' unchanged TOAST, 't' text. */
static RtTuple *
get_tuple(const char **pp, const char *end, const RtRel *rel)
{
	const char *p = *pp;
	RtTuple *t;
	int i, n;

	if (end - p < 2)
		return NULL;
	n = get_u16(p);
	p += 2;
	if (n != rel->natts)
		return NULL;
	t = palloc0(sizeof(RtTuple));
	t->natts = n;
	t->vals = palloc0(sizeof(char *) * (n + 1));
	t->unchanged = palloc0(sizeof(bool) * (n + 1));
	for (i = 0; i < n; i++)
	{
		if (end - p < 1)
			return NULL;
		switch (*p++)
		{
			case 'n':
				break;
			case 'u':
				t->unchanged[i] = true;
				break;
			case 't':
			{
				uint32 l;

				if (end - p < 4)
					return NULL;
				l = get_u32(p);
				p += 4;
				if ((uint64) (end - p) < l)
					return NULL;
				t->vals[i] = pnstrdup(p, l);
				p += l;
				break;
			}
			default:
				return NULL; /* binary: not asked for */
		}
	}
	*pp = p;
	return t;
}

/*
 * rt_take_change
 *		Decode a row message (p[0] is 'I', 'U' or 'D') into ev (topic, op,
 *		rows; payload built).  false when malformed; ev->rel NULL when the
 *		table is unknown or its name is not a valid topic (skipped).
 */
bool
rt_take_change(const char *p, int len, RtRel *(*lookup)(Oid), RtEvent *ev)
{
	const char *end = p + len;
	char op = p[0];
	RtRel *rel;

	if (len < 6)
		return false;
	p++;
	rel = lookup(get_u32(p));
	p += 4;
	ev->op = op;
	ev->rel = NULL;
	if (rel == NULL)
		return true;
	if (*p == 'K' || *p == 'O')
	{
		p++;
		if ((ev->oldtup = get_tuple(&p, end, rel)) == NULL)
			return false;
	}
	if (op != 'D')
	{
		if (end - p < 1 || *p != 'N')
			return false;
		p++;
		if ((ev->newtup = get_tuple(&p, end, rel)) == NULL)
			return false;
	}
	else if (ev->oldtup == NULL)
		return false;
	if (rel->topic[0] == '\0')
		return true;
	ev->rel = rel;
	ev->topic = rel->topic;
	ev->event = op == 'I' ? "insert" : op == 'U' ? "update"
												 : "delete";
	ev->payload = rt_change_payload(ev);
	return true;
}

/* One value as JSON: numbers and booleans bare, json as is, else a string. */
static void
append_value(StringInfo buf, Oid type, const char *v)
{
	if (v == NULL)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			/* NaN and infinities are not JSON numbers */
			if (strspn(v, "0123456789+-.eE") == strlen(v) && v[0] != '\0')
			{
				appendStringInfoString(buf, v);
				return;
			}
			break;
		case BOOLOID:
			appendStringInfoString(buf, strcmp(v, "t") == 0 ? "true" : "false");
			return;
		case JSONOID:
		case JSONBOID:
			appendStringInfoString(buf, v);
			return;
		default:
			break;
	}
	escape_json(buf, v);
}

static void
append_record(StringInfo buf, const RtRel *rel, const RtTuple *t, bool keys_only)
{
	int i;
	bool first = true;

	appendStringInfoChar(buf, '{');
	for (i = 0; i < t->natts; i++)
	{
		if (t->unchanged[i] || (keys_only && !rel->attkey[i]))
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		escape_json(buf, rel->attnames[i]);
		appendStringInfoChar(buf, ':');
		append_value(buf, rel->atttypes[i], t->vals[i]);
	}
	appendStringInfoChar(buf, '}');
}

/*
 * rt_change_payload
 *		The JSON payload of a change (palloc'd): schema, table, type, record,
 *		old_record (the key, for deletes and key-changing updates).
 */
char *
rt_change_payload(const RtEvent *ev)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"schema\":");
	escape_json(&buf, ev->rel->nspname);
	appendStringInfoString(&buf, ",\"table\":");
	escape_json(&buf, ev->rel->relname);
	appendStringInfo(&buf, ",\"type\":\"%s\"",
					 ev->op == 'I' ? "INSERT" : ev->op == 'U' ? "UPDATE"
															  : "DELETE");
	if (ev->newtup)
	{
		appendStringInfoString(&buf, ",\"record\":");
		append_record(&buf, ev->rel, ev->newtup, false);
	}
	if (ev->oldtup)
	{
		appendStringInfoString(&buf, ",\"old_record\":");
		append_record(&buf, ev->rel, ev->oldtup, true);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* ---- filters ---- */

void
rt_filter_free(RtFilter *f)
{
	int i, j;

	for (i = 0; i < f->nconds; i++)
	{
		for (j = 0; j < f->conds[i].nvals; j++)
			free(f->conds[i].vals[j]);
		free(f->conds[i].vals);
	}
	f->nconds = 0;
}

/* Split "(a,b,"c,d")" into values; false when malformed. */
static bool
parse_in_list(const char *s, RtFilterCond *c)
{
	size_t n = strlen(s);
	const char *p, *end;

	if (n < 2 || s[0] != '(' || s[n - 1] != ')')
		return false;
	p = s + 1;
	end = s + n - 1;
	c->vals = calloc(RT_FILTER_MAX, sizeof(char *));
	if (c->vals == NULL)
		return false;
	while (p <= end)
	{
		char buf[RT_FILTER_MAX];
		size_t k = 0;

		if (p < end && *p == '"')
		{
			p++;
			while (p < end && *p != '"' && k < sizeof(buf) - 1)
				buf[k++] = *p++;
			if (p >= end || *p != '"')
				return false;
			p++;
			if (p < end && *p != ',')
				return false;
		}
		else
			while (p < end && *p != ',' && k < sizeof(buf) - 1)
				buf[k++] = *p++;
		buf[k] = '\0';
		if ((c->vals[c->nvals++] = strdup(buf)) == NULL)
			return false;
		p++; /* the comma, or past the end */
		if (p == end + 1)
			break;
	}
	return c->nvals > 0;
}

/*
 * rt_filter_parse
 *		Parse "col=eq.v&col2=in.(a,b)" and an operation list
 *		"insert,update,delete" (NULL or "*": all).  false with a reason.
 */
bool
rt_filter_parse(const char *filter, const char *events, RtFilter *f, char *reason, size_t reasonlen)
{
	char buf[RT_FILTER_MAX + 1];
	char *tok, *save;

	memset(f, 0, sizeof(*f));
	f->ops = RT_OP_ALL;
	if (events && events[0] && strcmp(events, "*") != 0)
	{
		strlcpy(buf, events, sizeof(buf));
		f->ops = 0;
		for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		{
			if (pg_strcasecmp(tok, "insert") == 0)
				f->ops |= RT_OP_INSERT;
			else if (pg_strcasecmp(tok, "update") == 0)
				f->ops |= RT_OP_UPDATE;
			else if (pg_strcasecmp(tok, "delete") == 0)
				f->ops |= RT_OP_DELETE;
			else
			{
				strlcpy(reason, "events: a list of insert, update, delete", reasonlen);
				return false;
			}
		}
	}
	if (filter == NULL || filter[0] == '\0')
		return true;
	if (strlen(filter) > RT_FILTER_MAX)
	{
		strlcpy(reason, "filter too long", reasonlen);
		return false;
	}
	strlcpy(buf, filter, sizeof(buf));
	for (tok = strtok_r(buf, "&", &save); tok; tok = strtok_r(NULL, "&", &save))
	{
		char *eq = strchr(tok, '='), *v;
		RtFilterCond *c;

		if (f->nconds >= RT_FILTER_CONDS)
		{
			strlcpy(reason, "too many filter conditions", reasonlen);
			goto bad;
		}
		c = &f->conds[f->nconds++];
		if (eq == NULL || eq == tok || eq - tok >= NAMEDATALEN)
		{
			strlcpy(reason, "filter: column=op.value", reasonlen);
			goto bad;
		}
		memcpy(c->column, tok, eq - tok);
		c->column[eq - tok] = '\0';
		v = eq + 1;
		if (strncmp(v, "eq.", 3) == 0 || strncmp(v, "neq.", 4) == 0)
		{
			c->op = v[0] == 'e' ? RT_F_EQ : RT_F_NEQ;
			c->vals = calloc(1, sizeof(char *));
			if (c->vals == NULL || (c->vals[0] = strdup(strchr(v, '.') + 1)) == NULL)
			{
				strlcpy(reason, "out of memory", reasonlen);
				goto bad;
			}
			c->nvals = 1;
		}
		else if (strncmp(v, "in.", 3) == 0)
		{
			c->op = RT_F_IN;
			if (!parse_in_list(v + 3, c))
			{
				strlcpy(reason, "filter: in.(a,b,...)", reasonlen);
				goto bad;
			}
		}
		else if (strcmp(v, "is.null") == 0)
			c->op = RT_F_IS_NULL;
		else if (strcmp(v, "not.null") == 0)
			c->op = RT_F_NOT_NULL;
		else
		{
			strlcpy(reason, "filter operators: eq, neq, in, is.null, not.null", reasonlen);
			goto bad;
		}
	}
	return true;
bad:
	rt_filter_free(f);
	return false;
}

/* Does the change pass f (operation and conditions on the row's values)? */
bool
rt_filter_match(const RtFilter *f, const RtEvent *ev)
{
	const RtTuple *t = ev->newtup ? ev->newtup : ev->oldtup;
	int i, j, k;
	uint8 op = ev->op == 'I' ? RT_OP_INSERT : ev->op == 'U' ? RT_OP_UPDATE
															: RT_OP_DELETE;

	if ((f->ops & op) == 0)
		return false;
	for (i = 0; i < f->nconds; i++)
	{
		const RtFilterCond *c = &f->conds[i];
		const char *v = NULL;
		bool found = false, ok = false;

		for (k = 0; k < ev->rel->natts; k++)
			if (strcmp(ev->rel->attnames[k], c->column) == 0)
			{
				found = !t->unchanged[k];
				v = t->vals[k];
				break;
			}
		/* a column the row does not carry (delete: not in the key) fails */
		if (!found)
			return false;
		switch (c->op)
		{
			case RT_F_EQ:
				ok = v && strcmp(v, c->vals[0]) == 0;
				break;
			case RT_F_NEQ:
				ok = v && strcmp(v, c->vals[0]) != 0;
				break;
			case RT_F_IN:
				for (j = 0; v && j < c->nvals && !ok; j++)
					ok = strcmp(v, c->vals[j]) == 0;
				break;
			case RT_F_IS_NULL:
				ok = v == NULL;
				break;
			case RT_F_NOT_NULL:
				ok = v != NULL;
				break;
		}
		if (!ok)
			return false;
	}
	return true;
}

/* ---- authorization at join and visibility per batch ---- */

/* "table:<schema>.<name>" -> names (no quoting: names are plain topics). */
bool
rt_table_topic_parse(const char *topic, char *nspname, char *relname)
{
	const char *p = topic + strlen(RT_TABLE_PREFIX), *dot;

	if (strncmp(topic, RT_TABLE_PREFIX, strlen(RT_TABLE_PREFIX)) != 0)
		return false;
	dot = strchr(p, '.');
	if (dot == NULL || dot == p || dot - p >= NAMEDATALEN || strlen(dot + 1) == 0 ||
		strlen(dot + 1) >= NAMEDATALEN)
		return false;
	memcpy(nspname, p, dot - p);
	nspname[dot - p] = '\0';
	strlcpy(relname, dot + 1, NAMEDATALEN);
	return true;
}

typedef struct TableAuthzArgs
{
	const RtIdentity *id;
	const char *nspname, *relname;
	const RtFilter *f;
	char reason[RT_ERRLEN];
} TableAuthzArgs;

/*
 * As the client's role: the table is published for realtime, the role may
 * SELECT it (the whole table), the filter's columns exist.
 */
static void
table_authorize_spi(void *p)
{
	TableAuthzArgs *a = p;
	Oid types[3] = {TEXTOID, TEXTOID, TEXTARRAYOID};
	Datum args[3];
	Datum *cols = palloc(sizeof(Datum) * (a->f->nconds + 1));
	int i;
	bool isnull;
	char *verdict;

	for (i = 0; i < a->f->nconds; i++)
		cols[i] = CStringGetTextDatum(a->f->conds[i].column);
	args[0] = CStringGetTextDatum(a->id->role);
	args[1] = CStringGetTextDatum(a->id->claims);
	if (SPI_execute_with_args("SELECT pg_catalog.set_config('role', $1, true), "
							  "pg_catalog.set_config('request.jwt.claims', $2, true)",
							  2, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not switch role");
	rt_role_lock();
	args[0] = CStringGetTextDatum(a->nspname);
	args[1] = CStringGetTextDatum(a->relname);
	args[2] = PointerGetDatum(construct_array(cols, a->f->nconds, TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_with_args(
			"SELECT CASE "
			" WHEN c.oid IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables t "
			"   WHERE t.pubname = 'bv_realtime' AND t.schemaname = $1 AND t.tablename = $2) "
			"   THEN 'table not enabled for realtime' "
			" WHEN NOT pg_catalog.has_table_privilege(c.oid, 'SELECT') THEN 'not allowed' "
			" WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest($3::text[]) f(col) WHERE NOT EXISTS "
			"   (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid "
			"    AND a.attname = f.col AND a.attnum > 0 AND NOT a.attisdropped)) "
			"   THEN 'filter: unknown column' "
			" ELSE '' END "
			"FROM (SELECT (SELECT r.oid FROM pg_catalog.pg_class r "
			"  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace "
			"  WHERE n.nspname = $1 AND r.relname = $2) AS oid) c",
			3, types, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not authorize the table");
	verdict = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												&isnull));
	strlcpy(a->reason, verdict, sizeof(a->reason));
}

/*
 * rt_table_authorize
 *		May this identity subscribe to the changes of topic's table (with
 *		filter f)?  Once, at join.
 */
bool
rt_table_authorize(const RtIdentity *id, const char *topic, const RtFilter *f, char *reason,
				   size_t reasonlen)
{
	char nsp[NAMEDATALEN], rel[NAMEDATALEN], detail[RT_ERRLEN];
	TableAuthzArgs a;

	if (!rt_table_topic_parse(topic, nsp, rel))
	{
		strlcpy(reason, "table topics are table:<schema>.<name>", reasonlen);
		return false;
	}
	memset(&a, 0, sizeof(a));
	a.id = id;
	a.nspname = nsp;
	a.relname = rel;
	a.f = f;
	if (!rt_run_guarded(table_authorize_spi, &a, detail, sizeof(detail), NULL))
	{
		ereport(LOG, (errmsg("bv_realtime: table authorization failed for role \"%s\": %s",
							 id->role, detail)));
		strlcpy(reason, "authorization failed", reasonlen);
		return false;
	}
	if (a.reason[0])
	{
		strlcpy(reason, a.reason, reasonlen);
		return false;
	}
	return true;
}

typedef struct VisibleArgs
{
	const char *role, *claims;
	RtRel *rel;
	RtEvent **evs;
	int n;
	bool *visible;
} VisibleArgs;

/*
 * The visibility query of rel:
 *   SELECT (e->>'o')::int FROM jsonb_array_elements($1) e
 *   WHERE EXISTS (SELECT 1 FROM s.t t WHERE t.k = (e->'v'->>'k')::type ...
 *     AND (NOT (e->'v' ? 'c') OR <t.c is null exactly when the value is,
 *          else format('%s', t.c) = e->'v'->>'c'>) ...)
 * and, for deletes, whether the table has no row level security.
 */
static char *
visibility_sql(const RtRel *rel)
{
	StringInfoData q;
	int i;

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT (e ->> 'o')::int FROM pg_catalog.jsonb_array_elements($1) e "
					 "WHERE EXISTS (SELECT 1 FROM %s.%s t WHERE true",
					 quote_identifier(rel->nspname), quote_identifier(rel->relname));
	for (i = 0; i < rel->natts; i++)
	{
		const char *col = quote_identifier(rel->attnames[i]);
		char *lit = quote_literal_cstr(rel->attnames[i]);

		if (rel->attkey[i])
			appendStringInfo(&q, " AND t.%s = (e -> 'v' ->> %s)::%s", col, lit,
							 format_type_with_typemod(rel->atttypes[i], rel->atttypmods[i]));
		/* format('%s') is the type's output function, as pgoutput's text */
		appendStringInfo(&q,
						 " AND (NOT (e -> 'v' ? %s) OR CASE WHEN e -> 'v' ->> %s IS NULL"
						 " THEN pg_catalog.num_nulls(t.%s) = 1"
						 " ELSE pg_catalog.num_nulls(t.%s) = 0"
						 " AND pg_catalog.format('%%s', t.%s) = e -> 'v' ->> %s END)",
						 lit, lit, col, col, col, lit);
	}
	appendStringInfoString(&q, ")");
	return q.data;
}

/*
 * Is the table free of row level security (and may the role SELECT it)?
 * Then every row is visible: no query per change.
 */
static bool
table_open_to_role(Oid relid, bool *privileged)
{
	Oid otype[1] = {OIDOID};
	Datum args[1];
	bool isnull, open;

	args[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args("SELECT NOT c.relrowsecurity, "
							  "pg_catalog.has_table_privilege(c.oid, 'SELECT') "
							  "FROM pg_catalog.pg_class c WHERE c.oid = $1",
							  1, otype, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the table");
	if (SPI_processed != 1)
	{
		*privileged = false;
		return false;
	}
	open = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*privileged = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
											 &isnull));
	return open;
}

static void
visible_spi(void *p)
{
	VisibleArgs *a = p;
	Oid types[2] = {TEXTOID, TEXTOID};
	Oid jtype[1] = {JSONBOID};
	Datum args[2];
	StringInfoData rows;
	int i, k, nrows = 0;
	bool privileged;

	args[0] = CStringGetTextDatum(a->role);
	args[1] = CStringGetTextDatum(a->claims);
	if (SPI_execute_with_args("SELECT pg_catalog.set_config('role', $1, true), "
							  "pg_catalog.set_config('request.jwt.claims', $2, true)",
							  2, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not switch role");
	rt_role_lock();
	if (table_open_to_role(a->rel->relid, &privileged) || !privileged)
	{
		/* no RLS: every row (deletes too); no privilege: none */
		for (i = 0; i < a->n; i++)
			a->visible[i] = privileged;
		return;
	}

	initStringInfo(&rows);
	appendStringInfoChar(&rows, '[');
	for (i = 0; i < a->n; i++)
	{
		const RtTuple *t = a->evs[i]->newtup;

		if (a->evs[i]->op == 'D')
			continue; /* the row is gone: RLS cannot tell; hidden */
		if (nrows++ > 0)
			appendStringInfoChar(&rows, ',');
		appendStringInfo(&rows, "{\"o\":%d,\"v\":{", i);
		for (k = 0; k < t->natts; k++)
		{
			if (t->unchanged[k])
				continue;
			if (rows.data[rows.len - 1] != '{')
				appendStringInfoChar(&rows, ',');
			escape_json(&rows, a->rel->attnames[k]);
			appendStringInfoChar(&rows, ':');
			if (t->vals[k])
				escape_json(&rows, t->vals[k]);
			else
				appendStringInfoString(&rows, "null");
		}
		appendStringInfoString(&rows, "}}");
	}
	appendStringInfoChar(&rows, ']');
	if (nrows > 0)
	{
		uint64 j;

		args[0] = DirectFunctionCall1(jsonb_in, CStringGetDatum(rows.data));
		rt_count(RT_C_RLS_QUERIES, 1);
		if (SPI_execute_with_args(visibility_sql(a->rel), 1, jtype, args, NULL, true, 0) !=
			SPI_OK_SELECT)
			elog(ERROR, "could not check visibility");
		for (j = 0; j < SPI_processed; j++)
		{
			bool isnull;
			int o = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, 1,
												&isnull));

			if (!isnull && o >= 0 && o < a->n)
				a->visible[o] = true;
		}
	}
}

/*
 * rt_rls_visible
 *		visible[i] := may role (with claims) SELECT the row of evs[i] (all
 *		of table rel)?  One query for the whole list.  An error hides all.
 */
void
rt_rls_visible(const char *role, const char *claims, RtRel *rel, RtEvent **evs, int n,
			   bool *visible)
{
	VisibleArgs a = {role, claims, rel, evs, n, visible};
	char detail[RT_ERRLEN];

	memset(visible, 0, sizeof(bool) * n);
	if (!rt_run_guarded(visible_spi, &a, detail, sizeof(detail), NULL))
	{
		memset(visible, 0, sizeof(bool) * n);
		ereport(LOG, (errmsg("bv_realtime: visibility check on table \"%s.%s\" failed for role "
							 "\"%s\": %s",
							 rel->nspname, rel->relname, role, detail)));
	}
}

/*
 * rt_wait_visible
 *		Wait (at most about a second) until the transactions of the batch's
 *		table changes are visible to new snapshots.
 */
void
rt_wait_visible(RtEvent **evs, int n)
{
	TransactionId last = InvalidTransactionId;
	int i, spins = 0;

	for (i = 0; i < n; i++)
	{
		if (evs[i]->op == 0 || evs[i]->xid == last || !TransactionIdIsValid(evs[i]->xid))
			continue;
		last = evs[i]->xid;
		while (TransactionIdIsInProgress(last) && spins++ < 10000)
			pg_usleep(100L);
	}
}
