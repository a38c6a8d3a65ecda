/* Rows whose maximum is +inf, shared by every ISA (rare, so scalar).
 * x - max would be inf - inf = NaN, so these rows take the limit instead:
 * the k elements equal to +inf share the mass (1/k each), every other element
 * gets 0; log-softmax gives log(1/k) and -inf.  A NaN anywhere makes the row
 * NaN, as in every other row. */
#include <math.h>

static void infinite_row(const float *x, float *y, int64_t n, int log_output) {
    int64_t infinities = 0, nans = 0;
    for (int64_t i = 0; i < n; i++) {
        infinities += (x[i] == INFINITY);
        nans += isnan(x[i]) != 0;
    }
    const float at_inf = log_output ? (float)log(1.0 / (double)infinities) : (float)(1.0 / (double)infinities);
    const float elsewhere = log_output ? -INFINITY : 0.0f;
    for (int64_t i = 0; i < n; i++) {
        y[i] = nans ? NAN : (x[i] == INFINITY ? at_inf : elsewhere);
    }
}
