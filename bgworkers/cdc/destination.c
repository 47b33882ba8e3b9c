/*-------------------------------------------------------------------------
 *
 * destination.c
 *	  Which network addresses a webhook sink may send requests to: the
 *	  setting bv_cdc.webhook_allowed_networks and its checks (SSRF policy).
 *
 * A webhook sink takes any URL, and sinks are set by bv_admin, who is not a
 * superuser: without a policy the worker (the server's OS user, inside the
 * server's network) could be made to POST to the cloud metadata service
 * (169.254.169.254), to services listening on loopback, or to hosts of the
 * private network that only the database server can reach, and report what
 * they answered in bv_cdc.stats.  The policy: a destination whose address
 * is not public (loopback, private, link-local, carrier-grade NAT,
 * unspecified, multicast, reserved, IPv6 unique-local and link-local, and
 * IPv4 addresses embedded in IPv6 in those ranges) is refused unless it lies
 * in one of the networks listed in bv_cdc.webhook_allowed_networks (a
 * comma-separated list of CIDRs, postgresql.conf only).  Public addresses
 * are always allowed.
 *
 * Checked twice: when a sink is set (cdc_check_webhook_url: a numeric host
 * in any spelling that the resolver accepts, such as 2130706433 or 0x7f.1,
 * and "localhost"), and by the worker for every address libcurl is about to
 * connect to (cdc_destination_allowed, from libcurl's open-socket
 * callback), which also covers host names, DNS answers that change after
 * the sink was set (rebinding) and every address of a multi-address name;
 * and again before every request (libcurl's pre-request callback), since a
 * kept-alive connection opened under an earlier setting may be reused.
 *
 * The setting is parsed by its check hook into a malloc'd list (GUC
 * "extra"), installed by its assign hook; each process has its own copy,
 * replaced on reload.  No shared state, no locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "utils/guc.h"

#include "bv_cdc.h"

#define CDC_MAX_NETWORKS 64

typedef struct CdcNetwork
{
	int family; /* AF_INET or AF_INET6 */
	int bits;
	uint8 addr[16];
} CdcNetwork;

typedef struct CdcNetworks
{
	int n;
	CdcNetwork net[CDC_MAX_NETWORKS];
} CdcNetworks;

char *cdc_webhook_allowed_networks = NULL;
static CdcNetworks *allowed = NULL;

/* Non-public IPv4 ranges (RFC 6890 and neighbours). */
static const struct
{
	uint8 a, b, c, d;
	int bits;
} private4[] = {
	{0, 0, 0, 0, 8},      /* "this network", 0.0.0.0 */
	{10, 0, 0, 0, 8},     /* private */
	{100, 64, 0, 0, 10},  /* carrier-grade NAT */
	{127, 0, 0, 0, 8},    /* loopback */
	{169, 254, 0, 0, 16}, /* link-local: cloud metadata services */
	{172, 16, 0, 0, 12},  /* private */
	{192, 0, 0, 0, 24},   /* IETF protocol assignments */
	{192, 168, 0, 0, 16}, /* private */
	{198, 18, 0, 0, 15},  /* benchmarking */
	{224, 0, 0, 0, 4},    /* multicast */
	{240, 0, 0, 0, 4},    /* reserved, broadcast */
};

static bool
prefix_match(const uint8 *a, const uint8 *net, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, net, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ net[full]) & (0xFF << (8 - rest))) == 0;
}

static bool
private_v4(const uint8 *a)
{
	for (int i = 0; i < lengthof(private4); i++)
	{
		uint8 net[4] = {private4[i].a, private4[i].b, private4[i].c, private4[i].d};

		if (prefix_match(a, net, private4[i].bits))
			return true;
	}
	return false;
}

/*
 * An IPv6 address that carries an IPv4 address (mapped ::ffff:0:0/96,
 * NAT64 64:ff9b::/96): the IPv4 part, else NULL.
 */
static const uint8 *
embedded_v4(const uint8 *a)
{
	static const uint8 mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
	static const uint8 nat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};

	if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
		return a + 12;
	return NULL;
}

