/*-------------------------------------------------------------------------
 *
 * predict.c
 *	  SQL-callable scoring and registration checks of schema "ml".
 *
 *	  ml.predict(model text, features float8[]) -> float8
 *	  ml.predict_proba(model text, features float8[]) -> float8[]
 *	  ml.predict_batch(model text, rows float8[][]) -> SETOF (ordinality,
 *		  prediction, probabilities)
 *	  ml._model_check(kind text, document jsonb) -> record (registration)
 *
 * A call site keeps its resolved model in fn_extra (allocated in fn_mcxt,
 * so for the statement): one registry lookup per statement and model name,
 * and again in each new transaction (fn_extra of a procedure's expressions
 * can outlive a COMMIT; models replaced in a transaction are freed at its
 * end, model_cache.c),
 * then only array unpacking and arithmetic per row.  Scratch buffers for a
 * row live in the same state, so scoring a row allocates nothing.
 *
 * Features arrive as a one-dimensional float8[] in the model's feature
 * order.  NULL elements (and NaN) are missing values: tree models send them
 * the trees' default way; linear models refuse them, as scikit-learn does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "bv_ml.h"

PG_FUNCTION_INFO_V1(ml_predict);
PG_FUNCTION_INFO_V1(ml_predict_proba);
PG_FUNCTION_INFO_V1(ml_predict_batch);
PG_FUNCTION_INFO_V1(ml_model_check);

typedef struct CallState
{
	uint64 generation; /* ml_cache_generation when resolved */
	char *name;        /* model spec this state resolved */
	int name_len;
	MlModel *model;
	float *scratch; /* n_features float32 */
	double *x;      /* n_features, when unpacking */
	bool *isnull;   /* n_features */
	double *out;    /* n_outputs */
} CallState;

/* The call site's model for "spec" (a text datum), resolving on change. */
static CallState *
call_state(FunctionCallInfo fcinfo, text *spec)
{
	CallState *st = fcinfo->flinfo->fn_extra;
	const char *s = VARDATA_ANY(spec);
	int len = VARSIZE_ANY_EXHDR(spec);
	MemoryContext old;
	MlModel *m;

	if (st != NULL && st->generation == ml_cache_generation && st->name_len == len &&
		memcmp(st->name, s, len) == 0)
		return st;

	if (len == 0 || len > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name must have 1 to 200 bytes"),
				 errhint("Pass a name registered in ml.models, optionally \"name@version\".")));
	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (st == NULL)
		st = palloc0(sizeof(CallState));
	else
	{
		/* the previous model's buffers; NULLed as a failed resolve leaves them */
		if (st->name)
			pfree(st->name);
		if (st->scratch)
			pfree(st->scratch);
		if (st->x)
			pfree(st->x);
		if (st->isnull)
			pfree(st->isnull);
		if (st->out)
			pfree(st->out);
		st->scratch = NULL;
		st->x = NULL;
		st->isnull = NULL;
		st->out = NULL;
		st->model = NULL;
	}
	st->name = pnstrdup(s, len);
	st->name_len = 0; /* not valid until resolved */
	MemoryContextSwitchTo(old);

	m = ml_resolve(st->name).model;

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	st->model = m;
	st->scratch = palloc(sizeof(float) * m->n_features);
	st->x = palloc(sizeof(double) * m->n_features);
	st->isnull = palloc(sizeof(bool) * m->n_features);
	st->out = palloc(sizeof(double) * m->n_outputs);
	st->name_len = len;
	st->generation = ml_cache_generation;
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = st;
	return st;
}

static inline void
CheckFeatures(const MlModel *m, int n)
{
	if (n != m->n_features)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("feature count mismatch: the model takes %d features, got %d", m->n_features, n),
				 errhint("Pass one value per feature, in the order of ml.models.feature_names.")));
}

/*
 * Refuses, for linear models, a row with a missing (NULL or NaN) or an
 * infinite feature, as scikit-learn refuses them.
 */
