/*-------------------------------------------------------------------------
 *
 * jwt.c
 *	  bv.jwt_verify(), bv.jwt_sign() and bv.jwt_is_revoked().
 *
 * Verification order, cheapest and least trusting first:
 *
 *	1. size cap (bv.jwt_max_size), three segments, canonical base64url,
 *	   strict JSON, "alg" present, no "crit" (jwt_parse.c, no backend code);
 *	2. key selection: the token's "kid" only selects among the active,
 *	   currently valid keys of bv.jwt_keys whose algorithm equals the token's
 *	   "alg" (the key decides the algorithm; "none" is never a key's
 *	   algorithm; "jku", "x5u", "x5c" and embedded "jwk" are never read);
 *	3. signature (jwt_keys.c; HMAC compared with CRYPTO_memcmp; ES
 *	   signatures exactly R||S with 1 <= r, s < n);
 *	4. claims, only once the signature holds: "exp" required unless
 *	   bv.jwt_require_exp is off; "exp", "nbf", "iat" must be numbers and are
 *	   compared with the clock with bv.jwt_leeway seconds of leeway; "iss"
 *	   against the key's issuer or bv.jwt_issuer, "aud" against
 *	   bv.jwt_audience, when configured; "jti" against the revocation list
 *	   and, with bv.jwt_replay_check, against the shared-memory replay table.
 *
 * Every refusal is the same error: SQLSTATE 28000, message "invalid token",
 * a detail from a fixed list naming the failed check class, never any part
 * of the token (the token is a credential: it must not reach the log).
 * For the same reason the error hides the statement (errhidestmt), which
 * would otherwise be logged with the token in it.
 *
 * Memory: everything is allocated in the caller's (per-call) context;
 * the key cache belongs to jwt_keys.c.  No locks are taken here except
 * through the replay check (ratelimit.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "bv_common.h"
#include "bv_core.h"
#include "jwt_parse.h"

/* Fixed refusal details: the only variable part of a token error. */
#define REJECT_MALFORMED "The token is malformed."
#define REJECT_TOO_LARGE "The token is larger than bv.jwt_max_size."
#define REJECT_CRIT      "The token requires an unsupported header extension (crit)."
#define REJECT_SIGNATURE "The token's signature, algorithm or key is not accepted."
#define REJECT_CLAIMS    "The token's claims are malformed."
#define REJECT_NO_EXP    "The token has no expiry time (exp)."
#define REJECT_EXPIRED   "The token has expired."
#define REJECT_NOT_YET   "The token is not valid yet (nbf or iat in the future)."
#define REJECT_ISSUER    "The token's issuer (iss) is not accepted."
#define REJECT_AUDIENCE  "The token's audience (aud) is not accepted."
#define REJECT_REVOKED   "The token has been revoked."
#define REJECT_REPLAYED  "The token has already been used (jti replay)."

static void jwt_reject(const char *detail) pg_attribute_noreturn();

static void
jwt_reject(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token"),
			 errdetail("%s", detail),
			 errhidestmt(true),
			 errhint("Obtain a new token from the identity provider and send it again.")));
}

