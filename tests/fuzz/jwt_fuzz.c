/*-------------------------------------------------------------------------
 *
 * jwt_fuzz.c
 *	  libFuzzer harness for bv_core's JWT parser (make fuzz).
 *
 * Compiles the very files the extension uses, extensions/bv_core/jwt_parse.c
 * and extensions/common/bv_encode.c, which are plain C by design (no
 * PostgreSQL, no OpenSSL), so no stub of palloc or ereport stands between
 * the fuzzer and the code that runs in the server.  Built with
 * AddressSanitizer and UndefinedBehaviorSanitizer by tools/fuzz.sh.
 *
 * Besides "does not crash", it checks properties, aborting when one fails:
 *	- base64url: decoding is canonical, i.e. whatever decodes re-encodes to
 *	  exactly the same text, and encode-then-decode is the identity;
 *	- a token that parses has exactly two dots, its parts lie inside the
 *	  work buffer and the signing input is a prefix of the token;
 *	- a parsed header and payload are strict JSON objects, and the walker
 *	  that builds the claims jsonb goes through them completely and
 *	  balanced (also run, for bounds, on every raw input).
 *
 * No state between inputs; buffers are malloc'ed per input so that ASan
 * sees every overrun.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bv_encode.h"
#include "jwt_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)  \
	do               \
	{                \
		if (!(cond)) \
			abort(); \
	} while (0)

/* Walker callbacks that check nesting and string bounds. */
typedef struct WalkCheck
{
	int depth;
	long tokens;
} WalkCheck;

static void
w_open(void *ctx)
{
	((WalkCheck *) ctx)->depth++;
}

static void
w_close(void *ctx)
{
	WalkCheck *w = ctx;

	CHECK(w->depth > 0);
	w->depth--;
}

static void
w_text(void *ctx, const char *s, size_t len)
{
	volatile char sink = 0;
	size_t i;

	/* touch every byte so that ASan checks the bounds */
	for (i = 0; i < len; i++)
		sink ^= s[i];
	(void) sink;
	((WalkCheck *) ctx)->tokens++;
}

static void
w_literal(void *ctx, int which)
{
	CHECK(which >= 0 && which <= 2);
	((WalkCheck *) ctx)->tokens++;
}

static const BvJsonHandlers walk_check = {w_open, w_close, w_open, w_close,
										  w_text, w_text, w_text, w_literal};

/* A strict object must walk completely, balanced. */
static void
check_walk(const uint8_t *json, size_t len)
{
	char *scratch = malloc(len + 1);
	WalkCheck w = {0, 0};

	CHECK(bv_json_walk(json, len, scratch, len + 1, &walk_check, &w));
	CHECK(w.depth == 0);
	free(scratch);
}

static void
check_base64url(const uint8_t *data, size_t size)
{
	uint8_t *dec = malloc(BV_B64URL_DEC_LEN(size) + 1);
	char *enc = malloc(BV_B64URL_ENC_LEN(size) + 1);
	uint8_t *back = malloc(BV_B64URL_DEC_LEN(BV_B64URL_ENC_LEN(size)) + 1);
	size_t declen = 0;
	size_t enclen;
	size_t backlen = 0;

	if (bv_b64url_decode((const char *) data, size, dec, &declen))
	{
		char *reenc = malloc(BV_B64URL_ENC_LEN(declen) + 1);

		CHECK(declen <= BV_B64URL_DEC_LEN(size));
		CHECK(bv_b64url_encode(dec, declen, reenc) == size);
		CHECK(memcmp(reenc, data, size) == 0);
		free(reenc);
	}
	enclen = bv_b64url_encode(data, size, enc);
	CHECK(enclen == BV_B64URL_ENC_LEN(size));
	CHECK(bv_b64url_decode(enc, enclen, back, &backlen));
	CHECK(backlen == size && memcmp(back, data, size) == 0);
	free(dec);
	free(enc);
	free(back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the token in its own exactly-sized allocation: no NUL after it */
	char *token = malloc(size ? size : 1);
	size_t work_len = BV_JWT_WORK_LEN(size);
	uint8_t *work = malloc(work_len);
	BvJwtParts parts;
	BvJwtParseResult r;

	memcpy(token, data, size);
	r = bv_jwt_parse(token, size, 65536, work, work_len, &parts);
	if (r == BV_JWT_PARSE_OK)
	{
		const char *dot1 = memchr(token, '.', size);

		CHECK(dot1 != NULL);
		CHECK(parts.signing_input == token);
		CHECK(parts.signing_input_len < size);
		CHECK(token[parts.signing_input_len] == '.');
		CHECK(memchr(token + parts.signing_input_len + 1, '.', size - parts.signing_input_len - 1) == NULL);
		CHECK(parts.header >= work && parts.header + parts.header_len <= work + work_len);
		CHECK(parts.payload >= work && parts.payload + parts.payload_len <= work + work_len);
		CHECK(parts.signature >= work && parts.signature + parts.signature_len <= work + work_len);
		CHECK(bv_json_object_is_strict(parts.header, parts.header_len));
		CHECK(bv_json_object_is_strict(parts.payload, parts.payload_len));
		check_walk(parts.payload, parts.payload_len);
		check_walk(parts.header, parts.header_len);
		CHECK(strlen(parts.alg) > 0 && strlen(parts.alg) <= BV_JWT_ALG_MAX);
		CHECK(!parts.has_kid || (strlen(parts.kid) > 0 && strlen(parts.kid) <= BV_JWT_KID_MAX));
	}
	/* the JSON validator, the walker and the codecs on the raw input, too */
	if (bv_json_object_is_strict((const uint8_t *) token, size))
		check_walk((const uint8_t *) token, size);
	else
	{
		char *scratch = malloc(size + 1);
		WalkCheck w = {0, 0};

		(void) bv_json_walk((const uint8_t *) token, size, scratch, size + 1, &walk_check, &w);
		free(scratch);
	}
	check_base64url((const uint8_t *) token, size);
	free(token);
	free(work);
	return 0;
}
