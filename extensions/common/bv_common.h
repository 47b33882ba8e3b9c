/*-------------------------------------------------------------------------
 *
 * bv_common.h
 *	  Declarations of BitVelocity's internal C library (libbvcommon.a).
 *
 * Every BitVelocity extension links this small static library instead of
 * carrying its own copy of these helpers.  It holds only code that more than
 * one extension needs: reading settings, picking a field out of a JSON
 * document without building a jsonb value, and validating the identifiers
 * that travel with a request (actors, W3C trace contexts).
 *
 * Only bv_guc.c keeps state between calls (where settings sit, see there);
 * otherwise callers own every allocation, which is made in
 * CurrentMemoryContext.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_COMMON_H
#define BV_COMMON_H

#include "postgres.h"

#include "common/jsonapi.h"

/* Longest actor name accepted, in characters (OIDC "sub" values fit). */
#define BV_ACTOR_MAX_CHARS 256

/* Length of a version-00 W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>. */
#define BV_TRACEPARENT_LEN 55

/* bv_guc.c */
extern const char *bv_guc_get_nonempty(const char *name);

/* bv_json.c */
extern JsonParseErrorType bv_json_top_field(const char *json, const char *key,
											char **value,
											JsonTokenType *value_type);

/* bv_ident.c */
extern const char *bv_actor_problem(const char *actor);
extern bool bv_traceparent_is_valid(const char *value);

/* ---- crypto and encodings (issue #6; shared with bv_cdc webhooks) ---- */

/* bv_encode.c: base64url, hex, constant-time compare (plain C) */
#include "bv_encode.h"

/* bv_crypto.c: needs OpenSSL (EXT_LIBS = -lcrypto) */
#define BV_SHA256_LEN 32
extern bool bv_hmac_sha256(const uint8 *key, size_t keylen, const uint8 *msg,
						   size_t msglen, uint8 out[BV_SHA256_LEN]);
extern bool bv_sha256(const uint8 *msg, size_t msglen, uint8 out[BV_SHA256_LEN]);
extern bool bv_random_bytes(uint8 *buf, size_t len);
extern bool bv_mac_equal(const void *a, const void *b, size_t len);

/* bv_signature.c: "t=...,v1=..." webhook signatures (needs bv_crypto.c) */
typedef enum BvSignatureResult
{
	BV_SIG_OK,
	BV_SIG_MALFORMED,
	BV_SIG_MISMATCH,
	BV_SIG_EXPIRED
} BvSignatureResult;

extern BvSignatureResult bv_signature_verify(const uint8 *secret, size_t secretlen,
											 const char *header, const uint8 *body,
											 size_t bodylen, int64 tolerance_s,
											 int64 now);
extern const char *bv_signature_reason(BvSignatureResult result);

/*
 * bv_repl.c: a libpq client of the streaming replication protocol, and
 * bv_backoff.c: exponential back-off with jitter (used by bv_cdc).  Callers
 * of bv_repl_* include libpq-fe.h first and add -I$(libpq_srcdir).
 */
#ifdef LIBPQ_FE_H
#include "access/xlogdefs.h"
extern PGconn *bv_repl_connect(const char *conninfo, uint32 wait_event, char **err);
extern PGresult *bv_repl_command(PGconn *conn, const char *command, ExecStatusType expect,
								 uint32 wait_event, char **err, char **sqlstate);
extern int bv_repl_receive(PGconn *conn, char **buf, char **err);
extern void bv_repl_free(char *buf);
extern char bv_repl_parse(const char *buf, int len, XLogRecPtr *start, XLogRecPtr *walend,
						  bool *reply, const char **data, int *datalen);
extern bool bv_repl_send_status(PGconn *conn, XLogRecPtr written, XLogRecPtr flushed, bool reply,
								char **err);
#endif

typedef struct BvBackoff
{
	int base_ms;
	int max_ms;
	int attempt;
} BvBackoff;

extern void bv_backoff_init(BvBackoff *b, int base_ms, int max_ms);
extern int bv_backoff_next(BvBackoff *b);
extern void bv_backoff_reset(BvBackoff *b);

#endif /* BV_COMMON_H */
