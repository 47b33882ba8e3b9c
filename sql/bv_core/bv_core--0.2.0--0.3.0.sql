/*
 * bv_core 0.2.0 -> 0.3.0: hardening (issues #17, #18, #27).
 *
 * A fresh install of 0.3.0 runs bv_core--0.1.0.sql and the upgrade scripts in
 * order.  Each section below names the issue item it fixes.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION bv_core UPDATE TO '0.3.0'" to load this file. \quit

