/* SPDX-License-Identifier: MIT */
/* tools/token.c - secrets from files, for kvmig and kvmigd. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "token.h"

int token_read(const char *path, char *buf, size_t cap, size_t *len, char *why, size_t whylen)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(why, whylen, "cannot open token file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
		close(fd);
		snprintf(why, whylen, "token file %s is open to group or others (mode %03o); "
			 "chmod 600 it", path, (unsigned)(st.st_mode & 0777));
		return -1;
	}
	n = read(fd, buf, cap);
	close(fd);
	if (n >= (ssize_t)cap) {
		snprintf(why, whylen, "token file %s is longer than %zu bytes", path, cap - 1);
		return -1;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n < 16 || (size_t)n >= cap) {
		snprintf(why, whylen, "token file %s must hold 16 bytes to 4 KiB (it has %zd)", path,
			 n < 0 ? (ssize_t)0 : n);
		return -1;
	}
	*len = (size_t)n;
	return 0;
}
