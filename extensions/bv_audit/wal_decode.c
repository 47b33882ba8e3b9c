/*-------------------------------------------------------------------------
 *
 * wal_decode.c
 *	  WAL mode, worker side: wal2json's documents as typed values.
 *
 * wal_apply.c peeks the slot and hands each change of a WAL-mode table
 * here.  This file knows the tables (bv_audit.tracked and bv_audit.columns,
 * read once per batch) and turns one wal2json document (format-version 2,
 * include-column-positions) into a WalChange: the new image of an INSERT
 * or UPDATE by mirrored column, the old key of an UPDATE or DELETE (the
 * "identity" wal2json logs, else the new image's key) and whether an UPDATE
 * moved the key.
 *
 * Values: wal2json writes each column as its type's output text (a JSON
 * string, or a number or true/false; bytea as bare hex).  Each is converted
 * once, by the audit column's input function, from that text (bytea with
 * "\x"; an object or array, should one come, as its JSON text).  That is
 * jsonb_populate_record()'s conversion in 0.4.0's SQL path except for json
 * and jsonb columns, which 0.4.0 stored as JSON strings holding the
 * document.  A value an input function refuses raises an error; the worker then
 * retries the batch transaction by transaction and quarantines the one that
 * fails (wal_worker.c).
 *
 * Snapshots: the tables are read with a snapshot taken after the batch's
 * WAL position L (see run_query()): every table whose switch to WAL mode
 * committed before a change that the batch decodes is in the list.
 *
 * Memory: the caller's current context (wal_apply.c: a context per
 * decoded transaction).  Catalog reads go through SPI, which the caller
 * has connected.  Runs only in the worker; no shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/jsonfuncs.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"

#include "bv_audit.h"

/*
 * Run a query; ERROR unless it returned what was expected.
 *
 * Not read_only: SPI then takes a new snapshot for the query (the worker's
 * transactions are read committed), so the tables are read after
 * _wal_begin() read the WAL position L the batch peeks up to.  A read-only
 * query would reuse the snapshot of the worker's calling statement, taken
 * before L: a table whose enable(mode => 'wal') committed between the two
 * was left out while the peek reached its first changes, which were then
 * skipped and covered by the applied position (the loss race, ADR 0013).
 */
static void
run_query(const char *what, const char *sql, int nargs, Oid *types, Datum *args, int expect)
{
	int ret = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);

	if (ret != expect)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(ret));
}

/* The columns of a table (step 2). */
static void
load_columns(WalTable *t)
{
	Oid types[1] = {INT4OID};
	Datum args[1] = {Int32GetDatum(t->tracked_id)};
	uint64 i;
	int k, j;

	run_query("reading the mirrored columns",
			  "SELECT c.src_attnum, c.audit_column::text, aa.atttypid, aa.atttypmod, "
			  "       (t.relid IS NULL OR EXISTS (SELECT FROM pg_catalog.pg_attribute att "
			  "         WHERE att.attrelid = t.relid AND att.attnum = c.src_attnum AND NOT att.attisdropped)) "
			  "  FROM bv_audit.tracked t "
			  "  JOIN bv_audit.columns c ON c.tracked_id = t.id AND c.src_attnum > 0 "
			  "  JOIN pg_catalog.pg_attribute aa "
			  "    ON aa.attrelid = t.audit_relid AND aa.attname = c.audit_column AND NOT aa.attisdropped "
			  " WHERE t.id = $1 ORDER BY c.src_attnum",
			  1, types, args, SPI_OK_SELECT);
	t->ncols = (int) SPI_processed;
	t->cols = palloc0(sizeof(WalCol) * Max(t->ncols, 1));
	t->live = palloc(sizeof(int) * Max(t->ncols, 1));
	t->live_names = palloc(sizeof(Datum) * Max(t->ncols, 1));
	t->nlive = 0;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple tup = SPI_tuptable->vals[i];
		TupleDesc d = SPI_tuptable->tupdesc;
		WalCol *c = &t->cols[i];
		bool isnull;
		Oid base;

		c->src_attnum = DatumGetInt16(SPI_getbinval(tup, d, 1, &isnull));
		c->name = SPI_getvalue(tup, d, 2);
		c->typid = DatumGetObjectId(SPI_getbinval(tup, d, 3, &isnull));
		c->typmod = DatumGetInt32(SPI_getbinval(tup, d, 4, &isnull));
		c->live = DatumGetBool(SPI_getbinval(tup, d, 5, &isnull));
		getTypeInputInfo(c->typid, &c->typinput, &c->typioparam);
		get_typlenbyval(c->typid, &c->typlen, &c->typbyval);
		base = getBaseType(c->typid);
		c->bytea = base == BYTEAOID;
		if (c->live)
		{
			t->live_names[t->nlive] = CStringGetTextDatum(c->name);
			t->live[t->nlive++] = (int) i;
		}
	}
	t->key = palloc(sizeof(int) * Max(t->nkey, 1));
	for (k = 0; k < t->nkey; k++)
	{
		t->key[k] = -1;
		for (j = 0; j < t->ncols; j++)
			if (t->cols[j].live && strcmp(t->cols[j].name, t->keynames[k]) == 0)
				t->key[k] = j;
	}
}

