/* SML_TILES(family, tile, ...) defines sml_<family>_tile__<isa>(k): the k-th
 * loop tile of the family's kernels on this ISA, in elements (vector lanes,
 * then vectors per trip times lanes), and 0 past the last.  Row lengths
 * around their multiples take other paths through the loops, so the tests
 * choose lengths from them rather than from copies of the constants. */
#include <stdint.h>

#define SML_TILES(family, ...)                                                          \
    int64_t SML_ISA_SUFFIX(sml_##family##_tile)(int64_t k) {                             \
        static const int64_t tiles[] = {__VA_ARGS__};                                   \
        return k >= 0 && k < (int64_t)(sizeof tiles / sizeof tiles[0]) ? tiles[k] : 0; \
    }
