/*-------------------------------------------------------------------------
 *
 * jwt_parse.h
 *	  The JWT compact-serialisation parser: plain C, no backend, no OpenSSL.
 *
 * Kept free of PostgreSQL headers so that the libFuzzer harness in
 * tests/fuzz/ compiles exactly this code outside the server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_JWT_PARSE_H
#define BV_JWT_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BV_JWT_ALG_MAX     15  /* longest "alg" value kept */
#define BV_JWT_KID_MAX     256 /* longest "kid" value accepted, bytes */
#define BV_JWT_JSON_DEPTH  16  /* deepest nesting accepted in a segment */
#define BV_JWT_MAX_MEMBERS 128 /* most members in a header or claims set */
#define BV_JWT_NUMBER_MAX  40  /* longest JSON number token accepted */

typedef enum BvJwtParseResult
{
	BV_JWT_PARSE_OK = 0,
	BV_JWT_PARSE_TOO_LARGE, /* over the size cap */
	BV_JWT_PARSE_SEGMENTS,  /* not exactly three non-empty-ish segments */
	BV_JWT_PARSE_BASE64,    /* a segment is not canonical base64url */
	BV_JWT_PARSE_JSON,      /* header or payload is not strict JSON */
	BV_JWT_PARSE_HEADER,    /* header lacks "alg" or has bad types */
	BV_JWT_PARSE_CRIT       /* header has "crit" (no extension is supported) */
} BvJwtParseResult;

/*
 * A parsed token.  header/payload/signature point into the caller's work
 * buffer; signing_input into the token itself.
 */
typedef struct BvJwtParts
{
	const char *signing_input; /* "<header>.<payload>" as received */
	size_t signing_input_len;
	const uint8_t *header; /* decoded header JSON */
	size_t header_len;
	const uint8_t *payload; /* decoded claims JSON */
	size_t payload_len;
	const uint8_t *signature; /* decoded signature bytes */
	size_t signature_len;
	char alg[BV_JWT_ALG_MAX + 1]; /* header "alg" */
	char kid[BV_JWT_KID_MAX + 1]; /* header "kid", if has_kid */
	bool has_kid;
} BvJwtParts;

/*
 * Bytes of work buffer bv_jwt_parse needs for a token of len characters:
 * the decoded segments (at most 3/4 of len) and the payload's unescaped
 * strings (at most the decoded payload's length, plus one).
 */
#define BV_JWT_WORK_LEN(len) (2 * (len) + 8)

/*
 * Callbacks of bv_json_walk(), called in document order.  Strings and keys
 * arrive unescaped (UTF-8) and NUL-terminated, each at its own place in the
 * caller's scratch buffer, where they stay until the caller frees it.
 * Numbers arrive as their JSON text.  literal: 0 null, 1 true, 2 false.
 */
typedef struct BvJsonHandlers
{
	void (*object_start)(void *ctx);
	void (*object_end)(void *ctx);
	void (*array_start)(void *ctx);
	void (*array_end)(void *ctx);
	void (*key)(void *ctx, const char *s, size_t len);
	void (*string)(void *ctx, const char *s, size_t len);
	void (*number)(void *ctx, const char *s, size_t len);
	void (*literal)(void *ctx, int which);
} BvJsonHandlers;

extern bool bv_json_walk(const uint8_t *json, size_t len, char *scratch,
						 size_t scratch_len, const BvJsonHandlers *h,
						 void *ctx);
extern BvJwtParseResult bv_jwt_parse(const char *token, size_t len,
									 size_t max_len, uint8_t *work,
									 size_t work_len, BvJwtParts *parts);
extern BvJwtParseResult bv_jwt_parse_walk(const char *token, size_t len,
										  size_t max_len, uint8_t *work,
										  size_t work_len,
										  const BvJsonHandlers *h, void *ctx,
										  BvJwtParts *parts);
extern bool bv_json_object_is_strict(const uint8_t *json, size_t len);

#endif /* BV_JWT_PARSE_H */
