/*-------------------------------------------------------------------------
 *
 * jwt_crypto.c
 *	  JWT keys and signatures on OpenSSL 3: loading a key of bv.jwt_keys
 *	  (PEM or JWK) with its strength checks, verifying and making JWS
 *	  signatures.
 *
 * The key decides the algorithm (ADR 0020): bv_jwt_key_load() turns a row's
 * (alg, key) into OpenSSL objects and refuses, with SQLSTATE 22023, a key
 * that does not fit its algorithm or is too weak (issue #17):
 *
 *	- HS: secrets shorter than the hash or longer than 4096 bytes; secrets
 *	  that hold a key anywhere in them: a PEM armour line (any case), a DER
 *	  key at any offset, the base64/base64url/hex of a DER key or of a PEM
 *	  block with or without text around it, or a JWK of another type, in
 *	  text or inside an "oct" JWK (HS/RS key confusion: a public key used
 *	  as an HMAC secret lets anybody sign);
 *	- RS/PS: RSA under 2048 or over 16384 bits, an even modulus, or a public
 *	  exponent that is even, below 65537 or over 256 bits (with e = 1 the
 *	  padded hash itself is a valid signature);
 *	- ES: the wrong curve, or a public point that fails OpenSSL's public key
 *	  check (the point at infinity, which OpenSSL's decoder accepts, makes
 *	  every ECDSA signature forgeable);
 *	- EdDSA: anything but Ed25519, a non-canonical encoding (y >= p, or
 *	  x = 0 with the sign bit set), a point not on the curve, and the eight
 *	  small-order points (with the identity key, the signature 01 00..00
 *	  verifies any message).  OpenSSL checks none of these for a raw key.
 *
 * ES
 * signatures are checked to be exactly R||S of the curve size with
 * 1 <= r, s < n before OpenSSL sees them (CVE-2022-21449 class); HMACs are
 * compared with CRYPTO_memcmp.
 *
 * Memory: key material and small buffers are palloc'd in the caller's
 * context (jwt_keys.c uses its cache context); OpenSSL objects are
 * malloc'ed by OpenSSL and released by bv_jwt_key_free(), which jwt_keys.c
 * calls from a memory-context reset callback; HMAC keys are pre-keyed hash
 * states (HmacState), palloc'd and wiped by the same function.  No
 * process-wide state.  No locks.  No message contains key material.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "bv_common.h"
#include "bv_core.h"
#include "jwt_parse.h"

static const char *const alg_names[] = {
	"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
	"ES256", "ES384", "EdDSA"};

/* Group orders of P-256 and P-384, for the r, s range check. */
static const char p256_order_hex[] =
	"FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
static const char p384_order_hex[] =
	"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
	"581A0DB248B0A77AECEC196ACCC52973";

BvJwtAlg
bv_jwt_alg_from_name(const char *name)
{
	int i;

	for (i = 0; i < (int) lengthof(alg_names); i++)
		if (strcmp(name, alg_names[i]) == 0)
			return (BvJwtAlg) i;
	return BV_ALG_INVALID;
}

const char *
bv_jwt_alg_name(BvJwtAlg alg)
{
	return alg < BV_ALG_INVALID ? alg_names[alg] : "invalid";
}

static inline bool
alg_is_hmac(BvJwtAlg alg)
{
	return alg <= BV_ALG_HS512;
}

static const EVP_MD *
alg_digest(BvJwtAlg alg)
{
	switch (alg)
	{
		case BV_ALG_HS256:
		case BV_ALG_RS256:
		case BV_ALG_PS256:
		case BV_ALG_ES256:
			return EVP_sha256();
		case BV_ALG_HS384:
		case BV_ALG_RS384:
		case BV_ALG_ES384:
			return EVP_sha384();
		case BV_ALG_HS512:
		case BV_ALG_RS512:
			return EVP_sha512();
		default:
			return NULL;
	}
}

/* Bytes of r (and of s) in an ES signature; 0 for other algorithms. */
static inline int
ec_scalar_len(BvJwtAlg alg)
{
	return alg == BV_ALG_ES256 ? 32 : alg == BV_ALG_ES384 ? 48
														  : 0;
}

/*
 * A pre-keyed HMAC (RFC 2104): the hash states after the key's inner and
 * outer pad blocks, computed once when the key is loaded.  A MAC then costs
 * copying a state and hashing the message and one block, with no allocation
 * and no EVP dispatch (EVP_MAC's context copies and their allocations took
 * about an eighth of an HS256 verification's time).  OpenSSL 3 marks the
 * SHA*_Init/Update/Final functions deprecated (in favour of EVP, whose
 * digest contexts cannot be copied without allocating); they remain part
 * of its API and use the same assembly as EVP.  The states are secrets:
 * they are wiped when the key is freed.
 */
