/* CPU feature detection, the build version, the bandwidth probe's streams and
 * the benchmark's cache flush.
 * Compiled for baseline x86-64: it must run on any CPU to tell what it has. */
#include <stdint.h>
#include <cpuid.h>
#include <xmmintrin.h>
#include <emmintrin.h>
#include "softmaxlib.h"

#ifndef SML_VERSION
#error "SML_VERSION must be defined by the build (softmaxlib/_build_ffi.py)"
#endif

const char *sml_build_version(void) { return SML_VERSION; }

/* XCR0 says which register states the OS saves on a context switch: a CPU
 * feature is usable only if its registers are among them. */
static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

int sml_cpu_features(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const int osxsave = (ecx >> 27) & 1, fma = (ecx >> 12) & 1, f16c = (ecx >> 29) & 1;
    if (!osxsave) return 0;
    const uint64_t xcr0 = read_xcr0();
    const int ymm_state = (xcr0 & 0x6) == 0x6;        /* SSE and AVX state */
    const int zmm_state = (xcr0 & 0xE6) == 0xE6;      /* plus opmask, ZMM0-15 high halves, ZMM16-31 */
    if (!ymm_state || __get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    int features = 0;
    if ((ebx >> 5) & 1) features |= SML_CPU_AVX2;
    if (fma) features |= SML_CPU_FMA;
    if (f16c) features |= SML_CPU_F16C;
    if (zmm_state) {
        if ((ebx >> 16) & 1) features |= SML_CPU_AVX512F;
        if ((ebx >> 30) & 1) features |= SML_CPU_AVX512BW;
        if ((ebx >> 17) & 1) features |= SML_CPU_AVX512DQ;
        if ((ebx >> 31) & 1) features |= SML_CPU_AVX512VL;
    }
    return features;
}

uint32_t sml_get_mxcsr(void) { return _mm_getcsr(); }
void sml_set_mxcsr(uint32_t value) { _mm_setcsr(value); }

/* Eight independent XOR chains (the compiler vectorizes each), so the loop
 * issues loads as fast as the core can and measures memory, not latency. */
uint64_t sml_stream_read(const uint64_t *words, int64_t count) {
    uint64_t acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= count; i += 8)
        for (int k = 0; k < 8; k++) acc[k] ^= words[i + k];
    for (; i < count; i++) acc[0] ^= words[i];
    return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

void sml_stream_read_write(uint64_t *words, int64_t count) {
    for (int64_t i = 0; i < count; i++) words[i] += 1;
}

/* Evicts every cache line of [start, start + bytes) from every level of the
 * cache hierarchy (dirty lines are written back): CLFLUSH is SSE2, baseline
 * x86-64, and unprivileged, so it works in a VM as well.  One CLFLUSH per 64
 * bytes, the line size of every x86-64 CPU in use (CPUID leaf 1 reports it as
 * the CLFLUSH line size; lines longer than the step would only be flushed
 * twice, lines shorter than it would be missed: none are known); the
 * first line is the one holding start, whatever its alignment, and the last
 * the one holding start + bytes - 1.  The MFENCE orders the flushes before
 * any later load or store, so a timed call that follows starts with none of
 * these lines in cache. */
void sml_flush_cache_lines(const void *start, int64_t bytes) {
    if (bytes <= 0) return;
    const uintptr_t first = (uintptr_t)start & ~(uintptr_t)63;
    const uintptr_t end = (uintptr_t)start + (uintptr_t)bytes;
    for (uintptr_t line = first; line < end; line += 64)
        _mm_clflush((const void *)line);
    _mm_mfence();
}
