// select.c - the backend of the process (gq_set_device) and its name.
#include "backend/backend.h"
#include "util/common.h"

static const struct gq_backend *current; // NULL: the CPU backend

const struct gq_backend *gq_be(void) { return current ? current : gq_backend_cpu(); }

enum gq_status gq_set_device(const char *name) {
    if (!strcmp(name, "cpu")) {
        current = gq_backend_cpu();
        return GQ_OK;
    }
    if (!strcmp(name, "cuda")) {
        const char *why = NULL;
        const struct gq_backend *b = gq_backend_cuda(&why);
        if (!b) return gq_fail(GQ_ERR_UNSUPPORTED, "--device cuda: %s", why ? why : "unavailable");
        current = b;
        return GQ_OK;
    }
    return gq_fail(GQ_ERR_ARG, "--device: expected cpu or cuda, got '%s'", name);
}

const char *gq_device_name(void) {
    const char *cu = gq_be() == gq_backend_cpu() ? NULL : gq_cuda_device_name();
    return cu ? cu : gq_be()->name;
}