typedef union HashCtx
{
	SHA256_CTX sha256;
	SHA512_CTX sha512; /* also SHA-384 */
} HashCtx;

typedef struct HmacState
{
	BvJwtAlg alg;
	size_t mac_len;
	HashCtx inner; /* after the block key ^ ipad */
	HashCtx outer; /* after the block key ^ opad */
} HmacState;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* Start a hash of alg (HS256/384/512) and feed it len bytes. */
static void
hmac_hash_start(BvJwtAlg alg, HashCtx *ctx, const uint8 *data, size_t len)
{
	switch (alg)
	{
		case BV_ALG_HS256:
			SHA256_Init(&ctx->sha256);
			SHA256_Update(&ctx->sha256, data, len);
			break;
		case BV_ALG_HS384:
			SHA384_Init(&ctx->sha512);
			SHA384_Update(&ctx->sha512, data, len);
			break;
		default:
			SHA512_Init(&ctx->sha512);
			SHA512_Update(&ctx->sha512, data, len);
			break;
	}
}

/* Finish a hash of alg started by hmac_hash_start(), with more data. */
static void
hmac_hash_finish(BvJwtAlg alg, HashCtx *ctx, const uint8 *data, size_t len, uint8 *out)
{
	if (alg == BV_ALG_HS256)
	{
		SHA256_Update(&ctx->sha256, data, len);
		SHA256_Final(out, &ctx->sha256);
	}
	else
	{
		/* SHA384_Update/Final are SHA512's; the context knows its length */
		SHA512_Update(&ctx->sha512, data, len);
		SHA512_Final(out, &ctx->sha512);
	}
}

#pragma GCC diagnostic pop

/* The pre-keyed state of secret for an HS algorithm, palloc'd. */
static HmacState *
hmac_prepare(BvJwtAlg alg, const uint8 *secret, size_t secret_len)
{
	HmacState *st = palloc0(sizeof(HmacState));
	size_t block = alg == BV_ALG_HS256 ? 64 : 128;
	uint8 k[128];
	uint8 pad[128];
	size_t i;

	st->alg = alg;
	st->mac_len = EVP_MD_get_size(alg_digest(alg));
	memset(k, 0, sizeof(k));
	if (secret_len > block)
	{
		/* a key longer than the block is replaced by its hash */
		HashCtx ctx;

		hmac_hash_start(alg, &ctx, secret, secret_len);
		hmac_hash_finish(alg, &ctx, NULL, 0, k);
		OPENSSL_cleanse(&ctx, sizeof(ctx));
	}
	else
		memcpy(k, secret, secret_len);
	for (i = 0; i < block; i++)
		pad[i] = k[i] ^ 0x36;
	hmac_hash_start(alg, &st->inner, pad, block);
	for (i = 0; i < block; i++)
		pad[i] = k[i] ^ 0x5c;
	hmac_hash_start(alg, &st->outer, pad, block);
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	return st;
}

/*
 * bv_clip
 *		A client-supplied value for a message: at most BV_CLIP_BYTES bytes
 *		(cut at a character boundary), with "..." when cut.  Messages quote
 *		a bounded prefix of any client value, never the whole of it.
 */
const char *
bv_clip(const char *s)
{
	size_t len = strlen(s);
	int cut;

	if (len <= BV_CLIP_BYTES)
		return s;
	cut = pg_mbcliplen(s, (int) len, BV_CLIP_BYTES);
	return psprintf("%.*s...", cut, s);
}

/* An invalid key: 22023, a hint, never the key itself. */
static void key_error(const char *kid, const char *detail) pg_attribute_noreturn();

static void
key_error(const char *kid, const char *detail)
{
	ERR_clear_error();
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid key \"%s\" in bv.jwt_keys", bv_clip(kid)),
			 errdetail("%s", detail),
			 errhidestmt(true),
			 errhint("Give HS keys a random secret at least as long as the hash (32, 48 or 64 bytes) that is no key of another type, RS/PS keys an RSA key of at least 2048 bits with exponent 65537, ES256/ES384 a valid P-256/P-384 key and EdDSA a valid Ed25519 key, as PEM or JWK.")));
}

/*
 * Parse a JWK (already known to be a strict JSON object) into a jsonb and
 * return the string member "name", decoded from base64url when b64 is set.
 */