/* Seconds since the Unix epoch, now. */
static inline double
unix_now(void)
{
	return (double) GetCurrentTimestamp() / USECS_PER_SEC +
		   (double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* Top-level claim "name" of claims into *v; false if absent. */
static inline bool
claim(Jsonb *claims, const char *name, JsonbValue *v)
{
	return getKeyJsonValueFromContainer(&claims->root, name, strlen(name), v) != NULL;
}

/* A NumericDate claim: absent -> false; not a number -> refused. */
static bool
time_claim(Jsonb *claims, const char *name, double *value)
{
	JsonbValue v;

	if (!claim(claims, name, &v))
		return false;
	if (v.type != jbvNumeric)
		jwt_reject(REJECT_CLAIMS);
	*value = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
	return true;
}

static bool
string_equals(const JsonbValue *v, const char *s)
{
	return v->type == jbvString && (size_t) v->val.string.len == strlen(s) &&
		   memcmp(v->val.string.val, s, v->val.string.len) == 0;
}

/* Is "aud" (a string, or an array of strings) naming audience? */
static bool
audience_matches(Jsonb *claims, const char *audience)
{
	JsonbValue v;

	if (!claim(claims, "aud", &v))
		return false;
	if (v.type == jbvString)
		return string_equals(&v, audience);
	if (v.type == jbvBinary)
	{
		JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue elem;
		bool found = false;
		int depth = 0;

		while ((tok = JsonbIteratorNext(&it, &elem, false)) != WJB_DONE)
		{
			if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
				depth++;
			else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
				depth--;
			else if (tok == WJB_ELEM && depth == 1 && string_equals(&elem, audience))
				found = true;
		}
		return found;
	}
	return false;
}

/*
 * Building the claims jsonb straight from the validated payload: the walker
 * of jwt_parse.c reports tokens, these callbacks push them into a
 * JsonbParseState.  This is what jsonb_in does, minus its lexer (which
 * copies strings character by character), and about a quarter of the cost
 * of a verification is saved.
 */
typedef struct ClaimsBuilder
{
	JsonbParseState *state;
	JsonbValue *result;
	int depth;
	bool in_object[BV_JWT_JSON_DEPTH + 2];
} ClaimsBuilder;

static void
cb_scalar(ClaimsBuilder *b, JsonbValue *v)
{
	b->result = pushJsonbValue(&b->state, b->in_object[b->depth] ? WJB_VALUE : WJB_ELEM, v);
}

static void
cb_object_start(void *ctx)
{
	ClaimsBuilder *b = ctx;

	b->in_object[++b->depth] = true;
	b->result = pushJsonbValue(&b->state, WJB_BEGIN_OBJECT, NULL);
}

static void
cb_object_end(void *ctx)
{
	ClaimsBuilder *b = ctx;

	b->result = pushJsonbValue(&b->state, WJB_END_OBJECT, NULL);
	b->depth--;
}

static void
cb_array_start(void *ctx)
{
	ClaimsBuilder *b = ctx;

	b->in_object[++b->depth] = false;
	b->result = pushJsonbValue(&b->state, WJB_BEGIN_ARRAY, NULL);
}

static void
cb_array_end(void *ctx)
{
	ClaimsBuilder *b = ctx;

	b->result = pushJsonbValue(&b->state, WJB_END_ARRAY, NULL);
	b->depth--;
}

static void
cb_key(void *ctx, const char *s, size_t len)
{
	ClaimsBuilder *b = ctx;
	JsonbValue v;

	v.type = jbvString;
	v.val.string.val = pnstrdup(s, len);
	v.val.string.len = (int) len;
	b->result = pushJsonbValue(&b->state, WJB_KEY, &v);
}

static void
cb_string(void *ctx, const char *s, size_t len)
{
	JsonbValue v;

	v.type = jbvString;
	v.val.string.val = pnstrdup(s, len);
	v.val.string.len = (int) len;
	cb_scalar(ctx, &v);
}

static void
cb_number(void *ctx, const char *s, size_t len)
{
	JsonbValue v;

	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
														CStringGetDatum(pnstrdup(s, len)),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));
	cb_scalar(ctx, &v);
}

static void
cb_literal(void *ctx, int which)
{
	JsonbValue v;

	if (which == 0)
		v.type = jbvNull;
	else
	{
		v.type = jbvBool;
		v.val.boolean = which == 1;
	}
	cb_scalar(ctx, &v);
}

static const BvJsonHandlers claims_handlers = {
	cb_object_start, cb_object_end, cb_array_start, cb_array_end,
	cb_key, cb_string, cb_number, cb_literal};

