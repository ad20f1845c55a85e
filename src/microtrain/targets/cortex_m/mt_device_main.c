/* Device harness of `microtrain run`: trains the generated model on samples streamed from host files
 * through semihosting (one sample at a time straight into the arena's input slot, so the dataset never sits
 * in SRAM), evaluates on held-out samples, and writes the trained parameters back to the host.
 * The output lines are parsed by targets/cortex_m/session.py.
 *
 * Files (in QEMU's working directory): train.bin and eval.bin = header {"MTDS", u32 count, u32 sample_bytes}
 * then per sample {i32 label, sample_bytes int8}; params.bin (written) = mt_export_params().
 * resume.bin (optional, read first) = header {"MTRS", u32 step, u32 param_bytes} then mt_export_params() bytes
 * of an earlier session: training continues from those parameters and that stochastic-rounding counter
 * (the compiled seed), so sessions of k and n - k steps end where one session of n steps ends.
 * Output lines: "step I loss L", "pred I CLASS LOGITS...", "eval CORRECT TOTAL",
 * "params N", "stack USED SIZE".
 * Cost markers (mt_mark): the generated kernel calls carry their own ids (see regions.json); id 0 is this
 * harness (I/O, printing), so the instruction counter reports the training step alone. */
#include <stdint.h>

#include "mt_model.h"
#include "mt_semihost.h"

/* mt_model_marked.c (the instrumented copy of mt_model.c) adds these: the arena slots the model reads its
 * input from, so a streamed sample lands where mt_train_step / mt_infer copy it from (a no-op copy). */
int8_t *mt_train_input_buffer(void);
/* Writes the trainable arrays (the bytes of mt_export_params, in order) straight to a host file: no SRAM copy. */
uint32_t mt_write_params(int fd);
/* Its inverse: reads the trainable arrays straight from a host file. */
uint32_t mt_read_params(int fd);

#define EXIT_BAD_DATA 2
#define EXIT_TRAIN_FAILED 3

typedef struct {
    int fd;
    uint32_t count;
} Dataset;

static int open_dataset(const char *path, Dataset *d)
{
    uint32_t header[3];
    d->fd = mt_open(path, "rb");
    d->count = 0;
    if (d->fd < 0) return 0; /* absent: nothing to do */
    if (mt_read(d->fd, header, sizeof header) != sizeof header || header[0] != 0x5344544Du /* "MTDS" */) {
        mt_printf("error: %s is not a microtrain sample file\n", path);
        mt_exit(EXIT_BAD_DATA);
    }
    if (header[2] != (uint32_t)MT_INPUT_SIZE) {
        mt_printf("error: %s holds %u-byte samples, the model takes %u\n", path, (unsigned)header[2],
                  (unsigned)MT_INPUT_SIZE);
        mt_exit(EXIT_BAD_DATA);
    }
    d->count = header[1];
    return 1;
}

static int32_t read_sample(Dataset *d, int8_t *dst, const char *path)
{
    int32_t label;
    if (mt_read(d->fd, &label, sizeof label) != sizeof label ||
        mt_read(d->fd, dst, MT_INPUT_SIZE) != (size_t)MT_INPUT_SIZE) {
        mt_printf("error: %s ended early\n", path);
        mt_exit(EXIT_BAD_DATA);
    }
    return label;
}

#if MT_HAS_TRAINING
static void resume_session(void)
{
    uint32_t header[3];
    int fd = mt_open("resume.bin", "rb");
    if (fd < 0) return; /* absent: start from the compiled parameters */
    if (mt_read(fd, header, sizeof header) != sizeof header || header[0] != 0x5352544Du /* "MTRS" */ ||
        header[2] != mt_params_size() || mt_read_params(fd) != mt_params_size()) {
        mt_printf("error: resume.bin is not a parameter file of this model (%u bytes expected)\n",
                  (unsigned)mt_params_size());
        mt_exit(EXIT_BAD_DATA);
    }
    mt_close(fd);
    mt_set_rounding_state(MT_DEFAULT_SEED, header[1]);
    mt_printf("resumed at step %u\n", (unsigned)header[1]);
}
#endif

int main(void)
{
    Dataset d;
    mt_mark(0);
    mt_init();
#if MT_HAS_TRAINING
    resume_session();
#endif
#if MT_HAS_TRAINING
    if (open_dataset("train.bin", &d)) {
        int8_t *input = mt_train_input_buffer();
        for (uint32_t i = 0; i < d.count; i++) {
            float loss = 0.0f;
            int32_t label = read_sample(&d, input, "train.bin");
            int32_t rc = mt_train_step(input, label, &loss);
            mt_mark(0);
            if (rc != 0) {
                mt_printf("error: mt_train_step returned %d at step %u (label %d)\n", (int)rc, (unsigned)i, (int)label);
                mt_exit(EXIT_TRAIN_FAILED);
            }
            mt_printf("step %u loss %.6f\n", (unsigned)i, (double)loss);
        }
        mt_close(d.fd);
    }
#endif
    if (open_dataset("eval.bin", &d)) {
        int8_t *input = mt_input_buffer();
        int8_t logits[MT_NUM_CLASSES];
        uint32_t correct = 0;
        for (uint32_t i = 0; i < d.count; i++) {
            int32_t label = read_sample(&d, input, "eval.bin");
            mt_infer(input, logits);
            mt_mark(0);
            int32_t best = 0;
            for (int32_t k = 1; k < MT_NUM_CLASSES; k++)
                if (logits[k] > logits[best]) best = k;
            correct += (best == label);
            mt_printf("pred %u %d", (unsigned)i, (int)best);
            for (int32_t k = 0; k < MT_NUM_CLASSES; k++) mt_printf(" %d", (int)logits[k]);
            mt_puts("\n");
        }
        mt_close(d.fd);
        mt_printf("eval %u %u\n", (unsigned)correct, (unsigned)d.count);
    }
    {
        int fd = mt_open("params.bin", "wb");
        if (fd < 0) {
            mt_puts("error: cannot create params.bin on the host\n");
            mt_exit(EXIT_BAD_DATA);
        }
        mt_printf("params %u\n", (unsigned)mt_write_params(fd));
        mt_close(fd);
    }
    mt_printf("stack %u %u\n", (unsigned)mt_stack_used(), (unsigned)mt_stack_size());
    return 0;
}