/* The tables in (or leaving) WAL mode whose window reaches past applied. */
WalTable *
bv_audit_wal_load_tables(XLogRecPtr applied, int *ntables)
{
	Oid types[1] = {PG_LSNOID};
	Datum args[1] = {LSNGetDatum(applied)};
	WalTable *tables;
	uint64 i;
	int n;

	run_query("reading the WAL-mode tables",
			  "SELECT t.id, t.source_schema::text, t.source_table::text, t.audit_table::text, "
			  "       t.wal_lsn, t.wal_until, t.pk_columns::text[] "
			  "  FROM bv_audit.tracked t "
			  " WHERE t.wal_lsn IS NOT NULL AND (t.wal_until IS NULL OR t.wal_until > $1) "
			  " ORDER BY t.id",
			  1, types, args, SPI_OK_SELECT);
	n = (int) SPI_processed;
	tables = palloc0(sizeof(WalTable) * Max(n, 1));
	*ntables = n;
	for (i = 0; i < (uint64) n; i++)
	{
		HeapTuple tup = SPI_tuptable->vals[i];
		TupleDesc d = SPI_tuptable->tupdesc;
		WalTable *t = &tables[i];
		bool isnull;
		Datum until, keys;
		Datum *elems;
		bool *enulls;
		int nelems, k;

		t->tracked_id = DatumGetInt32(SPI_getbinval(tup, d, 1, &isnull));
		t->schema = SPI_getvalue(tup, d, 2);
		t->table = SPI_getvalue(tup, d, 3);
		t->audit_table = SPI_getvalue(tup, d, 4);
		t->wal_lsn = DatumGetLSN(SPI_getbinval(tup, d, 5, &isnull));
		until = SPI_getbinval(tup, d, 6, &isnull);
		t->wal_until = isnull ? InvalidXLogRecPtr : DatumGetLSN(until);
		keys = SPI_getbinval(tup, d, 7, &isnull);
		deconstruct_array(DatumGetArrayTypeP(keys), TEXTOID, -1, false, TYPALIGN_INT, &elems,
						  &enulls, &nelems);
		t->nkey = nelems;
		t->keynames = palloc(sizeof(char *) * Max(nelems, 1));
		for (k = 0; k < nelems; k++)
			t->keynames[k] = enulls[k] ? pstrdup("") : TextDatumGetCString(elems[k]);
	}
	/* the column queries replace SPI_tuptable: read the list first */
	for (i = 0; i < (uint64) n; i++)
		load_columns(&tables[i]);
	return tables;
}

/* The table a change of schema.table committed at clsn belongs to, or NULL. */
WalTable *
bv_audit_wal_find_table(WalTable *tables, int ntables, const char *schema, const char *table,
						XLogRecPtr clsn)
{
	int i;

	for (i = 0; i < ntables; i++)
	{
		WalTable *t = &tables[i];

		if (clsn >= t->wal_lsn && (t->wal_until == InvalidXLogRecPtr || clsn < t->wal_until) &&
			strcmp(t->table, table) == 0 && strcmp(t->schema, schema) == 0)
			return t;
	}
	return NULL;
}

/*
 * A wal2json value as the column's datum, through the type's input
 * function: wal2json writes every value as its type's output text (a JSON
 * string, or a number or true/false for numeric and boolean types; bytea
 * as bare hex), so that text is what the input function reads back.  That
 * includes json and jsonb columns, whose documents wal2json writes as
 * strings (0.4.0's jsonb_populate_record() stored them as JSON strings).
 * A value that is itself an object or array takes its JSON text.
 */
