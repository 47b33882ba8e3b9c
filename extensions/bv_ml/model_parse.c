/*-------------------------------------------------------------------------
 *
 * model_parse.c
 *	  From a registry document to an MlModel, checking everything.
 *
 * The same code runs when a model is registered (ml._model_check, from the
 * trigger on ml.models) and when a backend first scores it, so a document
 * that passed registration always parses at scoring time, and a bad model
 * is refused with SQLSTATE 22023 before anyone can score with it: wrong
 * shape, unsupported booster or objective, non-finite weights, feature
 * indexes out of range, a declared feature count that the weights
 * contradict, categorical splits, trees that do not end.
 *
 * Two document formats:
 *	  - XGBoost's own JSON model format (Booster.save_model("m.json")),
 *		version 1.x/2.x, booster gbtree;
 *	  - scikit-learn linear models as tools/bv_ml_export.py writes them:
 *		{"format": "bv_ml.sklearn", "estimator": ..., "coef": ...,
 *		 "intercept": ..., "classes": ..., "multi_class": ...,
 *		 "feature_names": [...]}
 *
 * Allocations go to CurrentMemoryContext, which the caller makes a context
 * of its own for the model (model_cache.c) or a short-lived one (checks).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"

#include "bv_ml.h"

MlKind
ml_kind_from_text(const char *kind)
{
	if (strcmp(kind, "sklearn_linear") == 0)
		return ML_KIND_LINEAR;
	if (strcmp(kind, "sklearn_logistic") == 0)
		return ML_KIND_LOGISTIC;
	if (strcmp(kind, "xgboost") == 0)
		return ML_KIND_XGBOOST;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unsupported model kind \"%.40s\"", kind),
			 errhint("Use one of sklearn_linear, sklearn_logistic, xgboost.")));
	pg_unreachable();
}

const char *
ml_kind_name(MlKind kind)
{
	switch (kind)
	{
		case ML_KIND_LINEAR:
			return "sklearn_linear";
		case ML_KIND_LOGISTIC:
			return "sklearn_logistic";
		case ML_KIND_XGBOOST:
			return "xgboost";
	}
	return "?";
}

static inline void
CheckFeatureCount(MlJson *j, int n)
{
	if (n < 1 || n > ML_MAX_FEATURES)
		mlj_fail(j, NULL, "the model has %d features; between 1 and %d are supported", n, ML_MAX_FEATURES);
}

/* Feature names from the document, when present: one per feature, unique. */
static void
take_feature_names(MlJson *j, MlModel *m, JsonbContainer *names)
{
	int n;
	char **v;

	if (names == NULL || mlj_size(names) == 0)
		return;
	v = mlj_strings(j, names, "feature_names", &n);
	if (n != m->n_features)
		mlj_fail(j, "Give one name per feature, in the order of the model's inputs.",
				 "feature count mismatch: %d feature names for %d features", n, m->n_features);
	for (int a = 0; a < n; a++)
	{
		if (v[a][0] == '\0')
			mlj_fail(j, NULL, "feature name %d is empty", a);
		for (int b = 0; b < a; b++)
			if (strcmp(v[a], v[b]) == 0)
				mlj_fail(j, "Give every feature a distinct name.",
						 "feature name \"%.40s\" appears twice", v[a]);
	}
	m->feature_names = v;
	m->n_feature_names = n;
}

/* ---------- scikit-learn linear and logistic regression ---------- */

