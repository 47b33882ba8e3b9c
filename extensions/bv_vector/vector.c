/*
 * vector.c: the vector(n) type, its casts, operators and helper functions.
 *
 * A vector is a varlena of float4 (bv_vector.h): dim, a reserved zero, and
 * dim finite floats.  Every way in (text, binary, arrays, typmod coercion)
 * goes through the same checks: 1..VECTOR_MAX_DIM dimensions, the column's
 * declared dimensions, no NaN, no infinity.  Results of arithmetic that could
 * overflow (normalize of a huge vector) are checked the same way.
 *
 * Distances: <-> is the Euclidean distance, <#> the negative inner product
 * (so that ascending order is "most similar first", as for the other two),
 * <=> the cosine distance 1 - cos.  The loops are the kernels of
 * bv_vector.h, written so that the compiler vectorizes them.
 *
 * No state, no locks; results are palloc'd in the caller's memory context.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

PG_MODULE_MAGIC;

void _PG_init(void);

/* GUCs of the index live in hnsw.c; the library defines them when loaded. */
void
_PG_init(void)
{
	HnswInitGucs();
}

/* ---- distance kernels ---- */

/*
 * GCC's vector extensions give the compiler 8-float registers to work in:
 * two SSE registers in the baseline build, one AVX register in the AVX2
 * clone.  Loads go through memcpy, so vectors need no alignment.  Plain
 * loops with float sums do not vectorize without -ffast-math (the sum would
 * have to be reassociated); here the lanes are explicit.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BV_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define BV_KERNEL
#endif

typedef float v8sf __attribute__((vector_size(32)));

/* macros, not functions: passing 32-byte vectors by value changes the ABI */
#define LoadV8(dst, p) memcpy(&(dst), (p), sizeof(v8sf))
#define SumV8(v)       ((((v)[0] + (v)[1]) + ((v)[2] + (v)[3])) + (((v)[4] + (v)[5]) + ((v)[6] + (v)[7])))

BV_KERNEL float
VectorL2SquaredKernel(int dim, const float *a, const float *b)
{
	v8sf s0 = {0},
		 s1 = {0};
	float r = 0;
	int i = 0;

	v8sf x0,
		x1,
		y0,
		y1;

	for (; i + 16 <= dim; i += 16)
	{
		LoadV8(x0, a + i);
		LoadV8(y0, b + i);
		LoadV8(x1, a + i + 8);
		LoadV8(y1, b + i + 8);
		x0 -= y0;
		x1 -= y1;
		s0 += x0 * x0;
		s1 += x1 * x1;
	}
	for (; i + 8 <= dim; i += 8)
	{
		LoadV8(x0, a + i);
		LoadV8(y0, b + i);
		x0 -= y0;
		s0 += x0 * x0;
	}
	for (; i < dim; i++)
		r += (a[i] - b[i]) * (a[i] - b[i]);
	s0 += s1;
	return r + SumV8(s0);
}

BV_KERNEL float
VectorDotKernel(int dim, const float *a, const float *b)
{
	v8sf s0 = {0},
		 s1 = {0};
	float r = 0;
	int i = 0;

	v8sf x0,
		x1,
		y0,
		y1;

	for (; i + 16 <= dim; i += 16)
	{
		LoadV8(x0, a + i);
		LoadV8(y0, b + i);
		LoadV8(x1, a + i + 8);
		LoadV8(y1, b + i + 8);
		s0 += x0 * y0;
		s1 += x1 * y1;
	}
	for (; i + 8 <= dim; i += 8)
	{
		LoadV8(x0, a + i);
		LoadV8(y0, b + i);
		s0 += x0 * y0;
	}
	for (; i < dim; i++)
		r += a[i] * b[i];
	s0 += s1;
	return r + SumV8(s0);
}