/* The verified payload as jsonb; any parse error becomes a token error. */
static Jsonb *
claims_jsonb(const uint8 *payload, size_t len)
{
	MemoryContext ctx = CurrentMemoryContext;
	Jsonb *volatile result = NULL;
	volatile bool failed = false;

	/*
	 * jwt_parse.c accepts only JSON that jsonb accepts, so this cannot fail;
	 * if it ever did, a jsonb message could quote the payload, so catch it.
	 * Building jsonb takes no locks or buffers: flushing the error is safe.
	 * In a database whose encoding is not UTF-8, jsonb_in does the encoding
	 * conversion of strings.
	 */
	PG_TRY();
	{
		if (GetDatabaseEncoding() == PG_UTF8)
		{
			ClaimsBuilder b;
			char *scratch = palloc(len + 1);

			memset(&b, 0, sizeof(b));
			if (bv_json_walk(payload, len, scratch, len + 1, &claims_handlers, &b) &&
				b.depth == 0 && b.result != NULL)
				result = JsonbValueToJsonb(b.result);
			else
				failed = true;
		}
		else
			result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(pnstrdup((const char *) payload, len))));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		FlushErrorState();
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		jwt_reject(REJECT_CLAIMS);
	return result;
}

/* Refuse the token if any claim check fails. */
static void
check_claims(Jsonb *claims, const BvJwtKey *key)
{
	double now = unix_now();
	double leeway = bv_jwt_leeway;
	double exp = 0;
	double t;
	bool has_exp;
	const char *issuer;
	JsonbValue v;

	has_exp = time_claim(claims, "exp", &exp);
	if (!has_exp && bv_jwt_require_exp)
		jwt_reject(REJECT_NO_EXP);
	if (has_exp && now >= exp + leeway)
		jwt_reject(REJECT_EXPIRED);
	if (time_claim(claims, "nbf", &t) && now + leeway < t)
		jwt_reject(REJECT_NOT_YET);
	if (time_claim(claims, "iat", &t) && now + leeway < t)
		jwt_reject(REJECT_NOT_YET);

	issuer = key->issuer ? key->issuer : (bv_jwt_issuer && bv_jwt_issuer[0] ? bv_jwt_issuer : NULL);
	if (issuer && !(claim(claims, "iss", &v) && string_equals(&v, issuer)))
		jwt_reject(REJECT_ISSUER);
	if (bv_jwt_audience && bv_jwt_audience[0] && !audience_matches(claims, bv_jwt_audience))
		jwt_reject(REJECT_AUDIENCE);

	if (claim(claims, "jti", &v))
	{
		char *jti;

		if (v.type != jbvString || v.val.string.len == 0 || v.val.string.len > BV_JWT_KID_MAX)
			jwt_reject(REJECT_CLAIMS);
		jti = pnstrdup(v.val.string.val, v.val.string.len);
		if (bv_jwt_jti_revoked(jti))
			jwt_reject(REJECT_REVOKED);
		if (bv_jwt_replay_check)
		{
			/*
			 * A bucket of one token that refills exactly when the token
			 * expires: the second use is refused until then, and after it
			 * the bucket is idle and may be evicted.
			 */
			double lifetime = has_exp ? exp + leeway - now : 86400.0 * 365;
			char *rkey = psprintf("jti:%s", jti);
			double retry;

			if (!bv_ratelimit_take(rkey, strlen(rkey), 1.0 / Max(lifetime, 1.0), 1.0, &retry))
				jwt_reject(REJECT_REPLAYED);
		}
	}
	else if (bv_jwt_replay_check)
		jwt_reject(REJECT_CLAIMS); /* replay protection needs a jti */
}

PG_FUNCTION_INFO_V1(bv_jwt_verify);

/*
 * bv.jwt_verify(token text) returns jsonb: the claims of a valid token, or
 * SQLSTATE 28000.
 */
