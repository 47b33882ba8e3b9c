/*-------------------------------------------------------------------------
 *
 * bv_audit.h
 *	  Shared declarations of the bv_audit extension (schema "bv_audit").
 *
 * The C side of bv_audit is a handful of trigger functions and helpers that
 * the install script wires together:
 *
 *	context.c	who, when and from where: bv.actor(), bv.trace_context(),
 *				application name and client address, read once per
 *				statement through cached FmgrInfos
 *	stamp.c		the BEFORE trigger that fills created_* / updated_*
 *	capture.c	the AFTER trigger that writes the mirrored audit rows
 *	guard.c		the append-only guard on audit tables and the one door
 *				through which purge may delete
 *	digest.c	the per-row SHA-256 digest used by seal() and verify()
 *	audit_id.c	audit_id values: blocks of the sequence shared through
 *				shared memory when bv_audit is preloaded
 *	ddl.c		what an ALTER TABLE did to a tracked table's columns (for
 *				the event trigger that mirrors it)
 *	wal_context.c	WAL mode, writer side: the context message of each
 *				statement that writes a WAL-mode table (hooks)
 *	wal_apply.c	WAL mode, worker side: decoded changes to audit records
 *	wal_worker.c	WAL mode: the background worker and its settings
 *	wal_key.c	WAL mode: the key that signs context messages
 *	bv_audit.c	_PG_init and the relcache invalidation wiring
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_AUDIT_H
#define BV_AUDIT_H

#include "postgres.h"

#include "fmgr.h"

/* Names of the metadata columns that lead every audit table. */
#define BV_AUDIT_NMETA 9

/* context.c */
typedef struct BvAuditContext
{
	Datum actor; /* text, never NULL */
	Datum trace; /* text */
	bool trace_null;
	Datum app; /* text */
	bool app_null;
	Datum client; /* inet */
	bool client_null;
} BvAuditContext;

extern const BvAuditContext *bv_audit_context(void);

/* capture.c / stamp.c: relcache invalidation of their caches */
extern void bv_audit_capture_invalidate(Oid relid);
extern void bv_audit_stamp_invalidate(Oid relid);

/* audit_id.c */
extern void bv_audit_ids_init(void);
extern int64 bv_audit_next_id(Oid seqrelid);

/* WAL mode (ADR 0013) */
#define BV_AUDIT_WAL_SLOT   "bv_audit_wal"
#define BV_AUDIT_WAL_PREFIX "bv_audit"
#define BV_AUDIT_WAL_MARKER "bv_audit_wal"

/* hex characters of the MAC (SipHash-2-4, 64 bits) of a context message */
#define BV_AUDIT_WAL_MAC_HEX 16

extern char *bv_audit_database;
extern void bv_audit_wal_mac(const char *msg, size_t len, char *hex);
extern bool bv_audit_wal_verify(const char *content, size_t *len);
extern uint64 bv_audit_siphash24(const uint8 key[16], const uint8 *msg, size_t len);
extern void bv_audit_wal_hooks_init(void);
extern void bv_audit_wal_emit_context(void);
extern void bv_audit_wal_worker_init(void);
extern PGDLLEXPORT void bv_audit_wal_worker_main(Datum main_arg);

/* guard.c */
extern bool bv_audit_purge_active;

#endif /* BV_AUDIT_H */