/* 1 - cosine similarity, similarity clamped to [-1, 1]; NaN for a zero vector */
BV_KERNEL double
VectorCosineKernel(int dim, const float *a, const float *b)
{
	v8sf dot = {0},
		 na = {0},
		 nb = {0};
	float d = 0,
		  x = 0,
		  y = 0;
	int i = 0;
	double sim;

	for (; i + 8 <= dim; i += 8)
	{
		v8sf va,
			vb;

		LoadV8(va, a + i);
		LoadV8(vb, b + i);
		dot += va * vb;
		na += va * va;
		nb += vb * vb;
	}
	for (; i < dim; i++)
	{
		d += a[i] * b[i];
		x += a[i] * a[i];
		y += b[i] * b[i];
	}
	d += SumV8(dot);
	x += SumV8(na);
	y += SumV8(nb);
	if (unlikely(!isfinite(d) || !isfinite(x) || !isfinite(y) || x < FLT_MIN || y < FLT_MIN))
	{
		/*
		 * A float4 sum overflowed (values near the float4 limit, e.g. 3e38)
		 * or a squared norm underflowed (values near 1e-20 and below: the
		 * float path answered 0 for '[0,0,1e-30]' <=> '[1,1,1]'): the cosine
		 * itself is still defined, so compute it again in double precision,
		 * which neither overflows nor underflows for finite float4 inputs.
		 * A zero vector comes here too and gets NaN, as before.
		 */
		double dd = 0,
			   dx = 0,
			   dy = 0;

		for (i = 0; i < dim; i++)
		{
			dd += (double) a[i] * b[i];
			dx += (double) a[i] * a[i];
			dy += (double) b[i] * b[i];
		}
		sim = dd / (sqrt(dx) * sqrt(dy));
	}
	else
		sim = (double) d / sqrt((double) x * (double) y);
	if (sim > 1)
		sim = 1;
	else if (sim < -1)
		sim = -1;
	return 1 - sim;
}

/* ---- checks ---- */

static inline void
CheckDims(int dim)
{
	if (dim < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("vector must have at least 1 dimension"),
				 errhint("Give at least one value, as in '[1]'.")));
	if (dim > VECTOR_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("vector cannot have more than %d dimensions", VECTOR_MAX_DIM),
				 errdetail("The value has %d dimensions.", dim),
				 errhint("Reduce the dimensions, for example with a projection.")));
}

/* the value against the column's vector(n) */
static inline void
CheckExpectedDims(int32 typmod, int dim)
{
	if (typmod != -1 && typmod != dim)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_LENGTH_MISMATCH),
				 errmsg("expected %d dimensions, not %d", typmod, dim),
				 errhint("Give a vector of %d values, or change the column's type.", typmod)));
}

static inline void
CheckElement(float value)
{
	if (isnan(value))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("NaN not allowed in vector"),
				 errhint("Replace NaN with a number before storing the vector.")));
	if (isinf(value))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("infinite value not allowed in vector"),
				 errhint("Values must be finite and fit in a real (float4).")));
}

/* both operands of a binary function */
static inline void
CheckSameDims(Vector *a, Vector *b)
{
	if (a->dim != b->dim)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_LENGTH_MISMATCH),
				 errmsg("different vector dimensions %d and %d", a->dim, b->dim),
				 errhint("Compare vectors of the same dimensions.")));
}

Vector *
InitVector(int dim)
{
	Vector *v = (Vector *) palloc0(VECTOR_SIZE(dim));

	SET_VARSIZE(v, VECTOR_SIZE(dim));
	v->dim = dim;
	return v;
}

/* ---- text I/O ---- */

static inline bool
VectorIsSpace(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * At most VECTOR_QUOTE_MAX bytes of client text in an error message (cut at
 * a character boundary, "..." when cut): a vector literal can be hundreds of
 * kilobytes, and a number can have any number of digits.
 */
#define VECTOR_QUOTE_MAX 40

static char *
QuotePrefix(const char *s, int len)
{
	int cut;

	if (len <= VECTOR_QUOTE_MAX)
		return pnstrdup(s, len);
	cut = pg_mbcliplen(s, len, VECTOR_QUOTE_MAX);
	return psprintf("%s...", pnstrdup(s, cut));
}

#define VECTOR_RANGE_HINT \
	"Values must fit in a real (float4): 0, or magnitudes from about 1.4e-45 to 3.4e38."

static void
SyntaxError(const char *lit, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type vector: \"%s\"", QuotePrefix(lit, strlen(lit))),
			 errdetail("%s", detail),
			 errhint("Write a vector as '[1, 2.5, -3e-2]'.")));
}

