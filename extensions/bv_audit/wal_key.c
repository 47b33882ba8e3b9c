/*-------------------------------------------------------------------------
 *
 * wal_key.c
 *	  WAL mode: the key that signs the context messages.
 *
 * Any role may call pg_logical_emit_message(), so without a signature a
 * writer could put a "bv_audit" message of its own into its transaction,
 * in the middle of a statement (from a function the statement calls), and
 * have the worker name another actor for the statement's remaining rows.
 * So wal_context.c appends a MAC, SipHash-2-4 keyed with the first 16 bytes
 * of the key (hex), to each message, and wal_apply.c ignores messages whose MAC does not
 * match: the statement keeps the context of its genuine message.
 *
 * The key: 32 random bytes in the file bv_audit_wal.key of the data
 * directory (mode 0600, readable by the server's OS user only, like the
 * rest of it), created by the first process that needs it (O_EXCL: one
 * creator wins, the others read its key) and read once per process.  It
 * survives restarts, so messages written before a crash still verify when
 * the worker decodes them afterwards.  Roles cannot read it:
 * pg_read_binary_file() is for superusers (and pg_read_server_files), who
 * can bypass auditing anyway.
 *
 * Backend-local state: the key, once loaded.  No locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "port/pg_bswap.h"
#include "storage/fd.h"

#include "bv_audit.h"
#include "bv_common.h"

#define WAL_KEY_FILE "bv_audit_wal.key"
#define WAL_KEY_LEN  32

static uint8 wal_key[WAL_KEY_LEN];
static bool wal_key_loaded = false;

/* Read exactly WAL_KEY_LEN bytes from an open file. */
static bool
read_key(int fd)
{
	ssize_t n = read(fd, wal_key, WAL_KEY_LEN);

	return n == WAL_KEY_LEN;
}

/* Load (or create) the key; ERROR when the data directory is unusable. */
static void
ensure_key(void)
{
	int fd;

	if (wal_key_loaded)
		return;
	fd = OpenTransientFile(WAL_KEY_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0 && errno == ENOENT)
	{
		uint8 fresh[WAL_KEY_LEN];

		if (!bv_random_bytes(fresh, WAL_KEY_LEN))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate the bv_audit WAL key")));
		fd = OpenTransientFilePerm(WAL_KEY_FILE, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY,
								   S_IRUSR | S_IWUSR);
		if (fd >= 0)
		{
			if (write(fd, fresh, WAL_KEY_LEN) != WAL_KEY_LEN || pg_fsync(fd) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not write file \"%s\": %m", WAL_KEY_FILE)));
			CloseTransientFile(fd);
			memcpy(wal_key, fresh, WAL_KEY_LEN);
			wal_key_loaded = true;
			return;
		}
		/* Another process created it first: read its key. */
		fd = OpenTransientFile(WAL_KEY_FILE, O_RDONLY | PG_BINARY);
	}
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", WAL_KEY_FILE),
				 errhint("The key signs bv_audit's WAL-mode context messages; it lives in the data directory.")));
	if (!read_key(fd))
	{
		CloseTransientFile(fd);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("file \"%s\" does not hold a %d-byte key", WAL_KEY_FILE, WAL_KEY_LEN),
				 errhint("Remove it while no table is in WAL mode and restart: a new key is created.")));
	}
	CloseTransientFile(fd);
	wal_key_loaded = true;
}

/*
 * SipHash-2-4 (Aumasson and Bernstein, 2012), a pseudorandom function
 * designed as a MAC for short inputs, written here from its specification:
 * 64-bit words, little-endian, two compression and four finalization
 * rounds.  HMAC-SHA256 through OpenSSL cost a writer about 8,500
 * instructions per statement (bench-audit-instructions); this costs a few
 * hundred for a message of ~150 bytes.
 */
#define ROTL64(x, b) (uint64)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND             \
	do                       \
	{                        \
		v0 += v1;            \
		v1 = ROTL64(v1, 13); \
		v1 ^= v0;            \
		v0 = ROTL64(v0, 32); \
		v2 += v3;            \
		v3 = ROTL64(v3, 16); \
		v3 ^= v2;            \
		v0 += v3;            \
		v3 = ROTL64(v3, 21); \
		v3 ^= v0;            \
		v2 += v1;            \
		v1 = ROTL64(v1, 17); \
		v1 ^= v2;            \
		v2 = ROTL64(v2, 32); \
	} while (0)

/* A little-endian 64-bit word of n <= 8 bytes. */
static inline uint64
load_le64(const uint8 *p, size_t n)
{
	uint64 v = 0;

	if (n == 8)
	{
		memcpy(&v, p, 8);
#ifdef WORDS_BIGENDIAN
		v = pg_bswap64(v);
#endif
		return v;
	}
	while (n-- > 0)
		v |= (uint64) p[n] << (8 * n);
	return v;
}

