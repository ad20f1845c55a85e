/* ARM semihosting over `bkpt 0xAB` (M-profile): r0 = operation, r1 = argument block, result in r0. */
#include "mt_semihost.h"

#include <stdarg.h>

enum {
    SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE = 0x05, SYS_READ = 0x06, SYS_SEEK = 0x0A,
    SYS_FLEN = 0x0C, SYS_EXIT = 0x18, SYS_EXIT_EXTENDED = 0x20,
};
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static size_t cstrlen(const char *s)
{
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int mt_open(const char *path, const char *mode)
{
    /* Semihosting modes: 0 "r", 1 "rb", 4 "w", 5 "wb"; a binary mode keeps bytes intact. */
    int m = (mode[0] == 'w') ? 5 : 1;
    uint32_t arg[3] = {(uint32_t)(uintptr_t)path, (uint32_t)m, (uint32_t)cstrlen(path)};
    return semihost(SYS_OPEN, arg);
}

size_t mt_read(int fd, void *buf, size_t n)
{
    uint32_t arg[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    int not_read = semihost(SYS_READ, arg);
    return (not_read < 0) ? 0 : n - (size_t)not_read;
}

size_t mt_write(int fd, const void *buf, size_t n)
{
    uint32_t arg[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    int not_written = semihost(SYS_WRITE, arg);
    return (not_written < 0) ? 0 : n - (size_t)not_written;
}

int mt_seek(int fd, size_t pos)
{
    uint32_t arg[2] = {(uint32_t)fd, (uint32_t)pos};
    return semihost(SYS_SEEK, arg);
}

long mt_flen(int fd)
{
    uint32_t arg[1] = {(uint32_t)fd};
    return semihost(SYS_FLEN, arg);
}

int mt_close(int fd)
{
    uint32_t arg[1] = {(uint32_t)fd};
    return semihost(SYS_CLOSE, arg);
}

void mt_exit(int status)
{
    uint32_t arg[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost(SYS_EXIT_EXTENDED, arg);
    /* Only reached if the host ignores SYS_EXIT_EXTENDED: fall back to the 0/1 exit. */
    semihost(SYS_EXIT, (void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT : 0x20024));
    for (;;) {
    }
}

/* ---- console: buffered so one semihosting call carries a whole line ---- */
static int console = -1;
static char line[128];
static size_t line_len;

static void flush_line(void)
{
    if (console < 0) console = mt_open(":tt", "w");
    if (line_len) mt_write(console, line, line_len);
    line_len = 0;
}

static void put_char(char c)
{
    line[line_len++] = c;
    if (c == '\n' || line_len == sizeof line) flush_line();
}

void mt_puts(const char *s)
{
    while (*s) put_char(*s++);
    flush_line();
}

static void put_unsigned(unsigned long long v, unsigned base)
{
    char digits[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    while (n) put_char(digits[--n]);
}

static void put_signed(long long v)
{
    if (v < 0) {
        put_char('-');
        put_unsigned(0ull - (unsigned long long)v, 10);
    } else {
        put_unsigned((unsigned long long)v, 10);
    }
}

static void put_float(double v, int decimals)
{
    if (v != v) {
        mt_puts("nan");
        return;
    }
    if (v < 0) {
        put_char('-');
        v = -v;
    }
    if (v > 1e18) {
        mt_puts("inf");
        return;
    }
    unsigned long long scale = 1;
    for (int i = 0; i < decimals; i++) scale *= 10;
    unsigned long long fixed = (unsigned long long)(v * (double)scale + 0.5);
    put_unsigned(fixed / scale, 10);
    if (decimals) {
        put_char('.');
        unsigned long long frac = fixed % scale;
        for (unsigned long long s = scale / 10; s; s /= 10) put_char((char)('0' + (frac / s) % 10));
    }
}

void mt_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put_char(*p);
            continue;
        }
        p++;
        int decimals = 6;
        if (*p == '.') {
            decimals = p[1] - '0';
            p += 2;
        }
        int longs = 0;
        while (*p == 'l') {
            longs++;
            p++;
        }
        switch (*p) {
        case 'd':
        case 'i':
            put_signed(longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int));
            break;
        case 'u':
            put_unsigned(longs >= 2 ? va_arg(ap, unsigned long long)
                         : longs    ? va_arg(ap, unsigned long)
                                    : va_arg(ap, unsigned), 10);
            break;
        case 'x':
            put_unsigned(longs >= 2 ? va_arg(ap, unsigned long long)
                         : longs    ? va_arg(ap, unsigned long)
                                    : va_arg(ap, unsigned), 16);
            break;
        case 'f': put_float(va_arg(ap, double), decimals); break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s) put_char(*s++);
            break;
        }
        case 'c': put_char((char)va_arg(ap, int)); break;
        case '%': put_char('%'); break;
        default: put_char('?'); break;
        }
    }
    va_end(ap);
    flush_line();
}
