/* mt_persist: two-slot, CRC-checked, power-safe parameter persistence. See mt_persist.h for the format,
 * the commit order and the rate-limit policy. Portable C99: no heap, no OS, no CPU byte-order assumption. */
#include "mt_persist.h"

#include <string.h>

#define HDR_CRC_OFFSET 24u    /* the CRC covers header bytes [0, 24) and the payload */
#define HDR_COMMIT_OFFSET 28u
#define CHUNK 64u             /* stack buffer for streaming reads */

/* ----- CRC-32 (nibble table: 64 bytes of flash instead of 1 KB) ------------------------------------- */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t mt_crc32(uint32_t crc, const uint8_t *data, uint32_t n)
{
    uint32_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 15u];
        crc = (crc >> 4) ^ crc_nibble[crc & 15u];
    }
    return ~crc;
}

/* ----- little-endian field access ------------------------------------------------------------------- */
static uint32_t get32(const uint8_t *b) {
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static uint16_t get16(const uint8_t *b) { return (uint16_t)(b[0] | (b[1] << 8)); }
static void put32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
}
static void put16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); }

/* ----- configuration checks ------------------------------------------------------------------------- */
static int config_ok(const mt_persist_t *p)
{
    const mt_flash_t *f;
    uint32_t u;
    if (p == NULL || p->flash == NULL) return 0;
    f = p->flash;
    u = f->prog_unit;
    if (f->erase_page == NULL || f->program == NULL || f->read == NULL) return 0;
    if (u == 0 || u > MT_PERSIST_MAX_PROG_UNIT || (u & (u - 1u)) != 0) return 0;
    if (f->page_size == 0 || f->page_size % u != 0) return 0;
    if (p->slot_size <= MT_PERSIST_HEADER_SIZE || p->slot_size % f->page_size != 0) return 0;
    if (p->base % f->page_size != 0) return 0;
    if (p->slot_size > (0xFFFFFFFFu - p->base) / 2u) return 0; /* both slots addressable */
    return 1;
}

#define READY 0x59444552u /* "REDY" */

static int ready(const mt_persist_t *p) { return config_ok(p) && p->ready == READY; }

uint32_t mt_persist_capacity(const mt_persist_t *p)
{
    return config_ok(p) ? p->slot_size - MT_PERSIST_HEADER_SIZE : 0u;
}

static uint32_t slot_addr(const mt_persist_t *p, int slot) { return p->base + (uint32_t)slot * p->slot_size; }

