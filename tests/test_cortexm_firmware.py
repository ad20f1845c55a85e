"""Bare-metal infrastructure of the Cortex-M target, exercised with tiny hand-written programs under QEMU:
exit status and output via semihosting, host-file reads, the 256 KB link budget, stack high-water mark,
faults, the timeout, and the instruction-counting plugin."""
from __future__ import annotations

import re

import pytest

from cortexm_util import require_arm_tools
from microtrain.errors import BudgetError
from microtrain.targets.cortex_m import (
    FirmwareTimeoutError,
    LinkBudgetError,
    build_firmware,
    memory_usage,
    run_firmware,
    symbol_sizes,
)

pytestmark = pytest.mark.qemu


@pytest.fixture(autouse=True)
def _tools():
    require_arm_tools()


def build(tmp_path, source: str, name="prog", cpu="cortex-m7", **kw):
    c = tmp_path / f"{name}.c"
    c.write_text(source)
    return build_firmware([c], tmp_path / "build" / f"{name}.elf", cpu, **kw)


HELLO = r"""
#include "mt_semihost.h"
int initialised = 1234;          /* .data: copied from flash at reset */
static int zeroed[64];           /* .bss: zeroed at reset */
int main(void) {
    char buf[32] = {0};
    int fd = mt_open("sample.bin", "rb");
    if (fd < 0) return 3;
    long len = mt_flen(fd);
    size_t n = mt_read(fd, buf, sizeof buf - 1);
    mt_close(fd);
    float half = (float)initialised * 0.5f;   /* FPU enabled by the startup code (software float on the M3) */
    mt_printf("read %u of %ld: %s | data=%d bss=%d half=%.1f neg=%d hex=%x big=%llu\n", (unsigned)n, len, buf,
              initialised, zeroed[7], half, -17, 255u, 12345678901ull);
    return 42;
}
"""


@pytest.mark.parametrize("cpu", ["cortex-m7", "cortex-m4", "cortex-m3"])
def test_status_output_and_host_file(tmp_path, cpu):
    (tmp_path / "sample.bin").write_bytes(b"ants-and-bees")
    res = run_firmware(build(tmp_path, HELLO, cpu=cpu).elf, cpu, cwd=tmp_path, timeout=30)
    assert res.status == 42, res.stderr
    assert "read 13 of 13: ants-and-bees | data=1234 bss=0 half=617.0 neg=-17 hex=ff big=12345678901" in res.stdout


def test_ram_overflow_is_a_clear_budget_error(tmp_path):
    src = '#include "mt_semihost.h"\nstatic volatile char arena[256 * 1024];\n' \
          'int main(void) { arena[5] = 1; return arena[5]; }\n'
    with pytest.raises(LinkBudgetError) as e:
        build(tmp_path, src, stack_size=4096)
    msg = str(e.value)
    assert isinstance(e.value, BudgetError)
    # 256 KB array + 4 KB stack (+ the console buffer): over by a little more than the stack
    over = int(re.search(r"256 KB SRAM overflowed by (\d+) bytes", msg).group(1))
    assert 4096 <= over < 4096 + 512


def test_memory_report_matches_the_link(tmp_path):
    src = '#include "mt_semihost.h"\nstatic volatile char arena[100000];\n' \
          'int main(void) { arena[99999] = 1; return arena[99999]; }\n'
    res = build(tmp_path, src, stack_size=6000)
    use = memory_usage(res.elf)
    assert symbol_sizes(res.elf)["arena"] == 100000
    assert use.stack == 6000
    assert use.bss >= 100000 and use.ram == use.stack + use.data + use.bss
    assert res.map.exists() and "arena" in res.map.read_text()
    assert run_firmware(res.elf, timeout=30).status == 1


def test_stack_high_water_mark(tmp_path):
    src = r"""
#include "mt_semihost.h"
__attribute__((noinline)) static int deep(int n) {
    volatile char frame[3000];
    for (int i = 0; i < 3000; i++) frame[i] = (char)(i + n);
    return frame[n];
}
int main(void) {
    size_t before = mt_stack_used();
    int v = deep(7);
    mt_printf("before=%u after=%u size=%u v=%d\n", (unsigned)before, (unsigned)mt_stack_used(),
              (unsigned)mt_stack_size(), v);
    return 0;
}
"""
    res = run_firmware(build(tmp_path, src, stack_size=8192).elf, timeout=30)
    m = re.search(r"before=(\d+) after=(\d+) size=(\d+)", res.stdout)
    before, after, size = map(int, m.groups())
    assert size == 8192 and before < 512
    assert 3000 <= after < 3000 + 256  # deep()'s frame plus the callers' few words


def test_stack_overflow_faults_loudly(tmp_path):
    src = r"""
#include "mt_semihost.h"
__attribute__((noinline)) static int recurse(int n) {
    volatile char pad[256]; pad[0] = (char)n;
    return n ? recurse(n - 1) + pad[0] : 0;
}
int main(void) { return recurse(100000); }
"""
    res = run_firmware(build(tmp_path, src, stack_size=2048).elf, timeout=30)
    assert res.status == 70
    assert "CPU fault" in res.stdout


def test_hung_guest_is_killed_with_a_clear_message(tmp_path):
    src = '#include "mt_semihost.h"\nint main(void) { mt_puts("spinning\\n"); for (;;) {} }\n'
    with pytest.raises(FirmwareTimeoutError, match=r"did not exit within 1.5 s .*killed"):
        run_firmware(build(tmp_path, src).elf, timeout=1.5)


COUNTED = r"""
#include "mt_semihost.h"
volatile int sink;
__attribute__((noinline)) void work(int n) { for (int i = 0; i < n; i++) sink += i; }
int main(void) {
    mt_mark(1); work(1000);
    mt_mark(2); work(3000);
    mt_mark(1); work(1000);
    mt_mark(0);
    return 0;
}
"""


def test_instruction_counter_is_exact_and_attributes(tmp_path):
    elf = build(tmp_path, COUNTED).elf
    a = run_firmware(elf, timeout=30, count=True).instructions
    b = run_firmware(elf, timeout=30, count=True).instructions
    assert a.total == b.total and a.symbols == b.symbols and a.regions == b.regions  # repeatable
    assert sum(a.symbols.values()) == a.total
    assert sum(n for _, n in a.regions.values()) == a.total
    calls1, n1 = a.regions[1]
    calls2, n2 = a.regions[2]
    assert (calls1, calls2) == (2, 1)
    # region 1 ran work(1000) twice, region 2 work(3000) once: the loop body dominates both
    assert abs(n2 / n1 - 1.5) < 0.01
    assert a.symbols["work"] > 0.99 * (n1 + n2) - 50
