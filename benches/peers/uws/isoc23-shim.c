/* The three C23 entry points glibc 2.38 added that the uWebSockets.js
 * binaries call (__isoc23_sscanf, __isoc23_strtol, __isoc23_strtoul), for a
 * glibc older than 2.38 (Debian 12 has 2.36). They differ from the C99 ones
 * only in accepting a "0b" binary prefix. glibc-compat.sh builds this and
 * marks the binary's GLIBC_2.38 requirement weak; wsgate-compat.sh preloads it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int __isoc23_sscanf(const char *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsscanf(s, fmt, ap);
    va_end(ap);
    return r;
}

long __isoc23_strtol(const char *s, char **end, int base)
{
    return strtol(s, end, base);
}

unsigned long __isoc23_strtoul(const char *s, char **end, int base)
{
    return strtoul(s, end, base);
}
