#include "strbuf.h"

size_t copy_truncate(char *dst, size_t dstsize, const char *src)
{
    size_t i;

    if (dstsize == 0)
        return 0;
    for (i = 0; i < dstsize && src[i] != '\0'; i++)
        dst[i] = src[i];
    dst[i] = '\0';
    return i;
}