static MlModel *
parse_sklearn(MlKind kind, Jsonb *doc)
{
	MlJson j = {kind == ML_KIND_LINEAR ? "scikit-learn linear model" : "scikit-learn logistic model", &doc->root};
	MlModel *m = palloc0(sizeof(MlModel));
	JsonbContainer *root = &doc->root;
	JsonbContainer *coef;
	JsonbContainer *classes;
	char *format;
	char *estimator;
	char *multi;
	int rows;
	bool two_d;
	bool found;
	double nfi;

	if (!JsonContainerIsObject(root))
		mlj_fail(&j, NULL, "the document is not a JSON object");
	format = mlj_string(&j, root, "format", true);
	if (strcmp(format, "bv_ml.sklearn") != 0)
		mlj_fail(&j, "Write the model with tools/bv_ml_export.py.",
				 "format \"%.40s\" is not \"bv_ml.sklearn\"", format);
	estimator = mlj_string(&j, root, "estimator", true);
	m->kind = kind;
	m->objective = estimator;

	if (kind == ML_KIND_LOGISTIC && strcmp(estimator, "LogisticRegression") != 0)
		mlj_fail(&j, "Register regressors as kind sklearn_linear.",
				 "estimator \"%.40s\" is not LogisticRegression", estimator);
	if (kind == ML_KIND_LINEAR &&
		strcmp(estimator, "LinearRegression") != 0 && strcmp(estimator, "Ridge") != 0 &&
		strcmp(estimator, "Lasso") != 0 && strcmp(estimator, "ElasticNet") != 0)
		mlj_fail(&j, "Supported: LinearRegression, Ridge, Lasso, ElasticNet; register LogisticRegression as kind sklearn_logistic.",
				 "unsupported estimator \"%.40s\"", estimator);

	coef = mlj_array(&j, root, "coef", true);
	rows = mlj_size(coef);
	if (rows == 0)
		mlj_fail(&j, NULL, "\"coef\" is empty");
	two_d = getIthJsonbValueFromContainer(coef, 0)->type == jbvBinary;
	if (!two_d)
	{
		m->coef = mlj_doubles(&j, coef, "coef", &m->n_features);
		rows = 1;
	}
	else
	{
		if (rows > ML_MAX_OUTPUTS)
			mlj_fail(&j, NULL, "\"coef\" has %d rows; at most %d are supported", rows, ML_MAX_OUTPUTS);
		for (int r = 0; r < rows; r++)
		{
			JsonbContainer *row = mlj_elem_container(&j, coef, r, "coef");
			int n;
			double *v;

			if (!JsonContainerIsArray(row))
				mlj_fail(&j, NULL, "row %d of \"coef\" is not an array", r);
			v = mlj_doubles(&j, row, "coef", &n);
			if (r == 0)
			{
				CheckFeatureCount(&j, n);
				m->n_features = n;
				m->coef = palloc(sizeof(double) * rows * n);
			}
			else if (n != m->n_features)
				mlj_fail(&j, "Export the estimator's coef_ matrix unchanged.",
						 "wrong shape: row %d of \"coef\" has %d values, row 0 has %d", r, n, m->n_features);
			memcpy(m->coef + (size_t) r * n, v, sizeof(double) * n);
		}
	}
	CheckFeatureCount(&j, m->n_features);
	m->n_outputs = rows;

	/* intercept: a number or one per row of coef */
	m->intercept = palloc0(sizeof(double) * rows);
	if (mlj_has(root, "intercept"))
	{
		JsonbContainer *ic = NULL;
		JsonbValue kv;
		JsonbValue *iv;

		/* a number, or an array with one value per row of coef */
		kv.type = jbvString;
		kv.val.string.val = "intercept";
		kv.val.string.len = 9;
		iv = findJsonbValueFromContainer(root, JB_FOBJECT, &kv);
		if (iv->type == jbvBinary)
			ic = mlj_array(&j, root, "intercept", true);
		else
			m->intercept[0] = mlj_number(&j, root, "intercept", &found);
		if (ic != NULL)
		{
			int n;
			double *v = mlj_doubles(&j, ic, "intercept", &n);

			if (n != rows)
				mlj_fail(&j, "Export intercept_ unchanged: one value per row of coef_.",
						 "wrong shape: %d intercepts for %d rows of \"coef\"", n, rows);
			memcpy(m->intercept, v, sizeof(double) * rows);
		}
		else if (rows != 1)
			mlj_fail(&j, NULL, "wrong shape: one intercept for %d rows of \"coef\"", rows);
	}

	nfi = mlj_number(&j, root, "n_features_in", &found);
	if (found && nfi != m->n_features)
		mlj_fail(&j, "Export coef_ and n_features_in_ of the same fitted estimator.",
				 "feature count mismatch: n_features_in is %g but \"coef\" has %d columns", nfi, m->n_features);

	if (kind == ML_KIND_LINEAR)
	{
		if (rows != 1)
			mlj_fail(&j, "Register one model per target.",
					 "multi-output regression (%d targets) is not supported", rows);
		m->link = ML_LINK_IDENTITY;
		m->n_classes = 0;
	}
	else
	{
		int nclasses;

		classes = mlj_array(&j, root, "classes", false);
		nclasses = classes ? mlj_size(classes) : (rows == 1 ? 2 : rows);
		multi = mlj_string(&j, root, "multi_class", false);
		if (rows == 1)
		{
			if (nclasses != 2)
				mlj_fail(&j, NULL, "wrong shape: one row of \"coef\" needs 2 classes, not %d", nclasses);
			m->link = ML_LINK_SIGMOID;
		}
		else
		{
			if (rows == 2 || nclasses != rows)
				mlj_fail(&j, "Export coef_ and classes_ of the same fitted estimator.",
						 "wrong shape: %d rows of \"coef\" for %d classes", rows, nclasses);
			if (multi == NULL || strcmp(multi, "multinomial") == 0)
				m->link = ML_LINK_SOFTMAX;
			else if (strcmp(multi, "ovr") == 0)
				m->link = ML_LINK_OVR;
			else
				mlj_fail(&j, "Use multi_class \"multinomial\" or \"ovr\".",
						 "unsupported multi_class \"%.40s\"", multi);
		}
		m->n_classes = nclasses;
	}
	take_feature_names(&j, m, mlj_array(&j, root, "feature_names", false));
	return m;
}

