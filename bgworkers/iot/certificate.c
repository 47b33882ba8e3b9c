/*-------------------------------------------------------------------------
 *
 * certificate.c
 *	  The subject of a device's client certificate, as the broker sees it.
 *
 * The broker's certificate listener names each client by its
 * certificate's subject (mosquitto's use_subject_as_username), printed by
 * OpenSSL's X509_NAME_print_ex with XN_FLAG_RFC2253; the ACL that
 * iot.mosquitto_acl_certs() writes must use exactly that string, so it is
 * computed here with the same call rather than re-implemented in SQL.
 * RFC 2253 escaping turns control and non-ASCII bytes into \XX, so the
 * result is one printable line whatever the certificate holds.
 *
 * Input is client data (a PEM uploaded over REST): d2i_X509 parses it
 * without trusting it, and anything that is not exactly one certificate
 * yields NULL (the SQL caller raises 22023).  No chain or signature is
 * checked: the broker does that against its CA.
 *
 * Memory: the OpenSSL objects are freed before any palloc result is
 * returned; nothing here throws while they are live except out-of-memory
 * in palloc, which is called only after they are freed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/x509.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "bv_iot.h"

PG_FUNCTION_INFO_V1(iot_certificate_subject);

/*
 * iot_certificate_subject
 *		iot._certificate_subject(der bytea) -> text: the subject in RFC 2253
 *		form, or NULL when der is not one DER certificate (trailing bytes
 *		included) or the subject is longer than IOT_SUBJECT_MAX.
 */
Datum
iot_certificate_subject(PG_FUNCTION_ARGS)
{
	bytea *der = PG_GETARG_BYTEA_PP(0);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(der);
	long len = (long) VARSIZE_ANY_EXHDR(der);
	char buf[IOT_SUBJECT_MAX + 1] = "";
	int n = -1;
	X509 *cert;
	BIO *bio;

	cert = d2i_X509(NULL, &p, len);
	if (cert == NULL)
		PG_RETURN_NULL();
	if (p == (const unsigned char *) VARDATA_ANY(der) + len && (bio = BIO_new(BIO_s_mem())) != NULL)
	{
		char *data = NULL;
		long dlen;

		if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0)
		{
			dlen = BIO_get_mem_data(bio, &data);
			if (data != NULL && dlen > 0 && dlen <= IOT_SUBJECT_MAX)
			{
				memcpy(buf, data, dlen);
				buf[dlen] = '\0';
				n = (int) dlen;
			}
		}
		BIO_free(bio);
	}
	X509_free(cert);
	if (n < 0 || strlen(buf) != (size_t) n)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(buf));
}
