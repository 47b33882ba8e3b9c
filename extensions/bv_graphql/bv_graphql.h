/*-------------------------------------------------------------------------
 *
 * bv_graphql.h
 *	  bv_graphql: GraphQL resolved inside PostgreSQL.  The one header of
 *	  the server side (the parser's own header is gql_parse.h).
 *
 * A request goes through four layers, one file (or two) each:
 *
 *	resolve.c    graphql.resolve(): limits, parse, operation choice,
 *	             variables, execution of the compiled SQL under the
 *	             caller's role, errors in GraphQL's shape, plan cache;
 *	schema.c     the catalog model (tables, columns, keys, foreign keys,
 *	             functions the caller may use), cached per backend and role,
 *	             dropped on any catalog invalidation;
 *	types.c      the GraphQL schema built from that model (object,
 *	             connection, filter, order and mutation types) plus the
 *	             introspection types;
 *	validate.c   the specification's validation rules over the whole
 *	             document, errors collected with their locations
 *	             (validate_merge.c: field selection merging,
 *	             validate_values.c: values and variable positions);
 *	compile.c    selection sets to ONE SQL statement per operation (or per
 *	             mutation field), values always as parameters;
 *	mutate.c     insert / update / delete / function fields;
 *	introspect.c __schema, __type and __typename answered from the model.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_GRAPHQL_H
#define BV_GRAPHQL_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "gql_parse.h"

#define BV_GRAPHQL_VERSION "0.2.0"

/* SQLSTATE of the errors that become GraphQL errors (caught in resolve.c). */
#define ERRCODE_GRAPHQL_REQUEST MAKE_SQLSTATE('G', 'Q', '0', '0', '1')
/* Raised by graphql._at_most() when a mutation touches too many records. */
#define ERRCODE_GRAPHQL_AT_MOST MAKE_SQLSTATE('G', 'Q', '0', '0', '2')

/* Settings (resolve.c) */
extern char *bv_graphql_schemas;
extern int bv_graphql_max_size;
extern int bv_graphql_max_depth;
extern int bv_graphql_max_aliases;
extern int bv_graphql_max_tokens;
extern int bv_graphql_max_fields;
extern int bv_graphql_max_rows;
extern int bv_graphql_max_records;
extern int bv_graphql_max_mutations;

/* ---------- the GraphQL type model ---------- */

typedef enum GKind
{
	GK_SCALAR,
	GK_OBJECT,
	GK_INTERFACE,
	GK_UNION,
	GK_ENUM,
	GK_INPUT,
	GK_LIST,
	GK_NON_NULL
} GKind;

/* What a scalar is, for input coercion and output. */
typedef enum GScalar
{
	GS_NONE,
	GS_INT,
	GS_FLOAT,
	GS_STRING,
	GS_BOOLEAN,
	GS_ID,
	GS_BIGINT,
	GS_BIGFLOAT,
	GS_DATE,
	GS_TIME,
	GS_DATETIME,
	GS_UUID,
	GS_JSON,
	GS_CURSOR,
	GS_OPAQUE
} GScalar;

/* How a field is resolved. */
typedef enum GFieldKind
{
	FK_COLUMN,
	FK_NODE_ID,
	FK_TO_ONE,
	FK_TO_MANY,
	FK_CONN_EDGES,
	FK_CONN_PAGE_INFO,
	FK_CONN_TOTAL,
	FK_EDGE_CURSOR,
	FK_EDGE_NODE,
	FK_PAGE_HAS_NEXT,
	FK_PAGE_HAS_PREV,
	FK_PAGE_START,
	FK_PAGE_END,
	FK_QUERY_COLLECTION,
	FK_QUERY_NODE,
	FK_MUT_INSERT,
	FK_MUT_UPDATE,
	FK_MUT_DELETE,
	FK_RESP_COUNT,
	FK_RESP_RECORDS,
	FK_FUNCTION,
	FK_INTROSPECTION /* a field of an introspection type, or __schema / __type */
} GFieldKind;

struct GType;
struct GTable;
struct GColumn;
struct GRel;
struct GFunc;

typedef struct GInput
{
	const char *name;
	const char *description;
	struct GType *type;
	const char *default_value; /* GraphQL literal, NULL when none */
	struct GColumn *column;    /* filter / order / insert / update inputs */
} GInput;

typedef struct GField
{
	const char *name;
	const char *description;
	int nargs;
	GInput *args;
	struct GType *type;
	GFieldKind kind;
	struct GTable *table; /* collection, node, mutations */
	struct GColumn *column;
	struct GRel *rel;
	struct GFunc *func;
} GField;

typedef struct GEnumValue
{
	const char *name;
	const char *description;
} GEnumValue;

