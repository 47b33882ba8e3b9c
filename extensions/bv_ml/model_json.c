/*-------------------------------------------------------------------------
 *
 * model_json.c
 *	  Typed reads of fields of a model document stored as jsonb.
 *
 * A model document is untrusted input: every read checks the JSON type it
 * finds and fails with SQLSTATE 22023, naming the field, the kind of model
 * and what to do.  Numbers are converted through their decimal text (the
 * text jsonb keeps exactly), with strtof for float32 fields, so that a
 * split condition XGBoost wrote as the shortest decimal of a float32 comes
 * back as that very float32.
 *
 * No state; every allocation is in CurrentMemoryContext (the parse context
 * of model_parse.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "bv_ml.h"

/* Fails registration (or a cache fill) of a malformed document. */
void
mlj_fail(MlJson *j, const char *hint, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s: %s", j->what, buf),
			 errhint("%s", hint ? hint : "Export the model again with its library's own writer (see docs/bv_ml.md) and register that file unchanged.")));
}

static JsonbValue *
get_key(JsonbContainer *c, const char *key)
{
	JsonbValue k;

	if (c == NULL || !JsonContainerIsObject(c))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(c, JB_FOBJECT, &k);
}

bool
mlj_has(JsonbContainer *c, const char *key)
{
	return get_key(c, key) != NULL;
}

static JsonbContainer *
container_of(MlJson *j, JsonbValue *v, const char *key, bool want_array)
{
	if (v->type != jbvBinary ||
		(want_array ? !JsonContainerIsArray(v->val.binary.data)
					: !JsonContainerIsObject(v->val.binary.data)))
		mlj_fail(j, NULL, "field \"%s\" is not an %s", key, want_array ? "array" : "object");
	return v->val.binary.data;
}

JsonbContainer *
mlj_object(MlJson *j, JsonbContainer *c, const char *key, bool required)
{
	JsonbValue *v = get_key(c, key);

	if (v == NULL)
	{
		if (required)
			mlj_fail(j, NULL, "field \"%s\" is missing", key);
		return NULL;
	}
	return container_of(j, v, key, false);
}

JsonbContainer *
mlj_array(MlJson *j, JsonbContainer *c, const char *key, bool required)
{
	JsonbValue *v = get_key(c, key);

	if (v == NULL)
	{
		if (required)
			mlj_fail(j, NULL, "field \"%s\" is missing", key);
		return NULL;
	}
	return container_of(j, v, key, true);
}

char *
mlj_string(MlJson *j, JsonbContainer *c, const char *key, bool required)
{
	JsonbValue *v = get_key(c, key);

	if (v == NULL)
	{
		if (required)
			mlj_fail(j, NULL, "field \"%s\" is missing", key);
		return NULL;
	}
	if (v->type != jbvString)
		mlj_fail(j, NULL, "field \"%s\" is not a string", key);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

int
mlj_size(JsonbContainer *array)
{
	return array ? (int) JsonContainerSize(array) : 0;
}

/* The decimal text of a number element, or fails. */
static char *
number_text(MlJson *j, JsonbValue *v, const char *key)
{
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	if (v->type == jbvString)
		mlj_fail(j, NULL, "field \"%s\" holds a string where a number belongs (NaN and Infinity are not valid weights)", key);
	mlj_fail(j, NULL, "field \"%s\" holds a non-number", key);
}

/*
 * Iterates the scalar elements of an array: calls fn(j, value, i, key, arg)
 * for each, through one JsonbIterator pass (no per-element lookups).
 */
typedef void (*ElemFn)(MlJson *j, JsonbValue *v, int i, const char *key, void *arg);

static int
each_scalar(MlJson *j, JsonbContainer *array, const char *key, ElemFn fn, void *arg)
{
	JsonbIterator *it;
	JsonbValue v;
	JsonbIteratorToken tok;
	int i = 0;

	it = JsonbIteratorInit(array);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_ELEM)
		{
			if (v.type == jbvBinary)
				mlj_fail(j, NULL, "field \"%s\" must be a flat array of scalars", key);
			fn(j, &v, i++, key, arg);
		}
	}
	return i;
}

static void
put_double(MlJson *j, JsonbValue *v, int i, const char *key, void *arg)
{
	double d = strtod(number_text(j, v, key), NULL);

	if (!isfinite(d))
		mlj_fail(j, NULL, "field \"%s\" element %d is not a finite number", key, i);
	((double *) arg)[i] = d;
}