/* ---------- XGBoost JSON model ---------- */

static void
parse_tree(MlJson *j, MlModel *m, JsonbContainer *tree, int t, MlNode *nodes)
{
	int n,
		n2;
	int32 *left = mlj_ints(j, mlj_array(j, tree, "left_children", true), "left_children", &n);
	int32 *right = mlj_ints(j, mlj_array(j, tree, "right_children", true), "right_children", &n2);
	int32 *feat;
	int32 *dleft;
	int32 *stype = NULL;
	float *cond;
	bool *reach;
	JsonbContainer *st;

	if (n2 != n)
		mlj_fail(j, NULL, "tree %d: left_children and right_children differ in length", t);
	feat = mlj_ints(j, mlj_array(j, tree, "split_indices", true), "split_indices", &n2);
	if (n2 != n)
		mlj_fail(j, NULL, "tree %d: split_indices has %d entries for %d nodes", t, n2, n);
	cond = mlj_floats(j, mlj_array(j, tree, "split_conditions", true), "split_conditions", &n2);
	if (n2 != n)
		mlj_fail(j, NULL, "tree %d: split_conditions has %d entries for %d nodes", t, n2, n);
	dleft = mlj_ints(j, mlj_array(j, tree, "default_left", true), "default_left", &n2);
	if (n2 != n)
		mlj_fail(j, NULL, "tree %d: default_left has %d entries for %d nodes", t, n2, n);
	st = mlj_array(j, tree, "split_type", false);
	if (st)
	{
		stype = mlj_ints(j, st, "split_type", &n2);
		if (n2 != n)
			mlj_fail(j, NULL, "tree %d: split_type has %d entries for %d nodes", t, n2, n);
	}

	reach = palloc0(sizeof(bool) * n);
	reach[0] = true;
	for (int i = 0; i < n; i++)
	{
		MlNode *nd = &nodes[i];

		nd->value = cond[i];
		nd->left = -1;
		nd->right = -1;
		nd->feature = 0;
		if (!reach[i])
			continue; /* a deleted node: never visited */
		if (left[i] == -1 && right[i] == -1)
			continue; /* a leaf: value is its weight */
		if (left[i] <= i || left[i] >= n || right[i] <= i || right[i] >= n)
			mlj_fail(j, NULL, "tree %d: node %d has children (%d, %d) outside the tree", t, i, left[i], right[i]);
		if (feat[i] < 0 || feat[i] >= m->n_features)
			mlj_fail(j, "Register the model with its own num_feature; the trees use more features than it declares.",
					 "feature count mismatch: tree %d splits on feature %d but the model has %d features",
					 t, feat[i], m->n_features);
		if (stype && stype[i] != 0)
			mlj_fail(j, "Train with numerical features only (no enable_categorical).",
					 "tree %d: categorical splits are not supported", t);
		nd->left = left[i];
		nd->right = right[i];
		nd->feature = feat[i] | (dleft[i] ? ML_NODE_DEFAULT_LEFT : 0);
		reach[left[i]] = true;
		reach[right[i]] = true;
	}
}

