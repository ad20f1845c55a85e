/* Bare-metal services for the Cortex-M firmware: ARM semihosting I/O (host files, console, exit status),
 * stack high-water mark, and cost markers for the instruction-counting QEMU plugin.
 * Semihosting needs QEMU's -semihosting-config enable=on,target=native (the runner passes it). */
#ifndef MT_SEMIHOST_H
#define MT_SEMIHOST_H

#include <stddef.h>
#include <stdint.h>

/* Host files. mode: "rb" or "wb". Returns a handle >= 0 or -1. */
int mt_open(const char *path, const char *mode);
/* Reads exactly n bytes unless the file ends: returns the number of bytes read. */
size_t mt_read(int fd, void *buf, size_t n);
size_t mt_write(int fd, const void *buf, size_t n);
int mt_seek(int fd, size_t pos);
long mt_flen(int fd);
int mt_close(int fd);

/* Console (the host's stdout). */
void mt_puts(const char *s);
/* printf subset: %d %i %u %x %ld %lu %lld %llu %s %c %f (%.Nf, N <= 9) %%. */
void mt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Ends the run: QEMU exits with this status (SYS_EXIT_EXTENDED). Never returns. */
void mt_exit(int status) __attribute__((noreturn));

/* Stack bytes ever used since reset (the stack is painted at start-up). */
size_t mt_stack_used(void);
size_t mt_stack_size(void);

/* Cost marker: starts counting region `id` (0 <= id < MT_MAX_MARKS) in the instruction-counting plugin.
 * Each marker is one `bx lr` in a table; the plugin attributes the instructions executed up to the next
 * marker to this id. Costs 3-4 instructions, nothing at all without the plugin. */
#define MT_MAX_MARKS 4096
extern void mt_marks(void);
typedef void (*mt_mark_fn)(void);
static inline void mt_mark(unsigned id)
{
    ((mt_mark_fn)((uintptr_t)&mt_marks + 2u * id))();
}

#endif