static char *
jwk_member(Jsonb *jwk, const char *name)
{
	JsonbValue v;

	if (getKeyJsonValueFromContainer(&jwk->root, name, strlen(name), &v) == NULL ||
		v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static uint8 *
jwk_b64_member(Jsonb *jwk, const char *name, size_t *len, const char *kid)
{
	char *text = jwk_member(jwk, name);
	uint8 *out;

	if (text == NULL)
		return NULL;
	out = palloc(BV_B64URL_DEC_LEN(strlen(text)) + 1);
	if (!bv_b64url_decode(text, strlen(text), out, len))
		key_error(kid, "A JWK member is not canonical base64url.");
	return out;
}

/* EVP_PKEY from a public JWK (RSA, EC, OKP); NULL for "oct". */
static EVP_PKEY *
pkey_from_jwk(Jsonb *jwk, const char *kid)
{
	char *kty = jwk_member(jwk, "kty");
	EVP_PKEY *pkey = NULL;

	if (kty == NULL)
		key_error(kid, "The JWK has no \"kty\" member.");
	if (strcmp(kty, "OKP") == 0)
	{
		char *crv = jwk_member(jwk, "crv");
		size_t xlen;
		uint8 *x = jwk_b64_member(jwk, "x", &xlen, kid);

		if (crv == NULL || strcmp(crv, "Ed25519") != 0 || x == NULL || xlen != 32)
			key_error(kid, "An OKP JWK must be an Ed25519 key with a 32-byte \"x\".");
		pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
	}
	else if (strcmp(kty, "RSA") == 0 || strcmp(kty, "EC") == 0)
	{
		OSSL_PARAM_BLD *bld = NULL;
		OSSL_PARAM *params = NULL;
		EVP_PKEY_CTX *ctx = NULL;
		BIGNUM *n = NULL;
		BIGNUM *e = NULL;
		bool ok = false;

		if (strcmp(kty, "RSA") == 0)
		{
			size_t nlen,
				elen;
			uint8 *nb = jwk_b64_member(jwk, "n", &nlen, kid);
			uint8 *eb = jwk_b64_member(jwk, "e", &elen, kid);

			if (nb == NULL || eb == NULL)
				key_error(kid, "An RSA JWK needs \"n\" and \"e\".");
			bld = OSSL_PARAM_BLD_new();
			n = BN_bin2bn(nb, (int) nlen, NULL);
			e = BN_bin2bn(eb, (int) elen, NULL);
			ok = bld && n && e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
				 OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
			if (ok)
				ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
		}
		else
		{
			char *crv = jwk_member(jwk, "crv");
			size_t xlen,
				ylen;
			uint8 *x = jwk_b64_member(jwk, "x", &xlen, kid);
			uint8 *y = jwk_b64_member(jwk, "y", &ylen, kid);
			size_t size;
			uint8 *point;

			if (crv == NULL || x == NULL || y == NULL)
				key_error(kid, "An EC JWK needs \"crv\", \"x\" and \"y\".");
			if (strcmp(crv, "P-256") == 0)
				size = 32;
			else if (strcmp(crv, "P-384") == 0)
				size = 48;
			else
				key_error(kid, "Only the P-256 and P-384 curves are supported.");
			if (xlen != size || ylen != size)
				key_error(kid, "The EC coordinates do not have the size of the curve.");
			bld = OSSL_PARAM_BLD_new();
			point = palloc(2 * size + 1);
			point[0] = 0x04;
			memcpy(point + 1, x, size);
			memcpy(point + 1 + size, y, size);
			ok = bld &&
				 OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
												 size == 32 ? "P-256" : "P-384", 0) &&
				 OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 2 * size + 1);
			if (ok)
				ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
		}
		if (ok && ctx && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL &&
			EVP_PKEY_fromdata_init(ctx) == 1)
		{
			if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
				pkey = NULL;
		}
		OSSL_PARAM_free(params);
		OSSL_PARAM_BLD_free(bld);
		EVP_PKEY_CTX_free(ctx);
		BN_free(n);
		BN_free(e);
	}
	else if (strcmp(kty, "oct") != 0)
		key_error(kid, "The JWK \"kty\" must be RSA, EC, OKP or oct.");
	if (pkey == NULL && strcmp(kty, "oct") != 0)
		key_error(kid, "The JWK does not describe a valid public key.");
	return pkey;
}

static Jsonb *
parse_jwk(const char *text, const char *kid)
{
	if (!bv_json_object_is_strict((const uint8_t *) text, strlen(text)))
		key_error(kid, "The key starts with \"{\" but is not a valid JWK (strict JSON object).");
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

static int
ec_key_bits(EVP_PKEY *pkey, char *group, size_t cap)
{
	size_t len = 0;

	if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, cap, &len) != 1)
		group[0] = '\0';
	return EVP_PKEY_get_bits(pkey);
}

/*
 * Weak-key checks (issue #17).  Each returns NULL for an acceptable key or
 * a fixed sentence for key_error(); none quotes key material.
 */