static MlModel *
parse_xgboost(Jsonb *doc)
{
	MlJson j = {"XGBoost model", &doc->root};
	MlModel *m = palloc0(sizeof(MlModel));
	JsonbContainer *root = &doc->root;
	JsonbContainer *learner,
		*lmp,
		*obj,
		*gb,
		*model,
		*trees,
		*info;
	char *booster;
	int num_class,
		num_target,
		ntrees,
		ninfo;
	int32 *groups;
	float base;
	size_t total = 0;
	int t;

	if (!JsonContainerIsObject(root))
		mlj_fail(&j, NULL, "the document is not a JSON object");
	learner = mlj_object(&j, root, "learner", true);
	lmp = mlj_object(&j, learner, "learner_model_param", true);
	obj = mlj_object(&j, learner, "objective", true);
	gb = mlj_object(&j, learner, "gradient_booster", true);

	m->kind = ML_KIND_XGBOOST;
	booster = mlj_string(&j, gb, "name", true);
	if (strcmp(booster, "gbtree") != 0)
		mlj_fail(&j, "Train with booster=\"gbtree\" (the default).",
				 "booster \"%.40s\" is not supported", booster);
	m->objective = mlj_string(&j, obj, "name", true);

	m->n_features = mlj_int_string(&j, lmp, "num_feature", 0);
	CheckFeatureCount(&j, m->n_features);
	num_class = mlj_int_string(&j, lmp, "num_class", 0);
	num_target = mlj_int_string(&j, lmp, "num_target", 1);
	if (num_target > 1)
		mlj_fail(&j, "Register one model per target.", "multi-target models (%d targets) are not supported", num_target);
	base = mlj_number_string_f(&j, lmp, "base_score");

	if (strcmp(m->objective, "reg:squarederror") == 0 || strcmp(m->objective, "reg:linear") == 0)
	{
		m->link = ML_LINK_IDENTITY;
		m->n_outputs = 1;
		m->base_margin = base;
	}
	else if (strcmp(m->objective, "binary:logistic") == 0 || strcmp(m->objective, "binary:logitraw") == 0)
	{
		m->link = strcmp(m->objective, "binary:logistic") == 0 ? ML_LINK_SIGMOID : ML_LINK_IDENTITY;
		m->n_outputs = 1;
		m->n_classes = 2;
		if (!(base > 0.0f && base < 1.0f))
			mlj_fail(&j, NULL, "base_score %g of a logistic objective is not a probability", base);
		/* XGBoost's ProbToMargin, in float32 as it computes it */
		m->base_margin = -logf(1.0f / base - 1.0f);
	}
	else if (strcmp(m->objective, "multi:softprob") == 0 || strcmp(m->objective, "multi:softmax") == 0)
	{
		if (num_class < 2 || num_class > ML_MAX_OUTPUTS)
			mlj_fail(&j, NULL, "num_class %d of a multi-class objective is not between 2 and %d", num_class, ML_MAX_OUTPUTS);
		m->link = ML_LINK_SOFTMAX;
		m->argmax = strcmp(m->objective, "multi:softmax") == 0;
		m->n_outputs = num_class;
		m->n_classes = num_class;
		m->base_margin = base;
	}
	else
		mlj_fail(&j, "Supported objectives: reg:squarederror, binary:logistic, binary:logitraw, multi:softprob, multi:softmax.",
				 "unsupported objective \"%.40s\"", m->objective);
	if (m->n_outputs == 1 && num_class > 1)
		mlj_fail(&j, NULL, "wrong shape: num_class %d with objective %s", num_class, m->objective);

	model = mlj_object(&j, gb, "model", true);
	trees = mlj_array(&j, model, "trees", true);
	info = mlj_array(&j, model, "tree_info", true);
	ntrees = mlj_size(trees);
	if (ntrees > ML_MAX_TREES)
		mlj_fail(&j, NULL, "%d trees; at most %d are supported", ntrees, ML_MAX_TREES);
	groups = mlj_ints(&j, info, "tree_info", &ninfo);
	if (ninfo != ntrees)
		mlj_fail(&j, NULL, "wrong shape: tree_info has %d entries for %d trees", ninfo, ntrees);
	{
		JsonbContainer *gtp = mlj_object(&j, model, "gbtree_model_param", false);

		if (gtp && mlj_int_string(&j, gtp, "num_trees", ntrees) != ntrees)
			mlj_fail(&j, NULL, "wrong shape: num_trees says %d but %d trees are present",
					 mlj_int_string(&j, gtp, "num_trees", ntrees), ntrees);
	}

	m->n_trees = ntrees;
	m->trees = palloc0(sizeof(MlTree) * Max(ntrees, 1));
	for (t = 0; t < ntrees; t++)
	{
		JsonbContainer *tree = mlj_elem_container(&j, trees, t, "trees");
		int n = mlj_size(mlj_array(&j, tree, "left_children", true));

		if (n < 1 || n > ML_MAX_NODES_PER_TREE)
			mlj_fail(&j, NULL, "tree %d has %d nodes", t, n);
		if (groups[t] < 0 || groups[t] >= m->n_outputs)
			mlj_fail(&j, NULL, "wrong shape: tree %d adds to output %d of %d", t, groups[t], m->n_outputs);
		m->trees[t].first = (int32) total;
		m->trees[t].n_nodes = n;
		m->trees[t].group = groups[t];
		total += n;
		if (total > (size_t) PG_INT32_MAX / 2)
			mlj_fail(&j, NULL, "the trees have too many nodes in all");
	}
	m->nodes = palloc_extended(sizeof(MlNode) * Max(total, 1), MCXT_ALLOC_HUGE);
	for (t = 0; t < ntrees; t++)
		parse_tree(&j, m, mlj_elem_container(&j, trees, t, "trees"), t, m->nodes + m->trees[t].first);

	take_feature_names(&j, m, mlj_array(&j, learner, "feature_names", false));
	return m;
}

MlModel *
ml_parse_model(MlKind kind, Jsonb *doc)
{
	if (kind == ML_KIND_XGBOOST)
		return parse_xgboost(doc);
	return parse_sklearn(kind, doc);
}
