#include "strutil.h"

size_t count_char(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        if (*s == ' ')
            n++;
    return n;
}
