/* SPDX-License-Identifier: MIT */
/*
 * transport/addr.c - "host:port" parsing, resolution and printing, shared by
 * the providers.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <kvmig/migrate.h>

#include "transport/provider.h"
#include "util/internal.h"

int kvmig_addr_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon, *h = addr;
	size_t hl;

	if (!addr || !*addr)
		return kvmig_err(-EINVAL, "address is empty (expected HOST:PORT)");
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');

		if (!end || end[1] != ':')
			return kvmig_err(-EINVAL, "address \"%s\" is not [IPV6]:PORT", addr);
		h = addr + 1;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || strchr(addr, ':') != colon)
			return kvmig_err(-EINVAL, "address \"%s\" is not HOST:PORT", addr);
		hl = (size_t)(colon - addr);
	}
	if (hl == 0 || hl >= hostlen || !colon[1] || strlen(colon + 1) >= portlen ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1) || atol(colon + 1) > 65535)
		return kvmig_err(-EINVAL, "address \"%s\" is not HOST:PORT with a port of 0-65535",
				 addr);
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

int kvmig_addr_numeric(const char *host, int *loopback)
{
	char h[INET6_ADDRSTRLEN + 2];
	unsigned char a[16];
	size_t n = host ? strlen(host) : 0;
	uint32_t v4;

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* "[v6]" */
		host++;
		n -= 2;
	}
	if (!n || n >= sizeof(h))
		return -EINVAL;
	memcpy(h, host, n);
	h[n] = '\0';
	if (inet_pton(AF_INET, h, a) == 1) {
		memcpy(&v4, a, 4);
	} else if (inet_pton(AF_INET6, h, a) == 1) {
		static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
		static const unsigned char zero[16] = { 0 };

		if (!memcmp(a, zero, 16))
			return -EADDRNOTAVAIL; /* :: */
		if (memcmp(a, mapped, 12)) { /* plain v6 */
			*loopback = !memcmp(a, zero, 15) && a[15] == 1;
			return 0;
		}
		memcpy(&v4, a + 12, 4); /* ::ffff:a.b.c.d is a.b.c.d */
	} else {
		return -EINVAL;
	}
	if (!v4)
		return -EADDRNOTAVAIL; /* 0.0.0.0 */
	*loopback = (ntohl(v4) >> 24) == 127;
	return 0;
}

int kvmig_addr_check(const char *addr)
{
	char host[256], port[8];

	return kvmig_addr_split(addr, host, sizeof(host), port, sizeof(port));
}

int kvmig_addr_resolve(const char *addr, int passive, struct addrinfo **res)
{
	struct addrinfo hints = { 0 };
	char host[256], port[8];
	int ret = kvmig_addr_split(addr, host, sizeof(host), port, sizeof(port));

	if (ret < 0)
		return ret;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	ret = getaddrinfo(host, port, &hints, res);
	if (ret)
		return kvmig_err(-EINVAL, "cannot resolve \"%s\": %s", addr, gai_strerror(ret));
	return 0;
}

void kvmig_addr_format(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const void *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
	}
}