static void
CheckAllPresent(const double *x, const bool *isnull, int n)
{
	for (int i = 0; i < n; i++)
	{
		if ((isnull && isnull[i]) || isnan(x[i]))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("feature %d is missing and linear models need every feature", i + 1),
					 errhint("Impute missing values before scoring, as the model was trained.")));
		if (isinf(x[i]))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("feature %d is infinite", i + 1),
					 errhint("Linear models take finite values only, as scikit-learn does.")));
	}
}

/*
 * Refuses a result that is not a finite number.  Finite features far
 * outside a model's range (1e300 times a coefficient, leaf values near the
 * float32 limit summed over trees) overflow its arithmetic: a regression
 * answered Infinity or NaN and a multi-class model NaN probabilities with
 * class 0 as its prediction, which REST clients received as strings in
 * place of numbers.  One comparison per output.
 */
static void
CheckFiniteOutputs(const CallState *st)
{
	for (int k = 0; k < st->model->n_outputs; k++)
		if (unlikely(!isfinite(st->out[k])))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("model \"%.64s\" has no finite prediction for these features", st->name),
					 errdetail("The model's arithmetic overflowed: a feature value far outside its range, or leaf values near the float32 limit."),
					 errhint("Check the features' units and scale against the data the model was trained on.")));
}

/*
 * Scores features[n] (data points to n packed float8 values, bitmap marks
 * NULLs as arrays do) into st->out.
 */
static void
score(CallState *st, const double *data, const bits8 *bitmap, int n)
{
	const MlModel *m = st->model;
	const double *x = data;
	const bool *isnull = NULL;

	CheckFeatures(m, n);
	if (bitmap != NULL)
	{
		int k = 0;

		for (int i = 0; i < n; i++)
		{
			st->isnull[i] = (bitmap[i / 8] & (1 << (i % 8))) == 0;
			st->x[i] = st->isnull[i] ? 0.0 : data[k++];
		}
		x = st->x;
		isnull = st->isnull;
	}
	/*
	 * Linear models refuse missing and infinite values.  NULLs are seen in
	 * the bitmap; a NaN or infinite feature makes the result NaN or
	 * infinite, so the features are searched only then (one pass over the
	 * row in the common case).
	 */
	if (m->kind != ML_KIND_XGBOOST && isnull != NULL)
		CheckAllPresent(x, isnull, n);
	if (!ml_eval(m, x, isnull, st->scratch, st->out))
		CheckAllPresent(x, NULL, n);
	CheckFiniteOutputs(st);
}

static void
score_array(CallState *st, ArrayType *a)
{
	int n;

	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("features must be a one-dimensional array"),
				 errhint("Use ml.predict_batch to score several rows at once.")));
	n = ARR_NDIM(a) == 0 ? 0 : ARR_DIMS(a)[0];
	/* float8[] data: packed doubles, MAXALIGNed */
	/* cppcheck-suppress invalidPointerCast */
	score(st, (const double *) ARR_DATA_PTR(a), ARR_NULLBITMAP(a), n);
}

Datum
ml_predict(PG_FUNCTION_ARGS)
{
	CallState *st = call_state(fcinfo, PG_GETARG_TEXT_PP(0));
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(1);

	score_array(st, a);
	PG_RETURN_FLOAT8(ml_primary(st->model, st->out));
}

static ArrayType *
proba_array(CallState *st)
{
	int n = ml_n_probabilities(st->model);
	double p[ML_MAX_OUTPUTS + 1];
	Datum d[ML_MAX_OUTPUTS + 1];

	ml_probabilities(st->model, st->out, p);
	for (int k = 0; k < n; k++)
		d[k] = Float8GetDatum(p[k]);
	return construct_array(d, n, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

Datum
ml_predict_proba(PG_FUNCTION_ARGS)
{
	CallState *st = call_state(fcinfo, PG_GETARG_TEXT_PP(0));
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(1);

	if (ml_n_probabilities(st->model) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model \"%.64s\" is a regression model and has no class probabilities", st->name),
				 errhint("Use ml.predict for regression models.")));
	score_array(st, a);
	PG_RETURN_ARRAYTYPE_P(proba_array(st));
}

