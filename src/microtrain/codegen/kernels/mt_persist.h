/* mt_persist: power-safe persistence of trained parameters in flash (portable C99, no heap, no OS).
 *
 * WHAT IT DOES
 *   Two slots in flash hold two versions of a parameter blob. A save always overwrites the slot that does
 *   NOT hold the newest valid version, so a power cut at any moment leaves the previous version intact.
 *   On start, mt_persist_init() + mt_persist_load() return the newest slot that is valid (magic, layout,
 *   length, CRC32 and commit word all check); a torn slot is never returned, never a mix of two versions.
 *
 * SLOT LAYOUT (little-endian, independent of the CPU's byte order)
 *   offset  size  field
 *     0      4    magic       "MTP1" (0x3150544D)
 *     4      2    version     MT_PERSIST_VERSION
 *     6      2    header size MT_PERSIST_HEADER_SIZE (32)
 *     8      4    seq         save counter, +1 per save; the larger (modulo 2^32) valid slot is the newest
 *    12      4    layout_id   caller's id of the payload layout (e.g. a hash of tensor names/shapes):
 *                             a firmware with another layout never loads a foreign blob
 *    16      4    payload_len bytes of payload
 *    20      4    step        caller's training step at save time (informative; rate limiting uses it)
 *    24      4    crc32       CRC-32 (IEEE, as zlib.crc32) over header bytes [0, 24) then the payload
 *    28      4    commit      "MTOK" (0x4B4F544D), programmed LAST
 *    32      -    payload
 *   A slot occupies slot_size bytes (a whole number of erase pages); slot i starts at base + i * slot_size.
 *
 * COMMIT ORDER (why a torn write is detectable)
 *   1. erase every page of the target slot (an interrupted erase leaves the old, older-seq, data or junk);
 *   2. program the payload;  3. program header bytes [0, 28);  4. program the commit word;  5. read back.
 *   The commit word is written only after everything it vouches for, and the CRC covers header+payload,
 *   so a slot cut at any byte offset or during any erase fails validation and the other slot wins.
 *
 * FLASH ABSTRACTION
 *   Fill an mt_flash_t with three callbacks. NOR flash semantics are assumed: erase sets a page to 0xFF,
 *   program may only clear bits. `prog_unit` is the program granularity in bytes (1, 2, 4, 8, 16 or 32):
 *   every program call is prog_unit-aligned and a multiple of prog_unit long (padding is 0xFF).
 *   Callbacks return 0 on success, nonzero on a hardware error. Addresses are flash offsets (the callbacks
 *   add the device's base address if they need one).
 *
 * RATE LIMITING (flash endures ~10k erase cycles per page)
 *   mt_persist_save_if_due() saves only when at least policy.min_steps training steps AND policy.min_seconds
 *   seconds have passed since the last save (or since boot: a device in a reboot loop cannot wear the flash
 *   out), and refuses for good once policy.max_saves lifetime saves (counted by the persisted seq) are used.
 *   mt_persist_save() saves unconditionally (e.g. at shutdown), still honouring max_saves.
 *
 * TYPICAL USE (generated code)
 *   static mt_persist_t store;            // zero-init, then:
 *   store.flash = &board_flash; store.base = 0xC0000; store.slot_size = 2 * 16384;
 *   store.layout_id = MT_MODEL_LAYOUT_ID; store.policy.min_steps = 100; store.policy.min_seconds = 600;
 *   store.policy.max_saves = 5000;
 *   mt_persist_init(&store, now_s);
 *   if (mt_persist_load(&store, params, sizeof params, &len) != MT_PERSIST_OK) { keep compiled-in params }
 *   ... each training step: mt_persist_save_if_due(&store, params, sizeof params, step, now_s);
 *
 * HOST SIMULATION (tests only): compiled with -DMT_PERSIST_HOST_SIM, mt_persist.c also provides a RAM flash
 * (mt_sim_*) whose power can be cut after N programmed bytes or N erased bytes (see the end of this file).
 */
#ifndef MT_PERSIST_H
#define MT_PERSIST_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MT_PERSIST_MAGIC 0x3150544Du  /* "MTP1" */
#define MT_PERSIST_COMMIT 0x4B4F544Du /* "MTOK" */
#define MT_PERSIST_VERSION 1u
#define MT_PERSIST_HEADER_SIZE 32u
#define MT_PERSIST_MAX_PROG_UNIT 32u

/* Return codes: 0 is success, negative is an error, positive is an expected outcome. */
#define MT_PERSIST_OK 0
#define MT_PERSIST_SKIPPED 1       /* save_if_due: the rate limit says not yet */
#define MT_PERSIST_EMPTY 2         /* load: no valid slot (first boot, or both torn) */
#define MT_PERSIST_ELAYOUT 3       /* load: a valid slot exists but for another layout_id */
#define MT_PERSIST_EINVAL (-1)     /* bad argument or configuration */
#define MT_PERSIST_ETOOBIG (-2)    /* payload does not fit the slot / the caller's buffer */
#define MT_PERSIST_EFLASH (-3)     /* a flash callback reported an error */
#define MT_PERSIST_EVERIFY (-4)    /* read-back after save did not match */
#define MT_PERSIST_EWORN (-5)      /* policy.max_saves reached: saving refused to protect the flash */