static bool
private_v6(const uint8 *a)
{
	static const uint8 zero[12] = {0};

	if (memcmp(a, zero, 12) == 0) /* ::, ::1, IPv4-compatible ::a.b.c.d */
		return true;
	if ((a[0] & 0xFE) == 0xFC) /* fc00::/7 unique local */
		return true;
	if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) /* fe80::/10 link-local */
		return true;
	if (a[0] == 0xFE && (a[1] & 0xC0) == 0xC0) /* fec0::/10 site-local (deprecated) */
		return true;
	if (a[0] == 0xFF) /* multicast */
		return true;
	return false;
}

static bool
in_allowed(int family, const uint8 *a)
{
	if (allowed == NULL)
		return false;
	for (int i = 0; i < allowed->n; i++)
		if (allowed->net[i].family == family && prefix_match(a, allowed->net[i].addr, allowed->net[i].bits))
			return true;
	return false;
}

/*
 * cdc_destination_allowed
 *		May a webhook request go to this address?  When not, "why" says so
 *		(the address and the setting; never anything of the URL).
 */
bool
cdc_destination_allowed(const struct sockaddr *sa, char *why, size_t whylen)
{
	char text[INET6_ADDRSTRLEN] = "?";
	const uint8 *v4 = NULL;
	const uint8 *v6 = NULL;

	if (sa->sa_family == AF_INET)
		v4 = (const uint8 *) &((const struct sockaddr_in *) sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
	{
		v6 = (const uint8 *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
		v4 = embedded_v4(v6);
	}
	else
	{
		snprintf(why, whylen, "destination of address family %d refused", sa->sa_family);
		return false;
	}
	if (v4 != NULL && (in_allowed(AF_INET, v4) || !private_v4(v4)))
		return true;
	if (v4 == NULL && (in_allowed(AF_INET6, v6) || !private_v6(v6)))
		return true;
	if (v4 != NULL)
		inet_ntop(AF_INET, v4, text, sizeof(text));
	else
		inet_ntop(AF_INET6, v6, text, sizeof(text));
	snprintf(why, whylen,
			 "destination %s is not a public address and not in bv_cdc.webhook_allowed_networks",
			 text);
	return false;
}

/*
 * cdc_destination_text_allowed
 *		The same for an address in text form (libcurl's primary IP of a
 *		connection, new or reused).  Text that is no address is refused.
 */
bool
cdc_destination_text_allowed(const char *ip, char *why, size_t whylen)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;

	memset(&s4, 0, sizeof(s4));
	memset(&s6, 0, sizeof(s6));
	if (inet_pton(AF_INET, ip, &s4.sin_addr) == 1)
	{
		s4.sin_family = AF_INET;
		return cdc_destination_allowed((struct sockaddr *) &s4, why, whylen);
	}
	if (inet_pton(AF_INET6, ip, &s6.sin6_addr) == 1)
	{
		s6.sin6_family = AF_INET6;
		return cdc_destination_allowed((struct sockaddr *) &s6, why, whylen);
	}
	snprintf(why, whylen, "destination \"%.64s\" is not an address", ip);
	return false;
}

/*
 * The host of an http(s) URL, copied into buf (brackets of an IPv6 literal
 * removed); false if there is none or it is too long.
 */
static bool
url_host(const char *url, char *buf, size_t buflen)
{
	const char *p = strstr(url, "://");
	const char *end, *at, *host;
	size_t len;

	if (p == NULL)
		return false;
	p += 3;
	end = p + strcspn(p, "/?#\\");
	/* userinfo: up to the last '@' of the authority */
	host = p;
	for (at = p; at < end; at++)
		if (*at == '@')
			host = at + 1;
	if (*host == '[')
	{
		const char *close = memchr(host, ']', end - host);

		if (close == NULL)
			return false;
		host++;
		len = close - host;
	}
	else
	{
		const char *colon = memchr(host, ':', end - host);

		len = (colon ? colon : end) - host;
	}
	if (len == 0 || len >= buflen)
		return false;
	memcpy(buf, host, len);
	buf[len] = '\0';
	return true;
}

/*
 * cdc_check_webhook_url
 *		Refuse (22023) a webhook URL with credentials (they would sit in
 *		clear in bv_cdc.sinks), or whose host is a numeric address, or
 *		"localhost", that the policy does not allow.  Host names are checked
 *		by the worker when it connects.
 */
void
cdc_check_webhook_url(const char *url)
{
	char host[256];
	char why[256];
	struct addrinfo hints, *res = NULL, *ai;
	size_t len;

	{
		const char *auth = strstr(url, "://");
		size_t alen = auth ? strcspn(auth + 3, "/?#\\") : 0;

		if (auth && memchr(auth + 3, '@', alen) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook \"url\" must not contain credentials"),
					 errdetail("A user name or password in the URL would be stored in clear in "
							   "bv_cdc.sinks."),
					 errhint("Receivers authenticate bv_cdc by the BV-Signature header; remove "
							 "\"user:password@\" from the URL.")));
	}
	if (!url_host(url, host, sizeof(host)))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("webhook \"url\" has no host"),
						errhint("Write it as http(s)://host[:port]/path.")));
	len = strlen(host);
	while (len > 0 && host[len - 1] == '.')
		host[--len] = '\0';
	if (pg_strcasecmp(host, "localhost") == 0 ||
		(len > 10 && pg_strcasecmp(host + len - 10, ".localhost") == 0))
		strlcpy(host, "127.0.0.1", sizeof(host));

	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return; /* a name: checked at connect time */
	for (ai = res; ai != NULL; ai = ai->ai_next)
		if (!cdc_destination_allowed(ai->ai_addr, why, sizeof(why)))
		{
			freeaddrinfo(res);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("webhook \"url\" points to an address that is not allowed"),
					 errdetail("The %s.", why),
					 errhint("Webhooks may reach public addresses; to allow a private network, a "
							 "superuser adds it to bv_cdc.webhook_allowed_networks in "
							 "postgresql.conf and reloads.")));
		}
	freeaddrinfo(res);
}

