/* error.c - status names and the diagnostic helper. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

const char *mf_strerror(mf_status status) {
    switch (status) {
    case MF_OK: return "success";
    case MF_ERR_NULL: return "a required pointer is NULL";
    case MF_ERR_ARG: return "argument out of range";
    case MF_ERR_DIMS: return "unsupported or inconsistent dimensions";
    case MF_ERR_OVERFLOW: return "size computation overflows";
    case MF_ERR_LIMIT: return "exceeds a documented limit";
    case MF_ERR_NOMEM: return "out of memory";
    case MF_ERR_BUFFER_SMALL: return "buffer too small";
    case MF_ERR_NONFINITE: return "input contains NaN or infinity";
    case MF_ERR_OFFSET_RANGE: return "offset out of range";
    case MF_ERR_OFFSET_ORDER: return "offsets not monotone";
    case MF_ERR_NNZ: return "offsets or values disagree with a bitmap";
    case MF_ERR_SCALE: return "invalid scale or zero point";
    case MF_ERR_PADDING: return "nonzero padding";
    case MF_ERR_IO: return "I/O error";
    case MF_ERR_MAGIC: return "bad magic: not this file type";
    case MF_ERR_VERSION: return "unsupported version";
    case MF_ERR_CHECKSUM: return "checksum mismatch";
    case MF_ERR_TRUNCATED: return "input truncated";
    case MF_ERR_HEADER: return "invalid header field";
    case MF_ERR_DTYPE: return "unsupported element type";
    case MF_ERR_NO_DEVICE: return "CUDA backend not available";
    case MF_ERR_DEVICE: return "CUDA call failed";
    case MF_ERR_UNSUPPORTED: return "not supported by this build";
    }
    return "unknown status";
}

mf_status mf__fail(mf_diag *diag, mf_status status, const char *fmt, ...) {
    if (diag) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(diag->msg, sizeof diag->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}