typedef struct mt_flash {
    void *ctx;                  /* passed back to every callback */
    uint32_t page_size;         /* erase granularity in bytes */
    uint32_t prog_unit;         /* program granularity in bytes: 1, 2, 4, 8, 16 or 32 */
    int (*erase_page)(void *ctx, uint32_t addr);                                /* addr page-aligned */
    int (*program)(void *ctx, uint32_t addr, const uint8_t *data, uint32_t len); /* aligned to prog_unit */
    int (*read)(void *ctx, uint32_t addr, uint8_t *data, uint32_t len);
} mt_flash_t;

typedef struct mt_persist_policy {
    uint32_t min_steps;   /* training steps between two saves (0: no step limit) */
    uint32_t min_seconds; /* seconds between two saves, and after boot (0: no time limit) */
    uint32_t max_saves;   /* lifetime saves allowed, i.e. about 2 * erases per page (0: unlimited) */
} mt_persist_policy_t;

typedef struct mt_persist {
    /* configuration: set by the caller before mt_persist_init */
    const mt_flash_t *flash;
    uint32_t base;        /* flash offset of slot 0, page-aligned */
    uint32_t slot_size;   /* bytes per slot, a multiple of flash->page_size; slot 1 follows slot 0 */
    uint32_t layout_id;   /* id of the payload layout; loads of another layout are refused */
    mt_persist_policy_t policy;
    /* state: written by mt_persist_init / load / save; read it, do not write it */
    int32_t newest_slot;  /* 0 or 1, -1 when no valid slot */
    uint32_t seq;         /* seq of the newest valid slot (0 when none) */
    uint32_t newest_len;  /* payload_len of the newest valid slot */
    uint32_t last_step;   /* step of the last save (from flash at init) */
    uint32_t last_time_s; /* time of the last save, or of init */
    uint32_t saves_this_boot;
    uint32_t rejected_slots; /* slots found invalid at init (torn writes, foreign layouts) */
    uint32_t ready;       /* set by mt_persist_init: save/load refuse (EINVAL) before it, since saving without
                             knowing which slot is the newest could overwrite it */
} mt_persist_t;

/* Scan both slots, pick the newest valid one; call it first. now_s: seconds on any monotonic clock (0 if none). */
int mt_persist_init(mt_persist_t *p, uint32_t now_s);

/* Copy the newest valid payload into buf (capacity cap); *len_out = its length. Re-validates the CRC. */
int mt_persist_load(mt_persist_t *p, void *buf, uint32_t cap, uint32_t *len_out);

/* Save now (honours policy.max_saves only). step and now_s are stored for the rate limiter. */
int mt_persist_save(mt_persist_t *p, const void *payload, uint32_t len, uint32_t step, uint32_t now_s);

/* 1 if the rate-limit policy allows a save at (step, now_s), else 0. */
int mt_persist_due(const mt_persist_t *p, uint32_t step, uint32_t now_s);

/* mt_persist_save if mt_persist_due, else MT_PERSIST_SKIPPED (or MT_PERSIST_EWORN when worn). */
int mt_persist_save_if_due(mt_persist_t *p, const void *payload, uint32_t len, uint32_t step, uint32_t now_s);

/* Largest payload a slot of this configuration can hold. */
uint32_t mt_persist_capacity(const mt_persist_t *p);

/* CRC-32 (IEEE 802.3, reflected, init and xorout 0xFFFFFFFF): crc = mt_crc32(0, data, n) equals zlib.crc32;
 * chain calls by passing the previous result. */
uint32_t mt_crc32(uint32_t crc, const uint8_t *data, uint32_t n);

#ifdef MT_PERSIST_HOST_SIM
/* RAM flash for host tests. mt_sim_flash() returns a flash of `size` bytes (<= MT_SIM_MAX_SIZE, all 0xFF).
 * Power cut: after mt_sim_cut(prog_bytes, erase_bytes), the flash programs only `prog_bytes` more bytes and
 * erases only `erase_bytes` more bytes (the interrupted page keeps its old content beyond that), then every
 * call fails as if power was lost; -1 disables the cut. torn = 1 makes the byte being programmed at the cut
 * receive only half its cleared bits (an interrupted NOR program) and fills the rest of a page whose erase
 * was cut with noise (an interrupted erase). */
#define MT_SIM_MAX_SIZE (256u * 1024u)
const mt_flash_t *mt_sim_flash(uint32_t size, uint32_t page_size, uint32_t prog_unit);
void mt_sim_cut(int64_t prog_bytes, int64_t erase_bytes, int torn);
int mt_sim_powered(void);     /* 0 after the cut fired */
uint8_t *mt_sim_memory(void); /* the raw flash bytes (read/write them to snapshot or corrupt the image) */
uint32_t mt_sim_erase_count(uint32_t page);
#endif

#ifdef __cplusplus
}
#endif
#endif /* MT_PERSIST_H */