static void
put_float(MlJson *j, JsonbValue *v, int i, const char *key, void *arg)
{
	float f = strtof(number_text(j, v, key), NULL);

	if (!isfinite(f))
		mlj_fail(j, NULL, "field \"%s\" element %d is not a finite float32", key, i);
	((float *) arg)[i] = f;
}

static void
put_int(MlJson *j, JsonbValue *v, int i, const char *key, void *arg)
{
	int32 *out = arg;

	if (v->type == jbvBool)
	{
		out[i] = v->val.boolean ? 1 : 0;
		return;
	}
	if (v->type != jbvNumeric)
		mlj_fail(j, NULL, "field \"%s\" element %d is not an integer", key, i);
	{
		char *s = number_text(j, v, key);
		char *end;
		long l;

		errno = 0;
		l = strtol(s, &end, 10);
		if (errno != 0 || *end != '\0' || l < PG_INT32_MIN || l > PG_INT32_MAX)
			mlj_fail(j, NULL, "field \"%s\" element %d is not a 32-bit integer", key, i);
		out[i] = (int32) l;
	}
}

static void
put_string(MlJson *j, JsonbValue *v, int i, const char *key, void *arg)
{
	if (v->type != jbvString)
		mlj_fail(j, NULL, "field \"%s\" element %d is not a string", key, i);
	((char **) arg)[i] = pnstrdup(v->val.string.val, v->val.string.len);
}

double *
mlj_doubles(MlJson *j, JsonbContainer *array, const char *key, int *n)
{
	double *out;

	*n = mlj_size(array);
	out = palloc0(sizeof(double) * Max(*n, 1));
	if (array)
		each_scalar(j, array, key, put_double, out);
	return out;
}

float *
mlj_floats(MlJson *j, JsonbContainer *array, const char *key, int *n)
{
	float *out;

	*n = mlj_size(array);
	out = palloc0(sizeof(float) * Max(*n, 1));
	if (array)
		each_scalar(j, array, key, put_float, out);
	return out;
}

int32 *
mlj_ints(MlJson *j, JsonbContainer *array, const char *key, int *n)
{
	int32 *out;

	*n = mlj_size(array);
	out = palloc0(sizeof(int32) * Max(*n, 1));
	if (array)
		each_scalar(j, array, key, put_int, out);
	return out;
}

char **
mlj_strings(MlJson *j, JsonbContainer *array, const char *key, int *n)
{
	char **out;

	*n = mlj_size(array);
	out = palloc0(sizeof(char *) * Max(*n, 1));
	if (array)
		each_scalar(j, array, key, put_string, out);
	return out;
}

/* Element i of an array, which must be an array or object itself. */
JsonbContainer *
mlj_elem_container(MlJson *j, JsonbContainer *array, int i, const char *key)
{
	JsonbValue *v = getIthJsonbValueFromContainer(array, i);

	if (v == NULL || v->type != jbvBinary)
		mlj_fail(j, NULL, "element %d of \"%s\" is not an array or object", i, key);
	return v->val.binary.data;
}

/* A number field (JSON number); *found says whether it was there. */
double
mlj_number(MlJson *j, JsonbContainer *c, const char *key, bool *found)
{
	JsonbValue *v = get_key(c, key);
	double d;

	*found = v != NULL;
	if (v == NULL)
		return 0;
	d = strtod(number_text(j, v, key), NULL);
	if (!isfinite(d))
		mlj_fail(j, NULL, "field \"%s\" is not a finite number", key);
	return d;
}

/* XGBoost writes its parameters as strings: "5E-1". */
float
mlj_number_string_f(MlJson *j, JsonbContainer *c, const char *key)
{
	char *s = mlj_string(j, c, key, true);
	char *end;
	float f;

	errno = 0;
	f = strtof(s, &end);
	if (end == s || *end != '\0' || !isfinite(f))
		mlj_fail(j, NULL, "parameter \"%s\" is not a finite number", key);
	return f;
}

int
mlj_int_string(MlJson *j, JsonbContainer *c, const char *key, int dflt)
{
	char *s = mlj_string(j, c, key, false);
	char *end;
	long l;

	if (s == NULL)
		return dflt;
	errno = 0;
	l = strtol(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0 || l < 0 || l > PG_INT32_MAX)
		mlj_fail(j, NULL, "parameter \"%s\" is not a non-negative integer", key);
	return (int) l;
}
