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
 * Memory: the subject is copied with malloc while the OpenSSL objects
 * live, and into a palloc'd text only after they are freed, so an error
 * (out of memory) cannot leak them.
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
 *		included).  The SQL caller decides whether it is acceptable as a
 *		broker user name (IOT_SUBJECT_MAX and printable).
 */
Datum
iot_certificate_subject(PG_FUNCTION_ARGS)
{
	bytea *der = PG_GETARG_BYTEA_PP(0);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(der);
	long len = (long) VARSIZE_ANY_EXHDR(der);
	char *subject = NULL; /* malloc'd: nothing may throw while OpenSSL objects live */
	size_t n = 0;
	text *result;
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
			if (data != NULL && dlen > 0 && dlen <= IOT_SUBJECT_PARSE_MAX && (subject = malloc(dlen + 1)) != NULL)
			{
				memcpy(subject, data, dlen);
				subject[dlen] = '\0';
				n = (size_t) dlen;
			}
		}
		BIO_free(bio);
	}
	X509_free(cert);
	if (subject == NULL)
		PG_RETURN_NULL();
	if (strlen(subject) != n)
	{
		free(subject);
		PG_RETURN_NULL();
	}
	result = (text *) palloc(VARHDRSZ + n);
	SET_VARSIZE(result, VARHDRSZ + n);
	memcpy(VARDATA(result), subject, n);
	free(subject);
	PG_RETURN_TEXT_P(result);
}