typedef struct GType
{
	GKind kind;
	const char *name; /* NULL for LIST and NON_NULL */
	const char *description;
	GScalar scalar; /* GK_SCALAR; GK_ENUM of a PostgreSQL enum: GS_STRING */
	int nfields;    /* GK_OBJECT, GK_INTERFACE */
	GField *fields;
	int ninputs; /* GK_INPUT */
	GInput *inputs;
	int nvalues; /* GK_ENUM */
	GEnumValue *values;
	int nifaces;
	struct GType **ifaces;
	int npossible; /* GK_INTERFACE */
	struct GType **possible;
	struct GType *of;      /* GK_LIST, GK_NON_NULL */
	struct GTable *table;  /* the table an object type stands for */
	struct GType *list_of; /* cached [this] */
	struct GType *nn_of;   /* cached this! */
} GType;

/* ---------- the catalog model ---------- */

typedef struct GColumn
{
	const char *name;  /* PostgreSQL name */
	const char *gname; /* GraphQL field name */
	const char *description;
	int16 attnum;
	Oid typid;
	const char *sqltype; /* for CAST(... AS sqltype) */
	bool notnull;
	bool is_array;
	bool can_insert;
	bool can_update;
	GType *gtype;  /* named output type (scalar or enum), without list/non-null */
	GType *filter; /* its filter input type, NULL when not filterable */
	bool orderable;
} GColumn;

typedef struct GRel
{
	struct GTable *from; /* the table whose field this is */
	struct GTable *to;
	bool to_many;
	int n;
	int *from_cols; /* indexes into from->cols */
	int *to_cols;   /* indexes into to->cols */
	const char *gname;
} GRel;

typedef struct GTable
{
	Oid oid;
	const char *schema;
	const char *name;
	const char *qname; /* "schema"."name" */
	const char *gname; /* GraphQL type name */
	const char *description;
	char relkind;
	int ncols;
	GColumn *cols;
	int npk;
	int *pk;        /* indexes into cols */
	List *pk_names; /* a view's primary_key_columns (char *) */
	bool can_insert, can_update, can_delete;
	List *rels; /* GRel *, both directions */
	GType *type, *conn, *edge, *filter, *order, *insert_input, *update_input,
		*insert_resp, *update_resp, *delete_resp;
} GTable;

typedef struct GFunc
{
	Oid oid;
	const char *qname; /* "schema"."name" */
	const char *gname;
	const char *description;
	bool is_mutation;
	bool retset;
	int nargs;
	const char **argnames;
	const char **argtypes; /* SQL type names */
	GType **arggtypes;
	bool *arg_has_default;
	GTable *ret_table; /* returns a row (or rows) of an exposed table */
	GType *ret_scalar; /* returns a scalar */
} GFunc;

typedef struct GSchema
{
	MemoryContext cxt;
	Oid role;
	char *schemas;  /* bv_graphql.schemas it was built for */
	List *tables;   /* GTable * */
	List *funcs;    /* GFunc * */
	List *types;    /* every named GType, in a stable order */
	List *reserved; /* type names kept for types built later (char *) */
	GType *query;
	GType *mutation; /* NULL when the role can change nothing */
	GType *node;     /* the Node interface */
	GType *page_info;
	GType *t_string, *t_int, *t_boolean, *t_id, *t_cursor, *t_json;
	GType *order_dir, *filter_is;
	GField *f_schema; /* the meta-fields __schema and __type of Query */
	GField *f_type;
} GSchema;

/* schema.c */
extern GSchema *gql_schema_get(void);
extern void gql_schema_init(void);

/* types.c */
extern void gql_types_build(GSchema *s);
extern GType *gql_type_by_name(GSchema *s, const char *name);
extern GType *gql_list(GSchema *s, GType *t);
extern GType *gql_nn(GSchema *s, GType *t);
extern GType *gql_named(GType *t);
extern GField *gql_field(GType *t, const char *name);
extern GInput *gql_input(int n, GInput *inputs, const char *name);
extern char *gql_upper_camel(const char *s);
extern char *gql_lower_camel(const char *s);

/* ---------- compilation ---------- */

typedef struct GVar
{
	const char *name;
	GqlValue *value; /* NULL: not provided and no default */
} GVar;

/* A field after CollectFields: fields with one response key merged. */
typedef struct GSel
{
	const char *key;
	GField *field;             /* NULL for __typename */
	const GqlSelection *first; /* arguments and location come from it */
	List *sets;                /* GqlSelectionSet * of every merged field */
	List *sub;                 /* introspection: sets collected once (for sub_type) */
	GType *sub_type;
} GSel;