/* Refuse even, tiny or huge RSA public exponents and even moduli. */
static const char *
rsa_key_problem(EVP_PKEY *pkey)
{
	BIGNUM *e = NULL;
	BIGNUM *n = NULL;
	BIGNUM *min_e = NULL;
	const char *problem = NULL;
	int bits = EVP_PKEY_get_bits(pkey);

	if (bits < 2048)
		return psprintf("The RSA key has %d bits; at least 2048 are required.", bits);
	if (bits > 16384)
		return psprintf("The RSA key has %d bits; at most 16384 are accepted.", bits);
	if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1 ||
		EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
		!BN_dec2bn(&min_e, "65537"))
		problem = "OpenSSL could not read the RSA key's modulus and exponent.";
	else if (!BN_is_odd(n))
		problem = "The RSA modulus is even.";
	else if (!BN_is_odd(e) || BN_cmp(e, min_e) < 0 || BN_num_bits(e) > 256)
		problem = "The RSA public exponent must be odd, at least 65537 and at most 256 bits (a small exponent such as 1 or 3 makes signatures forgeable).";
	BN_free(e);
	BN_free(n);
	BN_free(min_e);
	return problem;
}

/* Refuse an EC public point that is off the curve or at infinity. */
static const char *
ec_key_problem(EVP_PKEY *pkey)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	bool ok = ctx != NULL && EVP_PKEY_public_check(ctx) == 1;

	EVP_PKEY_CTX_free(ctx);
	return ok ? NULL : "The EC public point is not a valid point of the curve (off the curve, or the point at infinity).";
}

/*
 * The y coordinates of Ed25519's small-order points (either sign of x),
 * little-endian, as libsodium lists them: order 4 (y = 0), 1 (the
 * identity), 8 (two values) and 2 (y = p - 1).  Non-canonical encodings of
 * them (y + p) are refused by the y < p check.
 */
static const uint8 ed25519_small_order_y[5][32] = {
	{0},
	{0x01},
	{0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
	 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05},
	{0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
	 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a},
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}};

/* p = 2^255 - 19 and d = -121665/121666 mod p, big-endian hex. */
static const char ed25519_p_hex[] =
	"7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED";
static const char ed25519_d_hex[] =
	"52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3";

/*
 * Refuse an Ed25519 public key that is not the canonical encoding of a
 * point of the curve, or is a point of small order.  The point decodes when
 * x^2 = (y^2 - 1) / (d y^2 + 1) has a root mod p (Euler's criterion).
 */
static const char *
ed25519_key_problem(EVP_PKEY *pkey)
{
	uint8 enc[32];
	uint8 y_le[32];
	size_t len = sizeof(enc);
	BN_CTX *ctx = NULL;
	BIGNUM *p = NULL;
	BIGNUM *d = NULL;
	BIGNUM *y,
		*u,
		*v,
		*w,
		*exp,
		*l;
	const char *problem = NULL;
	bool x_is_zero = false;
	int i;

	if (EVP_PKEY_get_raw_public_key(pkey, enc, &len) != 1 || len != 32)
		return "OpenSSL could not read the Ed25519 public key.";
	memcpy(y_le, enc, 32);
	y_le[31] &= 0x7f;
	for (i = 0; i < (int) lengthof(ed25519_small_order_y); i++)
		if (memcmp(y_le, ed25519_small_order_y[i], 32) == 0)
			return "The Ed25519 public key is a point of small order (such as the identity), with which signatures can be forged.";

	ctx = BN_CTX_new();
	if (ctx == NULL || !BN_hex2bn(&p, ed25519_p_hex) || !BN_hex2bn(&d, ed25519_d_hex))
		problem = "OpenSSL could not check the Ed25519 public key.";
	else
	{
		BN_CTX_start(ctx);
		y = BN_CTX_get(ctx);
		u = BN_CTX_get(ctx);
		v = BN_CTX_get(ctx);
		w = BN_CTX_get(ctx);
		exp = BN_CTX_get(ctx);
		l = BN_CTX_get(ctx);
		if (l == NULL || BN_lebin2bn(y_le, 32, y) == NULL)
			problem = "OpenSSL could not check the Ed25519 public key.";
		else if (BN_cmp(y, p) >= 0)
			problem = "The Ed25519 public key is not canonically encoded (y >= p).";
		else if (!BN_mod_sqr(u, y, p, ctx) ||            /* u = y^2 */
				 !BN_mod_mul(v, u, d, p, ctx) ||         /* v = d y^2 */
				 !BN_add_word(v, 1) ||                   /* v = d y^2 + 1 */
				 !BN_sub_word(u, 1) ||                   /* u = y^2 - 1 (y != 0 here) */
				 BN_mod_inverse(w, v, p, ctx) == NULL || /* v != 0: d is no square */
				 !BN_mod_mul(w, w, u, p, ctx) ||         /* w = x^2 */
				 !BN_copy(exp, p) || !BN_sub_word(exp, 1) || !BN_rshift1(exp, exp) ||
				 !BN_mod_exp(l, w, exp, p, ctx))
			problem = "OpenSSL could not check the Ed25519 public key.";
		else if (!BN_is_zero(l) && !BN_is_one(l))
			problem = "The Ed25519 public key is not a point of the curve.";
		else
			x_is_zero = BN_is_zero(w);
		BN_CTX_end(ctx);
	}
	if (problem == NULL && x_is_zero && (enc[31] & 0x80) != 0)
		problem = "The Ed25519 public key is not canonically encoded (x = 0 with the sign bit set).";
	BN_free(p);
	BN_free(d);
	BN_CTX_free(ctx);
	return problem;
}

