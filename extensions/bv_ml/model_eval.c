/*-------------------------------------------------------------------------
 *
 * model_eval.c
 *	  Scoring one row with a parsed model.
 *
 * Linear models compute in double precision, as scikit-learn does.  Tree
 * ensembles follow XGBoost's CPU predictor exactly: features become
 * float32, a missing feature (NULL or NaN) takes the node's default
 * direction, otherwise a row goes left when value < split_condition in
 * float32; margins start at the base margin and add the trees' leaf values
 * in float32, tree after tree; the sigmoid and softmax are float32 with
 * the C library's expf, as XGBoost's are.  The results are then widened to
 * double, the type SQL sees.
 *
 * Pure functions: no state, no allocation (the caller passes scratch).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "bv_ml.h"

/*
 * The leaf one tree sends a row of float32 features to.  Branch-free per
 * level: a row goes left when value < condition, or when the value is
 * missing (NaN, the only value unequal to itself) and the node's default is
 * left.  A NaN compares false with "<", so a missing value goes right at a
 * node whose default is right: exactly XGBoost's rule.
 */
static inline float
tree_leaf(const MlNode *nodes, const float *fx)
{
	const MlNode *n = nodes;

	while (n->left >= 0)
	{
		float v = fx[n->feature & ML_NODE_FEATURE_MASK];
		/* comparisons as 0/1 integers, combined without branches */
		int32 lt = v < n->value;
		int32 missing_left = (v != v) & ((n->feature >> 30) & 1);
		int32 go_left = lt | missing_left;

		n = nodes + (n->right ^ ((n->left ^ n->right) & -go_left));
	}
	return n->value;
}

static void
eval_trees(const MlModel *m, const double *x, const bool *isnull, float *scratch, double *out)
{
	float margin[ML_MAX_OUTPUTS];
	int k;

	for (int i = 0; i < m->n_features; i++)
		scratch[i] = (isnull && isnull[i]) ? NAN : (float) x[i];
	for (k = 0; k < m->n_outputs; k++)
		margin[k] = m->base_margin;
	for (int t = 0; t < m->n_trees; t++)
	{
		const MlTree *tr = &m->trees[t];

		margin[tr->group] += tree_leaf(m->nodes + tr->first, scratch);
	}

	switch (m->link)
	{
		case ML_LINK_IDENTITY:
			out[0] = margin[0];
			break;
		case ML_LINK_SIGMOID:
			out[0] = 1.0f / (1.0f + expf(-margin[0]));
			break;
		case ML_LINK_SOFTMAX:
		case ML_LINK_OVR:
		{
			float wmax = margin[0];
			double wsum = 0.0;

			for (k = 1; k < m->n_outputs; k++)
				wmax = fmaxf(margin[k], wmax);
			for (k = 0; k < m->n_outputs; k++)
			{
				margin[k] = expf(margin[k] - wmax);
				wsum += margin[k];
			}
			for (k = 0; k < m->n_outputs; k++)
				out[k] = margin[k] / (float) wsum;
			break;
		}
	}
}

static bool
eval_linear(const MlModel *m, const double *x, double *out)
{
	bool finite = true;

	int n = m->n_features;
	int k;

	for (k = 0; k < m->n_outputs; k++)
	{
		const double *c = m->coef + (size_t) k * n;
		double s = 0.0;

		for (int i = 0; i < n; i++)
			s += c[i] * x[i];
		out[k] = s + m->intercept[k];
		finite &= isfinite(out[k]) != 0;
	}
	switch (m->link)
	{
		case ML_LINK_IDENTITY:
			break;
		case ML_LINK_SIGMOID:
			out[0] = 1.0 / (1.0 + exp(-out[0]));
			break;
		case ML_LINK_SOFTMAX:
		{
			double mx = out[0],
				   sum = 0.0;

			for (k = 1; k < m->n_outputs; k++)
				mx = Max(mx, out[k]);
			for (k = 0; k < m->n_outputs; k++)
				sum += (out[k] = exp(out[k] - mx));
			for (k = 0; k < m->n_outputs; k++)
				out[k] /= sum;
			break;
		}
		case ML_LINK_OVR:
		{
			double sum = 0.0;

			for (k = 0; k < m->n_outputs; k++)
				sum += (out[k] = 1.0 / (1.0 + exp(-out[k])));
			for (k = 0; k < m->n_outputs; k++)
				out[k] /= sum;
			break;
		}
	}
	return finite;
}

/*
 * All outputs of one row into out[n_outputs]: the value (regression), the
 * probability of class 1 (binary) or each class's probability.  Linear
 * models never see NULLs (predict.c refuses them first); for them the
 * result says whether every margin was finite (a NaN or infinite feature
 * makes one not).
 */
bool
ml_eval(const MlModel *m, const double *x, const bool *isnull, float *scratch, double *out)
{
	if (m->kind == ML_KIND_XGBOOST)
	{
		eval_trees(m, x, isnull, scratch, out);
		return true;
	}
	return eval_linear(m, x, out);
}

/* The one number ml.predict returns: value, probability, or class index. */
double
ml_primary(const MlModel *m, const double *out)
{
	int best = 0;

	if (m->n_outputs == 1)
		return out[0];
	for (int k = 1; k < m->n_outputs; k++)
		if (out[k] > out[best])
			best = k;
	return (double) best;
}

int
ml_n_probabilities(const MlModel *m)
{
	if (m->link == ML_LINK_SIGMOID)
		return 2;
	if (m->link == ML_LINK_SOFTMAX || m->link == ML_LINK_OVR)
		return m->n_outputs;
	return 0;
}

void
ml_probabilities(const MlModel *m, const double *out, double *proba)
{
	if (m->link == ML_LINK_SIGMOID)
	{
		proba[0] = 1.0 - out[0];
		proba[1] = out[0];
		return;
	}
	for (int k = 0; k < m->n_outputs; k++)
		proba[k] = out[k];
}
