/*-------------------------------------------------------------------------
 *
 * bv_encode.h
 *	  Byte encodings (base64url, hex) and constant-time comparison, in plain C.
 *
 * This header deliberately includes nothing from PostgreSQL: the JWT parser
 * and its libFuzzer harness (tests/fuzz/) compile these functions outside the
 * server.  bv_common.h includes it, so extension code sees the same
 * declarations.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_ENCODE_H
#define BV_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Characters needed to base64url-encode n bytes without padding. */
#define BV_B64URL_ENC_LEN(n) (((n) / 3) * 4 + (((n) % 3) ? ((n) % 3) + 1 : 0))
/* Upper bound of the bytes a base64url text of n characters decodes to. */
#define BV_B64URL_DEC_LEN(n) (((n) / 4) * 3 + 2)

extern size_t bv_b64url_encode(const uint8_t *src, size_t len, char *dst);
extern bool bv_b64url_decode(const char *src, size_t len, uint8_t *dst,
							 size_t *dstlen);
extern void bv_hex_encode(const uint8_t *src, size_t len, char *dst);
extern bool bv_hex_decode(const char *src, size_t len, uint8_t *dst);
extern bool bv_ct_equal(const void *a, const void *b, size_t len);

#endif /* BV_ENCODE_H */