static Datum
value_datum(WalCol *c, const WalVal *v, bool *isnull)
{
	char *text;

	*isnull = false;
	if (v->kind == WAL_VAL_NULL)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (v->kind == WAL_VAL_STRING && c->bytea)
		text = psprintf("\\x%s", v->text);
	else
		text = v->text;
	return OidInputFunctionCall(c->typinput, text, c->typioparam, c->typmod);
}

/*
 * The parser's state: wal2json's documents are one object whose fields
 * are scalars, except "columns" and "identity", arrays of objects with the
 * scalar fields name, type, position and value.  A value that is itself an
 * object or array (depth 4) is not read here: parse_doc() then reads the
 * document through jsonb instead.
 */
typedef struct DocParse
{
	WalDoc *doc;
	int depth;
	char *field;   /* the current top-level field */
	int list;      /* 1 inside "columns", 2 inside "identity" */
	WalDocCol *el; /* the current element of that list */
	char *elfield; /* its current field */
} DocParse;

static void
doc_object_start(void *state)
{
	DocParse *p = (DocParse *) state;
	WalDoc *d = p->doc;

	p->depth++;
	if (p->depth == 3 && p->list != 0)
	{
		int *n = p->list == 1 ? &d->ncols : &d->nident;
		int *max = p->list == 1 ? &d->maxcols : &d->maxident;
		WalDocCol **arr = p->list == 1 ? &d->cols : &d->ident;

		if (*n == *max)
		{
			*max = Max(16, *max * 2);
			*arr = *arr ? repalloc(*arr, sizeof(WalDocCol) * *max) : palloc(sizeof(WalDocCol) * *max);
		}
		p->el = &(*arr)[(*n)++];
		memset(p->el, 0, sizeof(WalDocCol));
		p->el->value.kind = WAL_VAL_NULL;
	}
	else if (p->depth >= 3)
		d->nested = true;
}

static void
doc_object_end(void *state)
{
	DocParse *p = (DocParse *) state;

	if (p->depth == 3)
		p->el = NULL;
	p->depth--;
}

static void
doc_array_start(void *state)
{
	DocParse *p = (DocParse *) state;

	p->depth++;
	if (p->depth == 2 && p->field != NULL)
		p->list = strcmp(p->field, "columns") == 0 ? 1 : strcmp(p->field, "identity") == 0 ? 2
																						   : 0;
	else if (p->depth >= 3)
		p->doc->nested = true;
}

static void
doc_array_end(void *state)
{
	DocParse *p = (DocParse *) state;

	if (p->depth == 2)
		p->list = 0;
	p->depth--;
}

static void
doc_field_start(void *state, char *fname, bool isnull)
{
	DocParse *p = (DocParse *) state;

	if (p->depth == 1)
		p->field = fname;
	else if (p->depth == 3)
		p->elfield = fname;
}

static void
doc_scalar(void *state, char *token, JsonTokenType type)
{
	DocParse *p = (DocParse *) state;
	WalDoc *d = p->doc;

	if (p->depth == 1 && p->field != NULL)
	{
		char *s = type == JSON_TOKEN_NULL ? NULL : token;

		if (strcmp(p->field, "action") == 0)
			d->action = s;
		else if (strcmp(p->field, "schema") == 0)
			d->schema = s;
		else if (strcmp(p->field, "table") == 0)
			d->table = s;
		else if (strcmp(p->field, "xid") == 0)
			d->xid = s;
		else if (strcmp(p->field, "lsn") == 0)
			d->lsn = s;
		else if (strcmp(p->field, "timestamp") == 0)
			d->timestamp = s;
		else if (strcmp(p->field, "content") == 0)
			d->content = s;
	}
	else if (p->depth == 3 && p->el != NULL && p->elfield != NULL)
	{
		if (strcmp(p->elfield, "name") == 0 && type == JSON_TOKEN_STRING)
			p->el->name = token;
		else if (strcmp(p->elfield, "position") == 0 && type == JSON_TOKEN_NUMBER)
			p->el->position = pg_strtoint32(token);
		else if (strcmp(p->elfield, "value") == 0)
		{
			p->el->value.kind = type == JSON_TOKEN_NULL     ? WAL_VAL_NULL
								: type == JSON_TOKEN_STRING ? WAL_VAL_STRING
															: WAL_VAL_LITERAL;
			p->el->value.text = token;
		}
	}
}