PG_FUNCTION_INFO_V1(vector_in);
Datum
vector_in(PG_FUNCTION_ARGS)
{
	char *lit = PG_GETARG_CSTRING(0);
	int32 typmod = PG_GETARG_INT32(2);
	char *p = lit;
	float *x;
	int cap = 16;
	int dim = 0;
	Vector *result;

	while (VectorIsSpace(*p))
		p++;
	if (*p != '[')
		SyntaxError(lit, "Vector contents must start with \"[\".");
	p++;
	while (VectorIsSpace(*p))
		p++;
	if (*p == ']')
		CheckDims(0);

	x = palloc(sizeof(float) * cap);
	for (;;)
	{
		char *end;
		float v;

		while (VectorIsSpace(*p))
			p++;
		if (*p == '\0' || *p == ',' || *p == ']')
			SyntaxError(lit, "A value is missing.");
		errno = 0;
		v = strtof(p, &end);
		if (end == p)
			SyntaxError(lit, "A value is not a number.");
		/*
		 * As float4in: ERANGE with 0 (underflow) or infinity (overflow) is
		 * refused; ERANGE with a subnormal result is a value.
		 */
		if (errno == ERANGE && (v == 0 || isinf(v)))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("\"%s\" is out of range for type vector", QuotePrefix(p, end - p)),
					 errhint(VECTOR_RANGE_HINT)));
		CheckElement(v);
		if (dim == VECTOR_MAX_DIM)
			CheckDims(dim + 1);
		if (dim == cap)
		{
			cap *= 2;
			x = repalloc(x, sizeof(float) * cap);
		}
		x[dim++] = v;
		p = end;
		while (VectorIsSpace(*p))
			p++;
		if (*p == ',')
		{
			p++;
			continue;
		}
		if (*p == ']')
		{
			p++;
			break;
		}
		SyntaxError(lit, "Values must be separated by \",\" and end with \"]\".");
	}
	while (VectorIsSpace(*p))
		p++;
	if (*p != '\0')
		SyntaxError(lit, "Junk after closing bracket.");

	CheckDims(dim);
	CheckExpectedDims(typmod, dim);
	result = InitVector(dim);
	memcpy(result->x, x, sizeof(float) * dim);
	pfree(x);
	PG_RETURN_VECTOR_P(result);
}

PG_FUNCTION_INFO_V1(vector_out);
Datum
vector_out(PG_FUNCTION_ARGS)
{
	Vector *v = PG_GETARG_VECTOR_P(0);
	/* "[" + per value: up to 15 chars of float + "," + "]" + NUL */
	char *buf = palloc(v->dim * (FLOAT_SHORTEST_DECIMAL_LEN + 1) + 3);
	char *p = buf;

	*p++ = '[';
	for (int i = 0; i < v->dim; i++)
	{
		if (i > 0)
			*p++ = ',';
		p += float_to_shortest_decimal_bufn(v->x[i], p);
	}
	*p++ = ']';
	*p = '\0';
	PG_FREE_IF_COPY(v, 0);
	PG_RETURN_CSTRING(buf);
}

PG_FUNCTION_INFO_V1(vector_typmod_in);
Datum
vector_typmod_in(PG_FUNCTION_ARGS)
{
	ArrayType *ta = PG_GETARG_ARRAYTYPE_P(0);
	int32 *tl;
	int n;

	tl = ArrayGetIntegerTypmods(ta, &n);
	if (n != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid type modifier"),
				 errdetail("vector takes one type modifier, the number of dimensions."),
				 errhint("Write vector(n), as in vector(128).")));
	if (tl[0] < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type vector must be at least 1"),
				 errhint("Write vector(n) with n between 1 and %d.", VECTOR_MAX_DIM)));
	if (tl[0] > VECTOR_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("dimensions for type vector cannot exceed %d", VECTOR_MAX_DIM),
				 errhint("Write vector(n) with n between 1 and %d.", VECTOR_MAX_DIM)));
	PG_RETURN_INT32(tl[0]);
}

PG_FUNCTION_INFO_V1(vector_typmod_out);
Datum
vector_typmod_out(PG_FUNCTION_ARGS)
{
	int32 typmod = PG_GETARG_INT32(0);

	PG_RETURN_CSTRING(typmod < 0 ? pstrdup("") : psprintf("(%d)", typmod));
}

/* ---- binary I/O: int16 dim, int16 zero, dim float4 ---- */

