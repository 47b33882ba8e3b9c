/*-------------------------------------------------------------------------
 *
 * jwt.c
 *	  bv.jwt_verify(), bv.jwt_sign() and bv.jwt_is_revoked().
 *
 * Verification order, cheapest and least trusting first:
 *
 *	1. size cap (bv.jwt_max_size), three segments, canonical base64url,
 *	   strict JSON, "alg" present, no "crit" (jwt_parse.c, no backend code).
 *	   The payload is read once: in a UTF-8 database the claims jsonb is
 *	   built by callbacks of the same walk that checks it, and is used only
 *	   if steps 3 and 4 pass;
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
 *	   and, with bv.jwt_replay_check, against the shared-memory replay table
 *	   (keyed by issuer and jti: a jti is unique per issuer only),
 *	   which never forgets an unexpired jti: when it has no room for a new
 *	   one the token is refused with 53400 (fail closed, issue #17).  A jti
 *	   is 1 to BV_JWT_KID_MAX bytes, the same rule as bv.jwt_revoke()'s, so
 *	   every accepted token can be revoked.
 *
 * Every refusal is the same error: SQLSTATE 28000, message "invalid token",
 * a detail from a fixed list naming the failed check class, never any part
 * of the token (the token is a credential: it must not reach the log).
 * For the same reason the error hides the statement (errhidestmt), which
 * would otherwise be logged with the token in it.
 *
 * Memory: everything is allocated in the caller's (per-call) context; the
 * claims' strings stay in the parser's work buffer until the jsonb is
 * flattened.  The key cache belongs to jwt_keys.c; a verification holds
 * pointers into it, valid for the call.  No locks are taken here except
 * through the replay check (ratelimit.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
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
#define REJECT_ROLE      "The token's role is not one its key may sign for (bv.jwt_keys.roles)."

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

/* Seconds since the Unix epoch of a timestamp. */
static inline double
unix_seconds(TimestampTz ts)
{
	return (double) ts / USECS_PER_SEC +
		   (double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/*
 * The registered claims the checks read, noted while the claims jsonb is
 * built (the parser has refused duplicate top-level names, so each is seen
 * at most once).  Strings point into the walker's scratch buffer.
 */
typedef struct SeenClaim
{
	bool present;
	enum jbvType type; /* jbvBinary for an object or array */
	double number;     /* jbvNumeric: the value */
	bool number_ok;    /* jbvNumeric: finite as a double */
	const char *str;   /* jbvString: the value, NUL-terminated */
	int len;
} SeenClaim;

typedef enum ClaimId
{
	CLAIM_EXP,
	CLAIM_NBF,
	CLAIM_IAT,
	CLAIM_ISS,
	CLAIM_AUD,
	CLAIM_JTI,
	CLAIM_OTHER
} ClaimId;

static const char *const claim_names[CLAIM_OTHER] = {"exp", "nbf", "iat", "iss", "aud", "jti"};

/* Which registered claim a top-level name is (all have three letters). */
static inline ClaimId
claim_id(const char *name, size_t len)
{
	int i;

	if (len != 3)
		return CLAIM_OTHER;
	for (i = 0; i < CLAIM_OTHER; i++)
		if (name[0] == claim_names[i][0] && name[1] == claim_names[i][1] &&
			name[2] == claim_names[i][2])
			return (ClaimId) i;
	return CLAIM_OTHER;
}

/*
 * Building the claims jsonb straight from the validated payload: the walker
 * of jwt_parse.c reports tokens, these callbacks push them into a
 * JsonbParseState.  This is what jsonb_in does, minus its lexer (which
 * copies strings character by character); strings are not copied at all
 * (they stay in the walker's scratch buffer until the jsonb is flattened),
 * and integers, nearly every number of a claims set, are converted without
 * numeric_in.  The top-level claims that the checks need are noted on the
 * way, so they are not looked up in the jsonb afterwards.
 */
typedef struct ClaimsBuilder
{
	JsonbParseState *state;
	JsonbValue *result;
	int depth;
	ClaimId pending; /* claim whose value comes next (depth 1) */
	bool in_object[BV_JWT_JSON_DEPTH + 2];
	SeenClaim seen[CLAIM_OTHER];
} ClaimsBuilder;

/* Note the value of a top-level claim, if it is one the checks read. */
static inline void
note_claim(ClaimsBuilder *b, enum jbvType type, const JsonbValue *v, double number,
		   bool number_ok)
{
	SeenClaim *c;

	if (b->depth != 1 || b->pending == CLAIM_OTHER)
		return;
	c = &b->seen[b->pending];
	c->present = true;
	c->type = type;
	c->number = number;
	c->number_ok = number_ok;
	if (type == jbvString)
	{
		c->str = v->val.string.val;
		c->len = v->val.string.len;
	}
	b->pending = CLAIM_OTHER;
}

static void
cb_scalar(ClaimsBuilder *b, JsonbValue *v)
{
	b->result = pushJsonbValue(&b->state, b->in_object[b->depth] ? WJB_VALUE : WJB_ELEM, v);
}

static void
cb_object_start(void *ctx)
{
	ClaimsBuilder *b = ctx;

	note_claim(b, jbvBinary, NULL, 0, false);
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

	note_claim(b, jbvBinary, NULL, 0, false);
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
	v.val.string.val = (char *) s;
	v.val.string.len = (int) len;
	if (b->depth == 1)
		b->pending = claim_id(s, len);
	b->result = pushJsonbValue(&b->state, WJB_KEY, &v);
}

static void
cb_string(void *ctx, const char *s, size_t len)
{
	ClaimsBuilder *b = ctx;
	JsonbValue v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = (int) len;
	note_claim(b, jbvString, &v, 0, false);
	cb_scalar(b, &v);
}

/*
 * The value of a JSON integer of at most 18 digits (which fits an int64),
 * or false for any other number.
 */
static inline bool
small_integer(const char *s, size_t len, int64 *value)
{
	bool neg = len > 0 && s[0] == '-';
	size_t i = neg ? 1 : 0;
	int64 v = 0;

	if (len - i == 0 || len - i > 18)
		return false;
	for (; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*value = neg ? -v : v;
	return true;
}

static void
cb_number(void *ctx, const char *s, size_t len)
{
	ClaimsBuilder *b = ctx;
	JsonbValue v;
	int64 i;
	double d;
	bool ok;

	v.type = jbvNumeric;
	if (small_integer(s, len, &i))
	{
		v.val.numeric = int64_to_numeric(i);
		d = (double) i;
		ok = true;
	}
	else
	{
		char *text = pnstrdup(s, len);

		v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
															CStringGetDatum(text),
															ObjectIdGetDatum(InvalidOid),
															Int32GetDatum(-1)));
		/* the JSON number grammar is a subset of strtod's (LC_NUMERIC is C) */
		d = strtod(text, NULL);
		ok = !isinf(d);
	}
	note_claim(b, jbvNumeric, &v, d, ok);
	cb_scalar(b, &v);
}

static void
cb_literal(void *ctx, int which)
{
	ClaimsBuilder *b = ctx;
	JsonbValue v;

	if (which == 0)
		v.type = jbvNull;
	else
	{
		v.type = jbvBool;
		v.val.boolean = which == 1;
	}
	note_claim(b, v.type, &v, 0, false);
	cb_scalar(b, &v);
}

static const BvJsonHandlers claims_handlers = {
	cb_object_start, cb_object_end, cb_array_start, cb_array_end,
	cb_key, cb_string, cb_number, cb_literal};

/*
 * Note the registered claims of a jsonb built by jsonb_in (databases not in
 * UTF-8, where strings are compared in the server encoding).
 */
static void
note_claims_from_jsonb(Jsonb *claims, ClaimsBuilder *b)
{
	int i;

	for (i = 0; i < CLAIM_OTHER; i++)
	{
		JsonbValue v;
		SeenClaim *c = &b->seen[i];

		if (getKeyJsonValueFromContainer(&claims->root, claim_names[i], 3, &v) == NULL)
			continue;
		c->present = true;
		c->type = v.type;
		if (v.type == jbvString)
		{
			c->str = pnstrdup(v.val.string.val, v.val.string.len);
			c->len = v.val.string.len;
		}
		else if (v.type == jbvNumeric)
		{
			c->number = strtod(DatumGetCString(DirectFunctionCall1(numeric_out,
																   NumericGetDatum(v.val.numeric))),
							   NULL);
			c->number_ok = !isinf(c->number);
		}
	}
}

/*
 * Parse the token into *parts (jwt_parse.c) and, in a UTF-8 database, build
 * its claims into *b in the same pass; refuse a malformed token.
 *
 * jwt_parse.c accepts only JSON that jsonb accepts, so building cannot
 * fail; if it ever did, a jsonb message could quote the payload, so any
 * error is caught and becomes the uniform token error.  Building takes no
 * locks or buffers: flushing the error is safe.  In a database whose
 * encoding is not UTF-8, the claims are left to jsonb_in (claims_jsonb),
 * which converts the strings to the server encoding.
 */
static void
parse_token(text *token, BvJwtParts *parts, ClaimsBuilder *b)
{
	size_t len = VARSIZE_ANY_EXHDR(token);
	uint8 *work;
	MemoryContext ctx = CurrentMemoryContext;
	volatile BvJwtParseResult r = BV_JWT_PARSE_JSON;

	if (len > (size_t) bv_jwt_max_size)
		jwt_reject(REJECT_TOO_LARGE);
	work = palloc(BV_JWT_WORK_LEN(len));
	memset(b, 0, sizeof(*b));
	b->pending = CLAIM_OTHER;
	PG_TRY();
	{
		r = bv_jwt_parse_walk(VARDATA_ANY(token), len, bv_jwt_max_size, work,
							  BV_JWT_WORK_LEN(len),
							  GetDatabaseEncoding() == PG_UTF8 ? &claims_handlers : NULL,
							  b, parts);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		FlushErrorState();
		r = BV_JWT_PARSE_JSON;
	}
	PG_END_TRY();
	switch (r)
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
}

/*
 * The claims of a token whose signature holds, as jsonb, with its
 * registered claims noted in *b.
 */
static Jsonb *
claims_jsonb(const BvJwtParts *parts, ClaimsBuilder *b)
{
	MemoryContext ctx = CurrentMemoryContext;
	Jsonb *volatile result = NULL;

	PG_TRY();
	{
		if (GetDatabaseEncoding() == PG_UTF8)
		{
			if (b->depth == 0 && b->result != NULL)
				result = JsonbValueToJsonb(b->result);
		}
		else
		{
			result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(pnstrdup((const char *) parts->payload,
																				 parts->payload_len))));
			note_claims_from_jsonb(result, b);
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		FlushErrorState();
		result = NULL;
	}
	PG_END_TRY();
	if (result == NULL)
		jwt_reject(REJECT_CLAIMS);
	return result;
}