/* Is needle (NUL-terminated) in the first len bytes of hay? */
static bool
bytes_contain(const uint8 *hay, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	size_t i;

	for (i = 0; n <= len && i <= len - n; i++)
		if (memcmp(hay + i, needle, n) == 0)
			return true;
	return false;
}

/* Does a DER blob parse as a public or private key? */
static bool
der_is_key(const uint8 *der, size_t len)
{
	const unsigned char *p = der;
	EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long) len);

	if (k == NULL)
	{
		p = der;
		k = d2i_AutoPrivateKey(NULL, &p, (long) len);
	}
	EVP_PKEY_free(k);
	ERR_clear_error();
	return k != NULL;
}

/* The most bytes of an HMAC secret: the key scan below stays cheap. */
#define HMAC_SECRET_MAX 4096

/* Is needle (NUL-terminated, lower case) in hay, ignoring ASCII case? */
static bool
bytes_contain_ci(const uint8 *hay, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	size_t i;

	for (i = 0; n <= len && i <= len - n; i++)
		if (pg_strncasecmp((const char *) hay + i, needle, n) == 0)
			return true;
	return false;
}

static inline int
b64_value(uint8 c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/*
 * Decode base64 or base64url (either alphabet) from the start of text until
 * the first character that is not one, into out (room for len * 3 / 4 + 1
 * bytes); returns the number of whole bytes decoded.
 */
static size_t
b64_decode_prefix(const uint8 *text, size_t len, uint8 *out)
{
	uint32 acc = 0;
	int bits = 0;
	size_t n = 0;
	size_t i;

	for (i = 0; i < len; i++)
	{
		int v = b64_value(text[i]);

		if (v < 0)
			break;
		acc = (acc << 6) | (uint32) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (uint8) (acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return n;
}

static bool secret_holds_key(const uint8 *secret, size_t len, int depth);

/*
 * Does the text, white space left out, hold a key in base64 or hex
 * anywhere?  Every run of at least 58 base64 characters (an Ed25519 SPKI) is decoded from
 * each 'M' in it (the base64 of a DER SEQUENCE, 0x30, starts with 'M' when
 * aligned), and every run of at least 64 hex digits from each "30"; the
 * result must parse as a key.  At the first level the decoded runs are
 * also scanned again (the base64 or hex of a whole PEM block, or of a DER
 * key with bytes around it).
 */
static bool
encoded_key_anywhere(const uint8 *secret, size_t len, int depth)
{
	uint8 *t = palloc(len + 1);
	uint8 *buf = palloc(len + 1);
	size_t n = 0;
	size_t i;
	size_t run;
	bool found = false;

	for (i = 0; i < len; i++)
		if (!(secret[i] == ' ' || secret[i] == '\t' || secret[i] == '\r' || secret[i] == '\n'))
			t[n++] = secret[i];

	/* base64 / base64url runs */
	for (i = 0; i < n && !found; i = run)
	{
		size_t j;

		for (run = i; run < n && b64_value(t[run]) >= 0; run++)
			;
		if (run - i >= 58)
		{
			for (j = i; j < run && !found; j++)
			{
				size_t dl;

				if (t[j] != 'M')
					continue;
				dl = b64_decode_prefix(t + j, run - j, buf);
				found = der_is_key(buf, dl);
			}
			for (j = i; j < i + 4 && j < run && !found && depth == 0; j++)
			{
				size_t dl = b64_decode_prefix(t + j, run - j, buf);

				found = secret_holds_key(buf, dl, depth + 1);
			}
		}
		if (run == i)
			run++;
	}
	/* hex runs */
	for (i = 0; i < n && !found; i = run)
	{
		size_t j;

		for (run = i; run < n && isxdigit(t[run]); run++)
			;
		if (run - i >= 64)
		{
			for (j = i; j + 1 < run && !found; j++)
			{
				size_t dl = 0;
				size_t k;

				if (!(t[j] == '3' && t[j + 1] == '0') && !(depth == 0 && j < i + 2))
					continue;
				for (k = j; k + 1 < run; k += 2)
				{
					char byte[3] = {(char) t[k], (char) t[k + 1], '\0'};

					buf[dl++] = (uint8) strtol(byte, NULL, 16);
				}
				found = (t[j] == '3' && t[j + 1] == '0' && der_is_key(buf, dl)) ||
						(depth == 0 && j < i + 2 && secret_holds_key(buf, dl, depth + 1));
			}
		}
		if (run == i)
			run++;
	}
	OPENSSL_cleanse(t, len + 1);
	OPENSSL_cleanse(buf, len + 1);
	pfree(t);
	pfree(buf);
	return found;
}

/*
 * Does an HMAC secret hold a key of another type anywhere in it: a PEM
 * armour line (any case, four dashes or more), a JWK member "kty", the DER
 * of a key at any offset, or the base64/hex of one (see above)?
 */
static bool
secret_holds_key(const uint8 *secret, size_t len, int depth)
{
	size_t i;

	if (bytes_contain_ci(secret, len, "----begin") || bytes_contain_ci(secret, len, "----end") ||
		bytes_contain(secret, len, "\"kty\""))
		return true;
	for (i = 0; i < len; i++)
		if (secret[i] == 0x30 && der_is_key(secret + i, len - i))
			return true;
	return encoded_key_anywhere(secret, len, depth);
}

/*
 * Does an HMAC secret look like a key of another type (HS/RS confusion)?
 * A PEM block anywhere, a JWK member "kty", the DER of a key, or the
 * base64, base64url or hex of a key's DER or of a PEM block, anywhere in
 * the secret (#17 attack review: a key with a prefix, a suffix or around
 * other text was accepted).
 */
static const char *
hmac_secret_problem(const uint8 *secret, size_t len)
{
	if (len > HMAC_SECRET_MAX)
		return psprintf("The HMAC secret is %zu bytes; at most %d are accepted.", len, HMAC_SECRET_MAX);
	if (bytes_contain(secret, len, "-----BEGIN") || bytes_contain(secret, len, "-----END") ||
		bytes_contain_ci(secret, len, "----begin") || bytes_contain_ci(secret, len, "----end"))
		return "An HS key must be a shared secret, not a PEM block (HS/RS confusion).";
	if (bytes_contain(secret, len, "\"kty\""))
		return "An HS key must be a shared secret, not a JWK of another key type (HS/RS confusion).";
	if (der_is_key(secret, len))
		return "An HS key must be a shared secret, not a DER key (HS/RS confusion).";
	if (secret_holds_key(secret, len, 0))
		return "An HS key must be a shared secret, not an encoded key (HS/RS confusion).";
	return NULL;
}

/*
 * bv_jwt_key_free
 *		Release a key's OpenSSL objects and wipe its secret (idempotent).
 */
void
bv_jwt_key_free(BvJwtKey *key)
{
	if (key->hmac_ctx)
		OPENSSL_cleanse(key->hmac_ctx, sizeof(HmacState));
	if (key->pkey)
		EVP_PKEY_free((EVP_PKEY *) key->pkey);
	if (key->secret)
		OPENSSL_cleanse(key->secret, key->secret_len);
	key->hmac_ctx = NULL;
	key->pkey = NULL;
}

/*
 * bv_jwt_key_load
 *		Turn (alg, key text) into a usable key in CurrentMemoryContext, or
 *		raise 22023.  Checks strength: HMAC secret >= hash length, RSA >= 2048
 *		bits, the right curve for ES, Ed25519 for EdDSA.  On error the key's
 *		OpenSSL objects are already released.
 */
void
bv_jwt_key_load(BvJwtKey *key, const char *text)
{
	const char *kid = key->kid;
	BvJwtAlg alg = key->alg;
	EVP_PKEY *pkey = NULL;
	const char *start = text;
	bool is_jwk;
	const char *problem;

	/* a JWK may come with leading white space (or CRLF) */
	while (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n')
		start++;
	is_jwk = *start == '{';

	if (alg == BV_ALG_INVALID)
		key_error(kid, "The algorithm is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384, EdDSA.");

	if (alg_is_hmac(alg))
	{
		size_t need = EVP_MD_get_size(alg_digest(alg));

		if (is_jwk)
		{
			Jsonb *jwk = parse_jwk(start, kid);
			char *kty = jwk_member(jwk, "kty");

			if (kty == NULL || strcmp(kty, "oct") != 0)
				key_error(kid, "An HS key given as JWK must have \"kty\": \"oct\".");
			key->secret = jwk_b64_member(jwk, "k", &key->secret_len, kid);
			if (key->secret == NULL)
				key_error(kid, "An oct JWK needs a \"k\" member.");
		}
		else
		{
			key->secret_len = strlen(text);
			key->secret = (uint8 *) pstrdup(text);
		}
		problem = hmac_secret_problem(key->secret, key->secret_len);
		if (problem != NULL)
		{
			OPENSSL_cleanse(key->secret, key->secret_len);
			key->secret = NULL;
			key_error(kid, problem);
		}
		if (key->secret_len < need)
			key_error(kid, psprintf("The HMAC secret is %zu bytes; %s needs at least %zu.",
									key->secret_len, bv_jwt_alg_name(alg), need));
		key->hmac_ctx = hmac_prepare(alg, key->secret, key->secret_len);
		key->can_sign = true;
		return;
	}

	if (is_jwk)
	{
		pkey = pkey_from_jwk(parse_jwk(start, kid), kid);
		if (pkey == NULL)
			key_error(kid, "An \"oct\" JWK can only be used with HS256, HS384 or HS512.");
		key->can_sign = false;
	}
	else
	{
		BIO *bio = BIO_new_mem_buf(text, -1);

		if (bio == NULL)
			key_error(kid, "OpenSSL could not read the key.");
		if (strstr(text, "PRIVATE KEY-----") != NULL)
		{
			pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *) "");
			key->can_sign = pkey != NULL;
		}
		else
			pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, (void *) "");
		BIO_free(bio);
		if (pkey == NULL)
			key_error(kid, "The key is neither a PEM public key, an unencrypted PEM private key nor a JWK.");
	}
	key->pkey = pkey;

	switch (alg)
	{
		case BV_ALG_RS256:
		case BV_ALG_RS384:
		case BV_ALG_RS512:
		case BV_ALG_PS256:
			if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
			{
				bv_jwt_key_free(key);
				key_error(kid, psprintf("%s needs an RSA key.", bv_jwt_alg_name(alg)));
			}
			problem = rsa_key_problem(pkey);
			if (problem != NULL)
			{
				bv_jwt_key_free(key);
				key_error(kid, problem);
			}
			break;
		case BV_ALG_ES256:
		case BV_ALG_ES384:
		{
			char group[64];
			const char *want = alg == BV_ALG_ES256 ? "prime256v1" : "secp384r1";

			if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
			{
				bv_jwt_key_free(key);
				key_error(kid, psprintf("%s needs an EC key.", bv_jwt_alg_name(alg)));
			}
			ec_key_bits(pkey, group, sizeof(group));
			if (strcmp(group, want) != 0 &&
				strcmp(group, alg == BV_ALG_ES256 ? "P-256" : "P-384") != 0)
			{
				bv_jwt_key_free(key);
				key_error(kid, psprintf("%s needs a key on curve %s.", bv_jwt_alg_name(alg),
										alg == BV_ALG_ES256 ? "P-256" : "P-384"));
			}
			problem = ec_key_problem(pkey);
			if (problem != NULL)
			{
				bv_jwt_key_free(key);
				key_error(kid, problem);
			}
			break;
		}
		case BV_ALG_EDDSA:
			if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519)
			{
				bv_jwt_key_free(key);
				key_error(kid, "EdDSA needs an Ed25519 key.");
			}
			problem = ed25519_key_problem(pkey);
			if (problem != NULL)
			{
				bv_jwt_key_free(key);
				key_error(kid, problem);
			}
			break;
		default:
			break;
	}
}