PG_FUNCTION_INFO_V1(vector_recv);
Datum
vector_recv(PG_FUNCTION_ARGS)
{
	StringInfo buf = (StringInfo) PG_GETARG_POINTER(0);
	int32 typmod = PG_GETARG_INT32(2);
	int16 dim;
	int16 unused;
	Vector *result;

	if (buf->len - buf->cursor < (int) (2 * sizeof(int16)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary vector: %d bytes where the header needs 4",
						buf->len - buf->cursor),
				 errhint("Send int16 dimensions, int16 zero, then the float4 values.")));
	dim = pq_getmsgint(buf, sizeof(int16));
	unused = pq_getmsgint(buf, sizeof(int16));
	CheckDims(dim);
	CheckExpectedDims(typmod, dim);
	if (unused != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary vector: reserved field is %d", unused),
				 errdetail("The two bytes after the dimensions must be zero."),
				 errhint("Send int16 dimensions, int16 zero, then the float4 values.")));
	if (buf->len - buf->cursor != (int) sizeof(float) * dim)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary vector: %d bytes of values where %d dimensions need %d",
						buf->len - buf->cursor, dim, (int) sizeof(float) * dim),
				 errhint("Send int16 dimensions, int16 zero, then the float4 values.")));
	result = InitVector(dim);
	for (int i = 0; i < dim; i++)
	{
		result->x[i] = pq_getmsgfloat4(buf);
		CheckElement(result->x[i]);
	}
	PG_RETURN_VECTOR_P(result);
}

PG_FUNCTION_INFO_V1(vector_send);
Datum
vector_send(PG_FUNCTION_ARGS)
{
	Vector *v = PG_GETARG_VECTOR_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint(&buf, v->dim, sizeof(int16));
	pq_sendint(&buf, 0, sizeof(int16));
	for (int i = 0; i < v->dim; i++)
		pq_sendfloat4(&buf, v->x[i]);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* ---- casts ---- */

/* vector(n) coercion: the length check of a column's type */
PG_FUNCTION_INFO_V1(vector_coerce);
Datum
vector_coerce(PG_FUNCTION_ARGS)
{
	Vector *v = PG_GETARG_VECTOR_P(0);

	CheckExpectedDims(PG_GETARG_INT32(1), v->dim);
	PG_RETURN_VECTOR_P(v);
}

/*
 * A numeric as a double, refusing what a double cannot hold with a message
 * that quotes a prefix of the number only (numeric_float8's own error quotes
 * all of its digits, and has no hint).  NaN and infinities come back as such,
 * for CheckElement to refuse.
 */
static double
NumericToDouble(Datum num)
{
	char *s = DatumGetCString(DirectFunctionCall1(numeric_out, num));
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("numeric \"%s\" cannot be read as a number", QuotePrefix(s, strlen(s))),
				 errhint("Cast the array to double precision[] first.")));
	if (errno == ERANGE && (v == 0 || isinf(v)))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("\"%s\" is out of range for type vector", QuotePrefix(s, strlen(s))),
				 errhint(VECTOR_RANGE_HINT)));
	pfree(s);
	return v;
}

/* real[], double precision[], integer[] and numeric[] to vector */
PG_FUNCTION_INFO_V1(array_to_vector);
Datum
array_to_vector(PG_FUNCTION_ARGS)
{
	ArrayType *a = PG_GETARG_ARRAYTYPE_P(0);
	int32 typmod = PG_GETARG_INT32(1);
	Oid elemtype = ARR_ELEMTYPE(a);
	int16 typlen;
	bool typbyval;
	char typalign;
	Datum *elems;
	bool *nulls;
	int n;
	Vector *result;

	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("array must be one-dimensional"),
				 errdetail("The array has %d dimensions.", ARR_NDIM(a)),
				 errhint("Cast one row of the array at a time.")));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(a, elemtype, typlen, typbyval, typalign, &elems, &nulls, &n);
	CheckDims(n);
	CheckExpectedDims(typmod, n);
	result = InitVector(n);
	for (int i = 0; i < n; i++)
	{
		double v;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("array must not contain nulls"),
					 errdetail("Element %d is null.", i + 1),
					 errhint("Replace nulls with numbers before the cast.")));
		switch (elemtype)
		{
			case FLOAT4OID:
				v = DatumGetFloat4(elems[i]);
				break;
			case FLOAT8OID:
				v = DatumGetFloat8(elems[i]);
				break;
			case INT4OID:
				v = DatumGetInt32(elems[i]);
				break;
			case NUMERICOID:
				v = NumericToDouble(elems[i]);
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("unsupported array element type %s", format_type_be(elemtype)),
						 errhint("Cast from real[], double precision[], integer[] or numeric[].")));
				v = 0; /* keep the compiler quiet */
		}
		/* as float8::real: overflow and underflow to zero are refused */
		if (!isnan(v) && !isinf(v) && (v > FLT_MAX || v < -FLT_MAX || (v != 0 && (float) v == 0)))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("value %g is out of range for type vector", v),
					 errdetail("Element %d is out of range.", i + 1),
					 errhint(VECTOR_RANGE_HINT)));
		result->x[i] = (float) v;
		CheckElement(result->x[i]);
	}
	PG_RETURN_VECTOR_P(result);
}

