#ifndef STRBUF_H
#define STRBUF_H

#include <stddef.h>

/* Copies at most dstsize - 1 characters of src into dst and always ends dst with '\0' (when
 * dstsize is 0, nothing is written). Returns the number of characters copied. */
size_t copy_truncate(char *dst, size_t dstsize, const char *src);

#endif