/* The DER form of an R||S signature, after checking 1 <= r, s < n. */
static unsigned char *
ecdsa_der(BvJwtAlg alg, const uint8 *sig, size_t sig_len, int *der_len)
{
	int size = ec_scalar_len(alg);
	BIGNUM *order = NULL;
	BIGNUM *r;
	BIGNUM *s;
	ECDSA_SIG *esig;
	unsigned char *der = NULL;

	if (sig_len != (size_t) (2 * size))
		return NULL;
	r = BN_bin2bn(sig, size, NULL);
	s = BN_bin2bn(sig + size, size, NULL);
	BN_hex2bn(&order, alg == BV_ALG_ES256 ? p256_order_hex : p384_order_hex);
	if (r == NULL || s == NULL || order == NULL ||
		BN_is_zero(r) || BN_is_zero(s) || BN_cmp(r, order) >= 0 || BN_cmp(s, order) >= 0)
	{
		BN_free(r);
		BN_free(s);
		BN_free(order);
		return NULL;
	}
	BN_free(order);
	esig = ECDSA_SIG_new();
	if (esig == NULL || ECDSA_SIG_set0(esig, r, s) != 1)
	{
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(esig);
		return NULL;
	}
	*der_len = i2d_ECDSA_SIG(esig, &der);
	ECDSA_SIG_free(esig);
	return *der_len > 0 ? der : NULL;
}