/* Parse one "address[/bits]" into *net; false if it is not one. */
static bool
parse_network(char *item, CdcNetwork *net)
{
	char *slash = strchr(item, '/');
	char *endp;
	long bits;

	if (slash)
		*slash = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, item, net->addr) == 1)
		net->family = AF_INET;
	else if (inet_pton(AF_INET6, item, net->addr) == 1)
		net->family = AF_INET6;
	else
		return false;
	if (slash == NULL)
		bits = net->family == AF_INET ? 32 : 128;
	else
	{
		errno = 0;
		bits = strtol(slash + 1, &endp, 10);
		if (errno != 0 || endp == slash + 1 || *endp != '\0' || bits < 0 ||
			bits > (net->family == AF_INET ? 32 : 128))
			return false;
	}
	net->bits = (int) bits;
	return true;
}

static bool
check_allowed_networks(char **newval, void **extra, GucSource source)
{
	CdcNetworks *list;
	char *copy, *item, *save = NULL;

	/* GUC "extra" is malloc'd: the GUC machinery free()s it */
	list = (CdcNetworks *) malloc(sizeof(CdcNetworks));
	if (list == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	list->n = 0;
	copy = pstrdup(*newval ? *newval : "");
	for (item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save))
	{
		if (list->n == CDC_MAX_NETWORKS)
		{
			GUC_check_errdetail("At most %d networks may be listed.", CDC_MAX_NETWORKS);
			free(list);
			pfree(copy);
			return false;
		}
		if (!parse_network(item, &list->net[list->n]))
		{
			GUC_check_errdetail("\"%.64s\" is not an address or CIDR network (e.g. 10.1.0.0/16, fd00::/8).",
								item);
			free(list);
			pfree(copy);
			return false;
		}
		list->n++;
	}
	pfree(copy);
	*extra = list;
	return true;
}

static void
assign_allowed_networks(const char *newval, void *extra)
{
	allowed = (CdcNetworks *) extra;
}

/* Called from _PG_init (bv_cdc.c). */
void
cdc_define_destination_settings(void)
{
	DefineCustomStringVariable(
		"bv_cdc.webhook_allowed_networks",
		"Networks of non-public addresses that webhook sinks may send requests to.",
		"Comma-separated CIDRs.  Loopback, private, link-local and other non-public addresses are "
		"refused unless listed; public addresses are always allowed.",
		&cdc_webhook_allowed_networks, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
		check_allowed_networks, assign_allowed_networks, NULL);
}