/* A JsonbValue as a WalVal (the jsonb path of parse_doc()). */
static void
jsonb_val(JsonbValue *v, WalVal *out)
{
	out->text = NULL;
	if (v == NULL || v->type == jbvNull)
		out->kind = WAL_VAL_NULL;
	else if (v->type == jbvString)
	{
		out->kind = WAL_VAL_STRING;
		out->text = pnstrdup(v->val.string.val, v->val.string.len);
	}
	else if (v->type == jbvNumeric)
	{
		out->kind = WAL_VAL_LITERAL;
		out->text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	}
	else if (v->type == jbvBool)
	{
		out->kind = WAL_VAL_LITERAL;
		out->text = pstrdup(v->val.boolean ? "true" : "false");
	}
	else
	{
		Jsonb *jb = JsonbValueToJsonb(v);

		out->kind = WAL_VAL_LITERAL;
		out->text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	}
}

/* One list ("columns" or "identity") of a document, through jsonb. */
static WalDocCol *
jsonb_list(JsonbContainer *root, const char *key, int *n)
{
	JsonbValue *list = getKeyJsonValueFromContainer(root, key, strlen(key), NULL);
	WalDocCol *cols;
	uint32 i, size;

	*n = 0;
	if (list == NULL || list->type != jbvBinary)
		return NULL;
	size = JsonContainerSize(list->val.binary.data);
	cols = palloc0(sizeof(WalDocCol) * Max(size, 1));
	for (i = 0; i < size; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(list->val.binary.data, i);
		JsonbValue *f;
		WalDocCol *c;

		if (e == NULL || e->type != jbvBinary)
			continue;
		c = &cols[(*n)++];
		f = getKeyJsonValueFromContainer(e->val.binary.data, "name", 4, NULL);
		if (f != NULL && f->type == jbvString)
			c->name = pnstrdup(f->val.string.val, f->val.string.len);
		f = getKeyJsonValueFromContainer(e->val.binary.data, "position", 8, NULL);
		if (f != NULL && f->type == jbvNumeric)
			c->position = DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(f->val.numeric)));
		jsonb_val(getKeyJsonValueFromContainer(e->val.binary.data, "value", 5, NULL), &c->value);
	}
	return cols;
}

/* A scalar field of a document, through jsonb, as text or NULL. */
static char *
jsonb_str(JsonbContainer *root, const char *key)
{
	WalVal v;

	jsonb_val(getKeyJsonValueFromContainer(root, key, strlen(key), NULL), &v);
	return v.text;
}

/*
 * Read one wal2json document (format-version 2) into doc.  Its scalars are
 * taken straight from the JSON parser's tokens; a document with a value
 * that is an object or an array (a json column, as wal2json may write it)
 * is read through jsonb instead, which gives that value's JSON text.
 * Strings come unescaped, numbers and true/false as their text.  Malformed
 * JSON raises an error (22P02).
 */
void
bv_audit_wal_parse_doc(char *json, WalDoc *doc)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen(json, strlen(json), GetDatabaseEncoding(), true);
	JsonSemAction sem;
	DocParse p;

	memset(doc, 0, sizeof(*doc));
	memset(&p, 0, sizeof(p));
	p.doc = doc;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &p;
	sem.object_start = doc_object_start;
	sem.object_end = doc_object_end;
	sem.array_start = doc_array_start;
	sem.array_end = doc_array_end;
	sem.object_field_start = doc_field_start;
	sem.scalar = doc_scalar;
	pg_parse_json_or_ereport(lex, &sem);
	if (doc->nested)
	{
		Jsonb *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
		JsonbContainer *root = &jb->root;

		memset(doc, 0, sizeof(*doc));
		doc->action = jsonb_str(root, "action");
		doc->schema = jsonb_str(root, "schema");
		doc->table = jsonb_str(root, "table");
		doc->xid = jsonb_str(root, "xid");
		doc->lsn = jsonb_str(root, "lsn");
		doc->timestamp = jsonb_str(root, "timestamp");
		doc->content = jsonb_str(root, "content");
		doc->cols = jsonb_list(root, "columns", &doc->ncols);
		doc->ident = jsonb_list(root, "identity", &doc->nident);
	}
}