/* A NumericDate claim: absent -> false; not a number -> refused. */
static bool
time_claim(const SeenClaim *c, double *value)
{
	if (!c->present)
		return false;
	if (c->type != jbvNumeric || !c->number_ok)
		jwt_reject(REJECT_CLAIMS);
	*value = c->number;
	return true;
}

static inline bool
seen_string_equals(const SeenClaim *c, const char *s)
{
	return c->present && c->type == jbvString && (size_t) c->len == strlen(s) &&
		   memcmp(c->str, s, c->len) == 0;
}

/* Is "aud" (a string, or an array of strings) naming audience? */
static bool
audience_matches(Jsonb *claims, const SeenClaim *aud, const char *audience)
{
	JsonbValue v;

	if (!aud->present)
		return false;
	if (aud->type == jbvString)
		return seen_string_equals(aud, audience);
	if (aud->type == jbvBinary &&
		getKeyJsonValueFromContainer(&claims->root, "aud", 3, &v) != NULL &&
		v.type == jbvBinary)
	{
		JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue elem;
		bool found = false;
		int depth = 0;
		size_t audience_len = strlen(audience);

		while ((tok = JsonbIteratorNext(&it, &elem, false)) != WJB_DONE)
		{
			if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
				depth++;
			else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
				depth--;
			else if (tok == WJB_ELEM && depth == 1 && elem.type == jbvString &&
					 (size_t) elem.val.string.len == audience_len &&
					 memcmp(elem.val.string.val, audience, audience_len) == 0)
				found = true;
		}
		return found;
	}
	return false;
}

