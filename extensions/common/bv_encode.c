/*-------------------------------------------------------------------------
 *
 * bv_encode.c
 *	  Strict base64url and hex codecs and a constant-time comparison.
 *
 * Tokens (JWT segments, API keys) and signatures (webhook HMACs) travel as
 * base64url or hex.  Decoding is strict on purpose: a lenient decoder lets
 * two different texts decode to the same bytes, which turns into signature
 * malleability.  So base64url decoding refuses padding, characters outside
 * the URL-safe alphabet, a length of 1 modulo 4, and non-zero bits left over
 * in the last character (RFC 4648 section 3.5, "canonical encoding").
 *
 * Plain C with no PostgreSQL or OpenSSL dependency, so that the libFuzzer
 * harness can link it; the caller provides every buffer, nothing is
 * allocated and nothing is kept between calls (safe in any backend, any
 * memory context, any thread).
 *
 *-------------------------------------------------------------------------
 */
#include "bv_encode.h"

static const char b64url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of each byte as a base64url digit, or -1: a table, because decoding
 * is on the hot path of every JWT verification. */
static const signed char b64url_values[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};

static inline int
b64url_value(unsigned char c)
{
	return b64url_values[c];
}

/*
 * bv_b64url_encode
 *		Encode len bytes without padding into dst, which must hold
 *		BV_B64URL_ENC_LEN(len) characters (no terminator is written).
 *		Returns the number of characters written.
 */
size_t
bv_b64url_encode(const uint8_t *src, size_t len, char *dst)
{
	size_t i = 0;
	size_t o = 0;

	while (i + 3 <= len)
	{
		uint32_t v = ((uint32_t) src[i] << 16) | ((uint32_t) src[i + 1] << 8) | src[i + 2];

		dst[o++] = b64url_alphabet[(v >> 18) & 63];
		dst[o++] = b64url_alphabet[(v >> 12) & 63];
		dst[o++] = b64url_alphabet[(v >> 6) & 63];
		dst[o++] = b64url_alphabet[v & 63];
		i += 3;
	}
	if (len - i == 1)
	{
		uint32_t v = (uint32_t) src[i] << 16;

		dst[o++] = b64url_alphabet[(v >> 18) & 63];
		dst[o++] = b64url_alphabet[(v >> 12) & 63];
	}
	else if (len - i == 2)
	{
		uint32_t v = ((uint32_t) src[i] << 16) | ((uint32_t) src[i + 1] << 8);

		dst[o++] = b64url_alphabet[(v >> 18) & 63];
		dst[o++] = b64url_alphabet[(v >> 12) & 63];
		dst[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	return o;
}

/*
 * bv_b64url_decode
 *		Strictly decode len characters of unpadded base64url into dst, which
 *		must hold BV_B64URL_DEC_LEN(len) bytes.  Returns false, with dst in an
 *		unspecified state, if the text is not canonical base64url.
 */
bool
bv_b64url_decode(const char *src, size_t len, uint8_t *dst, size_t *dstlen)
{
	size_t i = 0;
	size_t o = 0;
	size_t rest = len % 4;

	if (rest == 1)
		return false;
	while (i + 4 <= len)
	{
		int a = b64url_value((unsigned char) src[i]);
		int b = b64url_value((unsigned char) src[i + 1]);
		int c = b64url_value((unsigned char) src[i + 2]);
		int d = b64url_value((unsigned char) src[i + 3]);
		uint32_t v;

		if ((a | b | c | d) < 0)
			return false;
		v = ((uint32_t) a << 18) | ((uint32_t) b << 12) | ((uint32_t) c << 6) | (uint32_t) d;
		dst[o++] = (uint8_t) (v >> 16);
		dst[o++] = (uint8_t) (v >> 8);
		dst[o++] = (uint8_t) v;
		i += 4;
	}
	if (rest == 2)
	{
		int a = b64url_value((unsigned char) src[i]);
		int b = b64url_value((unsigned char) src[i + 1]);

		if ((a | b) < 0 || (b & 0x0f) != 0)
			return false;
		dst[o++] = (uint8_t) ((a << 2) | (b >> 4));
	}
	else if (rest == 3)
	{
		int a = b64url_value((unsigned char) src[i]);
		int b = b64url_value((unsigned char) src[i + 1]);
		int c = b64url_value((unsigned char) src[i + 2]);

		if ((a | b | c) < 0 || (c & 0x03) != 0)
			return false;
		dst[o++] = (uint8_t) ((a << 2) | (b >> 4));
		dst[o++] = (uint8_t) (((b & 0x0f) << 4) | (c >> 2));
	}
	*dstlen = o;
	return true;
}

/*
 * bv_hex_encode
 *		Lower-case hex of len bytes into dst (2 * len characters, no
 *		terminator).
 */
void
bv_hex_encode(const uint8_t *src, size_t len, char *dst)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++)
	{
		dst[2 * i] = digits[src[i] >> 4];
		dst[2 * i + 1] = digits[src[i] & 0x0f];
	}
}

static inline int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * bv_hex_decode
 *		Decode len hex digits (len even) into len / 2 bytes of dst.
 */
bool
bv_hex_decode(const char *src, size_t len, uint8_t *dst)
{
	size_t i;

	if (len % 2 != 0)
		return false;
	for (i = 0; i < len; i += 2)
	{
		int hi = hex_value((unsigned char) src[i]);
		int lo = hex_value((unsigned char) src[i + 1]);

		if ((hi | lo) < 0)
			return false;
		dst[i / 2] = (uint8_t) ((hi << 4) | lo);
	}
	return true;
}

/*
 * bv_ct_equal
 *		Compare two buffers of the same length in time that depends only on
 *		the length, never on where they differ (for MACs, key hashes).  The
 *		volatile accumulator keeps the compiler from short-circuiting; the
 *		OpenSSL-linked code uses CRYPTO_memcmp, which this mirrors.
 */
bool
bv_ct_equal(const void *a, const void *b, size_t len)
{
	const volatile uint8_t *pa = (const volatile uint8_t *) a;
	const volatile uint8_t *pb = (const volatile uint8_t *) b;
	volatile uint8_t acc = 0;
	size_t i;

	for (i = 0; i < len; i++)
		acc |= pa[i] ^ pb[i];
	return acc == 0;
}