/* Each row of a two-dimensional array, scored: (ordinality, prediction, probabilities). */
Datum
ml_predict_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CallState *st = call_state(fcinfo, PG_GETARG_TEXT_PP(0));
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(1);
	int rows,
		cols;
	bits8 *bitmap = ARR_NULLBITMAP(a);
	/* float8[] data: packed doubles, MAXALIGNed */
	/* cppcheck-suppress invalidPointerCast */
	double *data = (double *) ARR_DATA_PTR(a);
	double *row;
	bits8 *rowmap;
	int k = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (ARR_NDIM(a) == 0)
		PG_RETURN_NULL();
	if (ARR_NDIM(a) != 2)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("rows must be a two-dimensional array, one row per inner array"),
				 errhint("Pass ARRAY[[f1, f2, ...], [f1, f2, ...]] or use ml.predict for one row.")));
	rows = ARR_DIMS(a)[0];
	cols = ARR_DIMS(a)[1];
	CheckFeatures(st->model, cols);
	row = palloc(sizeof(double) * Max(cols, 1));
	rowmap = palloc0((cols + 7) / 8);
	for (int r = 0; r < rows; r++)
	{
		Datum values[3];
		bool nulls[3] = {false, false, false};

		if (bitmap == NULL)
			score(st, data + (size_t) r * cols, NULL, cols);
		else
		{
			for (int c = 0; c < cols; c++)
			{
				size_t bit = (size_t) r * cols + c;
				bool present = (bitmap[bit / 8] & (1 << (bit % 8))) != 0;

				if (present)
				{
					row[c] = data[k++];
					rowmap[c / 8] |= (1 << (c % 8));
				}
				else
				{
					row[c] = 0.0;
					rowmap[c / 8] &= ~(1 << (c % 8));
				}
			}
			/* score() unpacks with the bitmap: pack the present values */
			{
				int p = 0;

				for (int c = 0; c < cols; c++)
					if (rowmap[c / 8] & (1 << (c % 8)))
						row[p++] = row[c];
			}
			score(st, row, rowmap, cols);
		}
		values[0] = Int64GetDatum((int64) r + 1);
		values[1] = Float8GetDatum(ml_primary(st->model, st->out));
		if (ml_n_probabilities(st->model) > 0)
			values[2] = PointerGetDatum(proba_array(st));
		else
			nulls[2] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Registration check: parses the document as the scoring path would (so
 * every refusal is raised here, with SQLSTATE 22023) and describes it.
 */
Datum
ml_model_check(PG_FUNCTION_ARGS)
{
	char *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb *doc = PG_GETARG_JSONB_P(1);
	TupleDesc tupdesc;
	MemoryContext cxt,
		old;
	MlModel *m;
	Datum values[5];
	bool nulls[5] = {false, false, false, false, false};
	HeapTuple tup;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ml._model_check must return a record");
	cxt = AllocSetContextCreate(CurrentMemoryContext, "bv_ml model check", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	m = ml_parse_model(ml_kind_from_text(kind), doc);
	MemoryContextSwitchTo(old);

	values[0] = Int32GetDatum(m->n_features);
	values[1] = Int32GetDatum(m->n_outputs);
	values[2] = Int32GetDatum(m->n_classes);
	values[3] = CStringGetTextDatum(m->objective);
	if (m->n_feature_names > 0)
	{
		Datum *d = palloc(sizeof(Datum) * m->n_feature_names);

		for (int i = 0; i < m->n_feature_names; i++)
			d[i] = CStringGetTextDatum(m->feature_names[i]);
		values[4] = PointerGetDatum(construct_array(d, m->n_feature_names, TEXTOID, -1, false, TYPALIGN_INT));
	}
	else
		nulls[4] = true;
	tup = heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls);
	MemoryContextDelete(cxt);
	PG_RETURN_DATUM(HeapTupleGetDatum(tup));
}
