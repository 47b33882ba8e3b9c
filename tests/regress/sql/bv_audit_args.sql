-- bv_audit's functions answer NULL and bad arguments with a specific
-- SQLSTATE and a hint, never a syntax error from generated SQL, an internal
-- error or a raw constraint violation (#17 item 15).
\set SHOW_CONTEXT never
\set VERBOSITY sqlstate

CREATE TABLE public.a_argt (id int PRIMARY KEY, v text);
SELECT bv_audit.enable('public.a_argt') IS NOT NULL AS enabled;

SELECT bv_audit.stamp(NULL);
SELECT bv_audit.stamp(0);
SELECT bv_audit.enable(NULL);
SELECT bv_audit.enable(0);
SELECT bv_audit.enable('public.a_argt', '{NULL}');
SELECT bv_audit.enable('public.a_argt', retention => '-1 day');
SELECT bv_audit.enable('public.a_argt', retention => '0');
SELECT bv_audit.disable(NULL);
SELECT bv_audit.audit_table(NULL);
SELECT bv_audit.set_retention(NULL, '1 day');
SELECT bv_audit.set_retention('public.a_argt', '-1 day');
SELECT * FROM bv_audit.history(NULL, '{"id": 1}');
SELECT * FROM bv_audit.history('public.a_argt', NULL);
SELECT * FROM bv_audit.history('public.a_argt', '[1]');
SELECT * FROM bv_audit.as_of(NULL, now());
SELECT * FROM bv_audit.as_of('public.a_argt', NULL);
SELECT * FROM bv_audit.changes('public.a_argt', NULL, now());
SELECT * FROM bv_audit.changes('public.a_argt', now(), NULL);
SELECT bv_audit.create_partitions(NULL);
SELECT bv_audit._invalidate(0);
SELECT bv_audit._invalidate(NULL);

\set VERBOSITY default
-- The messages say what to do.
SELECT bv_audit.stamp(NULL);
SELECT bv_audit.enable('public.a_argt', retention => '-1 day');
SELECT bv_audit._invalidate(0);

DROP TABLE public.a_argt;