/* HMAC of input under an HS key into out (EVP_MAX_MD_SIZE bytes). */
static bool
hmac_compute(BvJwtKey *key, const uint8 *input, size_t input_len, uint8 *out,
			 size_t *out_len)
{
	const HmacState *st = (const HmacState *) key->hmac_ctx;
	HashCtx ctx;

	if (st == NULL)
		return false;
	ctx = st->inner;
	hmac_hash_finish(st->alg, &ctx, input, input_len, out);
	ctx = st->outer;
	hmac_hash_finish(st->alg, &ctx, out, st->mac_len, out);
	OPENSSL_cleanse(&ctx, sizeof(ctx));
	*out_len = st->mac_len;
	return true;
}

/*
 * bv_jwt_key_verify
 *		Does sig sign input under key?  Constant-time for HMAC.
 */
bool
bv_jwt_key_verify(BvJwtKey *key, const uint8 *input, size_t input_len,
				  const uint8 *sig, size_t sig_len)
{
	bool ok = false;

	if (alg_is_hmac(key->alg))
	{
		uint8 mac[EVP_MAX_MD_SIZE];
		size_t mac_len = 0;

		if (hmac_compute(key, input, input_len, mac, &mac_len))
			ok = sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
		OPENSSL_cleanse(mac, sizeof(mac));
	}
	else
	{
		EVP_MD_CTX *mctx = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pctx = NULL;
		const uint8 *check_sig = sig;
		size_t check_len = sig_len;
		unsigned char *der = NULL;

		if (key->alg == BV_ALG_ES256 || key->alg == BV_ALG_ES384)
		{
			int der_len = 0;

			der = ecdsa_der(key->alg, sig, sig_len, &der_len);
			check_sig = der;
			check_len = der_len;
		}
		if (mctx != NULL && check_sig != NULL &&
			EVP_DigestVerifyInit(mctx, &pctx, alg_digest(key->alg), NULL, (EVP_PKEY *) key->pkey) == 1 &&
			(key->alg != BV_ALG_PS256 ||
			 (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
			  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
			  EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1)))
			ok = EVP_DigestVerify(mctx, check_sig, check_len, input, input_len) == 1;
		EVP_MD_CTX_free(mctx);
		OPENSSL_free(der);
		ERR_clear_error();
	}
	return ok;
}