/* The index into t->cols of a source attnum, or -1. */
static int
col_by_attnum(WalTable *t, int attnum)
{
	int lo = 0, hi = t->ncols - 1;

	while (lo <= hi)
	{
		int mid = (lo + hi) / 2;

		if (t->cols[mid].src_attnum == attnum)
			return mid;
		if (t->cols[mid].src_attnum < attnum)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* The index into t->key of a key column name, or -1. */
static int
key_by_name(WalTable *t, const char *name, int len)
{
	int k;

	for (k = 0; k < t->nkey; k++)
		if ((int) strlen(t->keynames[k]) == len && strncmp(t->keynames[k], name, len) == 0)
			return k;
	return -1;
}

/* Whether two key values (by t->key) are the same. */
static bool
same_key(WalTable *t, Datum *a, bool *an, Datum *b, bool *bn)
{
	int k;

	for (k = 0; k < t->nkey; k++)
	{
		WalCol *c;

		if (an[k] != bn[k])
			return false;
		if (an[k] || t->key[k] < 0)
			continue;
		c = &t->cols[t->key[k]];
		if (!datum_image_eq(a[k], b[k], c->typbyval, c->typlen))
			return false;
	}
	return true;
}

/*
 * Parse one change of a WAL-mode table into ch (see the file comment):
 * the new image of I and U, the old key of U and D (the "identity"
 * wal2json logs, else the new image's key), and whether a U moved the key.
 */
void
bv_audit_wal_parse_change(WalChange *ch, WalTable *t, char kind, const WalDoc *doc)
{
	int k, i;

	memset(ch, 0, sizeof(*ch));
	ch->kind = kind;
	ch->t = t;
	if (kind == 'T')
		return;
	if (kind == 'I' || kind == 'U')
	{
		ch->val = palloc(sizeof(Datum) * Max(t->ncols, 1));
		ch->null = palloc(sizeof(bool) * Max(t->ncols, 1));
		ch->present = palloc0(sizeof(bool) * Max(t->ncols, 1));
		for (i = 0; i < doc->ncols; i++)
		{
			int j = col_by_attnum(t, doc->cols[i].position);

			if (j < 0 || !t->cols[j].live)
				continue;
			ch->val[j] = value_datum(&t->cols[j], &doc->cols[i].value, &ch->null[j]);
			ch->present[j] = true;
		}
		ch->has_new = true;
		ch->newkey = palloc(sizeof(Datum) * Max(t->nkey, 1));
		ch->newkey_null = palloc(sizeof(bool) * Max(t->nkey, 1));
		for (k = 0; k < t->nkey; k++)
		{
			int j = t->key[k];

			ch->newkey_null[k] = j < 0 || !ch->present[j] || ch->null[j];
			ch->newkey[k] = ch->newkey_null[k] ? (Datum) 0 : ch->val[j];
		}
	}
	if (kind == 'U' || kind == 'D')
	{
		bool found = false;

		ch->oldkey = palloc(sizeof(Datum) * Max(t->nkey, 1));
		ch->oldkey_null = palloc(sizeof(bool) * Max(t->nkey, 1));
		for (k = 0; k < t->nkey; k++)
			ch->oldkey_null[k] = true;
		for (i = 0; i < doc->nident; i++)
		{
			const char *name = doc->ident[i].name;

			if (name == NULL)
				continue;
			k = key_by_name(t, name, strlen(name));
			if (k < 0)
				continue;
			found = true;
			if (t->key[k] >= 0)
				ch->oldkey[k] = value_datum(&t->cols[t->key[k]], &doc->ident[i].value, &ch->oldkey_null[k]);
		}
		if (found)
		{
			ch->has_old = true;
			ch->keychg = kind == 'U' && !same_key(t, ch->oldkey, ch->oldkey_null, ch->newkey,
												  ch->newkey_null);
		}
		else if (ch->has_new)
		{
			ch->has_old = true;
			memcpy(ch->oldkey, ch->newkey, sizeof(Datum) * t->nkey);
			memcpy(ch->oldkey_null, ch->newkey_null, sizeof(bool) * t->nkey);
		}
	}
}