/*
 * Does the key allow the token's role?  A key with roles (bv.jwt_keys.roles,
 * 0.4.0) signs only for those: the "role" claim, a string, or bv_anon when
 * absent (as bv.pre_request() reads it).  A key of an identity provider
 * could otherwise mint tokens for any API role, bv_admin included.
 */
static bool
role_allowed(Jsonb *claims, const BvJwtKey *key)
{
	JsonbValue v;
	const char *role = "bv_anon";
	size_t len = strlen(role);
	int i;

	if (key->roles == NULL)
		return true;
	if (getKeyJsonValueFromContainer(&claims->root, "role", 4, &v) != NULL)
	{
		if (v.type != jbvString)
			return false;
		role = v.val.string.val;
		len = v.val.string.len;
	}
	for (i = 0; i < key->nroles; i++)
		if (strlen(key->roles[i]) == len && memcmp(key->roles[i], role, len) == 0)
			return true;
	return false;
}

/* Refuse the token if any claim check fails; now is the call's clock. */
static void
check_claims(Jsonb *claims, const ClaimsBuilder *b, const BvJwtKey *key,
			 TimestampTz now_ts)
{
	double now = unix_seconds(now_ts);
	double leeway = bv_jwt_leeway;
	double exp = 0;
	double t;
	bool has_exp;
	const char *issuer;
	const SeenClaim *jti = &b->seen[CLAIM_JTI];

	has_exp = time_claim(&b->seen[CLAIM_EXP], &exp);
	if (!has_exp && bv_jwt_require_exp)
		jwt_reject(REJECT_NO_EXP);
	if (has_exp && now >= exp + leeway)
		jwt_reject(REJECT_EXPIRED);
	if (time_claim(&b->seen[CLAIM_NBF], &t) && now + leeway < t)
		jwt_reject(REJECT_NOT_YET);
	if (time_claim(&b->seen[CLAIM_IAT], &t) && now + leeway < t)
		jwt_reject(REJECT_NOT_YET);

	issuer = key->issuer ? key->issuer : (bv_jwt_issuer && bv_jwt_issuer[0] ? bv_jwt_issuer : NULL);
	if (issuer && !seen_string_equals(&b->seen[CLAIM_ISS], issuer))
		jwt_reject(REJECT_ISSUER);
	if (bv_jwt_audience && bv_jwt_audience[0] &&
		!audience_matches(claims, &b->seen[CLAIM_AUD], bv_jwt_audience))
		jwt_reject(REJECT_AUDIENCE);
	if (!role_allowed(claims, key))
		jwt_reject(REJECT_ROLE);

	if (jti->present)
	{
		if (jti->type != jbvString || jti->len == 0 || jti->len > BV_JWT_KID_MAX)
			jwt_reject(REJECT_CLAIMS);
		/* jti->str is NUL-terminated, and holds no NUL (no \u0000) */
		if (bv_jwt_jti_revoked(jti->str))
			jwt_reject(REJECT_REVOKED);
		if (bv_jwt_replay_check)
		{
			/*
			 * A pinned bucket of one token that refills exactly when the
			 * token expires: the second use is refused until then, and the
			 * entry is never evicted before (ratelimit.c).
			 */
			double lifetime = has_exp ? exp + leeway - now : 86400.0 * 365;
			const SeenClaim *iss = &b->seen[CLAIM_ISS];
			StringInfoData rkey;

			/*
			 * A jti is unique per issuer (RFC 7519 4.1.7), so the entry is
			 * keyed by both (#17 attack review): keyed by the jti alone, a
			 * token of one provider burned the same jti of another
			 * provider's tokens.  "<bytes of iss>:<iss><jti>", or
			 * "-:<jti>" without a string iss, is unambiguous.
			 */
			initStringInfo(&rkey);
			if (iss->present && iss->type == jbvString)
			{
				appendStringInfo(&rkey, "%d:", iss->len);
				appendBinaryStringInfo(&rkey, iss->str, iss->len);
			}
			else
				appendStringInfoString(&rkey, "-:");
			appendBinaryStringInfo(&rkey, jti->str, jti->len);

			switch (bv_replay_take(rkey.data, (size_t) rkey.len, lifetime))
			{
				case BV_REPLAY_FIRST:
					break;
				case BV_REPLAY_AGAIN:
					jwt_reject(REJECT_REPLAYED);
				case BV_REPLAY_FULL:
					ereport(ERROR,
							(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
							 errmsg("the jti replay table is full"),
							 errdetail("Every slot that could record this token's jti holds the jti of an unexpired token; forgetting one would let that token be used again, so this token is refused."),
							 errhidestmt(true),
							 errhint("Raise bv.rate_limit_buckets (needs a restart) or issue tokens with shorter lifetimes; bv.jwt_replay_stats() shows the table's pressure.")));
			}
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
	BvJwtParts parts;
	BvJwtAlg alg;
	BvJwtKey *key;
	int pos = 0;
	TimestampTz now;
	Jsonb *claims;
	ClaimsBuilder builder;

	parse_token(token, &parts, &builder);

	alg = bv_jwt_alg_from_name(parts.alg);
	if (alg == BV_ALG_INVALID)
		jwt_reject(REJECT_SIGNATURE);
	/* one reading of the clock for the key windows and the claims */
	now = GetCurrentTimestamp();
	while ((key = bv_jwt_key_next(alg, parts.has_kid ? parts.kid : NULL, now, &pos)) != NULL)
		if (bv_jwt_key_verify(key, (const uint8 *) parts.signing_input,
							  parts.signing_input_len, parts.signature,
							  parts.signature_len))
			break;
	if (key == NULL)
		jwt_reject(REJECT_SIGNATURE);

	claims = claims_jsonb(&parts, &builder);
	check_claims(claims, &builder, key, now);
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
