/*-------------------------------------------------------------------------
 *
 * bv_ml.h
 *	  Declarations shared by the C files of bv_ml (schema "ml").
 *
 * A model is parsed once from its registry document (ml.models.document)
 * into an MlModel: a flat, read-only structure made for scoring.  Linear
 * models keep their coefficients in double precision, as scikit-learn
 * computes; tree ensembles keep XGBoost's float32 split conditions and leaf
 * values and are evaluated in float32, as XGBoost does, so that scores
 * match the library bit for bit wherever its arithmetic is sequential.
 *
 * Files:
 *	  bv_ml.c		 module magic, transaction callback of the cache
 *	  model_json.c	 reading fields of a jsonb document (typed, with errors)
 *	  model_parse.c	 document -> MlModel, with every check of registration
 *	  model_eval.c	 scoring one row
 *	  model_cache.c	 per-backend cache of parsed models, keyed by (id, xmin)
 *	  predict.c		 the SQL-callable functions
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_ML_H
#define BV_ML_H

#include "postgres.h"

#include "utils/jsonb.h"

/* Limits, declared once: registration refuses anything beyond them. */
#define ML_MAX_FEATURES       100000
#define ML_MAX_OUTPUTS        1000
#define ML_MAX_TREES          1000000
#define ML_MAX_NODES_PER_TREE 10000000

typedef enum MlKind
{
	ML_KIND_LINEAR,   /* sklearn LinearRegression (and Ridge, Lasso) */
	ML_KIND_LOGISTIC, /* sklearn LogisticRegression */
	ML_KIND_XGBOOST   /* XGBoost JSON model, gbtree booster */
} MlKind;

/* How the raw margins become the model's outputs. */
typedef enum MlLink
{
	ML_LINK_IDENTITY, /* regression, binary:logitraw */
	ML_LINK_SIGMOID,  /* binary logistic: one probability */
	ML_LINK_SOFTMAX,  /* multinomial: one probability per class */
	ML_LINK_OVR       /* one-vs-rest logistic: sigmoids, normalised */
} MlLink;

/*
 * One node of a tree, 16 bytes.  A leaf has left < 0 and carries its value
 * in "value"; an inner node sends a row left when its feature is below
 * "value" (float32 comparison) or, when the feature is missing, to the side
 * default_left names.  Children are indexes into the tree's own nodes, and
 * always larger than the parent's (checked), so every walk ends.
 */
typedef struct MlNode
{
	int32 left;
	int32 right;
	int32 feature;
	float value;
} MlNode;

#define ML_NODE_DEFAULT_LEFT 0x40000000
#define ML_NODE_FEATURE_MASK 0x3FFFFFFF

typedef struct MlTree
{
	int32 first; /* index of its root in MlModel.nodes */
	int32 n_nodes;
	int32 group; /* output (class) it adds to */
} MlTree;

typedef struct MlModel
{
	MlKind kind;
	MlLink link;
	int32 n_features;
	int32 n_outputs; /* margins computed per row */
	int32 n_classes; /* 0 for regression */
	bool argmax;     /* multi:softmax: the class is the output */
	char *objective; /* as the library names it */

	/* linear models: coef[n_outputs][n_features], intercept[n_outputs] */
	double *coef;
	double *intercept;

	/* tree ensembles */
	int32 n_trees;
	MlTree *trees;
	MlNode *nodes;
	float base_margin;

	char **feature_names; /* from the document, or NULL */
	int32 n_feature_names;
} MlModel;

/* model_json.c: typed access to a jsonb document; errors name the path. */
typedef struct MlJson
{
	const char *what; /* "XGBoost model", for messages */
	JsonbContainer *root;
} MlJson;

extern JsonbContainer *mlj_object(MlJson *j, JsonbContainer *c, const char *key, bool required);
extern JsonbContainer *mlj_array(MlJson *j, JsonbContainer *c, const char *key, bool required);
extern char *mlj_string(MlJson *j, JsonbContainer *c, const char *key, bool required);
extern bool mlj_has(JsonbContainer *c, const char *key);
extern int mlj_size(JsonbContainer *array);
extern double *mlj_doubles(MlJson *j, JsonbContainer *array, const char *key, int *n);
extern float *mlj_floats(MlJson *j, JsonbContainer *array, const char *key, int *n);
extern int32 *mlj_ints(MlJson *j, JsonbContainer *array, const char *key, int *n);
extern JsonbContainer *mlj_elem_container(MlJson *j, JsonbContainer *array, int i, const char *key);
extern char **mlj_strings(MlJson *j, JsonbContainer *array, const char *key, int *n);
extern double mlj_number(MlJson *j, JsonbContainer *c, const char *key, bool *found);
extern float mlj_number_string_f(MlJson *j, JsonbContainer *c, const char *key);
extern int mlj_int_string(MlJson *j, JsonbContainer *c, const char *key, int dflt);
extern void mlj_fail(MlJson *j, const char *hint, const char *fmt, ...) pg_attribute_printf(3, 4) pg_attribute_noreturn();

/* model_parse.c */
extern MlKind ml_kind_from_text(const char *kind);
extern const char *ml_kind_name(MlKind kind);
extern MlModel *ml_parse_model(MlKind kind, Jsonb *doc);

/* model_eval.c */
extern bool ml_eval(const MlModel *m, const double *x, const bool *isnull, float *scratch, double *out);
extern double ml_primary(const MlModel *m, const double *out);
extern int ml_n_probabilities(const MlModel *m);
extern void ml_probabilities(const MlModel *m, const double *out, double *proba);

/* model_cache.c */
typedef struct MlResolved
{
	int64 id;
	MlModel *model;
} MlResolved;

extern MlResolved ml_resolve(const char *name);
extern void ml_cache_xact_end(void);
extern uint64 ml_cache_generation;

#endif /* BV_ML_H */
