/* Executed-instruction counter for microtrain firmware (a QEMU TCG plugin, API version 1).
 * Counts are exact and repeatable (QEMU has no timing model, so instructions are the cost measure).
 * Reports: the total; per function symbol (self instructions); per cost-marker region (mt_mark in
 * mt_semihost.h: a table of `bx lr` starting at address `marks`; executing entry i starts region i and
 * the instructions up to the next marker are charged to it; region 0 also takes everything before the first).
 * Arguments: out=FILE (report, default stderr), marks=0xADDR, nmarks=N, classes=on.
 * Report lines: "total N", "symbol NAME N", "region ID CALLS N".
 * classes=on also counts executed instructions per timing class (mt_insn_class.h, decoded once per
 * instruction at translation time; one inline add per class present in a translation block, so the class
 * counts sum to `total` exactly) and the registers moved by load/store multiples, in total and per region:
 * "classes NAME... regs" (the column order), "class_total N...", "class_region ID N...". Off by default: the
 * plain count does no extra work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mt_insn_class.h"
#include "mt_qemu_plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    const char *name; /* owned copy; NULL = empty slot */
    uint64_t count;
} SymbolCounter;

#define SYMBOL_SLOTS 8192 /* open addressing; far more than a firmware's functions */
static SymbolCounter symbols[SYMBOL_SLOTS];
static SymbolCounter unknown_symbol = {"?", 0};
static uint64_t total;

#define MAX_REGIONS 4096
static uint64_t region_count[MAX_REGIONS], region_calls[MAX_REGIONS];
static unsigned current_region;
static uint64_t region_start_total;
static uint64_t marks_addr, marks_n;
static char out_path[4096];

/* classes=on: per-class executed instructions; column MT_N_CLASSES holds the registers of load/store multiples */
#define CLASS_COLUMNS (MT_N_CLASSES + 1)
static bool count_classes;
static uint64_t class_total[CLASS_COLUMNS], class_region_start[CLASS_COLUMNS];
static uint64_t (*class_region)[CLASS_COLUMNS]; /* [MAX_REGIONS], allocated only in classes mode */

static void charge_classes(unsigned region)
{
    for (int c = 0; c < CLASS_COLUMNS; c++) {
        class_region[region][c] += class_total[c] - class_region_start[c];
        class_region_start[c] = class_total[c];
    }
}

static SymbolCounter *symbol_counter(const char *name)
{
    if (!name) return &unknown_symbol;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (size_t i = 0; i < SYMBOL_SLOTS; i++) {
        SymbolCounter *s = &symbols[(h + i) % SYMBOL_SLOTS];
        if (!s->name) {
            s->name = strdup(name);
            return s;
        }
        if (strcmp(s->name, name) == 0) return s;
    }
    return &unknown_symbol;
}

static void on_mark(unsigned int vcpu, void *userdata)
{
    (void)vcpu;
    unsigned id = (unsigned)(uintptr_t)userdata;
    /* `total` already includes the whole translation block of this marker (added when it started), so
     * the charge to the previous region ends right here. */
    region_count[current_region] += total - region_start_total;
    region_start_total = total;
    if (count_classes) charge_classes(current_region);
    current_region = id;
    region_calls[id]++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    if (count_classes) { /* the block's class histogram, added when the block runs, like `total` */
        uint64_t hist[CLASS_COLUMNS] = {0};
        for (size_t i = 0; i < n; i++) {
            struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
            unsigned regs;
            hist[mt_insn_class(qemu_plugin_insn_data(insn), qemu_plugin_insn_size(insn), &regs)]++;
            hist[MT_N_CLASSES] += regs;
        }
        for (int c = 0; c < CLASS_COLUMNS; c++)
            if (hist[c])
                qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &class_total[c], hist[c]);
    }
    /* One inline add per run of instructions of the same function. */
    size_t run_start = 0;
    for (size_t i = 0; i <= n; i++) {
        struct qemu_plugin_insn *insn = (i < n) ? qemu_plugin_tb_get_insn(tb, i) : NULL;
        if (insn && marks_n) {
            uint64_t va = qemu_plugin_insn_vaddr(insn);
            if (va >= marks_addr && va < marks_addr + 2 * marks_n)
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS,
                                                       (void *)(uintptr_t)((va - marks_addr) / 2));
        }
        if (i == 0) continue;
        struct qemu_plugin_insn *first = qemu_plugin_tb_get_insn(tb, run_start);
        const char *run_sym = qemu_plugin_insn_symbol(first);
        const char *sym = insn ? qemu_plugin_insn_symbol(insn) : NULL;
        bool same = insn && ((run_sym == sym) || (run_sym && sym && strcmp(run_sym, sym) == 0));
        if (!same) {
            qemu_plugin_register_vcpu_insn_exec_inline(first, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &symbol_counter(run_sym)->count, i - run_start);
            run_start = i;
        }
    }
}

static void write_report(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    region_count[current_region] += total - region_start_total;
    if (count_classes) charge_classes(current_region);
    FILE *f = out_path[0] ? fopen(out_path, "w") : stderr;
    if (!f) f = stderr;
    fprintf(f, "total %llu\n", (unsigned long long)total);
    for (size_t i = 0; i < SYMBOL_SLOTS; i++)
        if (symbols[i].name && symbols[i].count)
            fprintf(f, "symbol %s %llu\n", symbols[i].name, (unsigned long long)symbols[i].count);
    if (unknown_symbol.count) fprintf(f, "symbol ? %llu\n", (unsigned long long)unknown_symbol.count);
    for (unsigned r = 0; r < MAX_REGIONS; r++)
        if (region_count[r] || region_calls[r])
            fprintf(f, "region %u %llu %llu\n", r, (unsigned long long)region_calls[r],
                    (unsigned long long)region_count[r]);
    if (count_classes) {
        fprintf(f, "classes");
        for (int c = 0; c < MT_N_CLASSES; c++) fprintf(f, " %s", mt_insn_class_names[c]);
        fprintf(f, " regs\nclass_total");
        for (int c = 0; c < CLASS_COLUMNS; c++) fprintf(f, " %llu", (unsigned long long)class_total[c]);
        fprintf(f, "\n");
        for (unsigned r = 0; r < MAX_REGIONS; r++) {
            if (!(region_count[r] || region_calls[r])) continue;
            fprintf(f, "class_region %u", r);
            for (int c = 0; c < CLASS_COLUMNS; c++) fprintf(f, " %llu", (unsigned long long)class_region[r][c]);
            fprintf(f, "\n");
        }
    }
    if (f != stderr) fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", a + 4);
        } else if (strncmp(a, "marks=", 6) == 0) {
            marks_addr = strtoull(a + 6, NULL, 0) & ~1ull; /* drop the Thumb bit */
        } else if (strncmp(a, "nmarks=", 7) == 0) {
            marks_n = strtoull(a + 7, NULL, 0);
            if (marks_n > MAX_REGIONS) marks_n = MAX_REGIONS;
        } else if (strcmp(a, "classes=on") == 0) {
            count_classes = true;
            class_region = calloc(MAX_REGIONS, sizeof *class_region);
            if (!class_region) return -1;
        } else {
            fprintf(stderr, "mt_icount: unknown argument '%s' (expected out=, marks=, nmarks=, classes=on)\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_report, NULL);
    return 0;
}
