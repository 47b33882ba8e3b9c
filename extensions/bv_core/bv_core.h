/*-------------------------------------------------------------------------
 *
 * bv_core.h
 *	  Shared declarations of the bv_core extension (schema "bv").
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CORE_H
#define BV_CORE_H

#include "postgres.h"

/* Version of this library; the SQL scripts carry the same number. */
#define BV_CORE_VERSION "0.6.0"

/*
 * A one-entry cache from a setting's text to a value derived from it.  The
 * request settings that bv.actor() and bv.trace_context() read change once per
 * request at most, while audit triggers ask for them once per row; comparing
 * the text is much cheaper than parsing it again.  Entries live in
 * TopMemoryContext.
 */
typedef struct BvDerivedCache
{
	char *source; /* setting text the value was derived from */
	char *value;  /* derived value; NULL is a valid result */
} BvDerivedCache;

extern bool bv_cache_lookup(BvDerivedCache *cache, const char *source,
							const char **value);
extern void bv_cache_store(BvDerivedCache *cache, const char *source,
						   const char *value);

/* Settings defined in bv_core.c. */
extern char *bv_actor_setting;
extern char *bv_traceparent_setting;

/* ---- security core (0.2.0) ---- */

#include "utils/timestamp.h"

/* JWT algorithms bv.jwt_keys may name; the key decides the algorithm. */
typedef enum BvJwtAlg
{
	BV_ALG_HS256,
	BV_ALG_HS384,
	BV_ALG_HS512,
	BV_ALG_RS256,
	BV_ALG_RS384,
	BV_ALG_RS512,
	BV_ALG_PS256,
	BV_ALG_ES256,
	BV_ALG_ES384,
	BV_ALG_EDDSA,
	BV_ALG_INVALID
} BvJwtAlg;

/* A usable key from bv.jwt_keys (jwt_crypto.c), cached per backend (jwt_keys.c). */
typedef struct BvJwtKey
{
	char *kid;
	BvJwtAlg alg;
	char *issuer; /* NULL: any issuer (subject to bv.jwt_issuer) */
	bool has_not_before;
	TimestampTz not_before;
	bool has_expires_at;
	TimestampTz expires_at;
	uint8 *secret; /* HS*: the shared secret */
	size_t secret_len;
	void *hmac_ctx; /* HS*: pre-keyed HMAC state (jwt_crypto.c) */
	void *pkey;     /* others: EVP_PKEY (public, or private too) */
	bool can_sign;
	char **roles; /* not NULL: the only roles its tokens may name (bv.jwt_keys.roles) */
	int nroles;
} BvJwtKey;

/* Settings of the security core (bv_core.c). */
extern int bv_jwt_leeway;
extern int bv_jwt_max_size;
extern bool bv_jwt_require_exp;
extern bool bv_jwt_replay_check;
extern char *bv_jwt_issuer;
extern char *bv_jwt_audience;
extern int bv_rate_limit_buckets;
extern char *bv_master_key_file;
extern double bv_request_rate;
extern double bv_request_burst;

/* jwt_crypto.c */
#define BV_CLIP_BYTES 64 /* longest prefix of a client value quoted in a message */
extern const char *bv_clip(const char *s);
extern BvJwtAlg bv_jwt_alg_from_name(const char *name);
extern const char *bv_jwt_alg_name(BvJwtAlg alg);
extern void bv_jwt_key_load(BvJwtKey *key, const char *text);
extern void bv_jwt_key_free(BvJwtKey *key);
extern bool bv_jwt_key_verify(BvJwtKey *key, const uint8 *input,
							  size_t input_len, const uint8 *sig,
							  size_t sig_len);
extern uint8 *bv_jwt_key_sign(BvJwtKey *key, const uint8 *input,
							  size_t input_len, size_t *sig_len);

/* jwt_keys.c */
extern void bv_jwt_keys_init(void);
extern BvJwtKey *bv_jwt_key_next(BvJwtAlg alg, const char *kid,
								 TimestampTz now, int *pos);
extern BvJwtKey *bv_jwt_key_for_signing(const char *kid);
extern bool bv_jwt_jti_revoked(const char *jti);

/* ratelimit.c */
extern void bv_redact_init(void);
extern void bv_ratelimit_init(void);
extern bool bv_ratelimit_take(const char *key, size_t keylen, double rate,
							  double burst, double *retry_after);
extern bool bv_ratelimit_available(void);

typedef enum BvReplayResult
{
	BV_REPLAY_FIRST, /* first use of the jti: recorded */
	BV_REPLAY_AGAIN, /* used before, not expired: a replay */
	BV_REPLAY_FULL   /* no room to record a new jti: refuse the token */
} BvReplayResult;

extern BvReplayResult bv_replay_take(const char *jti, size_t len,
									 double lifetime);

/* secrets.c */
extern void bv_secrets_assign_master_key_file(const char *newval, void *extra);

#endif /* BV_CORE_H */