/* seq a is newer than seq b (serial-number arithmetic, survives wrap-around) */
static int seq_newer(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

/* ----- slot validation ------------------------------------------------------------------------------ */
typedef struct {
    int crc_ok;   /* complete and intact, whatever its layout */
    int ours;     /* crc_ok and layout_id matches */
    uint32_t seq, len, step;
} slot_info_t;

static int check_slot(const mt_persist_t *p, int slot, slot_info_t *info)
{
    uint8_t hdr[MT_PERSIST_HEADER_SIZE];
    uint8_t buf[CHUNK];
    uint32_t addr = slot_addr(p, slot), crc, done, len;
    memset(info, 0, sizeof *info);
    if (p->flash->read(p->flash->ctx, addr, hdr, MT_PERSIST_HEADER_SIZE) != 0) return MT_PERSIST_EFLASH;
    if (get32(hdr) != MT_PERSIST_MAGIC || get32(hdr + HDR_COMMIT_OFFSET) != MT_PERSIST_COMMIT) return MT_PERSIST_OK;
    if (get16(hdr + 4) != MT_PERSIST_VERSION || get16(hdr + 6) != MT_PERSIST_HEADER_SIZE) return MT_PERSIST_OK;
    len = get32(hdr + 16);
    if (len > p->slot_size - MT_PERSIST_HEADER_SIZE) return MT_PERSIST_OK;
    crc = mt_crc32(0, hdr, HDR_CRC_OFFSET);
    for (done = 0; done < len;) {
        uint32_t n = len - done < CHUNK ? len - done : CHUNK;
        if (p->flash->read(p->flash->ctx, addr + MT_PERSIST_HEADER_SIZE + done, buf, n) != 0) return MT_PERSIST_EFLASH;
        crc = mt_crc32(crc, buf, n);
        done += n;
    }
    if (crc != get32(hdr + HDR_CRC_OFFSET)) return MT_PERSIST_OK;
    info->crc_ok = 1;
    info->ours = get32(hdr + 12) == p->layout_id;
    info->seq = get32(hdr + 8);
    info->len = len;
    info->step = get32(hdr + 20);
    return MT_PERSIST_OK;
}

/* newest slot among those with flag set (0/1), -1 if none */
static int newest_of(const slot_info_t s[2], int need_ours)
{
    int ok0 = need_ours ? s[0].ours : s[0].crc_ok, ok1 = need_ours ? s[1].ours : s[1].crc_ok;
    if (ok0 && ok1) return seq_newer(s[1].seq, s[0].seq) ? 1 : 0;
    return ok0 ? 0 : (ok1 ? 1 : -1);
}

int mt_persist_init(mt_persist_t *p, uint32_t now_s)
{
    slot_info_t s[2];
    int i, newest, rc;
    if (!config_ok(p)) return MT_PERSIST_EINVAL;
    p->newest_slot = -1;
    p->seq = 0;
    p->newest_len = 0;
    p->last_step = 0;
    p->last_time_s = now_s;
    p->saves_this_boot = 0;
    p->rejected_slots = 0;
    p->ready = 0;
    for (i = 0; i < 2; i++) {
        rc = check_slot(p, i, &s[i]);
        if (rc != MT_PERSIST_OK) return rc;
        if (!s[i].ours) p->rejected_slots++;
    }
    newest = newest_of(s, 1);
    if (newest >= 0) {
        p->newest_slot = newest;
        p->newest_len = s[newest].len;
        p->last_step = s[newest].step;
    }
    /* seq continues from the newest intact slot of any layout: it counts lifetime saves (wear) */
    i = newest_of(s, 0);
    p->seq = i >= 0 ? s[i].seq : 0u;
    p->ready = READY;
    return MT_PERSIST_OK;
}

int mt_persist_load(mt_persist_t *p, void *buf, uint32_t cap, uint32_t *len_out)
{
    slot_info_t s[2];
    int i, newest, rc;
    if (!ready(p) || len_out == NULL || (buf == NULL && cap > 0)) return MT_PERSIST_EINVAL;
    *len_out = 0;
    for (i = 0; i < 2; i++) {  /* re-check now: the flash may have changed since init */
        rc = check_slot(p, i, &s[i]);
        if (rc != MT_PERSIST_OK) return rc;
    }
    newest = newest_of(s, 1);
    if (newest < 0) return newest_of(s, 0) >= 0 ? MT_PERSIST_ELAYOUT : MT_PERSIST_EMPTY;
    if (s[newest].len > cap) return MT_PERSIST_ETOOBIG;
    if (s[newest].len > 0 &&
        p->flash->read(p->flash->ctx, slot_addr(p, newest) + MT_PERSIST_HEADER_SIZE, (uint8_t *)buf, s[newest].len) != 0)
        return MT_PERSIST_EFLASH;
    /* the bytes just copied must be the ones the CRC vouched for (guards against a flaky read) */
    {
        uint8_t hdr[MT_PERSIST_HEADER_SIZE];
        if (p->flash->read(p->flash->ctx, slot_addr(p, newest), hdr, MT_PERSIST_HEADER_SIZE) != 0) return MT_PERSIST_EFLASH;
        if (mt_crc32(mt_crc32(0, hdr, HDR_CRC_OFFSET), (const uint8_t *)buf, s[newest].len) != get32(hdr + HDR_CRC_OFFSET))
            return MT_PERSIST_EVERIFY;
    }
    p->newest_slot = newest;
    p->newest_len = s[newest].len;
    *len_out = s[newest].len;
    return MT_PERSIST_OK;
}

/* program len bytes at addr (prog_unit-aligned) from src; the unaligned tail is padded with 0xFF */
static int program_padded(const mt_flash_t *f, uint32_t addr, const uint8_t *src, uint32_t len)
{
    uint8_t tail[MT_PERSIST_MAX_PROG_UNIT];
    uint32_t bulk = len - len % f->prog_unit;
    if (bulk > 0 && f->program(f->ctx, addr, src, bulk) != 0) return MT_PERSIST_EFLASH;
    if (bulk < len) {
        memset(tail, 0xFF, sizeof tail);
        memcpy(tail, src + bulk, len - bulk);
        if (f->program(f->ctx, addr + bulk, tail, f->prog_unit) != 0) return MT_PERSIST_EFLASH;
    }
    return MT_PERSIST_OK;
}

static int verify(const mt_flash_t *f, uint32_t addr, const uint8_t *expect, uint32_t len)
{
    uint8_t buf[CHUNK];
    uint32_t done, n, i;
    for (done = 0; done < len; done += n) {
        n = len - done < CHUNK ? len - done : CHUNK;
        if (f->read(f->ctx, addr + done, buf, n) != 0) return MT_PERSIST_EFLASH;
        for (i = 0; i < n; i++) /* a loop, not memcmp: freestanding builds may only rely on memcpy/memset */
            if (buf[i] != expect[done + i]) return MT_PERSIST_EVERIFY;
    }
    return MT_PERSIST_OK;
}

int mt_persist_save(mt_persist_t *p, const void *payload, uint32_t len, uint32_t step, uint32_t now_s)
{
    const mt_flash_t *f;
    const uint8_t *data = (const uint8_t *)payload;
    uint8_t hdr[MT_PERSIST_HEADER_SIZE];
    uint32_t addr, off, used, seq, commit_bytes;
    int target, rc;
    if (!ready(p) || (payload == NULL && len > 0)) return MT_PERSIST_EINVAL;
    if (len > p->slot_size - MT_PERSIST_HEADER_SIZE) return MT_PERSIST_ETOOBIG;
    if (p->policy.max_saves != 0 && p->seq >= p->policy.max_saves) return MT_PERSIST_EWORN;
    f = p->flash;
    /* never touch the slot holding our newest valid version */
    target = p->newest_slot == 0 ? 1 : 0;
    addr = slot_addr(p, target);
    seq = p->seq + 1u;

    /* 1. erase only the pages the new version needs (fewer erases = less wear) */
    used = MT_PERSIST_HEADER_SIZE + len;
    for (off = 0; off < used; off += f->page_size)
        if (f->erase_page(f->ctx, addr + off) != 0) return MT_PERSIST_EFLASH;

    /* 2. payload */
    rc = program_padded(f, addr + MT_PERSIST_HEADER_SIZE, data, len);
    if (rc != MT_PERSIST_OK) return rc;

    /* 3. header without the commit word, 4. commit word last */
    memset(hdr, 0xFF, sizeof hdr);
    put32(hdr, MT_PERSIST_MAGIC);
    put16(hdr + 4, (uint16_t)MT_PERSIST_VERSION);
    put16(hdr + 6, (uint16_t)MT_PERSIST_HEADER_SIZE);
    put32(hdr + 8, seq);
    put32(hdr + 12, p->layout_id);
    put32(hdr + 16, len);
    put32(hdr + 20, step);
    put32(hdr + HDR_CRC_OFFSET, mt_crc32(mt_crc32(0, hdr, HDR_CRC_OFFSET), data, len));
    put32(hdr + HDR_COMMIT_OFFSET, MT_PERSIST_COMMIT);
    commit_bytes = f->prog_unit > 4u ? f->prog_unit : 4u;
    if (commit_bytes < MT_PERSIST_HEADER_SIZE &&
        f->program(f->ctx, addr, hdr, MT_PERSIST_HEADER_SIZE - commit_bytes) != 0)
        return MT_PERSIST_EFLASH;
    if (f->program(f->ctx, addr + MT_PERSIST_HEADER_SIZE - commit_bytes, hdr + MT_PERSIST_HEADER_SIZE - commit_bytes,
                   commit_bytes) != 0)
        return MT_PERSIST_EFLASH;

    /* 5. read back */
    rc = verify(f, addr, hdr, MT_PERSIST_HEADER_SIZE);
    if (rc == MT_PERSIST_OK) rc = verify(f, addr + MT_PERSIST_HEADER_SIZE, data, len);
    if (rc != MT_PERSIST_OK) return rc;

    p->newest_slot = target;
    p->seq = seq;
    p->newest_len = len;
    p->last_step = step;
    p->last_time_s = now_s;
    p->saves_this_boot++;
    return MT_PERSIST_OK;
}

int mt_persist_due(const mt_persist_t *p, uint32_t step, uint32_t now_s)
{
    uint32_t steps;
    if (!ready(p)) return 0;
    if (p->policy.max_saves != 0 && p->seq >= p->policy.max_saves) return 0;
    /* a step counter that restarted (below the saved step) counts steps since boot */
    steps = step >= p->last_step ? step - p->last_step : step;
    if (steps < p->policy.min_steps) return 0;
    if ((uint32_t)(now_s - p->last_time_s) < p->policy.min_seconds) return 0;
    return 1;
}

int mt_persist_save_if_due(mt_persist_t *p, const void *payload, uint32_t len, uint32_t step, uint32_t now_s)
{
    if (!ready(p)) return MT_PERSIST_EINVAL;
    if (p->policy.max_saves != 0 && p->seq >= p->policy.max_saves) return MT_PERSIST_EWORN;
    if (!mt_persist_due(p, step, now_s)) return MT_PERSIST_SKIPPED;
    return mt_persist_save(p, payload, len, step, now_s);
}

/* ----- host simulation (tests only) ------------------------------------------------------------------ */
#ifdef MT_PERSIST_HOST_SIM
static uint8_t sim_mem[MT_SIM_MAX_SIZE];
static uint32_t sim_erases[MT_SIM_MAX_SIZE / 64u];
static mt_flash_t sim_flash;
static uint32_t sim_size;
static int64_t sim_prog_budget = -1, sim_erase_budget = -1;
static int sim_torn, sim_power = 1;

static int sim_erase(void *ctx, uint32_t addr)
{
    uint32_t i, ps = sim_flash.page_size;
    (void)ctx;
    if (!sim_power || addr % ps != 0 || addr > sim_size - ps) return -1;
    sim_erases[addr / ps]++;
    for (i = 0; i < ps; i++) {
        if (sim_erase_budget == 0) {
            if (sim_torn) { /* an interrupted erase may leave any bits: fill the rest of the page with noise */
                uint32_t x = addr + i + 0x9E3779B9u;
                for (; i < ps; i++) { x = x * 1664525u + 1013904223u; sim_mem[addr + i] = (uint8_t)(x >> 24); }
            }
            sim_power = 0;
            return -1;
        }
        if (sim_erase_budget > 0) sim_erase_budget--;
        sim_mem[addr + i] = 0xFF;
    }
    return 0;
}

static int sim_program(void *ctx, uint32_t addr, const uint8_t *data, uint32_t len)
{
    uint32_t i, u = sim_flash.prog_unit;
    (void)ctx;
    if (!sim_power || addr % u != 0 || len % u != 0 || addr > sim_size || len > sim_size - addr) return -1;
    for (i = 0; i < len; i++) {
        if (sim_prog_budget == 0) {
            if (sim_torn) { /* interrupted NOR program: only some of the bits to clear got cleared */
                uint8_t to_clear = (uint8_t)(sim_mem[addr + i] & (uint8_t)~data[i]);
                sim_mem[addr + i] &= (uint8_t)~(to_clear & 0x0Fu);
            }
            sim_power = 0;
            return -1;
        }
        if (sim_prog_budget > 0) sim_prog_budget--;
        sim_mem[addr + i] &= data[i]; /* NOR: programming only clears bits */
    }
    return 0;
}

static int sim_read(void *ctx, uint32_t addr, uint8_t *data, uint32_t len)
{
    (void)ctx;
    if (!sim_power || addr > sim_size || len > sim_size - addr) return -1;
    memcpy(data, sim_mem + addr, len);
    return 0;
}

const mt_flash_t *mt_sim_flash(uint32_t size, uint32_t page_size, uint32_t prog_unit)
{
    if (size == 0 || size > MT_SIM_MAX_SIZE || page_size < 64u || size % page_size != 0) return NULL;
    sim_size = size;
    memset(sim_mem, 0xFF, sizeof sim_mem);
    memset(sim_erases, 0, sizeof sim_erases);
    sim_flash.ctx = NULL;
    sim_flash.page_size = page_size;
    sim_flash.prog_unit = prog_unit;
    sim_flash.erase_page = sim_erase;
    sim_flash.program = sim_program;
    sim_flash.read = sim_read;
    sim_prog_budget = sim_erase_budget = -1;
    sim_torn = 0;
    sim_power = 1;
    return &sim_flash;
}

void mt_sim_cut(int64_t prog_bytes, int64_t erase_bytes, int torn_byte)
{
    sim_prog_budget = prog_bytes;
    sim_erase_budget = erase_bytes;
    sim_torn = torn_byte;
    sim_power = 1;
}

int mt_sim_powered(void) { return sim_power; }
uint8_t *mt_sim_memory(void) { return sim_mem; }
uint32_t mt_sim_erase_count(uint32_t page) { return page < MT_SIM_MAX_SIZE / 64u ? sim_erases[page] : 0u; }
#endif
