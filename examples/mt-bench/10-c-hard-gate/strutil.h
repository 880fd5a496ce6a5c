#ifndef STRUTIL_H
#define STRUTIL_H

/* strutil: the string helpers shared by every tool of the project. */

#include <stddef.h>

/* The number of spaces in s. */
size_t count_char(const char *s);

#endif