/* Start a MAC: the key's initial state. */
static void
siphash_init(BvAuditMacState *st, const uint8 key[16])
{
	uint64 k0 = load_le64(key, 8);
	uint64 k1 = load_le64(key + 8, 8);

	st->v0 = k0 ^ UINT64CONST(0x736f6d6570736575);
	st->v1 = k1 ^ UINT64CONST(0x646f72616e646f6d);
	st->v2 = k0 ^ UINT64CONST(0x6c7967656e657261);
	st->v3 = k1 ^ UINT64CONST(0x7465646279746573);
}

/* Absorb the whole 8-byte blocks of msg (len - len % 8 bytes). */
static void
siphash_blocks(BvAuditMacState *st, const uint8 *msg, size_t len)
{
	uint64 v0 = st->v0, v1 = st->v1, v2 = st->v2, v3 = st->v3;
	size_t full = len - len % 8;
	size_t i;

	for (i = 0; i < full; i += 8)
	{
		uint64 m = load_le64(msg + i, 8);

		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	st->v0 = v0;
	st->v1 = v1;
	st->v2 = v2;
	st->v3 = v3;
}

/* Absorb the last len % 8 bytes of a message of total bytes; the MAC. */
static uint64
siphash_final(const BvAuditMacState *st, const uint8 *tail, size_t n, size_t total)
{
	uint64 v0 = st->v0, v1 = st->v1, v2 = st->v2, v3 = st->v3;
	uint64 m = load_le64(tail, n) | ((uint64) (total & 0xff) << 56);

	v3 ^= m;
	SIPROUND;
	SIPROUND;
	v0 ^= m;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64
bv_audit_siphash24(const uint8 key[16], const uint8 *msg, size_t len)
{
	BvAuditMacState st;
	size_t full = len - len % 8;

	siphash_init(&st, key);
	siphash_blocks(&st, msg, full);
	return siphash_final(&st, msg + full, len - full, len);
}

/* The MAC as BV_AUDIT_WAL_MAC_HEX hex characters and a NUL. */
static void
mac_hex(uint64 mac, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	int i;

	/* the bytes in little-endian order, as bv_hex_encode() writes them */
	for (i = 0; i < 8; i++)
	{
		uint8 b = (uint8) (mac >> (8 * i));

		hex[2 * i] = digits[b >> 4];
		hex[2 * i + 1] = digits[b & 0xf];
	}
	hex[BV_AUDIT_WAL_MAC_HEX] = '\0';
}

/* The hex MAC (BV_AUDIT_WAL_MAC_HEX characters and a NUL) of a message. */
void
bv_audit_wal_mac(const char *msg, size_t len, char *hex)
{
	ensure_key();
	mac_hex(bv_audit_siphash24(wal_key, (const uint8 *) msg, len), hex);
}

/*
 * The MAC of messages that all start with the same prefix, in two steps:
 * bv_audit_wal_mac_start() absorbs the prefix's whole 8-byte blocks once
 * (it returns how many bytes it took), bv_audit_wal_mac_finish() the rest
 * of one message (msg: the whole message, len bytes).  The result is the
 * MAC bv_audit_wal_mac() gives for the same message: a writer whose
 * context did not change pays only for the bytes after the prefix.
 */
size_t
bv_audit_wal_mac_start(BvAuditMacState *st, const char *prefix, size_t len)
{
	size_t full = len - len % 8;

	ensure_key();
	siphash_init(st, wal_key);
	siphash_blocks(st, (const uint8 *) prefix, full);
	return full;
}

void
bv_audit_wal_mac_finish(const BvAuditMacState *st, size_t done, const char *msg, size_t len,
						char *hex)
{
	BvAuditMacState cont = *st;
	size_t full = len - len % 8;

	Assert(done % 8 == 0 && done <= len);
	siphash_blocks(&cont, (const uint8 *) msg + done, full - done);
	mac_hex(siphash_final(&cont, (const uint8 *) msg + full, len - full, len), hex);
}

/*
 * Split a signed message: its JSON and whether the MAC appended after the
 * last newline is the key's.  *len is set to the JSON's length.
 */
bool
bv_audit_wal_verify(const char *content, size_t *len)
{
	const char *nl = strrchr(content, '\n');
	char expect[BV_AUDIT_WAL_MAC_HEX + 1];

	if (nl == NULL || strlen(nl + 1) != BV_AUDIT_WAL_MAC_HEX)
		return false;
	*len = nl - content;
	bv_audit_wal_mac(content, *len, expect);
	return bv_ct_equal(expect, nl + 1, BV_AUDIT_WAL_MAC_HEX);
}