PG_FUNCTION_INFO_V1(vector_to_float4);
Datum
vector_to_float4(PG_FUNCTION_ARGS)
{
	Vector *v = PG_GETARG_VECTOR_P(0);
	Datum *d = palloc(sizeof(Datum) * v->dim);

	for (int i = 0; i < v->dim; i++)
		d[i] = Float4GetDatum(v->x[i]);
	PG_RETURN_POINTER(construct_array(d, v->dim, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT));
}

/* ---- distances and helpers ---- */

/*
 * The SQL functions return float8: when the float4 kernel overflows (values
 * near the float4 limit; the true result fits in a double), they compute the
 * result again in double precision instead of returning infinity.  The index
 * keeps float4 distances (an overflow there only ties the farthest elements).
 */
static double
VectorL2SquaredDouble(const Vector *a, const Vector *b)
{
	double r = VectorL2SquaredKernel(a->dim, a->x, b->x);

	if (unlikely(!isfinite(r)))
	{
		r = 0;
		for (int i = 0; i < a->dim; i++)
		{
			double t = (double) a->x[i] - b->x[i];

			r += t * t;
		}
	}
	return r;
}

static double
VectorDotDouble(const Vector *a, const Vector *b)
{
	double r = VectorDotKernel(a->dim, a->x, b->x);

	if (unlikely(!isfinite(r)))
	{
		r = 0;
		for (int i = 0; i < a->dim; i++)
			r += (double) a->x[i] * b->x[i];
	}
	return r;
}

PG_FUNCTION_INFO_V1(l2_distance);
Datum
l2_distance(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	Vector *b = PG_GETARG_VECTOR_P(1);

	CheckSameDims(a, b);
	PG_RETURN_FLOAT8(sqrt(VectorL2SquaredDouble(a, b)));
}

/* the hnsw index's L2 support function: same order as <->, no sqrt */
PG_FUNCTION_INFO_V1(vector_l2_squared_distance);
Datum
vector_l2_squared_distance(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	Vector *b = PG_GETARG_VECTOR_P(1);

	CheckSameDims(a, b);
	PG_RETURN_FLOAT8(VectorL2SquaredDouble(a, b));
}

PG_FUNCTION_INFO_V1(inner_product);
Datum
inner_product(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	Vector *b = PG_GETARG_VECTOR_P(1);

	CheckSameDims(a, b);
	PG_RETURN_FLOAT8(VectorDotDouble(a, b));
}

PG_FUNCTION_INFO_V1(negative_inner_product);
Datum
negative_inner_product(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	Vector *b = PG_GETARG_VECTOR_P(1);

	CheckSameDims(a, b);
	PG_RETURN_FLOAT8(-VectorDotDouble(a, b));
}

PG_FUNCTION_INFO_V1(cosine_distance);
Datum
cosine_distance(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	Vector *b = PG_GETARG_VECTOR_P(1);

	CheckSameDims(a, b);
	PG_RETURN_FLOAT8(VectorCosineKernel(a->dim, a->x, b->x));
}

PG_FUNCTION_INFO_V1(vector_l2_norm);
Datum
vector_l2_norm(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	double s = 0;

	for (int i = 0; i < a->dim; i++)
		s += (double) a->x[i] * a->x[i];
	PG_RETURN_FLOAT8(sqrt(s));
}

/* a / |a|; a zero vector stays zero (it has no direction) */
PG_FUNCTION_INFO_V1(vector_normalize);
Datum
vector_normalize(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);
	Vector *r = InitVector(a->dim);
	double s = 0;

	for (int i = 0; i < a->dim; i++)
		s += (double) a->x[i] * a->x[i];
	if (s > 0)
	{
		double norm = sqrt(s);

		for (int i = 0; i < a->dim; i++)
		{
			r->x[i] = (float) (a->x[i] / norm);
			CheckElement(r->x[i]);
		}
	}
	PG_RETURN_VECTOR_P(r);
}

PG_FUNCTION_INFO_V1(vector_dims);
Datum
vector_dims(PG_FUNCTION_ARGS)
{
	Vector *a = PG_GETARG_VECTOR_P(0);

	PG_RETURN_INT32(a->dim);
}