typedef struct GCompile
{
	GSchema *schema;
	GqlDocument *doc;
	GqlDefinition *op;
	int nvars;
	GVar *vars;
	StringInfoData sql;
	int nparams;
	int maxparams;
	Oid *ptypes;
	Datum *pvalues;
	char *pnulls;
	int alias_seq;
	int nfields;  /* fields compiled, against bv_graphql.max_fields */
	int nfilters; /* filter objects compiled, against bv_graphql.max_fields */
	int depth;
	double records; /* worst-case records read, against bv_graphql.max_records */
	double scale;   /* rows of the enclosing object: product of the pages around it */
} GCompile;

/* compile.c */
extern GqlLoc gql_error_loc;
extern void gql_error(GqlLoc loc, const char *fmt, ...) pg_attribute_printf(2, 3) pg_attribute_noreturn();
extern List *gql_collect(GCompile *c, GType *parent, List *sets);
extern GqlValue *gql_arg(GCompile *c, const GSel *sel, const char *name);
extern GqlValue *gql_resolve_var(GCompile *c, GqlValue *v);
extern int gql_param(GCompile *c, const char *text);
extern int gql_param_array(GCompile *c, List *texts);
extern char *gql_scalar_text(GCompile *c, GqlValue *v, GType *t, const char *what);
extern void gql_compile_query(GCompile *c, List *sels, GType *parent);
extern void gql_object_expr(GCompile *c, GTable *t, const char *alias, List *sets);
extern double gql_count_records(GCompile *c, double rows, GqlLoc loc);
extern void gql_where_filter(GCompile *c, GTable *t, const char *alias, GqlValue *filter);
extern char *gql_new_alias(GCompile *c);
extern void gql_append_literal(StringInfo buf, const char *s);

/* validate.c: section 5 of the specification over the whole document */
typedef struct GqlError
{
	char *message;
	int nlocs;
	GqlLoc *locs;
} GqlError;

extern List *gql_validate(GSchema *s, GqlDocument *doc);

/* validate.c and validate_merge.c: the validator's state and helpers */
#define GQL_MAX_SPREAD_DEPTH 64

typedef struct VarUse
{
	const char *name;
	GqlLoc loc;
	GType *type;      /* the position's type; NULL when unknown */
	bool loc_default; /* the position has a default value */
} VarUse;

typedef struct Spread
{
	const char *name;
	GqlLoc loc;
} Spread;

/* What one definition uses directly (its nested selection sets included). */
typedef struct GValDef
{
	GqlDefinition *def;
	GType *type;   /* root or type condition; NULL when unknown */
	List *uses;    /* VarUse * */
	List *spreads; /* Spread * */
} GValDef;

typedef struct GValidator
{
	GSchema *s;
	GqlDocument *doc;
	GValDef *infos;
	GValDef *cur;
	List *errors;
	int nerrors;
	int merge_fields; /* fields expanded by the merge check */
	bool merge_stop;
} GValidator;

/* One field as the merge check sees it. */
typedef struct MField
{
	const char *key;
	GqlSelection *sel;
	GType *parent; /* NULL when unknown */
	GField *def;   /* NULL when unknown or __typename */
} MField;

extern void gql_verr(GValidator *v, int nlocs, const GqlLoc *locs, const char *fmt, ...) pg_attribute_printf(4, 5);
#define GQL_VERR1(v, loc, ...)              \
	do                                      \
	{                                       \
		GqlLoc l1_[1] = {(loc)};            \
		gql_verr((v), 1, l1_, __VA_ARGS__); \
	} while (0)
#define GQL_VERR2(v, la, lb, ...)           \
	do                                      \
	{                                       \
		GqlLoc l2_[2] = {(la), (lb)};       \
		gql_verr((v), 2, l2_, __VA_ARGS__); \
	} while (0)

extern bool gql_v_is_composite(GType *t);
extern char *gql_v_type_str(GType *t);
extern GField *gql_v_field_def(GValidator *v, GType *parent, const char *name);
extern GqlDefinition *gql_v_find_fragment(GValidator *v, const char *name);
extern void gql_v_check_value(GValidator *v, GqlValue *val, GType *t, bool loc_default);
extern void gql_validate_merge(GValidator *v, GType *root, GqlSelectionSet *set);

/* mutate.c */
extern void gql_compile_mutation_field(GCompile *c, const GSel *sel);
extern void gql_function_expr(GCompile *c, const GSel *sel);

/* introspect.c */
extern void gql_introspect(GCompile *c, const GSel *sel, StringInfo out);
extern void gql_json_value(GCompile *c, GqlValue *v, StringInfo out);

#endif /* BV_GRAPHQL_H */
