// text.c - WikiText's raw files as the GPTQ protocol reads them (gptvq.h:
// gq_wikitext_join), for perplexity and calibration alike.
#include "util/common.h"

char *gq_wikitext_join(const char *raw, size_t len, size_t *out_len) {
    // Worst case: every byte a row, each followed by "\n\n".
    char *out = malloc(3 * len + 1);
    if (!out) return NULL;
    size_t o = 0;
    bool first = true;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && raw[j] != '\n') j++;
        size_t end = j < len ? j + 1 : j; // row keeps its newline
        bool blank = true;
        for (size_t k = i; k < end; k++)
            if (raw[k] != ' ' && raw[k] != '\t' && raw[k] != '\n' && raw[k] != '\r') blank = false;
        if (!first) {
            out[o++] = '\n';
            out[o++] = '\n';
        }
        first = false;
        if (!blank) {
            memcpy(out + o, raw + i, end - i);
            o += end - i;
        }
        i = end;
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

// Exposed for the CLI: resolve the "auto" wikitext flag from a file name.
bool gq_ppl_is_wikitext_file(const char *name) {
    const char *b = strrchr(name, '/');
    b = b ? b + 1 : name;
    size_t n = strlen(b);
    return strncmp(b, "wiki.", 5) == 0 && n > 4 && strcmp(b + n - 4, ".raw") == 0;
}