/*
 * bv_jwt_key_sign
 *		The JWS signature of input under key, palloc'd; raises on failure.
 */
uint8 *
bv_jwt_key_sign(BvJwtKey *key, const uint8 *input, size_t input_len,
				size_t *sig_len)
{
	uint8 *out = NULL;
	bool ok = false;

	if (alg_is_hmac(key->alg))
	{
		out = palloc(EVP_MAX_MD_SIZE);
		ok = hmac_compute(key, input, input_len, out, sig_len);
	}
	else
	{
		EVP_MD_CTX *mctx = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pctx = NULL;
		size_t len = 0;

		if (mctx != NULL &&
			EVP_DigestSignInit(mctx, &pctx, alg_digest(key->alg), NULL, (EVP_PKEY *) key->pkey) == 1 &&
			(key->alg != BV_ALG_PS256 ||
			 (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
			  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
			  EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1)) &&
			EVP_DigestSign(mctx, NULL, &len, input, input_len) == 1)
		{
			out = palloc(len);
			ok = EVP_DigestSign(mctx, out, &len, input, input_len) == 1;
			*sig_len = len;
		}
		EVP_MD_CTX_free(mctx);
		if (ok && ec_scalar_len(key->alg) > 0)
		{
			/* DER -> fixed-size R||S */
			int size = ec_scalar_len(key->alg);
			const unsigned char *p = out;
			ECDSA_SIG *esig = d2i_ECDSA_SIG(NULL, &p, (long) len);
			uint8 *rs = palloc(2 * size);

			ok = esig != NULL &&
				 BN_bn2binpad(ECDSA_SIG_get0_r(esig), rs, size) == size &&
				 BN_bn2binpad(ECDSA_SIG_get0_s(esig), rs + size, size) == size;
			ECDSA_SIG_free(esig);
			out = rs;
			*sig_len = 2 * size;
		}
	}
	if (!ok)
	{
		ERR_clear_error();
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not sign the token"),
				 errdetail("OpenSSL failed to sign with key \"%s\".", bv_clip(key->kid)),
				 errhint("Check the key in bv.jwt_keys.")));
	}
	return out;
}