Datum
bv_jwt_verify(PG_FUNCTION_ARGS)
{
	text *token = PG_GETARG_TEXT_PP(0);
	size_t len = VARSIZE_ANY_EXHDR(token);
	BvJwtParts parts;
	uint8 *work;
	BvJwtAlg alg;
	BvJwtKey *candidates;
	BvJwtKey *key = NULL;
	int ncandidates;
	int i;
	Jsonb *claims;

	if (len > (size_t) bv_jwt_max_size)
		jwt_reject(REJECT_TOO_LARGE);
	work = palloc(BV_JWT_WORK_LEN(len));
	switch (bv_jwt_parse(VARDATA_ANY(token), len, bv_jwt_max_size, work,
						 BV_JWT_WORK_LEN(len), &parts))
	{
		case BV_JWT_PARSE_OK:
			break;
		case BV_JWT_PARSE_TOO_LARGE:
			jwt_reject(REJECT_TOO_LARGE);
		case BV_JWT_PARSE_CRIT:
			jwt_reject(REJECT_CRIT);
		default:
			jwt_reject(REJECT_MALFORMED);
	}

	alg = bv_jwt_alg_from_name(parts.alg);
	if (alg == BV_ALG_INVALID)
		jwt_reject(REJECT_SIGNATURE);
	candidates = bv_jwt_keys_usable(alg, parts.has_kid ? parts.kid : NULL, &ncandidates);
	for (i = 0; i < ncandidates && key == NULL; i++)
		if (bv_jwt_key_verify(&candidates[i], (const uint8 *) parts.signing_input,
							  parts.signing_input_len, parts.signature,
							  parts.signature_len))
			key = &candidates[i];
	if (key == NULL)
		jwt_reject(REJECT_SIGNATURE);

	claims = claims_jsonb(parts.payload, parts.payload_len);
	check_claims(claims, key);
	PG_RETURN_JSONB_P(claims);
}

/* base64url of len bytes, NUL-terminated, palloc'd. */
static char *
b64url(const uint8 *data, size_t len)
{
	char *out = palloc(BV_B64URL_ENC_LEN(len) + 1);

	out[bv_b64url_encode(data, len, out)] = '\0';
	return out;
}

PG_FUNCTION_INFO_V1(bv_jwt_sign);

/*
 * bv.jwt_sign(claims jsonb, kid text) returns text: a compact JWS of the
 * claims, signed with key kid (which must hold a secret or private key).
 */
Datum
bv_jwt_sign(PG_FUNCTION_ARGS)
{
	Jsonb *claims = PG_GETARG_JSONB_P(0);
	char *kid = text_to_cstring(PG_GETARG_TEXT_PP(1));
	BvJwtKey *key;
	StringInfoData header;
	char *payload;
	StringInfoData out;
	uint8 *sig;
	size_t sig_len;

	if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token claims must be a JSON object"),
				 errdetail("A JWT claims set is a JSON object (RFC 7519 section 4)."),
				 errhint("Pass something like '{\"sub\": \"user-1\", \"exp\": 1900000000}'.")));
	key = bv_jwt_key_for_signing(kid);

	initStringInfo(&header);
	appendStringInfo(&header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":", bv_jwt_alg_name(key->alg));
	escape_json(&header, kid);
	appendStringInfoChar(&header, '}');
	payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

	initStringInfo(&out);
	appendStringInfoString(&out, b64url((const uint8 *) header.data, header.len));
	appendStringInfoChar(&out, '.');
	appendStringInfoString(&out, b64url((const uint8 *) payload, strlen(payload)));
	sig = bv_jwt_key_sign(key, (const uint8 *) out.data, out.len, &sig_len);
	appendStringInfoChar(&out, '.');
	appendStringInfoString(&out, b64url(sig, sig_len));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

PG_FUNCTION_INFO_V1(bv_jwt_is_revoked);

/*
 * bv.jwt_is_revoked(jti text) returns boolean: is jti on the revocation
 * list (bv.jwt_revocations, expired entries ignored)?
 */
Datum
bv_jwt_is_revoked(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(bv_jwt_jti_revoked(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}
